"""Teacher and student builders, each with its named feature taps."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from autogram.models.taps import Tap, TapPair, default_pairs, embedding_taps, resolve_pairs

if TYPE_CHECKING:
    import torch

    from autogram.config import StudentConfig, TeacherConfig
    from autogram.models.student import MultiModalCNN
    from autogram.models.teacher import MultiModalTransformer

__all__ = [
    "Tap",
    "TapPair",
    "build_student",
    "build_teacher",
    "check_builtin_kinds",
    "make_student",
    "model_taps",
    "default_pairs",
    "embedding_taps",
    "example_inputs",
    "parameter_count",
    "resolve_pairs",
    "resolved_taps",
]


# A diagnostic switch: when set, building a built-in model raises, so a run on the user's
# own models can prove that no built-in model was constructed anywhere (workers included).
NO_BUILTIN_ENV = "AUTOGRAM_NO_BUILTIN_MODELS"
_BUILTIN_KINDS = ("image", "spectrogram", "tokens")


def _builtin_allowed(what: str) -> None:
    if os.environ.get(NO_BUILTIN_ENV):
        raise RuntimeError(f"the built-in {what} was constructed while {NO_BUILTIN_ENV} is set")


def check_builtin_kinds(data: Any, role: str) -> None:
    """The built-in models read images, spectrograms and tokens; say so for other modalities."""
    from autogram.config import ConfigError

    other = [m for m in data.modalities if m.kind not in _BUILTIN_KINDS]
    if other:
        raise ConfigError(
            f"{role}: the built-in {role} reads image, spectrogram and tokens modalities; {other[0].name!r} is "
            f"{other[0].kind}: give {role}.factory"
        )


def build_teacher(data: Any, arch: dict[str, int]) -> MultiModalTransformer:
    """A freshly initialised built-in teacher for ``data``'s modalities and classes."""
    from autogram.models.teacher import MultiModalTransformer

    _builtin_allowed("teacher")
    check_builtin_kinds(data, "teacher")
    return MultiModalTransformer(data.modalities, data.num_classes, arch)


def build_student(data: Any, cfg: StudentConfig) -> MultiModalCNN:
    """A freshly initialised built-in student for ``data``'s modalities and classes."""
    from autogram.models.student import MultiModalCNN

    _builtin_allowed("student")
    check_builtin_kinds(data, "student")
    return MultiModalCNN(data.modalities, data.num_classes, cfg)


def make_student(cfg: StudentConfig, data: Any, seed: int) -> torch.nn.Module:
    """A fresh, seeded student from its source: built-in, factory or in-memory builder."""
    import torch

    if cfg.source == "builtin":
        torch.manual_seed(seed)
        return build_student(data, cfg)
    from autogram.models.source import build_student_model

    return build_student_model(cfg, data.spec(), seed)


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
