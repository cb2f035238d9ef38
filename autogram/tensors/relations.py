"""Relation losses between a student's and a teacher's batch signals (formulas from the papers,
code written here). Each is 0 when the student's signals equal the teacher's.

- :func:`dist_loss`: DIST (Huang et al., NeurIPS 2022): Pearson relations of the softened
  class probabilities, between classes per sample (inter) and between samples per class (intra).
- :func:`rkd_loss`: RKD (Park et al., CVPR 2019): distance-wise and angle-wise relations of
  embeddings across the batch, Huber-compared.
- :func:`cka_loss`: 1 - linear CKA (Kornblith et al., 2019) of the two batch Gram matrices.
- :func:`affinity_loss`: affinity mimicking (TinyCLIP, ICCV 2023): KL between the teacher's and
  the student's row-softmaxed cross-modal similarity matrices, both directions.
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F

# RKD's angle term weighs twice its distance term (the paper's lambda_D = 1, lambda_A = 2).
RKD_ANGLE = 2.0
# The softmax temperature of the affinity matrices (cosines in [-1, 1]); CLIP's learned one
# ends near 0.01, TinyCLIP distils at the teacher's; 0.1 keeps a 64-sample batch's rows soft.
AFFINITY_TAU = 0.1


def _pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """1 - Pearson correlation of ``a`` and ``b`` along ``dim`` (one value per other index)."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return 1 - F.cosine_similarity(a, b, dim=dim, eps=1e-8)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * (inter + intra)``: inter = mean over samples of 1 - Pearson(student's, teacher's
    class probabilities); intra = mean over classes of 1 - Pearson across the batch."""
    ys = F.softmax(student_logits / temperature, dim=1)
    yt = F.softmax(teacher_logits.to(student_logits.dtype) / temperature, dim=1)
    inter = _pearson_distance(ys, yt, dim=1).mean()
    intra = _pearson_distance(ys, yt, dim=0).mean()
    return temperature**2 * (inter + intra)


def _distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances (B, B), with a gradient that stays finite at 0."""
    squared = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt() * (1 - torch.eye(len(x), device=x.device, dtype=x.dtype))


def _angles(x: torch.Tensor) -> torch.Tensor:
    """``<e_ij, e_kj>`` for every (i, j, k): e_ij the unit vector from x_j to x_i (B, B, B)."""
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # e[j, i] = unit(x_i - x_j)
    return torch.bmm(e, e.transpose(1, 2))


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber(distances / their mean) + RKD_ANGLE * Huber(angles), student against teacher; any widths."""
    s = student.reshape(len(student), -1)
    t = teacher.reshape(len(teacher), -1).to(s.dtype)
    ds, dt = _distances(s), _distances(t)
    pairs = len(s) * (len(s) - 1)  # off the diagonal; a constant batch has mean distance 0, kept finite
    distance = F.smooth_l1_loss(ds / (ds.sum() / pairs).clamp_min(1e-12), dt / (dt.sum() / pairs).clamp_min(1e-12))
    angle = F.smooth_l1_loss(_angles(s), _angles(t))
    return distance + RKD_ANGLE * angle


def _centred(gram: torch.Tensor) -> torch.Tensor:
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def cka_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - linear CKA of the (B, ...) features' sample Grams (the teacher's may be a sketch:
    it keeps inner products); no projection between widths is needed."""
    s = student.reshape(len(student), -1)
    t = teacher.reshape(len(teacher), -1).to(s.dtype)
    ks, kt = _centred(s @ s.t()), _centred(t @ t.t())
    return 1 - (ks * kt).sum() / (ks.norm() * kt.norm()).clamp_min(1e-12)


def affinity_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over modality pairs (a, b) and both directions of KL(teacher || student) between the
    row-softmaxed cosine affinities of a's embeddings to b's (B x B) at AFFINITY_TAU."""
    pairs = list(combinations(sorted(student), 2))
    total = student[pairs[0][0]].new_zeros(())
    for a, b in pairs:
        s = F.normalize(student[a].flatten(1), dim=1) @ F.normalize(student[b].flatten(1), dim=1).t()
        ta, tb = (teacher[m].flatten(1).to(s.dtype) for m in (a, b))
        t = F.normalize(ta, dim=1) @ F.normalize(tb, dim=1).t()
        for s_aff, t_aff in ((s, t), (s.t(), t.t())):
            log_s = F.log_softmax(s_aff / AFFINITY_TAU, dim=1)
            log_t = F.log_softmax(t_aff / AFFINITY_TAU, dim=1)
            total = total + F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return total / (2 * len(pairs))
