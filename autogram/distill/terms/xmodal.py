"""``xmodal``: match the B x B cosine similarities between modalities' embeddings."""

from __future__ import annotations

import torch

from autogram.distill.terms.base import Batch, LossTerm, register_term
from autogram.models.taps import Tap


@register_term
class CrossModal(LossTerm):
    """For each pair of modalities, the student's cross-modal similarity matrix against the teacher's."""

    name = "xmodal"
    legacy_field = "w_xmodal"

    def applies(self) -> bool:
        """One modality has no cross-modal structure to transfer."""
        return len(self.setup.student_embeds) >= 2

    def student_taps(self) -> list[Tap]:
        """Each modality's student embedding."""
        return list(self.setup.student_embeds.values())

    def teacher_taps(self) -> list[Tap]:
        """Each modality's teacher embedding."""
        return list(self.setup.teacher_embeds.values())

    def teacher_uses(self) -> dict[str, set[str]]:
        """The teacher's embeddings, read as features for the cross-modal matrices."""
        return {tap.name: {"xmodal"} for tap in self.setup.teacher_embeds.values()}

    def compute(self, batch: Batch) -> torch.Tensor:
        """The cross-modal Gram loss, averaged over modality pairs."""
        from autogram.tensors.losses import cross_modal_gram_loss

        assert batch.teacher is not None
        return cross_modal_gram_loss(
            {m: batch.feats[t.name].float() for m, t in self.setup.student_embeds.items()},
            {m: batch.teacher.features[t.name] for m, t in self.setup.teacher_embeds.items()},
        )
