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

from autogram.config import DataConfig
from autogram.config.registry import Registry

if TYPE_CHECKING:
    from autogram.data.base import MultiModalData


class DataKind:
    """Base class of a registered data source."""

    name: ClassVar[str] = ""

    def load(self, cfg: DataConfig) -> MultiModalData:
        """The data this source gives for ``cfg``."""
        raise NotImplementedError


DATA_SOURCES: Registry[DataKind] = Registry("data source")
register_data_source = DATA_SOURCES.register
unregister_data_source = DATA_SOURCES.unregister


def load_data(cfg: DataConfig, python_data: dict | None = None) -> MultiModalData:
    """Load the configured data through its source, or ``python_data`` (``{"train": ds, ...}``
    given to the Python API)."""
    if python_data is not None:
        from autogram.data.datasets import from_datasets

        return from_datasets(python_data, cfg, "python data")
    return DATA_SOURCES.get_class(cfg.source, "data.kind")().load(cfg)


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
