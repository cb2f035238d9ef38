"""``affinity``: TinyCLIP's affinity mimicking between modalities' embeddings."""

from __future__ import annotations

import torch

from autogram.distill.terms.base import Batch, register_term
from autogram.distill.terms.xmodal import CrossModal


@register_term
class Affinity(CrossModal):
    """KL between the teacher's and student's softmaxed cross-modal affinity matrices (both
    directions, every pair of modalities); reads the same embeddings as ``xmodal``."""

    name = "affinity"
    legacy_field = None

    def compute(self, batch: Batch) -> torch.Tensor:
        """The affinity loss, averaged over modality pairs and directions."""
        from autogram.tensors.relations import affinity_loss

        assert batch.teacher is not None
        return affinity_loss(
            {m: batch.feats[t.name].float() for m, t in self.setup.student_embeds.items()},
            {m: batch.teacher.features[t.name] for m, t in self.setup.teacher_embeds.items()},
        )
