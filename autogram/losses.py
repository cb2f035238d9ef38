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

import torch
import torch.nn.functional as F

__all__ = ["ce_loss", "kd_loss", "gram_loss", "channel_gram", "cross_modal_gram_loss"]


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the ground-truth labels."""
    return F.cross_entropy(student_logits, labels)


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
