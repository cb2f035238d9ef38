"""Multi-modal data containers shared by every data source."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ModalityKind = Literal["image", "spectrogram", "tokens", "waveform", "video", "vector", "timeseries"]
# Kinds whose last two dimensions are a 2-D grid (occlusion / time-frequency masking apply).
GRID_KINDS = ("image", "spectrogram")
SPLITS = ("train", "val", "test")
# Token id 0 is reserved: it pads sequences and stands for a masked / missing token.
MASK_TOKEN = 0


@dataclass(frozen=True)
class Modality:
    """One input modality: its name (from the data source), kind and per-sample shape."""

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    vocab_size: int | None = None

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``image (image, 1x16x16)``."""
        dims = "x".join(str(d) for d in self.shape)
        extra = f", vocab {self.vocab_size}" if self.vocab_size else ""
        return f"{self.name} ({self.kind}, {dims}{extra})"


@dataclass
class Split:
    """Model-ready arrays of one split held in memory: float32 (N,C,...) or int64 (N,L) tokens."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    in_memory = True

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of the samples ``indices``."""
        return {k: v[indices] for k, v in self.inputs.items()}


@dataclass
class LazySplit:
    """A split whose inputs stay where they are (a memory-mapped Arrow table, a user's
    ``Dataset``) and are read by sample index, batch by batch; labels are in memory."""

    reader: Callable[[np.ndarray], dict[str, np.ndarray]]
    labels: np.ndarray
    in_memory = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of the samples ``indices``, read now."""
        return self.reader(np.asarray(indices, dtype=np.int64))

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """Every row at once: only for small splits (tests, examples); loops read by batch."""
        return self.rows(np.arange(len(self)))


@dataclass
class MultiModalData:
    """A classification data set with several modalities and train/val/test splits."""

    modalities: list[Modality]
    num_classes: int
    splits: dict[str, Split | LazySplit]
    source: str
    fingerprint: str = field(default="")
    # Per-modality scale of the noise corruptions: the train standard deviation of data
    # that autogram did not standardise itself (1 for standardised grids).
    noise_scale: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint_splits(self.splits, self.modalities)

    def modality(self, name: str) -> Modality:
        """The modality called ``name``."""
        for modality in self.modalities:
            if modality.name == name:
                return modality
        raise KeyError(name)

    def spec(self) -> DataSpec:
        """What a student factory is told about the data."""
        return DataSpec(modalities=list(self.modalities), num_classes=self.num_classes)


@dataclass(frozen=True)
class DataSpec:
    """The data as a model builder sees it: modalities (name, kind, per-sample shape, vocab)
    and the number of classes."""

    modalities: list[Modality]
    num_classes: int

    def modality(self, name: str) -> Modality:
        """The modality called ``name``."""
        return next(m for m in self.modalities if m.name == name)


def fingerprint_splits(splits: dict[str, Split], modalities: list[Modality]) -> str:
    """A sha256 over every array and modality description: any change in data changes it."""
    digest = hashlib.sha256()
    for modality in modalities:
        digest.update(repr(modality).encode())
    for name in sorted(splits):
        split = splits[name]
        for key in sorted(split.inputs):
            array = np.ascontiguousarray(split.inputs[key])
            digest.update(f"{name}/{key}/{array.dtype}/{array.shape}".encode())
            digest.update(array.tobytes())
        digest.update(np.ascontiguousarray(split.labels).tobytes())
    return digest.hexdigest()
