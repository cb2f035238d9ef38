"""Fixed-size sketches of teacher features, and what each loss term needs stored.

The sample-Gram loss reads a batch's features only through the inner products
``<x_i, x_j>`` between its samples. A seeded Gaussian random projection ``z = R^T x``
(``R`` is D x k with N(0, 1/k) entries, Johnson-Lindenstrauss) keeps those inner products
in expectation, so the cache can hold k numbers per sample instead of D = C x P.

Deep features share a large common component, and the sketch's error grows with the
norms it is applied to, so the top ``EXACT_DIMS`` principal directions of the first batch
are kept exactly and only the residual is projected (:class:`Sketcher`): the sketch error
of the loss's gradient fell from 31% to 12% on the quickstart (k = 512, median of 10
batches).

Error bound (documented in the README and checked by the tests). For one sketch draw,
each raw Gram entry's error ``e_ij = <z_i, z_j> - <x_i, x_j>`` has mean 0 and variance
``(|r_i|^2 |r_j|^2 + <r_i, r_j>^2) / k`` (exact for Gaussian R; r is the residual, or x
itself without exact directions, and k the number of random columns). The loss normalises each
Gram row g_i, and ``|a/|a| - b/|b|| <= 2|a - b|/|a|``, so the row-normalised teacher
Grams T (exact) and T' (sketched) satisfy

    E |T' - T|_F^2  <=  (4/k) * sum_i sum_j (|r_i|^2 |r_j|^2 + <r_i, r_j>^2) / |g_i|^2  =: V.

The loss is ``L = |S - T|_F^2 / B^2`` (S the student's normalised Gram), and by the
triangle inequality ``|sqrt(L') - sqrt(L)| <= |T' - T|_F / B``. Hence the RMS error of
``sqrt(L)`` over sketch draws is at most ``sqrt(V)/B``, and for one draw, with probability
at least 1 - delta (Markov), ``|sqrt(L') - sqrt(L)| <= sqrt(V/delta)/B``: both shrink as
``1/sqrt(k)``. The bound is data dependent (:func:`sketch_error_bound` computes it); the
measured error (``autogram bench``) is far below it.

The channel Gram needs the exact C x C matrix per sample: the cache keeps its upper
triangle where that is smaller than the C x P feature, else the feature. Logits and the
cross-modal embeddings are kept whole.
"""

from __future__ import annotations

import hashlib
import math

import torch

# Stored forms of a teacher tap: the canonical feature, its sketch, its channel Gram.
FEATURE, SKETCH, GRAM = "feature", "sketch", "gram"
# What a loss term reads from a teacher tap.
USES = ("sample", "channel", "xmodal")
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Principal directions a sketch keeps exactly (of its k numbers per sample).
EXACT_DIMS = 16
# Rows of R generated at once: bounds the memory of a sketch of a very wide tap.
_CHUNK_ELEMENTS = 1 << 24


def canonical_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """(C, P) of a tap's per-sample output ``shape`` in the canonical layout (P = 1 for vectors)."""
    if not shape:
        raise ValueError("tap has no recorded shape")
    if layout == "tokens_last" and len(shape) >= 2:
        return shape[-1], math.prod(shape[:-1])
    return shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1


def form_for_use(use: str, channels: int, positions: int, sketch: int) -> str:
    """The form a loss term reads a tap in: fixed by the term, the tap's size and ``sketch``
    alone (never by what else the cache holds), so a trial reads the same values whatever
    search space its cache was built for."""
    dim = channels * positions
    if use == "sample":
        return SKETCH if 0 < sketch < dim else FEATURE
    if use == "channel":
        return GRAM if channels * (channels + 1) // 2 < dim else FEATURE
    return FEATURE


def forms_for(uses: set[str], channels: int, positions: int, sketch: int) -> tuple[str, ...]:
    """The forms to store for a tap read by ``uses`` (one per distinct form they read)."""
    forms = {form_for_use(use, channels, positions, sketch) for use in uses} or {FEATURE}
    return tuple(sorted(forms))


def form_elements(form: str, channels: int, positions: int, sketch: int) -> int:
    """Numbers stored per sample for one form of a tap."""
    if form == SKETCH:
        return sketch
    if form == GRAM:
        return channels * (channels + 1) // 2
    return channels * positions


def _seed(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:7], "big")


