"""Turn raw ``{split}_{modality}`` arrays (built-in or from an .npz) into model-ready data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from autogram.config import ConfigError, DataConfig, GroupSplit
from autogram.data.base import SPLITS, Modality, MultiModalData, Split
from autogram.data.checks import (
    check_finite,
    check_split_sizes,
    check_token_ids,
    class_count,
    class_ids,
    infer_kind,
    warn_if_constant,
)

log = logging.getLogger("autogram")

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
        if array.ndim >= 2:
            if array.shape[0] != n:
                raise ConfigError(f"{source}: {key} has {array.shape[0]} rows but train_label has {n}")
            names.append(key.removeprefix("train_"))
    if not names:
        raise ConfigError(f"{source}: no modality arrays (expected train_<name> with one row per sample)")
    return sorted(names)


def _carve(arrays: dict[str, np.ndarray], keys: list[str], fraction: float, seed: int, into: str) -> None:
    """Move a seeded random ``fraction`` of train rows into a new split ``into``."""
    n = arrays["train_label"].shape[0]
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    for key in keys:
        arrays[f"{into}_{key}"] = arrays[f"train_{key}"][held]
        arrays[f"train_{key}"] = arrays[f"train_{key}"][kept]


def _group_ids(arrays: dict[str, np.ndarray], spec: GroupSplit, field: str, source: str) -> list[int]:
    """The integer group values ``spec.<field>`` names (names go through ``{by}_names``)."""
    names = arrays.get(f"{spec.by}_names")
    known = [str(n) for n in names] if names is not None else None
    ids = []
    for group in getattr(spec, field):
        if known is not None and str(group) in known:
            ids.append(known.index(str(group)))
        elif known is None and str(group).lstrip("-").isdigit():
            ids.append(int(group))
        else:
            have = ", ".join(known) if known is not None else "integer values"
            raise ConfigError(f"{source}: data.split_by.{field}: unknown {spec.by} {group!r} (have: {have})")
    return ids


def _val_groups(group: np.ndarray, candidates: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whole groups, in a seeded order, until they hold ``fraction`` of the ``candidates``
    rows' samples; at least one group, and never every group (training keeps one)."""
    groups = np.unique(group[candidates])
    order = np.random.default_rng(seed).permutation(groups)
    target, chosen, held = fraction * candidates.sum(), [], 0
    for g in order[:-1]:
        chosen.append(g)
        held += int((group[candidates] == g).sum())
        if held >= target:
            break
    return np.array(chosen, dtype=group.dtype)


def _regroup(arrays: dict[str, np.ndarray], keys: list[str], spec: GroupSplit, source: str, cfg: DataConfig) -> None:
    """Pool every stored split and cut it again by group: test and val groups out of train
    (val groups named, or chosen by seed; with ``val: random`` validation is carved later)."""
    present = [s for s in SPLITS if f"{s}_label" in arrays]
    for split in present:
        group = arrays.get(f"{split}_{spec.by}")
        if group is None or group.ndim != 1 or not np.issubdtype(group.dtype, np.integer):
            raise ConfigError(f"{source}: data.split_by.by: no 1-D integer array {split}_{spec.by}")
    pooled = {k: np.concatenate([arrays.pop(f"{s}_{k}") for s in present]) for k in [*keys, spec.by]}
    group = pooled[spec.by].astype(np.int64)
    rows = {"test": np.isin(group, _group_ids(arrays, spec, "test", source))}
    if isinstance(spec.val, list) and spec.val:
        rows["val"] = np.isin(group, _group_ids(arrays, spec, "val", source))
    elif spec.val == []:
        if len(np.unique(group[~rows["test"]])) < 2:
            raise ConfigError(
                f"{source}: data.split_by: one {spec.by} is left for training and validation; name val groups "
                "or set data.split_by.val: random"
            )
        chosen = _val_groups(group, ~rows["test"], cfg.val_fraction, cfg.split_seed)
        rows["val"] = np.isin(group, chosen)
        names = arrays.get(f"{spec.by}_names")
        shown = [str(names[g]) if names is not None and 0 <= g < len(names) else str(g) for g in chosen]
        log.info("validation: whole %s group(s) %s, unseen in training (data.split_by)", spec.by, ", ".join(shown))
    rows["train"] = ~np.logical_or.reduce(list(rows.values()))
    for split, mask in rows.items():
        if not mask.any():
            raise ConfigError(f"{source}: data.split_by: the {split} split would be empty")
        for key in keys:
            arrays[f"{split}_{key}"] = pooled[key][mask]


