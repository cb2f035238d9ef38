"""What every data source checks the same way: a modality's kind and shape, finite values."""

from __future__ import annotations

import logging

import numpy as np

from autogram.config import ConfigError

log = logging.getLogger("autogram")


def infer_kind(
    name: str, sample_shape: tuple[int, ...], integer: bool, declared: str | None, where: str
) -> tuple[str, tuple[int, ...]]:
    """(kind, model-ready per-sample shape) of a modality from one sample's shape and dtype.

    Integer 1-D: tokens. Float 1-D: a vector (or a declared waveform). 2-D: a grid (image, or
    a declared spectrogram) that gets a channel axis, (1, H, W), or a declared timeseries
    (C channels x T steps, kept as it is). 3-D: (C, H, W). 4-D: video.
    """
    dims = len(sample_shape)
    if integer and dims == 1 and declared in (None, "tokens"):
        return "tokens", sample_shape
    if declared == "tokens":
        raise ConfigError(f"{where}: data.modality_kinds.{name}: tokens need a 1-D integer array per sample")
    default = {1: "vector", 2: "image", 3: "image", 4: "video"}.get(dims)
    kind = declared or default
    if kind is None:
        raise ConfigError(f"{where}: modality {name!r} has per-sample shape {sample_shape}: expected 1 to 4 dimensions")
    allowed = {
        "vector": (1,),
        "waveform": (1, 2),
        "image": (2, 3),
        "spectrogram": (2, 3),
        "video": (4,),
        "timeseries": (2,),
    }[kind]
    if dims not in allowed:
        raise ConfigError(
            f"{where}: data.modality_kinds.{name}: {kind} needs {' or '.join(f'{d}-D' for d in allowed)} "
            f"samples{' (channels x time steps)' if kind == 'timeseries' else ''}, got shape {sample_shape}"
        )
    shape = (1, *sample_shape) if kind in ("image", "spectrogram") and dims == 2 else sample_shape
    return kind, shape


# Models train in float32: a float64 value beyond its range becomes inf when cast.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _rows(array: np.ndarray) -> np.ndarray:
    """One row per sample, every value of the sample in it."""
    return array.reshape(array.shape[0], -1)


def _bad(rows_bad: np.ndarray, offset: int) -> tuple[int, int]:
    """(how many samples are bad, the first one's number in the source) of a per-sample mask."""
    return int(rows_bad.sum()), int(np.argmax(rows_bad)) + offset


def check_finite(array: np.ndarray, what: str, offset: int = 0) -> None:
    """Refuse NaN or inf in a float modality, or a value float32 cannot hold (the models'
    dtype: it would become inf): either would train silently into garbage."""
    if np.issubdtype(array.dtype, np.floating):
        rows = _rows(array)
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            count, first = _bad(bad, offset)
            raise ConfigError(
                f"{what} has NaN or inf values in {count} sample(s) (first: sample {first}); clean or drop them"
            )
        if array.dtype.itemsize > 4 and rows.size:
            bad = (np.abs(rows) > _FLOAT32_MAX).any(axis=1)
            if bad.any():
                count, first = _bad(bad, offset)
                raise ConfigError(
                    f"{what} has values beyond float32's range (largest |x| {float(np.abs(rows).max()):.3g}) in "
                    f"{count} sample(s) (first: sample {first}); rescale them (other units)"
                )


# The largest vocabulary a token modality may have (ids 0..MAX_VOCAB-1): ids index an
# embedding, so an id of 10**9 would ask for a billion rows (or overflow torch's sizes).
MAX_VOCAB = 2**24


