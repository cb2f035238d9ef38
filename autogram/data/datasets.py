"""Data from Python: a factory named by import path, or map-style ``torch.utils.data.Dataset``
objects passed to the Python API. Each item is ``(dict[modality -> tensor], label)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autogram.config import ConfigError, DataConfig
from autogram.data.base import MultiModalData
from autogram.data.lazy import RawSplit, build_lazy


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass
class DatasetFetch:
    """Rows of a map-style dataset by index, stacked per modality."""

    dataset: Any
    names: list[str]

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The rows ``indices``, one array per modality."""
        items = [self.dataset[int(i)][0] for i in indices]
        return {name: np.stack([_numpy(item[name]) for item in items]) for name in self.names}


def _labels(dataset: Any, where: str) -> np.ndarray:
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], dict)):
            raise ConfigError(f"{where}: item {i} is {type(item).__name__}, expected (dict[modality -> tensor], label)")
        label = _numpy(item[1])
        if label.size != 1:  # a one-hot vector, or several targets
            raise ConfigError(f"{where}: item {i}'s label has shape {label.shape}, expected one class id")
        labels.append(label.reshape(()).item())
    # Checked (and made int64) with the other sources' labels: a 1.7 must not become class 1.
    return np.asarray(labels)


def from_datasets(splits: Any, cfg: DataConfig, source: str) -> MultiModalData:
    """Check ``{"train": ds, "val": ds, "test": ds}`` (val and test optional) and wrap it."""
    if not isinstance(splits, dict) or "train" not in splits:
        got = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
        raise ConfigError(f"{source}: expected a dict with a 'train' dataset (and 'val', 'test'), got {got}")
    unknown = set(splits) - {"train", "val", "test"}
    if unknown:
        raise ConfigError(f"{source}: unknown split {sorted(unknown)[0]!r} (expected train, val, test)")
    for split, dataset in splits.items():
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
            raise ConfigError(f"{source}: split {split!r} is not a non-empty map-style dataset")
    first = splits["train"][0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[0], dict)):
        raise ConfigError(f"{source}: train item 0 must be (dict[modality -> tensor], label)")
    names = [n for n in first[0] if cfg.modalities is None or n in cfg.modalities]
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{source}: modality name {name!r} must be a Python identifier")
    raw = {s: RawSplit(DatasetFetch(ds, names), _labels(ds, f"{source}: split {s!r}")) for s, ds in splits.items()}
    identity = f"{source}|{type(splits['train']).__module__}.{type(splits['train']).__qualname__}"
    return build_lazy(raw, names, cfg, source, identity, hash_rows=True)


def load_factory(cfg: DataConfig) -> MultiModalData:
    """Call ``data.factory`` with ``data.kwargs`` and wrap the datasets it returns."""
    from autogram.config.factories import call_factory, resolve_factory

    assert cfg.factory is not None
    fn = resolve_factory(cfg.factory, "data.factory")
    splits = call_factory(fn, "data.factory", cfg.factory, **cfg.kwargs)
    return from_datasets(splits, cfg, f"data.factory {cfg.factory}")
