"""``cka``: 1 - linear CKA between the batch Grams of each mapped tap pair (no projection)."""

from __future__ import annotations

from typing import Any

import torch

from autogram.distill.terms.base import Batch, LossTerm, TermSetup, register_term
from autogram.models.taps import Tap


@register_term
class CKA(LossTerm):
    """Mean over the tap pairs (``distill.pairs``, searched like the Gram term's) of 1 - CKA."""

    name = "cka"
    reads_pairs = True

    def applies(self) -> bool:
        """Off without tap pairs."""
        return bool(self.setup.pairs)

    def student_taps(self) -> list[Tap]:
        """The student side of each pair."""
        return [p.student for p in self.setup.pairs]

    def teacher_taps(self) -> list[Tap]:
        """The teacher side of each pair."""
        return [p.teacher for p in self.setup.pairs]

    def teacher_uses(self) -> dict[str, set[str]]:
        """Each paired teacher tap, read as for the sample Gram (a sketch keeps inner products)."""
        return {p.teacher.name: {"sample"} for p in self.setup.pairs}

    @classmethod
    def search_uses(cls, space: Any, setup: TermSetup) -> dict[str, set[str]]:
        """Every candidate pair's teacher tap, as for the sample Gram."""
        return {p.teacher.name: {"sample"} for p in setup.pairs}

    def compute(self, batch: Batch) -> torch.Tensor:
        """The mean CKA loss over the pairs."""
        from autogram.tensors.relations import cka_loss

        teacher = batch.teacher
        assert teacher is not None
        values = [
            cka_loss(batch.feats[p.student.name].float(), teacher.for_sample_gram(p.teacher.name))
            for p in self.setup.pairs
        ]
        return torch.stack(values).mean()
