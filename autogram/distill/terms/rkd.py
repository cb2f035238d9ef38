"""``rkd``: relational KD on each modality's embedding (distance- and angle-wise relations)."""

from __future__ import annotations

import torch

from autogram.distill.terms.base import Batch, LossTerm, register_term
from autogram.models.taps import Tap


@register_term
class RKD(LossTerm):
    """Mean over modalities of RKD between the student's and the teacher's embeddings (any widths)."""

    name = "rkd"

    def _modalities(self) -> list[str]:
        return [m for m in self.setup.student_embeds if m in self.setup.teacher_embeds]

    def applies(self) -> bool:
        """Off when no modality has an embedding on both models."""
        return bool(self._modalities())

    def student_taps(self) -> list[Tap]:
        """Each modality's student embedding."""
        return [self.setup.student_embeds[m] for m in self._modalities()]

    def teacher_taps(self) -> list[Tap]:
        """Each modality's teacher embedding."""
        return [self.setup.teacher_embeds[m] for m in self._modalities()]

    def teacher_uses(self) -> dict[str, set[str]]:
        """The teacher's embeddings, read whole (as the cross-modal term reads them)."""
        return {self.setup.teacher_embeds[m].name: {"xmodal"} for m in self._modalities()}

    def compute(self, batch: Batch) -> torch.Tensor:
        """RKD per modality, averaged."""
        from autogram.tensors.relations import rkd_loss

        assert batch.teacher is not None
        values = [
            rkd_loss(
                batch.feats[self.setup.student_embeds[m].name].float(),
                batch.teacher.features[self.setup.teacher_embeds[m].name],
            )
            for m in self._modalities()
        ]
        return torch.stack(values).mean()