def _chunk_rows(dim: int, k: int) -> int:
    return max(1, min(dim, _CHUNK_ELEMENTS // max(k, 1)))


def projection_chunks(name: str, dim: int, k: int, seed: int, device: torch.device) -> list[tuple[int, torch.Tensor]]:
    """R (dim x k, entries N(0, 1/k)) for tap ``name`` as (first row, block) chunks. Drawn on
    the CPU from a seed of the tap's name, so every machine and device gets the same R."""
    generator = torch.Generator().manual_seed(_seed(name, seed))
    rows = _chunk_rows(dim, k)
    chunks = []
    for start in range(0, dim, rows):
        block = torch.randn(min(rows, dim - start), k, generator=generator) / math.sqrt(k)
        chunks.append((start, block.to(device)))
    return chunks


class Sketcher:
    """Projects one tap's flattened (B, D) features to (B, k) with a fixed seeded R.

    With ``exact_dims`` m > 0, the first batch fixes an orthonormal basis U of its top m
    (uncentred) principal directions; a feature x is then stored as ``[U^T x, R^T r]`` with
    ``r = x - U U^T x`` and R of k - m columns. Since ``<x_i, x_j> = <U^T x_i, U^T x_j> +
    <r_i, r_j>`` exactly, only the residual's inner products carry sketch error, and deep
    features (which share a large common component) keep far less of their norm there.
    """

    def __init__(self, name: str, dim: int, k: int, seed: int, device: torch.device, exact_dims: int = 0) -> None:
        self.dim, self.k = dim, k
        self.exact_dims = min(exact_dims, k - 1)
        self.chunks = projection_chunks(name, dim, k - self.exact_dims, seed, device)
        self.basis: torch.Tensor | None = None

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        """The sketch of a batch of features (any shape with ``dim`` numbers per sample)."""
        flat = feature.reshape(feature.shape[0], -1).float()
        if flat.shape[1] != self.dim:
            raise ValueError(f"sketch built for {self.dim} numbers per sample, got {flat.shape[1]}")
        exact = flat[:, :0]
        if self.exact_dims:
            if self.basis is None:  # fixed by the first batch, then used for every sample
                _, _, vh = torch.linalg.svd(flat.double(), full_matrices=False)
                self.basis = vh[: self.exact_dims].t().float()
            exact = flat @ self.basis
            flat = flat - exact @ self.basis.t()
        out = flat.new_zeros(flat.shape[0], self.k - self.exact_dims)
        for start, block in self.chunks:
            out += flat[:, start : start + block.shape[0]] @ block
        return torch.cat([exact, out], dim=1)


class CountSketch(torch.nn.Module):
    """A student feature's (B, D) -> (B, k) count sketch, differentiable, in O(B D): each
    coordinate is added with a seeded random sign to one of k buckets. Inner products are
    unbiased, with variance at most ``(|x|^2 |y|^2 + <x, y>^2) / k``, the Gaussian sketch's;
    the buffers are not saved with the model."""

    def __init__(self, name: str, dim: int, k: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(_seed(f"student:{name}", seed))
        self.k = k
        self.register_buffer("bucket", torch.randint(0, k, (dim,), generator=generator), persistent=False)
        signs = torch.randint(0, 2, (dim,), generator=generator).float() * 2 - 1
        self.register_buffer("sign", signs, persistent=False)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """The (B, k) sketch of a (B, ...) feature."""
        flat = feature.reshape(feature.shape[0], -1)
        return flat.new_zeros(flat.shape[0], self.k).index_add_(1, self.bucket, flat * self.sign)


def upper_triangle(gram: torch.Tensor) -> torch.Tensor:
    """(B, C, C) symmetric -> (B, C(C+1)/2), row-major upper triangle."""
    rows, cols = torch.triu_indices(gram.shape[1], gram.shape[1], device=gram.device)
    return gram[:, rows, cols]


def from_upper_triangle(packed: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C(C+1)/2) -> the full symmetric (B, C, C)."""
    rows, cols = torch.triu_indices(channels, channels, device=packed.device)
    full = packed.new_zeros(packed.shape[0], channels, channels)
    full[:, rows, cols] = packed
    full[:, cols, rows] = packed
    return full


def sketch_error_bound(features: torch.Tensor, k: int, basis: torch.Tensor | None = None) -> float:
    """``sqrt(V)/B`` of the module docstring: the RMS bound, over sketch draws, on the error of
    ``sqrt(L)`` when the teacher's (B, ...) ``features`` are sketched to ``k`` random
    dimensions (divide by sqrt(delta) for a bound one draw meets with probability 1 - delta).
    With a :class:`Sketcher`'s exact ``basis``, only the residual ``r`` enters the variance:
    ``V = (4/k) sum_ij (|r_i|^2 |r_j|^2 + <r_i, r_j>^2) / |g_i|^2``."""
    flat = features.reshape(features.shape[0], -1).double()
    residual = flat if basis is None else flat - (flat @ basis.double()) @ basis.double().t()
    row_sq = (flat @ flat.t()).pow(2).sum(dim=1)
    inner = residual @ residual.t()
    sq_norms = inner.diagonal()
    variance = torch.outer(sq_norms, sq_norms) + inner.pow(2)
    total = (4.0 / k) * (variance.sum(dim=1) / row_sq).sum()
    return float(total.sqrt()) / flat.shape[0]
