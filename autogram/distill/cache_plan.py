"""Which teacher taps a cache must hold, and in what form, for a trial or a whole search.

A search's trials draw their loss terms from the space: a tap is worth caching only if a
candidate pair or the cross-modal term can read it, and only in the forms the Gram kinds
the space allows need (:func:`autogram.teacher.sketch.forms_for`).
"""

from __future__ import annotations

from typing import Any

from autogram.config import Range, TrialConfig


def _kinds(value: str | list[str]) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def _possible(weight: float | Range) -> bool:
    return (weight.high > 0) if isinstance(weight, Range) else weight > 0


def _add(uses: dict[str, set[str]], taps: list[Any], use: set[str]) -> None:
    for tap in taps:
        uses.setdefault(tap.name, set()).update(use)


def space_uses(cfg: TrialConfig, pair_taps: list[Any], teacher_embeds: dict[str, Any]) -> dict[str, set[str]]:
    """Tap name -> the uses any trial of ``cfg``'s search space can make of it (``pair_taps``:
    the teacher taps of the candidate pairs)."""
    from autogram.distill.terms import searched_weights

    space = cfg.search.space
    weights = searched_weights(space)
    uses: dict[str, set[str]] = {}
    if _possible(weights.get("gram", 0.0)):
        _add(uses, pair_taps, _kinds(space.gram_kind))
    if _possible(weights.get("xmodal", 0.0)) and len(teacher_embeds) > 1:
        _add(uses, list(teacher_embeds.values()), {"xmodal"})
    return uses


def trial_uses(cfg: TrialConfig, parts: dict[str, Any]) -> dict[str, set[str]]:
    """The uses of this trial's own terms, plus those of its config's search space (so the
    trial and a search of the same config share one cache)."""
    from autogram.models import resolve_pairs

    try:
        candidates = resolve_pairs(cfg.search.space.pairs, parts["student_taps"], parts["teacher_taps"])
    except Exception:  # the space names taps of another model: this trial's own pairs suffice
        candidates = []
    from autogram.distill.terms import TermSetup, active_terms, teacher_uses

    uses = space_uses(cfg, [p.teacher for p in candidates], parts["teacher_embeds"])
    # This trial's own terms, each saying what it reads.
    setup = TermSetup(parts["pairs"], parts["student_embeds"], parts["teacher_embeds"])
    for tap, forms in teacher_uses([term for term, _ in active_terms(cfg.distill, setup).values()]).items():
        uses.setdefault(tap, set()).update(forms)
    return uses


def layout_for(cfg: TrialConfig, teacher_taps: list[Any], uses: dict[str, set[str]]) -> Any:
    """The cache layout for these uses at the config's sketch size and precision."""
    from autogram.teacher.cache import CacheLayout

    return CacheLayout.plan(teacher_taps, uses, cfg.teacher.cache_sketch, cfg.teacher.cache_precision)


def search_layout(cfg: TrialConfig, candidates: list[str], teacher_taps: list[Any]) -> Any:
    """The layout every trial of a search over ``candidates`` (``student:teacher`` names) can
    be served from."""
    from autogram.models import embedding_taps

    wanted = {c.split(":")[1] for c in candidates}
    pair_taps = [t for t in teacher_taps if t.name in wanted]
    return layout_for(cfg, teacher_taps, space_uses(cfg, pair_taps, embedding_taps(teacher_taps)))
