"""The data-source registry: where the data comes from, one class per kind.

A config's ``data:`` section names its source by its fields (``path``: an ``.npz`` file,
``hf``: a Hugging Face dataset on disk, ``factory``, none: the built-in generator) or, for a
kind registered elsewhere, by ``kind``. Each kind turns the section into one
:class:`~autogram.data.base.MultiModalData` with the same checks (kinds, finite values,
splits); nothing else in autogram names a kind. The Python API's in-memory datasets come
as ``python_data`` and need no kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from autogram.config import ConfigError, DataConfig

if TYPE_CHECKING:
    from autogram.data.base import MultiModalData


class DataKind:
    """Base class of a registered data source."""

    name: ClassVar[str] = ""

    def load(self, cfg: DataConfig) -> MultiModalData:
        """The data this source gives for ``cfg``."""
        raise NotImplementedError


DATA_SOURCES: dict[str, type[DataKind]] = {}


def register_data_source(cls: type[DataKind]) -> type[DataKind]:
    """Class decorator: register a data source under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in DATA_SOURCES and DATA_SOURCES[cls.name] is not cls:
        raise ValueError(f"data source {cls.name!r} is already registered ({DATA_SOURCES[cls.name].__name__})")
    DATA_SOURCES[cls.name] = cls
    return cls


def unregister_data_source(name: str) -> None:
    """Remove a data source (tests that register a toy one clean up with this)."""
    DATA_SOURCES.pop(name, None)


def load_data(cfg: DataConfig, python_data: dict | None = None) -> MultiModalData:
    """Load the configured data through its source, or ``python_data`` (``{"train": ds, ...}``
    given to the Python API)."""
    if python_data is not None:
        from autogram.data.datasets import from_datasets

        return from_datasets(python_data, cfg, "python data")
    if cfg.source not in DATA_SOURCES:
        raise ConfigError(f"data.kind: unknown data source {cfg.source!r} (registered: {', '.join(DATA_SOURCES)})")
    return DATA_SOURCES[cfg.source]().load(cfg)


@register_data_source
class Builtin(DataKind):
    """The built-in generator (``data.builtin``)."""

    name = "builtin"

    def load(self, cfg: DataConfig) -> MultiModalData:
        """Generated arrays, split and checked like a file's."""
        from autogram.data.arrays import from_arrays
        from autogram.data.builtin import generate

        return from_arrays(generate(cfg.builtin), cfg, "builtin")


@register_data_source
class Npz(DataKind):
    """An ``.npz`` file of ``{split}_{modality}`` and ``{split}_label`` arrays (``data.path``)."""

    name = "npz"

    def load(self, cfg: DataConfig) -> MultiModalData:
        """The file's arrays, split and checked."""
        from autogram.data.arrays import from_arrays, read_npz

        assert cfg.path is not None
        return from_arrays(read_npz(cfg.path), cfg, str(cfg.path))


@register_data_source
class HuggingFace(DataKind):
    """A Hugging Face ``DatasetDict`` saved on disk (``data.hf``), read by index."""

    name = "hf"

    def load(self, cfg: DataConfig) -> MultiModalData:
        """The dataset's columns as modalities."""
        from autogram.data.hf import load_hf

        return load_hf(cfg)


@register_data_source
class Factory(DataKind):
    """``package.module:function`` returning ``{"train": ds, ...}`` (``data.factory``)."""

    name = "factory"

    def load(self, cfg: DataConfig) -> MultiModalData:
        """The factory's datasets, read by index."""
        from autogram.data.datasets import load_factory

        return load_factory(cfg)
