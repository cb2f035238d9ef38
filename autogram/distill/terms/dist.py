"""``dist``: DIST's inter- and intra-class Pearson relations of the softened logits."""

from __future__ import annotations

import torch

from autogram.distill.terms.base import Batch, LossTerm, register_term


@register_term
class DIST(LossTerm):
    """``T^2 * (inter + intra)`` at ``distill.temperature`` (the paper's beta = gamma; the
    weight sets both: its CIFAR recipe is weight 2 at T = 4)."""

    name = "dist"

    def compute(self, batch: Batch) -> torch.Tensor:
        """DIST against the teacher's logits."""
        from autogram.tensors.relations import dist_loss

        assert batch.teacher is not None
        return dist_loss(batch.logits, batch.teacher.logits, self.cfg.temperature)
