"""Turn raw ``{split}_{modality}`` arrays (built-in or from an .npz) into model-ready data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autogram.config import ConfigError, DataConfig
from autogram.data.base import SPLITS, Modality, MultiModalData, Split

_NAME_OK = str.isidentifier


def _detect_modalities(arrays: dict[str, np.ndarray], source: str) -> list[str]:
    if "train_label" not in arrays:
        raise ConfigError(f"{source}: no 'train_label' array (expected {{split}}_label)")
    n = arrays["train_label"].shape[0]
    names = []
    for key, array in arrays.items():
        if not key.startswith("train_") or key == "train_label":
            continue
        # 1-D arrays are per-sample scalars (ids, metadata), not modalities.
        if array.ndim >= 2 and array.shape[0] == n:
            names.append(key.removeprefix("train_"))
    if not names:
        raise ConfigError(f"{source}: no modality arrays (expected train_<name> with one row per sample)")
    return sorted(names)


def _kind_of(name: str, array: np.ndarray, cfg: DataConfig, source: str) -> str:
    if name in cfg.modality_kinds:
        kind = cfg.modality_kinds[name]
    elif array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
        kind = "tokens"
    elif array.ndim == 3:
        kind = "image"
    else:
        raise ConfigError(
            f"{source}: array train_{name} has per-sample shape {array.shape[1:]} "
            "(need 2-D grids or 1-D integer token sequences)"
        )
    if kind == "tokens" and (array.ndim != 2 or not np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"{source}: data.modality_kinds.{name}: tokens need a 1-D integer array per sample")
    if kind != "tokens" and array.ndim != 3:
        raise ConfigError(f"{source}: data.modality_kinds.{name}: {kind} needs a 2-D array per sample")
    return kind


def _carve(arrays: dict[str, np.ndarray], keys: list[str], fraction: float, seed: int, into: str) -> None:
    """Move a seeded random ``fraction`` of train rows into a new split ``into``."""
    n = arrays["train_label"].shape[0]
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    for key in keys:
        arrays[f"{into}_{key}"] = arrays[f"train_{key}"][held]
        arrays[f"train_{key}"] = arrays[f"train_{key}"][kept]


def from_arrays(arrays: dict[str, np.ndarray], cfg: DataConfig, source: str) -> MultiModalData:
    """Validate, split and standardise raw arrays into :class:`MultiModalData`."""
    arrays = dict(arrays)
    found = _detect_modalities(arrays, source)
    names = cfg.modalities if cfg.modalities is not None else found
    for name in names:
        if name not in found:
            raise ConfigError(f"{source}: data.modalities: no array train_{name} (found: {', '.join(found)})")
        if not _NAME_OK(name):
            raise ConfigError(f"{source}: modality name {name!r} must be a Python identifier")
    for name in cfg.modality_kinds:
        if name not in names:
            raise ConfigError(f"{source}: data.modality_kinds.{name}: unknown modality (have: {', '.join(names)})")
    keys = [*names, "label"]
    for split, seed_offset in (("val", 0), ("test", 1)):
        if f"{split}_label" not in arrays:
            _carve(arrays, keys, cfg.val_fraction, cfg.split_seed + seed_offset, split)
    if cfg.max_train is not None:
        for key in keys:
            arrays[f"train_{key}"] = arrays[f"train_{key}"][: cfg.max_train]

    labels_all = np.concatenate([arrays[f"{s}_label"] for s in SPLITS])
    if not np.issubdtype(labels_all.dtype, np.integer) or labels_all.min() < 0:
        raise ConfigError(f"{source}: labels must be non-negative integers")
    num_classes = int(labels_all.max()) + 1

    modalities = []
    splits = {s: Split(inputs={}, labels=arrays[f"{s}_label"].astype(np.int64)) for s in SPLITS}
    for name in names:
        for split in SPLITS:
            array = arrays.get(f"{split}_{name}")
            if array is None or array.shape[0] != len(splits[split]):
                raise ConfigError(f"{source}: {split}_{name} is missing or its length differs from {split}_label")
        kind = _kind_of(name, arrays[f"train_{name}"], cfg, source)
        if kind == "tokens":
            vocab = int(max(arrays[f"{s}_{name}"].max() for s in SPLITS)) + 1
            for split in SPLITS:
                splits[split].inputs[name] = arrays[f"{split}_{name}"].astype(np.int64)
            modalities.append(Modality(name, "tokens", tuple(arrays[f"train_{name}"].shape[1:]), vocab))
        else:
            # Standardise with train statistics only, so val/test stay unseen.
            train = arrays[f"train_{name}"].astype(np.float32)
            mean, std = float(train.mean()), float(train.std()) or 1.0
            for split in SPLITS:
                grid = (arrays[f"{split}_{name}"].astype(np.float32) - mean) / std
                splits[split].inputs[name] = grid[:, None, :, :]
            modalities.append(Modality(name, kind, (1, *train.shape[1:])))
    return MultiModalData(modalities=modalities, num_classes=num_classes, splits=splits, source=source)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files if npz[key].dtype.kind in "biuf"}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read as .npz ({exc})") from None


def load_data(cfg: DataConfig) -> MultiModalData:
    """Load the configured data: the built-in set when ``path`` is null, else the .npz."""
    if cfg.path is None:
        from autogram.data.builtin import generate

        return from_arrays(generate(cfg.builtin), cfg, "builtin")
    return from_arrays(read_npz(cfg.path), cfg, str(cfg.path))