def check_token_ids(array: np.ndarray, what: str, offset: int = 0) -> None:
    """Refuse a negative, fractional or too large token id: ids index the models' embeddings,
    from 0 (a -1 used as padding ends as an index error deep in a forward pass; 3.7 would
    become token 3; an id of 10**9 would ask for a billion rows)."""
    if not array.size:
        return
    rows = _rows(array)
    if not np.issubdtype(array.dtype, np.integer):
        bad = (rows != np.round(rows)).any(axis=1)
        if bad.any():
            count, first = _bad(bad, offset)
            raise ConfigError(
                f"{what} has fractional token ids ({array.dtype}) in {count} sample(s) (first: sample "
                f"{first}); store whole ids, the same kind as train's"
            )
    if array.max() >= MAX_VOCAB:
        _, first = _bad((rows >= MAX_VOCAB).any(axis=1), offset)
        raise ConfigError(
            f"{what} has token ids up to {int(array.max())} (first: sample {first}): an embedding of that many "
            f"rows; ids must be below {MAX_VOCAB}: map them to 0..V-1 (np.unique(ids, return_inverse=True))"
        )
    if array.min() < 0:
        count, first = _bad((rows < 0).any(axis=1), offset)
        raise ConfigError(
            f"{what} has negative token ids in {count} sample(s) (first: sample {first}, id "
            f"{int(array.min())}); ids index an embedding and start at 0 (pad with 0 or a new id)"
        )


def class_ids(labels: object, where: str) -> np.ndarray:
    """A split's labels as one class id per sample: a column (N x 1, as pandas' ``df[["y"]]``
    gives) becomes 1-D, whole floats and booleans integers; any other shape (one-hot N x K) or
    a fractional id is one line naming it, not a loss that fails deep in a trial (nor a 1.7
    truncated into class 1)."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        hint = "; one-hot? store argmax(axis=1)" if array.ndim == 2 else ""
        raise ConfigError(f"{where}: labels have shape {array.shape}, expected one class id per sample (N,){hint}")
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    if array.dtype.kind == "f":  # ids stored as floats (a pandas column, torch.tensor(1.)): whole ones only
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            first = int(np.argmax(bad))
            raise ConfigError(
                f"{where}: labels must be class ids 0..K-1; sample {first} has {float(array[first]):g} "
                f"({int(bad.sum())} such sample(s))"
            )
        return array.astype(np.int64)
    return array


def class_count(labels: dict[str, np.ndarray], source: str) -> int:
    """The number of classes, K, from every split's labels (by split name), which must be the
    integers 0..K-1 (K distinct values): a gap means a stray label (a 99 among 0..9 would make
    100 classes). A class that only val or test holds is said in a warning: no trial learns it."""
    values = np.concatenate([np.asarray(v).reshape(-1) for v in labels.values()])
    if not np.issubdtype(values.dtype, np.integer) or (values.size and values.min() < 0):
        raise ConfigError(f"{source}: labels must be non-negative integers")
    distinct = np.unique(values)
    if distinct.size and int(distinct[-1]) != distinct.size - 1:
        missing = int(np.setdiff1d(np.arange(int(distinct[-1]) + 1), distinct)[0])
        raise ConfigError(
            f"{source}: labels must be 0..K-1 for K classes; {distinct.size} distinct labels go up to "
            f"{int(distinct[-1])} and no sample has label {missing} (a stray label?)"
        )
    if "train" in labels and distinct.size:
        unseen = np.setdiff1d(distinct, np.asarray(labels["train"]).reshape(-1))
        if unseen.size:
            shown = ", ".join(str(int(c)) for c in unseen[:5]) + (", ..." if unseen.size > 5 else "")
            log.warning(
                "%s: %d class(es) have no training sample, only val/test ones (%s): nothing trained here sees them, "
                "so their samples count against every trial",
                source,
                unseen.size,
                shown,
            )
    return int(distinct.size)


def check_split_sizes(sizes: dict[str, int], source: str) -> None:
    """Every split needs two samples: batches and B x B Grams need two, and an accuracy over
    one sample is 0 or 1 (a split that small is a data mistake, not a small data set)."""
    for split, size in sizes.items():
        if size < 2:
            raise ConfigError(
                f"{source}: the {split} split has {size} sample{'s' if size != 1 else ''}; each split needs at least 2"
                + (" (val is carved from train: give train more samples, or a val split)" if split == "val" else "")
            )


def warn_if_constant(name: str, spread: float, source: str) -> None:
    """A modality with the same value everywhere in train carries no signal: say so."""
    if spread == 0.0:
        log.warning("%s: modality %r has the same value in every training sample: it carries no signal", source, name)
