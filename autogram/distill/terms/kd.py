"""``kd``: Hinton KD on the logits at ``distill.temperature`` (T^2 always applied)."""

from __future__ import annotations

import torch

from autogram.distill.terms.base import Batch, LossTerm, register_term


@register_term
class HintonKD(LossTerm):
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""

    name = "kd"
    legacy_field = "w_kd"

    def compute(self, batch: Batch) -> torch.Tensor:
        """KD against the teacher's logits."""
        from autogram.tensors.losses import kd_loss

        assert batch.teacher is not None
        return kd_loss(batch.logits, batch.teacher.logits, self.cfg.temperature)
