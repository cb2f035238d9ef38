"""``gram``: the Gram matrices of aligned tap pairs, per sample (``distill.gram_kind: sample``,
similarity-preserving KD) or per channel (``channel``, the C x C style Gram)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from autogram.config import DistillConfig
from autogram.distill.terms.base import Batch, PairTerm, TermSetup, register_term


@register_term
class Gram(PairTerm):
    """Mean Gram loss over the selected tap pairs (all sample-Gram pairs in one batched computation)."""

    name = "gram"
    legacy_field = "w_gram"

    def __init__(self, cfg: DistillConfig, setup: TermSetup) -> None:
        super().__init__(cfg, setup)
        self._modules: dict[str, nn.Module] | None = None

    def modules(self) -> dict[str, nn.Module]:
        """The channel projections and student sketches (names kept from before the registry, so
        training checkpoints still load). Built on first call, by the objective: only it may
        draw their random initial weights from torch's generator."""
        if self._modules is None:
            self._modules = self._build()
        return self._modules

    def _build(self) -> dict[str, nn.Module]:
        from autogram.teacher.sketch import CountSketch

        pairs, kind = self.setup.pairs, self.cfg.gram_kind
        # Channel Grams compare C x C matrices, so a narrower student needs a learned 1x1 map.
        projections = nn.ModuleDict(
            {
                str(i): nn.Conv1d(p.student.channels, p.teacher.channels, kernel_size=1, bias=False)
                for i, p in enumerate(pairs)
                if kind == "channel" and p.student.channels != p.teacher.channels
            }
        )
        # Optional: student features much wider than k are count-sketched before the sample Gram.
        k = self.cfg.student_sketch
        sketches = nn.ModuleDict(
            {
                str(i): CountSketch(p.student.name, math.prod(p.student.shape), k)
                for i, p in enumerate(pairs)
                if kind == "sample" and k and p.student.shape and math.prod(p.student.shape) > 4 * k
            }
        )
        return {"projections": projections, "student_sketches": sketches}

    def teacher_uses(self) -> dict[str, set[str]]:
        """Each paired teacher tap, read for this Gram kind."""
        return {p.teacher.name: {self.cfg.gram_kind} for p in self.setup.pairs}

    @classmethod
    def search_uses(cls, space: Any, setup: TermSetup) -> dict[str, set[str]]:
        """Every candidate pair's teacher tap, in each Gram kind the space allows."""
        kinds = {space.gram_kind} if isinstance(space.gram_kind, str) else set(space.gram_kind)
        return {p.teacher.name: set(kinds) for p in setup.pairs}

    def compute(self, batch: Batch) -> torch.Tensor:
        """The mean Gram loss over the pairs."""
        from autogram.tensors.losses import channel_gram_loss, sample_gram_losses

        teacher, feats, pairs = batch.teacher, batch.feats, self.setup.pairs
        assert teacher is not None
        modules = self.modules()
        sketches, projections = modules["student_sketches"], modules["projections"]
        if self.cfg.gram_kind == "sample":
            students = [
                sketches[str(i)](feats[p.student.name].float()) if str(i) in sketches else feats[p.student.name].float()
                for i, p in enumerate(pairs)
            ]
            return sample_gram_losses(students, [teacher.for_sample_gram(p.teacher.name) for p in pairs]).mean()
        values = []
        for i, pair in enumerate(pairs):
            projection = projections[str(i)] if str(i) in projections else None
            weight = projection.weight[:, :, 0] if projection is not None else None
            name = pair.teacher.name
            served_gram = name in teacher.grams
            target = teacher.grams[name] if served_gram else teacher.features[name]
            values.append(channel_gram_loss(feats[pair.student.name].float(), target, weight, served_gram))
        return torch.stack(values).mean()
