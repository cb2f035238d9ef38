"""What a trial receives from the teacher, behind one small interface.

The training loop asks a :class:`TeacherSignals` for the logits and tapped features of
a batch, identified by its sample indices and its (clean) inputs. :class:`LiveTeacher`
runs the frozen model; a precomputed cache can implement the same call and replace it
without touching the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from autogram.models.features import capture
from autogram.models.taps import Tap
from autogram.tensors.runtime import autocast


@dataclass
class TeacherOutput:
    """The teacher's logits and ``{tap name: canonical feature}`` for one batch; a cache may
    serve a tap's (B, k) sketch (``sketches``, for the sample Gram) or its (B, C, C) channel
    Gram (``grams``) instead of the feature (see :mod:`autogram.teacher.sketch`)."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    sketches: dict[str, torch.Tensor] = field(default_factory=dict)
    grams: dict[str, torch.Tensor] = field(default_factory=dict)

    def for_sample_gram(self, name: str) -> torch.Tensor:
        """What the sample Gram reads for tap ``name``: its sketch if served, else the feature."""
        return self.sketches[name] if name in self.sketches else self.features[name]


class TeacherSignals(Protocol):
    """Anything that returns the teacher's signals for a batch of training samples."""

    taps: list[Tap]

    def __call__(self, indices: torch.Tensor, inputs: dict[str, torch.Tensor]) -> TeacherOutput:
        """Signals for the training samples ``indices`` whose clean inputs are ``inputs``."""
        ...


class LiveTeacher:
    """Runs the frozen teacher forward, hooking only the taps the loss terms need."""

    def __init__(self, model: torch.nn.Module, taps: list[Tap], device: torch.device) -> None:
        self.model = model
        self.taps = list(taps)
        self.device = device

    def __call__(self, indices: torch.Tensor, inputs: dict[str, torch.Tensor]) -> TeacherOutput:
        """Forward the teacher under no_grad; features come back in fp32."""
        del indices  # a live teacher only needs the inputs themselves
        with torch.no_grad(), autocast(self.device), capture(self.model, self.taps) as feats:
            logits = self.model(inputs)
        return TeacherOutput(logits.float(), {k: v.float() for k, v in feats.items()})
