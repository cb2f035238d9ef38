"""Distillation loss terms as plain functions.

- ``kd_loss``: Hinton et al. 2015, ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean.
- ``gram_loss(kind="sample")``: similarity-preserving KD (Tung & Mori 2019).
- ``gram_loss(kind="channel")``: the per-sample C x C (style) Gram of Gatys et al.
- ``cross_modal_gram_loss``: matches, for each pair of modalities, the B x B matrix of
  cosine similarities between their embeddings in the model's shared space.

The trainer sums ``weight * term`` over the named terms; it knows nothing else about them.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "ce_loss",
    "kd_loss",
    "gram_loss",
    "channel_gram",
    "channel_gram_loss",
    "sample_gram_losses",
    "cross_modal_gram_loss",
]


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor, partial: bool = False) -> torch.Tensor:
    """Cross-entropy with the ground-truth labels. ``partial``: labels < 0 mark unlabelled
    rows, left out of the mean (0 for a batch with none labelled, never NaN)."""
    if not partial:
        return F.cross_entropy(student_logits, labels)
    labelled = labels >= 0
    # No host read of the count: a GPU step must not wait on it.
    total = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none") * labelled
    return total.sum() / labelled.sum().clamp(min=1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch; T^2 always applied
    so the gradient scale does not shrink as T grows."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def _sample_gram(feat: torch.Tensor) -> torch.Tensor:
    flat = feat.reshape(feat.shape[0], -1)
    return F.normalize(flat @ flat.t(), p=2, dim=1)


def channel_gram(feat: torch.Tensor) -> torch.Tensor:
    """Per-sample C x C Gram over positions, divided by the number of positions: (B, C, C).

    ``feat`` is (B, C, P) or (B, C, *spatial); a (B, C) vector counts as one position.
    Cost is O(B * C^2 * P) time and O(B * C^2) memory: quadratic in the width.
    """
    flat = feat.reshape(feat.shape[0], feat.shape[1], -1)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def gram_loss(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    kind: str = "sample",
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Gram-matrix distance between a student and a teacher feature of the same batch.

    ``kind="sample"``: flatten each sample, ``G = F F^T`` (B x B), L2-normalise each row,
    loss ``= ||G_s - G_t||_F^2 / B^2``. Any widths and shapes: only B must agree.

    ``kind="channel"``: per-sample C x C Grams (see :func:`channel_gram`) compared as the
    mean squared difference over batch and entries. Features are (B, C, P...) channels
    first. When the widths differ, ``projection`` (a learned 1x1 map owned by the caller,
    e.g. ``Conv1d(C_s, C_t, 1)``) maps the student's channels to the teacher's first.
    Cost grows with C_t^2: prefer "sample" for wide layers.
    """
    batch = student_feat.shape[0]
    if teacher_feat.shape[0] != batch:
        raise ValueError(f"batch sizes differ: student {batch}, teacher {teacher_feat.shape[0]}")
    if kind == "sample":
        diff = _sample_gram(student_feat) - _sample_gram(teacher_feat)
        return diff.pow(2).sum() / batch**2
    if kind == "channel":
        student = student_feat.reshape(batch, student_feat.shape[1], -1)
        if projection is not None:
            student = projection(student)
        if student.shape[1] != teacher_feat.shape[1]:
            raise ValueError(
                f"channel Gram needs equal widths: student {student.shape[1]}, teacher {teacher_feat.shape[1]}; "
                "pass a projection"
            )
        return (channel_gram(student) - channel_gram(teacher_feat)).pow(2).mean()
    raise ValueError(f"unknown Gram kind {kind!r} (expected 'sample' or 'channel')")


