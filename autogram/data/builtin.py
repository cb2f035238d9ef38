"""The built-in, seeded, offline image + token data set.

Ten classes. The image shows one of five shape templates, which identifies the class
only up to the pair ``{2k, 2k+1}``; the token sequence carries keywords of one of five
groups, which identify it up to a *different* pair ``{2k+1, 2k+2}`` (mod 10). Each
modality also carries a marker for the position inside its pair, but the marker lies
30% of the time. So one modality alone reaches about 70% at best, while the two pairs
intersect in exactly one class: a model that combines both modalities can be right
almost always. Losing a modality therefore hurts, measurably.

Each group has ``keywords`` keywords and a sequence shows three of them. With 3 (the
default, the set as it always was) a few dozen labels teach a student everything. With
24 (the quickstart), 300 labelled rows show each of the 120 keywords about seven times,
split over two classes: too few for a student with only those labels to learn the token
half (measured: it stays near 0.5 however long it trains), while a teacher trained on
every row knows it. That is the setting distillation is for (``train.labelled_samples``
keeps the student's labels to the first rows; the rest are an unlabelled transfer set).
"""

from __future__ import annotations

import numpy as np

from autogram.config import BuiltinDataConfig

NUM_CLASSES = 10
_GROUPS = 5
_MARKER_FLIP = 0.3
_KEYWORDS_PER_SEQUENCE = 3


def _templates(rng: np.random.Generator, size: int) -> np.ndarray:
    """Five distinct +-1 block patterns of 4x4 cells, about 3/4 of the image side."""
    cell = max(1, (3 * size) // 16)
    patterns = []
    while len(patterns) < _GROUPS:
        grid = rng.choice([-1.0, 1.0], size=(4, 4))
        # Reject patterns too close to an earlier one or its negative, so groups stay distinct.
        if all(abs((grid * p).sum()) <= 6 for p in patterns):
            patterns.append(grid)
    return np.stack([np.kron(p, np.ones((cell, cell))) for p in patterns])


def _images(rng: np.random.Generator, labels: np.ndarray, templates: np.ndarray, size: int) -> np.ndarray:
    n = labels.shape[0]
    side = templates.shape[1]
    group = labels // 2
    member = labels % 2
    marker = np.where(rng.random(n) < _MARKER_FLIP, 1 - member, member)
    polarity = np.where(marker == 1, 1.0, -1.0)  # the in-pair marker is the template's sign
    amplitude = rng.uniform(0.8, 1.2, size=n)
    images = rng.normal(0.0, 0.5, size=(n, size, size))
    offsets = rng.integers(0, size - side + 1, size=(n, 2))
    for i in range(n):
        r, c = offsets[i]
        images[i, r : r + side, c : c + side] += polarity[i] * amplitude[i] * templates[group[i]]
    return images.astype(np.float32)


def _tokens(rng: np.random.Generator, labels: np.ndarray, seq_len: int, vocab: int, keywords: int) -> np.ndarray:
    n = labels.shape[0]
    keyword_base = vocab - 2 - _GROUPS * keywords
    marker_base = vocab - 2
    group = ((labels + 1) % NUM_CLASSES) // 2
    member = (labels + 1) % 2
    marker = np.where(rng.random(n) < _MARKER_FLIP, 1 - member, member)
    # Filler tokens are 1..keyword_base-1 (0 is the reserved mask token).
    tokens = rng.integers(1, keyword_base, size=(n, seq_len))
    shown = _KEYWORDS_PER_SEQUENCE
    for i in range(n):
        slots = rng.choice(seq_len, size=shown + 2, replace=False)
        words = keyword_base + group[i] * keywords + rng.integers(0, keywords, shown)
        tokens[i, slots[:shown]] = words
        tokens[i, slots[shown]] = marker_base + marker[i]
        if rng.random() < 0.5:  # one distractor keyword from another group
            other = (group[i] + rng.integers(1, _GROUPS)) % _GROUPS
            tokens[i, slots[shown + 1]] = keyword_base + other * keywords + rng.integers(0, keywords)
    return tokens.astype(np.int64)


def generate(cfg: BuiltinDataConfig) -> dict[str, np.ndarray]:
    """Generate the arrays ``{split}_image``, ``{split}_tokens``, ``{split}_label``."""
    rng = np.random.default_rng(cfg.seed)
    templates = _templates(rng, cfg.image_size)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
        arrays[f"{split}_image"] = _images(rng, labels, templates, cfg.image_size)
        arrays[f"{split}_tokens"] = _tokens(rng, labels, cfg.seq_len, cfg.vocab_size, cfg.keywords)
        arrays[f"{split}_label"] = labels
    return arrays
