"""``ce``: cross-entropy with the ground-truth labels (rows without a label left out)."""

from __future__ import annotations

import torch

from autogram.distill.terms.base import Batch, LossTerm, register_term


@register_term
class CrossEntropy(LossTerm):
    """The only term that reads labels and not the teacher."""

    name = "ce"
    reads_teacher = False
    legacy_field = "w_ce"

    def compute(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over the labelled rows."""
        from autogram.tensors.losses import ce_loss

        return ce_loss(batch.logits, batch.labels, batch.partial_labels)
