"""The loss-term registry: a term is one class, registered by name, that says what it reads.

A term declares whether it reads the teacher, which student and teacher taps it needs (and
what each teacher tap is read for, from which the teacher cache's layout follows), any learned
modules it owns, and how it computes its unweighted value for one batch. The
:class:`~autogram.distill.Objective` builds every term whose weight is above 0 and sums
``weight * term``; nothing else in autogram names a term.

A new term is one module::

    @register_term
    class Cosine(LossTerm):
        name = "cosine"

        def compute(self, batch: Batch) -> torch.Tensor:
            return 1 - F.cosine_similarity(batch.logits, batch.teacher.logits).mean()

and is weighted by ``distill.weights: {cosine: 0.5}`` (searched by
``search.space.weights: {cosine: {low: 0.1, high: 10, log: true, optional: true}}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from autogram.config.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from autogram.config import DistillConfig
    from autogram.models.taps import Tap, TapPair
    from autogram.teacher.signals import TeacherOutput


@dataclass
class TermSetup:
    """What a term may align: the candidate tap pairs and each modality's embedding tap."""

    pairs: list[TapPair] = field(default_factory=list)
    student_embeds: dict[str, Tap] = field(default_factory=dict)
    teacher_embeds: dict[str, Tap] = field(default_factory=dict)


@dataclass
class Batch:
    """One batch as the terms see it: the student's logits (float32) and hooked features, the
    labels (< 0: unlabelled when ``partial_labels``), and the teacher's signals (None: no teacher)."""

    logits: torch.Tensor
    feats: dict[str, torch.Tensor]
    labels: torch.Tensor
    teacher: TeacherOutput | None
    partial_labels: bool = False


class LossTerm:
    """Base class of a registered loss term (see the module docstring)."""

    name: ClassVar[str] = ""
    # Whether the term reads the teacher's signals (a batch without a teacher skips it).
    reads_teacher: ClassVar[bool] = True
    # The DistillConfig / SpaceConfig field that weighted this term before ``weights`` existed
    # (the four built-in terms keep theirs, so old configs mean the same); None for new terms.
    legacy_field: ClassVar[str | None] = None
    # Whether the term aligns the tap pairs (``distill.pairs``): the search samples pairs only
    # when some such term is on.
    reads_pairs: ClassVar[bool] = False

    def __init__(self, cfg: DistillConfig, setup: TermSetup) -> None:
        self.cfg = cfg
        self.setup = setup

    def applies(self) -> bool:
        """False when the term has nothing to work on here (e.g. no tap pairs): it is then off."""
        return True

    def student_taps(self) -> list[Tap]:
        """Student taps to hook for this term."""
        return []

    def teacher_taps(self) -> list[Tap]:
        """Teacher taps this term reads."""
        return []

    def teacher_uses(self) -> dict[str, set[str]]:
        """What each teacher tap is read for (``sample``/``channel`` Gram, ``xmodal``): the cache keeps those forms."""
        return {}

    @classmethod
    def search_uses(cls, space: Any, setup: TermSetup) -> dict[str, set[str]]:
        """What any trial of a search over ``space`` may read from the teacher through this term
        (``setup``: every candidate pair), so one cache serves them all. By default, what the
        term reads under the default settings; a term with searched settings of its own widens it."""
        from autogram.config import DistillConfig

        term = cls(DistillConfig(), setup)
        return term.teacher_uses() if term.applies() else {}

    def modules(self) -> dict[str, nn.Module]:
        """Learned modules, registered on the objective under these names (trained with the student)."""
        return {}

    def compute(self, batch: Batch) -> torch.Tensor:
        """The term's unweighted value for one batch (a scalar)."""
        raise NotImplementedError


class PairTerm(LossTerm):
    """A term that aligns the tap pairs (``distill.pairs``): off without pairs, hooks both sides."""

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


TERMS: Registry[LossTerm] = Registry("loss term", identifiers=True)
register_term = TERMS.register
unregister_term = TERMS.unregister


def outside_terms() -> list[type[LossTerm]]:
    """Registered terms defined outside autogram (a user's, a test's), in registry order: a Ray
    worker, a fresh process, knows only autogram's own until these are shipped to it."""
    return [cls for cls in TERMS.values() if not cls.__module__.startswith("autogram.")]


def active_terms(cfg: DistillConfig, setup: TermSetup) -> dict[str, tuple[LossTerm, float]]:
    """``{name: (term, weight)}`` of every registered term weighted above 0 that applies to
    ``setup``, in registry order (the objective's summation order)."""
    out: dict[str, tuple[LossTerm, float]] = {}
    for name, cls in TERMS.items():
        weight = term_weight(cfg, name)
        if weight > 0:
            term = cls(cfg, setup)
            if term.applies():
                out[name] = (term, weight)
    return out


def teacher_uses(terms: list[LossTerm]) -> dict[str, set[str]]:
    """Teacher tap name -> every form ``terms`` read it in (what the teacher cache must hold)."""
    uses: dict[str, set[str]] = {}
    for term in terms:
        for tap, forms in term.teacher_uses().items():
            uses.setdefault(tap, set()).update(forms)
    return uses


def term_weight(cfg: DistillConfig, name: str) -> float:
    """The weight of term ``name`` in ``cfg``: ``distill.weights`` first, then its legacy field, else 0."""
    if name in cfg.weights:
        return float(cfg.weights[name])
    legacy = TERMS[name].legacy_field if name in TERMS else None
    return float(getattr(cfg, legacy)) if legacy else 0.0


def searched_weights(space: Any) -> dict[str, Any]:
    """``{term: fixed weight or Range}`` of every registered term the search space sets, in
    registry order: the legacy fields of the built-in terms, then ``search.space.weights``.
    A name no term is registered under is an error, not a weight silently left out."""
    TERMS.check(space.weights, "search.space.weights")
    out: dict[str, Any] = {}
    for name, cls in TERMS.items():
        if name in space.weights:
            out[name] = space.weights[name]
        elif cls.legacy_field and hasattr(space, cls.legacy_field):
            out[name] = getattr(space, cls.legacy_field)
    return out


def weight_param(name: str) -> str:
    """The Optuna parameter of term ``name``'s weight: ``w_<name>``, as the built-in terms always had."""
    return f"w_{name}"
