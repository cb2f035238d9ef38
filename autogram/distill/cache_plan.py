"""Which teacher taps a cache must hold, and in what form, for a trial or a whole search.

A search's trials draw their loss terms from the space: a tap is worth caching only if a
term the space can weight above 0 may read it, and only in the forms that term says it
reads (``LossTerm.search_uses``; the forms' storage: :func:`autogram.teacher.sketch.forms_for`).
"""

from __future__ import annotations

from typing import Any

from autogram.config import Range, TrialConfig


def _possible(weight: float | Range) -> bool:
    return (weight.high > 0) if isinstance(weight, Range) else weight > 0


def space_uses(cfg: TrialConfig, setup: Any) -> dict[str, set[str]]:
    """Tap name -> the uses any trial of ``cfg``'s search space can make of it: each term the
    space can weight above 0 says what it may read (``setup``: the candidate pairs)."""
    from autogram.distill.terms import TERMS, searched_weights

    space = cfg.search.space
    uses: dict[str, set[str]] = {}
    for name, weight in searched_weights(space).items():
        if _possible(weight):
            for tap, forms in TERMS[name].search_uses(space, setup).items():
                uses.setdefault(tap, set()).update(forms)
    return uses


def trial_uses(cfg: TrialConfig, parts: Any) -> dict[str, set[str]]:
    """The uses of this trial's own terms (``parts``: its ``TrialSetup``), plus those of its
    config's search space (so the trial and a search of the same config share one cache)."""
    from autogram.models import resolve_pairs

    try:
        # With pairs "all" the search's candidates follow from its ranking, which a trial does
        # not have: its own pairs suffice (every compatible pair would cache every layer).
        spec = cfg.search.space.pairs
        candidates = [] if spec == "all" else resolve_pairs(spec, parts.student_taps, parts.teacher_taps)
    except Exception:  # the space names taps of another model: this trial's own pairs suffice
        candidates = []
    from autogram.distill.terms import active_terms, teacher_uses

    uses = space_uses(cfg, parts.term_setup(candidates))
    # This trial's own terms, each saying what it reads.
    setup = parts.term_setup()
    for tap, forms in teacher_uses([term for term, _ in active_terms(cfg.distill, setup).values()]).items():
        uses.setdefault(tap, set()).update(forms)
    return uses


def layout_for(cfg: TrialConfig, teacher_taps: list[Any], uses: dict[str, set[str]]) -> Any:
    """The cache layout for these uses at the config's sketch size and precision."""
    from autogram.teacher.cache import CacheLayout

    return CacheLayout.plan(teacher_taps, uses, cfg.teacher.cache_sketch, cfg.teacher.cache_precision)


def search_layout(cfg: TrialConfig, setup: Any, teacher_taps: list[Any]) -> Any:
    """The layout every trial of a search can be served from (``setup``: the search's candidate
    pairs and embeddings, a ``TermSetup``)."""
    return layout_for(cfg, teacher_taps, space_uses(cfg, setup))
