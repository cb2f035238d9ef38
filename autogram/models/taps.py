"""Named feature taps: the candidate layers a distillation loss may align.

A tap is metadata about one module of a model (timm-style): which modality it belongs
to, how deep it sits (relative depth in (0, 1]), its module path for a forward hook,
and its output shape. Models are never edited to return features; hooks read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from autogram.config import ConfigError

Role = Literal["feature", "embedding"]
# How a module's raw output is laid out; features are canonicalised to (B, C, P).
Layout = Literal["channels_first", "tokens_last", "vector"]


@dataclass(frozen=True)
class Tap:
    """A candidate layer: name, modality, relative depth, module path and output shape."""

    name: str
    modality: str
    depth: float
    module_path: str
    role: Role
    layout: Layout
    shape: tuple[int, ...] = ()

    @property
    def channels(self) -> int:
        """Width seen by the channel Gram (C of the canonical (C, P) view)."""
        if self.layout == "tokens_last":
            return self.shape[-1]
        return self.shape[0]

    def to_dict(self) -> dict[str, object]:
        """The tap as `autogram layers --json` prints it."""
        return {
            "name": self.name,
            "modality": self.modality,
            "depth": self.depth,
            "module_path": self.module_path,
            "shape": list(self.shape),
            "role": self.role,
        }

    def describe(self) -> str:
        """One table row: name, modality, depth, shape and (when it differs from the name) module path."""
        dims = "x".join(str(d) for d in self.shape)
        path = "" if self.module_path == self.name else self.module_path
        return f"{self.name:<20} {self.modality:<12} depth {self.depth:.2f}  {dims:<10} {path}".rstrip()


@dataclass(frozen=True)
class TapPair:
    """A student tap aligned with a teacher tap by the Gram term."""

    student: Tap
    teacher: Tap

    @property
    def name(self) -> str:
        """The pair's id, ``student_tap:teacher_tap``."""
        return f"{self.student.name}:{self.teacher.name}"


def encoder_taps(modality: str, count: int, kind: str, path_prefix: str, layout: Layout) -> list[Tap]:
    """``count`` block taps of one modality's encoder at depths i / (count + 1), then the
    shared embedding (``projections.<modality>``) at depth 1: the layout both models share."""
    taps = [
        Tap(
            name=f"{modality}.{kind}{i + 1}",
            modality=modality,
            depth=(i + 1) / (count + 1),
            module_path=f"{path_prefix}.{i}",
            role="feature",
            layout=layout,
        )
        for i in range(count)
    ]
    taps.append(
        Tap(
            name=f"{modality}.embed",
            modality=modality,
            depth=1.0,
            module_path=f"projections.{modality}",
            role="embedding",
            layout="vector",
        )
    )
    return taps


def canonical(output: object, layout: Layout) -> torch.Tensor:
    """Bring a hooked output to (B, C, P) for grids and sequences, (B, C) for vectors."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):  # e.g. a ModelOutput from a whole sub-model
        output = output[0]  # type: ignore[index]
    if layout == "tokens_last":
        return output.transpose(1, 2)
    if layout == "channels_first" and output.dim() > 3:
        return output.flatten(2)
    return output


def default_pairs(student_taps: list[Tap], teacher_taps: list[Tap]) -> list[TapPair]:
    """Pair each student feature tap with the teacher feature tap of the same modality at the
    nearest relative depth (ties go to the shallower teacher tap)."""
    pairs = []
    for s_tap in student_taps:
        if s_tap.role != "feature":
            continue
        candidates = [t for t in teacher_taps if t.role == "feature" and t.modality == s_tap.modality]
        if candidates:
            best = min(candidates, key=lambda t: (round(abs(t.depth - s_tap.depth), 9), t.depth))
            pairs.append(TapPair(s_tap, best))
    return pairs


def compatible_pairs(student_taps: list[Tap], teacher_taps: list[Tap]) -> list[TapPair]:
    """Every (student feature tap, teacher feature tap) that may be aligned: the same modality
    (a ``fused`` tap with ``fused`` ones), or any two when each model has one modality. A
    student feature tap with no compatible teacher tap is a ConfigError that names it."""
    students = [t for t in student_taps if t.role == "feature"]
    teachers = [t for t in teacher_taps if t.role == "feature"]
    if not students:
        raise ConfigError("search.space.pairs: all: the student has no feature taps to map")
    single = len({t.modality for t in students}) == 1 and len({t.modality for t in teachers}) == 1
    pairs = []
    for s_tap in students:
        matches = [t for t in teachers if single or t.modality == s_tap.modality]
        if not matches:
            have = sorted({t.modality for t in teachers}) or ["none"]
            raise ConfigError(
                f"search.space.pairs: all: student tap {s_tap.name!r} (modality {s_tap.modality}) has no "
                f"teacher feature tap of its modality (teacher modalities: {', '.join(have)})"
            )
        pairs += [TapPair(s_tap, t) for t in matches]
    return pairs


def resolve_pairs(spec: str | list[str], student_taps: list[Tap], teacher_taps: list[Tap]) -> list[TapPair]:
    """Turn ``distill.pairs`` ("auto" or ``student:teacher`` names) or ``search.space.pairs``
    (also "all": every compatible pair) into tap pairs."""
    if spec == "auto":
        return default_pairs(student_taps, teacher_taps)
    if spec == "all":
        return compatible_pairs(student_taps, teacher_taps)
    by_student = {t.name: t for t in student_taps}
    by_teacher = {t.name: t for t in teacher_taps}
    pairs = []
    for item in spec:
        s_name, t_name = item.split(":")
        if s_name not in by_student:
            raise ConfigError(f"distill.pairs: unknown student tap {s_name!r} (have: {', '.join(by_student)})")
        if t_name not in by_teacher:
            raise ConfigError(f"distill.pairs: unknown teacher tap {t_name!r} (have: {', '.join(by_teacher)})")
        pairs.append(TapPair(by_student[s_name], by_teacher[t_name]))
    return pairs


def embedding_taps(taps: list[Tap]) -> dict[str, Tap]:
    """The per-modality embeddings entering fusion: the taps of the cross-modal term."""
    return {t.modality: t for t in taps if t.role == "embedding"}
