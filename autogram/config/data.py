"""The ``data:`` section of a config: the built-in generator's sizes, held-out groups, and
where the data comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from autogram.config.base import Seed, once_each
from autogram.config.base import Strict as _Strict
from autogram.config.sources import ModalityKindName, import_path


class BuiltinDataConfig(_Strict):
    """Sizes of the built-in synthetic image + token data set."""

    # Training samples of the built-in data.
    n_train: int = Field(3000, ge=100)
    # Validation samples of the built-in data.
    n_val: int = Field(1000, ge=50)
    # Test samples of the built-in data.
    n_test: int = Field(1000, ge=50)
    # Side of the built-in images.
    image_size: int = Field(16, ge=12, le=64)
    # Length of the built-in token sequences.
    seq_len: int = Field(24, ge=8, le=256)
    # Vocabulary size of the built-in tokens.
    vocab_size: int = Field(64, ge=32, le=4096)
    # Keywords per token group: more of them, more labelled rows to learn them all (the
    # quickstart: 24). 3, the default, keeps the data of configs written before this field.
    keywords: int = Field(3, ge=1)
    # Seed of the built-in data generator.
    seed: Seed = 0

    @model_validator(mode="after")
    def _room_for_filler(self) -> BuiltinDataConfig:
        # Five groups of keywords, two markers, the mask id and at least 8 filler ids.
        need = 5 * self.keywords + 11
        if self.vocab_size < need:
            raise ValueError(
                f"vocab_size {self.vocab_size} is too small for {self.keywords} keywords per group "
                f"(need >= {need}): raise vocab_size or lower keywords"
            )
        return self


class GroupSplit(_Strict):
    """Re-split the data by a per-sample group (a speaker, a site, a patient): every sample of
    a ``test`` group (and of a ``val`` group) goes to that split, the rest trains. Groups are
    the values of the 1-D ``{split}_{by}`` arrays, or names from a ``{by}_names`` array."""

    # The group array's name: {split}_{by} arrays (or a Hugging Face column) give each sample's group.
    by: str = Field(min_length=1)
    # The groups held out as the test split.
    test: list[str | int] = Field(min_length=1)
    # Empty: whole groups, chosen by data.split_seed, validate (about val_fraction of the
    # remaining samples), so the search is scored on groups it never trained on, as the test
    # split is; "random": a random val_fraction of the training samples (groups shared).
    val: list[str | int] | Literal["random"] = []

    @model_validator(mode="after")
    def _disjoint(self) -> GroupSplit:
        named = self.val if isinstance(self.val, list) else []
        both = set(map(str, self.test)) & set(map(str, named))
        if both:
            raise ValueError(f"group(s) {', '.join(sorted(both))} in both test and val")
        return self


class DataConfig(_Strict):
    """Where the data comes from: the built-in generator (the default), an ``.npz`` file
    (``path``), a Hugging Face ``DatasetDict`` saved on disk (``hf``) or a Python factory."""

    # An .npz file of {split}_{modality} and {split}_label arrays.
    path: Path | None = None
    # A Hugging Face DatasetDict saved with save_to_disk.
    hf: Path | None = None
    # {modality: column, label: column} of the Hugging Face dataset (default: label column
    # "label", every other column a modality).
    columns: dict[str, str] = {}
    # package.module:function returning {train, val, test} map-style datasets of (dict, label).
    factory: str | None = None
    # Keyword arguments of the data factory.
    kwargs: dict[str, Any] = {}
    builtin: BuiltinDataConfig = BuiltinDataConfig()
    # Which modalities to use, in this order (null: every one found).
    modalities: list[str] | None = Field(None, min_length=1)
    # {modality: kind} where the shape alone does not tell (e.g. audio: spectrogram; sensor
    # channels x time steps: timeseries).
    modality_kinds: dict[str, ModalityKindName] = {}
    # Share of the training samples carved out as validation when the data has no val split.
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    # Seed of the carved validation (and test) splits.
    split_seed: Seed = 0
    # Use only the first N training samples (null: all).
    max_train: int | None = Field(None, ge=10)
    # Held-out groups (.npz data): honest numbers on unseen speakers or sites.
    split_by: GroupSplit | None = None
    # A data source registered under this name (autogram.data.sources); null: the source the
    # fields above name (``path``, ``hf``, ``factory``, or none: the built-in generator).
    kind: str | None = None

    @field_validator("modalities")
    @classmethod
    def _modalities_once(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            once_each(value, "modality")
        return value

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"data file not found: {value}")
        return value

    @field_validator("hf")
    @classmethod
    def _hf_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"Hugging Face dataset folder not found: {value}")
        return value

    _factory_syntax = field_validator("factory")(classmethod(lambda cls, v: import_path(v)))

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        chosen = [k for k in ("path", "hf", "factory", "kind") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give one data source, not {' and '.join(chosen)}")
        if self.columns and self.hf is None:
            raise ValueError("columns: only for a Hugging Face dataset (data.hf)")
        if self.split_by is not None and self.source != "npz":
            raise ValueError("split_by: only for an .npz file (data.path) with {split}_<by> arrays")
        return self

    @property
    def source(self) -> str:
        """The name of the registered data source (``kind``, else ``npz``, ``hf``, ``factory``
        or ``builtin`` from the fields)."""
        if self.kind is not None:
            return self.kind
        if self.path is not None:
            return "npz"
        if self.hf is not None:
            return "hf"
        return "factory" if self.factory is not None else "builtin"
