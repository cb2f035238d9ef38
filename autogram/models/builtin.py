"""The built-in models: the transformer teacher autogram trains and the CNN student."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autogram.config import StudentConfig
    from autogram.models.student import MultiModalCNN
    from autogram.models.teacher import MultiModalTransformer

# A diagnostic switch: when set, building a built-in model raises, so a run on the user's
# own models can prove that no built-in model was constructed anywhere (workers included).
NO_BUILTIN_ENV = "AUTOGRAM_NO_BUILTIN_MODELS"
_BUILTIN_KINDS = ("image", "spectrogram", "tokens", "timeseries")


def _builtin_allowed(what: str) -> None:
    if os.environ.get(NO_BUILTIN_ENV):
        raise RuntimeError(f"the built-in {what} was constructed while {NO_BUILTIN_ENV} is set")


def check_builtin_kinds(data: Any, role: str) -> None:
    """The built-in models read images, spectrograms, tokens and timeseries; say so for others."""
    from autogram.config import ConfigError

    other = [m for m in data.modalities if m.kind not in _BUILTIN_KINDS]
    if other:
        raise ConfigError(
            f"{role}: the built-in {role} reads image, spectrogram, tokens and timeseries modalities; "
            f"{other[0].name!r} is "
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