class _Gram(torch.autograd.Function):
    """``x @ x^T`` over the last two dims, with a backward of one matmul instead of two
    (autograd would differentiate through both operands separately)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return x @ x.transpose(-1, -2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return (grad + grad.transpose(-1, -2)) @ x


def gram(x: torch.Tensor) -> torch.Tensor:
    """``x @ x^T`` over the last two dims (a batch of Grams for a 3-D ``x``)."""
    return _Gram.apply(x) if x.requires_grad else x @ x.transpose(-1, -2)


def _raw_grams(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """``F F^T`` of each flattened feature; features of equal width share one batched matmul."""
    flats = [f.reshape(f.shape[0], -1) for f in feats]
    groups: dict[int, list[int]] = {}
    for i, flat in enumerate(flats):
        groups.setdefault(flat.shape[1], []).append(i)
    grams: list[torch.Tensor] = [flats[0]] * len(flats)
    for members in groups.values():
        if len(members) == 1:
            grams[members[0]] = gram(flats[members[0]])
            continue
        batched = gram(torch.stack([flats[i] for i in members]))
        for j, i in enumerate(members):
            grams[i] = batched[j]
    return grams


def sample_gram_losses(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """``gram_loss(s, t, "sample")`` for every pair at once: a (pairs,) tensor.

    The Grams of equal-width features are one batched matmul, and the row normalisation and
    distance run once over all pairs, so the cost is the Gram FLOPs, not per-pair Python.
    A teacher feature may be a (B, k) sketch (see :mod:`autogram.teacher.sketch`): only its inner
    products are used. The teacher side needs no gradient.
    """
    student = torch.stack(_raw_grams(student_feats))
    with torch.no_grad():
        teacher = F.normalize(torch.stack(_raw_grams(teacher_feats)), p=2, dim=2)
    return _NormalizedGramDistance.apply(student, teacher)


class _NormalizedGramDistance(torch.autograd.Function):
    """``|normalize_rows(G) - T|_F^2 / B^2`` per (B, B) slice, with a hand-written backward:
    a few fused tensor ops instead of autograd's chain through norm, clamp, divide, subtract
    and power (on a CPU their dispatch, not their FLOPs, dominated the Gram term)."""

    @staticmethod
    def forward(ctx: Any, grams: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:  # noqa: D102
        norms = grams.norm(dim=2, keepdim=True).clamp_min(1e-12)  # F.normalize's eps
        normalized = grams / norms
        diff = normalized - teacher
        ctx.save_for_backward(normalized, norms, diff)
        return diff.pow(2).sum(dim=(1, 2)) / grams.shape[1] ** 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        normalized, norms, diff = ctx.saved_tensors
        d_normalized = diff * (grad * (2.0 / normalized.shape[1] ** 2)).view(-1, 1, 1)
        radial = (d_normalized * normalized).sum(dim=2, keepdim=True)
        return (d_normalized - normalized * radial) / norms, None


def channel_gram_loss(
    student_feat: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None = None, teacher_is_gram: bool = False
) -> torch.Tensor:
    """``gram_loss(kind="channel")`` computed without forming the C_t x C_t student Gram.

    With ``X`` the student's (C_s, P_s) feature, ``W`` the 1x1 projection (C_t x C_s; the
    identity when widths match), ``Y`` the teacher's (C_t, P_t) feature and ``G_t = Y Y^T/P_t``
    (or the Gram itself when ``teacher_is_gram``, as the teacher cache may store it):

        |G_s - G_t|^2 = |G_s|^2 - 2 <G_s, G_t> + |G_t|^2,   G_s = W X X^T W^T / P_s,

    and each inner product is taken through whichever small matrix is cheapest: the student's
    C_s x C_s Gram ``A`` (``|G_s|^2 = tr(M A M A)``, ``M = W^T W``) when its channels are few,
    else ``V = W X`` and its P_s x P_s Gram when its positions are few
    (``<G_s, G_t> = |V^T Y|^2 / (P_s P_t)``). Per sample this costs about ``C_s^2 P_s`` or
    ``C_t C_s P_s + C_t P_s^2`` instead of ``C_t^2 P_s``. Exact up to float32 rounding.
    """
    batch, c_s = student_feat.shape[0], student_feat.shape[1]
    x = student_feat.reshape(batch, c_s, -1)
    c_t, p_s = teacher.shape[1], x.shape[2]
    if weight is None and c_s != c_t:
        raise ValueError(f"channel Gram needs equal widths: student {c_s}, teacher {c_t}; pass a projection")
    y = None if teacher_is_gram else teacher.reshape(batch, c_t, -1)
    p_t = c_t if y is None else y.shape[2]
    with torch.no_grad():
        if y is None:
            t_sq = teacher.pow(2).sum(dim=(1, 2))
        else:
            t_sq = gram(y.transpose(1, 2) if p_t < c_t else y).pow(2).sum(dim=(1, 2)) / p_t**2
    projected = weight is not None
    by_channels = c_s * c_s * (p_s + p_t) + (c_s**3 + c_s * c_t * p_t if projected else 0)
    by_positions = (c_t * c_s * p_s if projected else 0) + c_t * min(p_s, c_t) * p_s + p_s * c_t * p_t
    if by_positions < by_channels:
        v = weight @ x if projected else x
        s_sq = gram(v.transpose(1, 2) if p_s < c_t else v).pow(2).sum(dim=(1, 2)) / p_s**2
        if y is None:
            cross = ((teacher @ v) * v).sum(dim=(1, 2)) / p_s
        else:
            cross = (v.transpose(1, 2) @ y).pow(2).sum(dim=(1, 2)) / (p_s * p_t)
    else:
        a = gram(x) / p_s
        if projected:
            ma = (weight.t() @ weight) @ a
            s_sq = (ma * ma.transpose(1, 2)).sum(dim=(1, 2))
        else:
            s_sq = a.pow(2).sum(dim=(1, 2))
        if y is None:
            seen = weight.t() @ teacher @ weight if projected else teacher
            cross = (a * seen).sum(dim=(1, 2))
        else:
            z = weight.t() @ y if projected else y
            cross = ((a @ z) * z).sum(dim=(1, 2)) / p_t
    return (s_sq - 2 * cross + t_sq).sum() / (batch * c_t * c_t)


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()


def cross_modal_gram_loss(
    student_embeds: dict[str, torch.Tensor], teacher_embeds: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mean over modality pairs (a, b) of the mean squared difference between the student's
    and the teacher's B x B cosine-similarity matrices of a's vs b's embeddings.

    Needs the same modalities in both dicts; with fewer than two modalities it is 0.
    """
    if set(student_embeds) != set(teacher_embeds):
        raise ValueError(f"modalities differ: {sorted(student_embeds)} vs {sorted(teacher_embeds)}")
    names = sorted(student_embeds)
    pairs = list(combinations(names, 2))
    if not pairs:
        any_tensor = next(iter(student_embeds.values()), torch.zeros(()))
        return any_tensor.new_zeros(())
    total = 0.0
    for a, b in pairs:
        s_sim = _cosine_matrix(student_embeds[a], student_embeds[b])
        t_sim = _cosine_matrix(teacher_embeds[a], teacher_embeds[b])
        total = total + (s_sim - t_sim).pow(2).mean()
    return total / len(pairs)
