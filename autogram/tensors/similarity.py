"""Width-free similarity of two layers' representations: linear CKA on sample Gram matrices.

Linear CKA (Kornblith et al., 2019) compares the n x n Gram matrices K = X X^T and
L = Y Y^T of two layers on the same n samples: after double centring (Kc = H K H),
CKA = <Kc, Lc>_F / (||Kc||_F ||Lc||_F), in [0, 1]. It does not care about either
layer's width or shape, nor about an orthogonal transform or a scale of either.

Each sample's feature is L2-normalised first (a cosine kernel, as the sample Gram term's
rows are): without it, whatever makes some samples' features larger than others (an input's
overall energy, which any layer passes on) dominates every Gram and hides what a layer
encodes. Measured on a planted teacher (tests/fixtures_byo/planted_models.py, a per-sample
input scale): the class-carrying layer ranked first for 1 of 4 deepest student taps without
the normalisation, 4 of 4 with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A sample's feature is average-pooled over positions down to about this many numbers before
# its Gram: the Gram's n x n size is what the comparison needs, and a ViT layer's 197 x 768
# values per sample would otherwise cost gigabytes for a few hundred samples.
MAX_VALUES = 4096


def flat_feature(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, P) or (B, C) -> (B, D), positions average-pooled so that D <= ~MAX_VALUES."""
    if feat.dim() == 3 and feat.shape[1] * feat.shape[2] > MAX_VALUES:
        positions = max(1, MAX_VALUES // feat.shape[1])
        feat = F.adaptive_avg_pool1d(feat.float(), positions)
    return feat.reshape(feat.shape[0], -1).float()


def centred_gram(flat: torch.Tensor) -> torch.Tensor:
    """The double-centred cosine Gram H (X X^T) H of row-normalised X, scaled to unit
    Frobenius norm (float64); all zeros for a constant feature."""
    x = F.normalize(flat.double(), dim=1)
    x = x - x.mean(dim=0, keepdim=True)  # centring X's columns centres the Gram on both sides
    gram = x @ x.t()
    norm = gram.norm()
    # Below 1e-9 (entries are cosines, O(1)) the centred Gram is rounding error: a constant feature.
    return gram / norm if norm > 1e-9 else torch.zeros_like(gram)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA of two (n, D) feature matrices on the same n samples, rows L2-normalised
    (0 for a constant one)."""
    return float((centred_gram(a) * centred_gram(b)).sum())
