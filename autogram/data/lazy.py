"""Data that stays where it is: splits read row by row from a Hugging Face table or a user's
``Dataset``, checked once (shapes, NaN/inf, labels, vocabulary) by one pass over every split.

The inputs are passed to models as stored (no standardisation: a user's teacher was
trained on them as they are); only 2-D grids get a channel axis, as with ``.npz`` files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from autogram.config import ConfigError, DataConfig
from autogram.data.base import SPLITS, LazySplit, Modality, MultiModalData
from autogram.data.checks import (
    check_finite,
    check_split_sizes,
    check_token_ids,
    class_count,
    class_ids,
    infer_kind,
    warn_if_constant,
)

Fetch = Callable[[np.ndarray], dict[str, np.ndarray]]
SCAN_CHUNK = 512


@dataclass
class RowReader:
    """Reads rows ``index[indices]`` through ``fetch`` and casts them to model-ready arrays."""

    fetch: Fetch
    index: np.ndarray
    shapes: dict[str, tuple[int, ...]]
    tokens: frozenset[str]

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The rows ``indices``, one array per modality."""
        raw = self.fetch(self.index[indices])
        out = {}
        for name, shape in self.shapes.items():
            array = np.asarray(raw[name])
            dtype = np.int64 if name in self.tokens else np.float32
            out[name] = array.astype(dtype, copy=False).reshape(len(indices), *shape)
        return out


@dataclass
class RawSplit:
    """One split as a source offers it: a fetch function over its rows and its labels."""

    fetch: Fetch
    labels: np.ndarray


def _carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    return np.sort(order[cut:]), np.sort(order[:cut])


def build_lazy(
    raw: dict[str, RawSplit], names: list[str], cfg: DataConfig, source: str, identity: str, hash_rows: bool
) -> MultiModalData:
    """Check every split once and wrap it as :class:`LazySplit`s over the original rows.

    ``identity`` names what the rows are (files, factory); with ``hash_rows`` every row's
    bytes enter the fingerprint too (a factory's data has no file to hash).
    """
    if "train" not in raw:
        raise ConfigError(f"{source}: no 'train' split (have: {', '.join(raw) or 'none'})")
    # One class id per sample, once, for the scan and the splits alike.
    raw = {s: RawSplit(split.fetch, class_ids(split.labels, f"{source}: split {s!r}")) for s, split in raw.items()}
    first = raw["train"].fetch(np.arange(1))
    modalities, shapes = [], {}
    for name in names:
        sample = np.asarray(first[name])[0]
        integer = np.issubdtype(sample.dtype, np.integer)
        kind, shape = infer_kind(name, tuple(sample.shape), integer, cfg.modality_kinds.get(name), source)
        shapes[name] = shape
        modalities.append((name, kind, shape))
    tokens = frozenset(n for n, k, _ in modalities if k == "tokens")
    digest = hashlib.sha256(f"{identity}|{modalities}".encode())
    vocab, moments = _scan(raw, names, first, tokens, digest, hash_rows, source)
    index, fetches, labels = _split_rows(raw, cfg, digest)
    splits = {
        s: LazySplit(RowReader(fetches[s], index[s], shapes, tokens), labels[s])
        for s in SPLITS  # type: ignore[arg-type]
    }
    check_split_sizes({s: len(labels[s]) for s in SPLITS}, source)
    num_classes = class_count(dict(labels), source)
    scale = {}
    for name, (count, total, squares) in moments.items():
        mean = total / max(count, 1)
        spread = float(np.sqrt(max(squares / max(count, 1) - mean**2, 0.0)))
        warn_if_constant(name, spread, source)
        scale[name] = spread or 1.0
    return MultiModalData(
        modalities=[Modality(n, k, s, vocab.get(n)) for n, k, s in modalities],  # type: ignore[arg-type]
        num_classes=num_classes,
        splits=splits,
        source=source,
        fingerprint=digest.hexdigest(),
        noise_scale=scale,
    )


def _scan(
    raw: dict[str, RawSplit],
    names: list[str],
    first: dict[str, Any],
    tokens: frozenset[str],
    digest: Any,
    hash_rows: bool,
    source: str,
) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Read every row once, in chunks: check labels, shapes and finite values, hash the
    labels (and rows, with ``hash_rows``) into ``digest``; returns each token modality's
    vocabulary size and each other modality's train moments (count, sum, sum of squares)."""
    vocab = dict.fromkeys(tokens, 1)
    moments: dict[str, list[float]] = {n: [0.0, 0.0, 0.0] for n in names if n not in tokens}
    for split_name, split in raw.items():
        labels = np.asarray(split.labels)
        if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
            raise ConfigError(f"{source}: labels of split {split_name!r} must be non-negative integers")
        digest.update(f"{split_name}/{len(labels)}".encode() + labels.astype(np.int64).tobytes())
        for start in range(0, len(labels), SCAN_CHUNK):
            rows = split.fetch(np.arange(start, min(start + SCAN_CHUNK, len(labels))))
            for name in names:
                array = np.asarray(rows[name])
                if array.shape[1:] != np.asarray(first[name]).shape[1:]:
                    raise ConfigError(
                        f"{source}: {split_name} sample {start}..: modality {name!r} has shape {array.shape[1:]}, "
                        f"the first train sample {np.asarray(first[name]).shape[1:]} (every sample needs the same)"
                    )
                check_finite(array, f"{source}: split {split_name!r}, modality {name!r},", start)
                if name in tokens:
                    check_token_ids(array, f"{source}: split {split_name!r}, modality {name!r},", start)
                    vocab[name] = max(vocab[name], int(array.max(initial=0)) + 1)
                elif split_name == "train":
                    values = array.astype(np.float64)
                    moments[name][0] += values.size
                    moments[name][1] += values.sum()
                    moments[name][2] += np.square(values).sum()
                if hash_rows:
                    digest.update(np.ascontiguousarray(array).tobytes())
    return vocab, moments


def _split_rows(
    raw: dict[str, RawSplit], cfg: DataConfig, digest: Any
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """(row index, reader, labels) per split: validation and test carved from train when the
    source has none, train cut to ``max_train``; each choice enters ``digest``."""
    counts = {name: len(split.labels) for name, split in raw.items()}
    index = {name: np.arange(n) for name, n in counts.items()}
    fetches = {name: split.fetch for name, split in raw.items()}
    labels = {name: np.asarray(split.labels).astype(np.int64) for name, split in raw.items()}
    for split_name, offset in (("val", 0), ("test", 1)):
        if split_name not in raw:  # carved from train, as for .npz files
            kept, held = _carve(len(index["train"]), cfg.val_fraction, cfg.split_seed + offset)
            index[split_name], fetches[split_name] = index["train"][held], fetches["train"]
            labels[split_name] = labels["train"][held]
            index["train"], labels["train"] = index["train"][kept], labels["train"][kept]
            digest.update(f"carved {split_name} {cfg.val_fraction} {cfg.split_seed}".encode())
    if cfg.max_train is not None:
        index["train"], labels["train"] = index["train"][: cfg.max_train], labels["train"][: cfg.max_train]
        digest.update(f"max_train {cfg.max_train}".encode())
    return index, fetches, labels
