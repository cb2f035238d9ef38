"""The modality corruption suite that scores robustness.

For every modality: ``missing`` (zeroed values, or every token masked), Gaussian
``noise`` at each configured severity (any float modality: grids, waveforms, video clips,
feature vectors), and for some kinds one corruption specific to it:

- image: ``occlusion``, a square of half the side zeroed at a random place;
- spectrogram: ``specmask``, one frequency band and one time band (a quarter each) zeroed;
- tokens: ``dropout``, 30% of the tokens replaced by the mask token;
- timeseries (channels x time steps): ``timemask``, one band of a quarter of the time steps
  zeroed on every channel, and ``chandrop``, half of the channels (a random half per sample)
  zeroed over the whole window: a sensor axis failing.

Timeseries are standardised per channel, so their ``noise@s`` is N(0, s^2) in each channel's
own standard deviation: Gaussian noise per channel.

Data autogram standardises (built-in, ``.npz``) has zero as its training mean and
``noise@s`` adds N(0, s^2) in units of its standard deviation; data passed as stored (a
Hugging Face dataset, a factory) gets N(0, (s * train std)^2), the same ladder. Integer
token ids have no meaningful Gaussian noise, so for tokens ``noise@s`` substitutes each
token with a uniformly random id with probability ``min(0.9, 0.2 * s)``: the same "more severity, less signal" ladder.

Every corruption draws from its own generator seeded by (seed, its name): the suite is
deterministic and one corruption's draws do not depend on which others run.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from autogram.data.base import MASK_TOKEN, Modality

TOKEN_DROPOUT = 0.3
# The corruptions one kind has beside ``missing`` and ``noise``.
SPECIFIC = {
    "image": ("occlusion",),
    "spectrogram": ("specmask",),
    "tokens": ("dropout",),
    "timeseries": ("timemask", "chandrop"),
}


@dataclass(frozen=True)
class Corruption:
    """One corruption of one modality, e.g. ``image:noise@1``."""

    modality: str
    kind: str
    severity: float | None = None

    @property
    def name(self) -> str:
        """The stable name used as a metric key."""
        sev = "" if self.severity is None else f"@{self.severity:g}"
        return f"{self.modality}:{self.kind}{sev}"


def suite(modalities: list[Modality], severities: list[float]) -> list[Corruption]:
    """All corruptions scored for these modalities, in a fixed order."""
    out = []
    for modality in modalities:
        out.append(Corruption(modality.name, "missing"))
        out.extend(Corruption(modality.name, "noise", s) for s in severities)
        out.extend(Corruption(modality.name, kind) for kind in SPECIFIC.get(modality.kind, ()))
    return out


def _rng(seed: int, corruption: Corruption, chunk: int | None) -> np.random.Generator:
    # Whole splits in memory are corrupted at once; data read in chunks gets one stream per chunk.
    parts = [seed, zlib.crc32(corruption.name.encode())] + ([] if chunk is None else [chunk])
    return np.random.default_rng(parts)


def _corrupt_float(x: np.ndarray, c: Corruption, rng: np.random.Generator, scale: float) -> np.ndarray:
    n = x.shape[0]
    if c.kind == "missing":
        return np.zeros_like(x)
    if c.kind == "noise":
        return x + rng.normal(0.0, c.severity * scale, size=x.shape).astype(x.dtype)
    height, width = x.shape[-2:]  # grids: (..., H, W); timeseries: (C, T)
    out = x.copy()
    if c.kind == "timemask":
        band = max(1, width // 4)
        t0 = rng.integers(0, width - band + 1, n)
        for i in range(n):
            out[i, :, t0[i] : t0[i] + band] = 0.0
        return out
    if c.kind == "chandrop":
        # argsort of uniform draws: a uniformly random half of the channels for each sample.
        dropped = np.argsort(rng.random((n, height)), axis=1)[:, : max(1, height // 2)]
        out[np.arange(n)[:, None], dropped, :] = 0.0
        return out
    if c.kind == "occlusion":
        side_h, side_w = max(1, height // 2), max(1, width // 2)
        rows = rng.integers(0, height - side_h + 1, n)
        cols = rng.integers(0, width - side_w + 1, n)
        for i in range(n):
            out[i, ..., rows[i] : rows[i] + side_h, cols[i] : cols[i] + side_w] = 0.0
        return out
    if c.kind == "specmask":  # layout (frequency, time), as log-mel spectrograms are stored
        band_f, band_t = max(1, height // 4), max(1, width // 4)
        f0 = rng.integers(0, height - band_f + 1, n)
        t0 = rng.integers(0, width - band_t + 1, n)
        for i in range(n):
            out[i, ..., f0[i] : f0[i] + band_f, :] = 0.0
            out[i, ..., :, t0[i] : t0[i] + band_t] = 0.0
        return out
    raise ValueError(f"unknown corruption {c.kind!r}")


def _corrupt_tokens(x: np.ndarray, c: Corruption, vocab: int, rng: np.random.Generator) -> np.ndarray:
    if c.kind == "missing":
        return np.full_like(x, MASK_TOKEN)
    if c.kind == "noise":
        hit = rng.random(x.shape) < min(0.9, 0.2 * c.severity)
        return np.where(hit, rng.integers(1, max(2, vocab), size=x.shape), x)
    if c.kind == "dropout":
        return np.where(rng.random(x.shape) < TOKEN_DROPOUT, MASK_TOKEN, x)
    raise ValueError(f"unknown token corruption {c.kind!r}")


def apply(
    inputs: dict[str, np.ndarray],
    modalities: list[Modality],
    corruption: Corruption,
    seed: int,
    scale: dict[str, float] | None = None,
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """Return ``inputs`` with one modality corrupted; the others are passed through unchanged.

    ``scale`` is the noise unit per modality (default 1); ``chunk`` numbers a part of a split
    read in chunks, so each part draws from its own seeded stream.
    """
    modality = next(m for m in modalities if m.name == corruption.modality)
    rng = _rng(seed, corruption, chunk)
    x = inputs[modality.name]
    if modality.kind == "tokens":
        corrupted = _corrupt_tokens(x, corruption, modality.vocab_size or 2, rng)
    else:
        corrupted = _corrupt_float(x, corruption, rng, (scale or {}).get(modality.name, 1.0))
    return {**inputs, modality.name: corrupted}


def corrupted_views(
    inputs: dict[str, np.ndarray],
    modalities: list[Modality],
    severities: list[float],
    seed: int,
    scale: dict[str, float] | None = None,
    chunk: int | None = None,
) -> Iterator[tuple[Corruption, dict[str, np.ndarray]]]:
    """Yield each corruption of the suite with its corrupted copy of ``inputs``, one at a time."""
    for corruption in suite(modalities, severities):
        yield corruption, apply(inputs, modalities, corruption, seed, scale, chunk)
