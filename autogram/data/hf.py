"""A Hugging Face ``DatasetDict`` saved with ``save_to_disk``, read through its memory-mapped
Arrow tables by sample index (never copied whole into memory)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autogram.config import ConfigError, DataConfig
from autogram.data.base import MultiModalData
from autogram.data.lazy import RawSplit, build_lazy

_SPLIT_NAMES = {"train": ("train",), "val": ("val", "validation", "valid", "dev"), "test": ("test",)}


@dataclass
class HFFetch:
    """Rows of one Arrow-backed split by index, as numpy arrays per modality."""

    dataset: Any
    columns: dict[str, str]

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The rows ``indices``, one array per modality."""
        batch = self.dataset[indices.tolist()]
        out = {}
        for modality, column in self.columns.items():
            value = batch[column]
            out[modality] = np.stack(value) if isinstance(value, list) or value.dtype == object else value
        return out


def _files_digest(dataset: Any) -> str:
    digest = hashlib.sha256()
    for entry in dataset.cache_files:
        path = Path(entry["filename"])
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def load_hf(cfg: DataConfig) -> MultiModalData:
    """Load ``cfg.hf`` with ``datasets.load_from_disk`` and check it (see :mod:`autogram.data.lazy`)."""
    import datasets

    assert cfg.hf is not None
    where = f"data.hf {cfg.hf}"
    try:
        loaded = datasets.load_from_disk(str(cfg.hf))
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors for a wrong folder
        raise ConfigError(f"{where}: not a dataset saved with save_to_disk ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    found = {}
    for split, aliases in _SPLIT_NAMES.items():
        name = next((a for a in aliases if a in loaded), None)
        if name is not None:
            found[split] = loaded[name]
    if "train" not in found:
        raise ConfigError(f"{where}: no 'train' split (have: {', '.join(loaded)})")
    columns = dict(cfg.columns)
    label = columns.pop("label", "label")
    available = list(found["train"].column_names)
    names = list(columns) if columns else [c for c in available if c != label]
    if cfg.modalities is not None:
        names = [n for n in names if n in cfg.modalities]
    mapping = {n: columns.get(n, n) for n in names}
    for split, dataset in found.items():
        have = dataset.column_names
        if label not in have:
            raise ConfigError(
                f"{where}: split {split!r} has no label column {label!r} (columns: {', '.join(have)}); "
                "name it with data.columns.label"
            )
        missing = [c for c in mapping.values() if c not in have]
        if missing:
            raise ConfigError(f"{where}: split {split!r} has no column {missing[0]!r} (columns: {', '.join(have)})")
    if not mapping:
        raise ConfigError(f"{where}: no modality columns besides the label {label!r}")
    for name in mapping:
        if not name.isidentifier():
            raise ConfigError(f"{where}: modality name {name!r} must be a Python identifier (rename with data.columns)")
    raw = {}
    identity = [str(sorted(mapping.items())), label]
    for split, dataset in found.items():
        table = dataset.with_format("numpy", columns=[*mapping.values(), label])
        raw[split] = RawSplit(HFFetch(table, mapping), np.asarray(table[label]))
        identity.append(f"{split}:{_files_digest(dataset)}")
    return build_lazy(raw, names, cfg, f"{cfg.hf}", "|".join(identity), hash_rows=False)
