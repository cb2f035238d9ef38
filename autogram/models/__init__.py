"""Teacher and student builders, each with its named feature taps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autogram.models.taps import Tap, TapPair, default_pairs, embedding_taps, resolve_pairs

if TYPE_CHECKING:
    import torch

    from autogram.config import StudentConfig
    from autogram.data.base import MultiModalData
    from autogram.models.student import MultiModalCNN
    from autogram.models.teacher import MultiModalTransformer

__all__ = [
    "Tap",
    "TapPair",
    "build_student",
    "build_teacher",
    "default_pairs",
    "embedding_taps",
    "example_inputs",
    "parameter_count",
    "resolve_pairs",
    "resolved_taps",
]


def build_teacher(data: MultiModalData, arch: dict[str, int]) -> MultiModalTransformer:
    """A freshly initialised teacher for ``data``'s modalities and classes."""
    from autogram.models.teacher import MultiModalTransformer

    return MultiModalTransformer(data.modalities, data.num_classes, arch)


def build_student(data: MultiModalData, cfg: StudentConfig) -> MultiModalCNN:
    """A freshly initialised student for ``data``'s modalities and classes."""
    from autogram.models.student import MultiModalCNN

    return MultiModalCNN(data.modalities, data.num_classes, cfg)


def example_inputs(data: MultiModalData, n: int = 2) -> dict[str, torch.Tensor]:
    """The first ``n`` training samples as tensors, for shape discovery."""
    import torch

    return {k: torch.from_numpy(v[:n]) for k, v in data.splits["train"].inputs.items()}


def resolved_taps(model: torch.nn.Module, data: MultiModalData) -> list[Tap]:
    """The model's taps with output shapes filled in from one forward pass."""
    from autogram.models.taps import with_shapes

    return with_shapes(model, model.taps(), example_inputs(data))


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
