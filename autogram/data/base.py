"""Multi-modal data containers shared by every data source."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ModalityKind = Literal["image", "spectrogram", "tokens"]
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
    """Model-ready arrays of one split: float32 (N,1,H,W) grids or int64 (N,L) tokens."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class MultiModalData:
    """A classification data set with several modalities and train/val/test splits."""

    modalities: list[Modality]
    num_classes: int
    splits: dict[str, Split]
    source: str
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint_splits(self.splits, self.modalities)

    def modality(self, name: str) -> Modality:
        """The modality called ``name``."""
        for modality in self.modalities:
            if modality.name == name:
                return modality
        raise KeyError(name)


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
