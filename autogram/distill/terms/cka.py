"""``cka``: 1 - linear CKA between the batch Grams of each mapped tap pair (no projection)."""

from __future__ import annotations

from typing import Any

import torch

from autogram.distill.terms.base import Batch, PairTerm, TermSetup, register_term


@register_term
class CKA(PairTerm):
    """Mean over the tap pairs (``distill.pairs``, searched like the Gram term's) of 1 - CKA."""

    name = "cka"

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