def _refuse_non_numeric(arrays: dict[str, np.ndarray], names: list[str] | None, source: str) -> None:
    """A per-split array of strings (or objects) cannot be a modality: one line, unless the
    config's ``data.modalities`` leaves it out."""
    for key, array in arrays.items():
        split, _, name = key.partition("_")
        if split not in SPLITS or name == "label" or array.dtype.kind in "biuf" or key.endswith("_names"):
            continue
        if names is None or name in names:
            raise ConfigError(
                f"{source}: {key} holds {array.dtype} values: a modality must be numbers (text as integer "
                "token ids); list the modalities to use in data.modalities to leave it out"
            )


def _moments(train: np.ndarray, kind: str) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Mean and std to standardise a float modality: one pair per modality, or per channel for
    a timeseries, whose channels mix units (an accelerometer's m/s^2 beside a gyroscope's rad/s;
    one shared scale would leave the small-unit channels near zero and their noise out of scale)."""
    if kind == "timeseries":
        mean = train.mean(axis=(0, 2), keepdims=True)[0]
        std = train.std(axis=(0, 2), keepdims=True)[0]
        return mean, np.where(std > 0, std, 1.0).astype(np.float32)
    return float(train.mean()), float(train.std()) or 1.0


def from_arrays(arrays: dict[str, np.ndarray], cfg: DataConfig, source: str) -> MultiModalData:
    """Validate, split and standardise raw arrays into :class:`MultiModalData`."""
    arrays = dict(arrays)
    for split in SPLITS:
        if f"{split}_label" in arrays:
            arrays[f"{split}_label"] = class_ids(arrays[f"{split}_label"], f"{source}: {split}_label")
    names = _checked_modalities(arrays, cfg, source)
    keys = [*names, "label"]
    # The file's own splits first, so a message counts the file's rows, not what carving left.
    check_split_sizes({s: len(arrays[f"{s}_label"]) for s in SPLITS if f"{s}_label" in arrays}, source)
    if cfg.split_by is not None:
        _regroup(arrays, keys, cfg.split_by, source, cfg)
    for split, seed_offset in (("val", 0), ("test", 1)):
        if f"{split}_label" not in arrays:
            _carve(arrays, keys, cfg.val_fraction, cfg.split_seed + seed_offset, split)
    if cfg.max_train is not None:
        for key in keys:
            arrays[f"train_{key}"] = arrays[f"train_{key}"][: cfg.max_train]

    check_split_sizes({s: len(arrays[f"{s}_label"]) for s in SPLITS}, source)
    num_classes = class_count({s: arrays[f"{s}_label"] for s in SPLITS}, source)

    modalities = []
    splits = {s: Split(inputs={}, labels=arrays[f"{s}_label"].astype(np.int64)) for s in SPLITS}
    for name in names:
        for split in SPLITS:
            array = arrays.get(f"{split}_{name}")
            if array is None or array.shape[0] != len(splits[split]):
                raise ConfigError(f"{source}: {split}_{name} is missing or its length differs from {split}_label")
        train_array = arrays[f"train_{name}"]
        kind, shape = infer_kind(
            name,
            tuple(train_array.shape[1:]),
            np.issubdtype(train_array.dtype, np.integer),
            cfg.modality_kinds.get(name),
            source,
        )
        if kind == "tokens":
            warn_if_constant(name, float(np.ptp(train_array)) if train_array.size else 0.0, source)
            for split in SPLITS:
                check_token_ids(arrays[f"{split}_{name}"], f"{source}: {split}_{name}")
            vocab = int(max(arrays[f"{s}_{name}"].max() for s in SPLITS)) + 1
            for split in SPLITS:
                splits[split].inputs[name] = arrays[f"{split}_{name}"].astype(np.int64)
            modalities.append(Modality(name, "tokens", tuple(arrays[f"train_{name}"].shape[1:]), vocab))
        else:
            # Standardise with train statistics only, so val/test stay unseen.
            train = train_array.astype(np.float32)
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
                spread = float(train.std())
                mean, std = _moments(train, kind)
            if not (np.isfinite(mean).all() and np.isfinite(std).all()):  # squares past float32's range
                raise ConfigError(
                    f"{source}: train_{name}: values too large to standardise in float32 (largest |x| "
                    f"{float(np.abs(train).max()):.3g}); rescale them (other units)"
                )
            warn_if_constant(name, spread, source)
            for split in SPLITS:
                values = (arrays[f"{split}_{name}"].astype(np.float32) - mean) / std
                splits[split].inputs[name] = values.reshape(len(values), *shape)
            modalities.append(Modality(name, kind, shape))
    return MultiModalData(modalities=modalities, num_classes=num_classes, splits=splits, source=source)


def _checked_modalities(arrays: dict[str, np.ndarray], cfg: DataConfig, source: str) -> list[str]:
    """The modalities to load (``data.modalities``, else every one found), each checked:
    present, a Python identifier, numeric, finite; ``data.modality_kinds`` names only them."""
    found = _detect_modalities(arrays, source)
    names = cfg.modalities if cfg.modalities is not None else found
    _refuse_non_numeric(arrays, names if cfg.modalities is not None else None, source)
    for name in names:
        if name not in found:
            raise ConfigError(f"{source}: data.modalities: no array train_{name} (found: {', '.join(found)})")
        if not _NAME_OK(name):
            raise ConfigError(f"{source}: modality name {name!r} must be a Python identifier")
    for name in cfg.modality_kinds:
        if name not in names:
            raise ConfigError(f"{source}: data.modality_kinds.{name}: unknown modality (have: {', '.join(names)})")
    for name in names:  # before any split is carved, so a sample number is the file's row
        train = arrays[f"train_{name}"]
        for split in SPLITS:
            if f"{split}_{name}" in arrays:
                array = arrays[f"{split}_{name}"]
                # Before a reshape that would pour a same-sized sample of another shape into train's.
                if array.shape[1:] != train.shape[1:]:
                    raise ConfigError(
                        f"{source}: {split}_{name} has samples of shape {array.shape[1:]}, train_{name} "
                        f"{train.shape[1:]}; every split's samples of a modality need one shape"
                    )
                check_finite(array, f"{source}: {split}_{name}")
    return list(names)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz without unpickling anything."""
    import zipfile

    if not zipfile.is_zipfile(path):
        # numpy would try it as a pickle and answer with a hint about allow_pickle.
        raise ConfigError(f"{path}: not an .npz archive (numpy.savez writes one: a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Strings as group names ({by}_names, for data.split_by), and per-split arrays, which
            # are refused as modalities by name (a text modality is not dropped without a word).
            return {
                key: npz[key]
                for key in npz.files
                if npz[key].dtype.kind in "biuf" or key.endswith("_names") or key.split("_", 1)[0] in SPLITS
            }
    except zipfile.BadZipFile as exc:  # a member whose bytes changed: "Bad CRC-32 for file 'x.npy'"
        raise ConfigError(f"{path}: damaged archive ({exc}); write it again with numpy.savez") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read as .npz ({exc})") from None
