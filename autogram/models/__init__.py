"""Teacher and student builders, each with its named feature taps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autogram.models.builtin import NO_BUILTIN_ENV, build_student, build_teacher, check_builtin_kinds
from autogram.models.taps import Tap, TapPair, compatible_pairs, default_pairs, embedding_taps, resolve_pairs

if TYPE_CHECKING:
    import torch

    from autogram.config import StudentConfig, TeacherConfig

__all__ = [
    "NO_BUILTIN_ENV",
    "Tap",
    "TapPair",
    "build_student",
    "build_teacher",
    "check_builtin_kinds",
    "make_student",
    "model_taps",
    "compatible_pairs",
    "default_pairs",
    "embedding_taps",
    "example_inputs",
    "parameter_count",
    "resolve_pairs",
    "resolved_taps",
]


def make_student(cfg: StudentConfig, data: Any, seed: int) -> torch.nn.Module:
    """A fresh, seeded student from its source (see :mod:`autogram.models.sources`)."""
    from autogram.models.sources import model_source

    return model_source(cfg, "student").student(cfg, data, seed)


def model_taps(model: torch.nn.Module, cfg: StudentConfig | TeacherConfig, data: Any, role: str) -> list[Tap]:
    """The model's taps with shapes: a built-in model's own (unless ``taps`` is set), else found
    by :func:`autogram.models.discover.find_taps` on a real batch."""
    if cfg.taps is None and hasattr(model, "taps"):
        return resolved_taps(model, data)
    from autogram.models.discover import find_taps

    # The tap search's first forward pass is the model's first real call: an output without
    # logits fails there, named (``Adapted.forward``).
    device = next(iter(model.parameters()), None)
    example = {k: v.to(device.device if device is not None else "cpu") for k, v in example_inputs(data, 8).items()}
    return find_taps(model, cfg, example, role, [m.name for m in data.modalities])


def example_inputs(data: Any, n: int = 2) -> dict[str, torch.Tensor]:
    """The first ``n`` training samples as tensors (on the CPU), for shape discovery."""
    import numpy as np
    import torch

    train = data.splits["train"]
    rows = train.rows(np.arange(min(n, len(train))))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items()}


def resolved_taps(model: torch.nn.Module, data: Any) -> list[Tap]:
    """A built-in model's taps with output shapes filled in from one forward pass, run on
    the model's own device (a model on another device than its inputs fails loudly)."""
    from autogram.models.features import with_shapes

    device = next(model.parameters()).device
    example = {k: v.to(device) for k, v in example_inputs(data).items()}
    return with_shapes(model, model.taps(), example)


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
