"""Standard recipes run as the first trials of every search, and the verdict against them.

A user runs autogram to learn whether a searched recipe beats what they would have done
by hand. So each search first runs, with fixed parameters, the plain recipes its space
allows (``search.baselines``):

- ``ce``: cross-entropy only;
- ``kd``: Hinton KD (``w_kd`` 1, temperature 4);
- ``kd_gram_all``: KD + the sample Gram on every candidate pair (``w_gram`` 3000, the
  similarity-preserving KD paper's weight); with ``pairs: all``, each student tap with its
  nearest-depth teacher tap (the mapping a user would pick by hand);
- ``kd_xmodal``: KD + the cross-modal term (``w_xmodal`` 10);
- named in ``search.baselines`` only: ``ce_moddrop`` and ``kd_moddrop``, ``ce`` and ``kd``
  with modality dropout 0.5 (ModDrop: the honest comparison for robustness to a missing
  modality, which needs no teacher); ``dist``, DIST without KD (``w_dist`` 2 at
  temperature 4, its paper's CIFAR recipe), when the space weights ``dist``.

Every other searched value (learning rate, modality dropout) takes the base config's value.
A value outside the space's range is clipped into it. The baselines are enqueued in the
Optuna study (``study.enqueue_trial``), count toward ``--trials``, carry ``baseline=<name>``
and can be on the front. At the end, :func:`verdict` says which front points dominate each
baseline, and by how much.
"""

from __future__ import annotations

import logging
from typing import Any

from autogram.config import ConfigError, Range, SpaceConfig
from autogram.config.pairs import OFF, map_param, pair_param

log = logging.getLogger("autogram")
# Run by default (search.baselines: null), each when the space allows it.
BASELINES = ("ce", "kd", "kd_gram_all", "kd_xmodal")
# Run when named in search.baselines (the default set stays what searches and their resumes
# have always enqueued): the teacher-free robust recipes and DIST.
NAMED_ONLY = ("ce_moddrop", "kd_moddrop", "dist")
# The recipes' fixed values (clipped into the space's ranges).
RECIPES: dict[str, dict[str, float]] = {
    "ce": {},
    "kd": {"w_kd": 1.0},
    "kd_gram_all": {"w_kd": 1.0, "w_gram": 3000.0},
    "kd_xmodal": {"w_kd": 1.0, "w_xmodal": 10.0},
    "ce_moddrop": {},
    "kd_moddrop": {"w_kd": 1.0},
    "dist": {"w_dist": 2.0},
}
TEMPERATURE = 4.0
MODDROP = 0.5  # ModDrop's modality dropout (clipped into the space's range)


def _fixed_value(name: str, wanted: float, value: float | Range) -> tuple[dict[str, Any], str]:
    """The parameters that set searched term weight ``name`` (space entry ``value``) to ``wanted``
    (0: off); "" or why it cannot."""
    if isinstance(value, Range):
        if wanted == 0:
            return ({f"use_{name}": False}, "") if value.optional else ({}, f"{name} cannot be switched off")
        clipped = min(max(wanted, value.low), value.high)
        params: dict[str, Any] = {f"use_{name}": True} if value.optional else {}
        if value.low != value.high:
            params[name] = clipped
        return params, ""
    if (value == 0) != (wanted == 0):
        return {}, f"{name} is fixed at {value:g}"
    return {}, ""


def _plain(name: str, space: SpaceConfig, base: dict[str, Any]) -> dict[str, Any]:
    """Temperature, learning rate, modality dropout, input noise and Gram kind at the recipe's values."""
    params: dict[str, Any] = {}
    wanted = {
        "temperature": TEMPERATURE,
        "lr": base.get("train", {}).get("lr", 3e-3),
        "modality_dropout": MODDROP if name.endswith("_moddrop") else base.get("train", {}).get("modality_dropout", 0),
        "input_noise": base.get("train", {}).get("input_noise", 0.0),
    }
    for key, target in wanted.items():
        value = getattr(space, key)
        if isinstance(value, Range) and value.low != value.high:
            params[key] = min(max(float(target), value.low), value.high)
    if isinstance(space.gram_kind, list) and len(space.gram_kind) > 1:
        params["gram_kind"] = "sample" if "sample" in space.gram_kind else space.gram_kind[0]
    return params


def baseline_params(
    name: str, space: SpaceConfig, candidates: list[str], base: dict[str, Any], defaults: dict[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """The fixed Optuna parameters of baseline ``name``, or ``({}, why the space does not allow it)``;
    ``defaults`` (``pairs: all`` only): each student tap's nearest-depth teacher tap."""
    recipe = RECIPES[name]
    params = _plain(name, space, base)
    from autogram.distill.terms import searched_weights, weight_param

    weights = searched_weights(space)
    for param in recipe:
        if param.removeprefix("w_") not in weights:
            return {}, f"{param} is not in the space (search.space.weights.{param.removeprefix('w_')})"
    if name.endswith("_moddrop"):
        dropout = params.get("modality_dropout", space.modality_dropout)
        if not (dropout.low if isinstance(dropout, Range) else dropout):  # fixed at 0 (or a range pinned there)
            return {}, "modality dropout is fixed at 0"

    # Every registered term but cross-entropy takes the recipe's weight (0 when the recipe does
    # not name it): a term added to the registry is off in every baseline, never sampled.
    for term, value in weights.items():
        if term == "ce":
            continue
        param = weight_param(term)
        fixed, why = _fixed_value(param, recipe.get(param, 0.0), value)
        if why:
            return {}, why
        params.update(fixed)
    gram_on = recipe.get("w_gram", 0.0) > 0
    if gram_on and defaults is not None:
        if not defaults:
            return {}, "no student tap has a teacher tap of its modality at a nearest depth"
        if space.max_pairs is not None and space.max_pairs < len(defaults):
            return {}, f"max_pairs ({space.max_pairs}) is below the {len(defaults)} student taps"
        students = {c.split(":")[0] for c in candidates}
        params.update({map_param(s): defaults.get(s, OFF) for s in sorted(students)})
        return params, ""
    if gram_on:
        if not candidates:
            return {}, "there are no candidate pairs"
        if space.max_pairs is not None and space.max_pairs < len(candidates):
            return {}, f"max_pairs ({space.max_pairs}) is below the {len(candidates)} candidate pairs"
    if gram_on:  # every candidate pair on (the flags are only suggested while the term is on)
        params.update({pair_param(c): 1 for c in candidates})
    return params, ""


def plan_baselines(
    names: list[str] | None,
    space: SpaceConfig,
    candidates: list[str],
    base: dict[str, Any],
    defaults: dict[str, str] | None = None,
    idle: set[str] | frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """``{baseline: fixed params}``: every standard recipe the space allows when ``names`` is
    None; the named ones otherwise (one the space does not allow is a ConfigError). A recipe
    weighting a term of ``idle`` (one that applies to no trial) would repeat another recipe:
    it is left out, with a warning when named."""
    planned = {}
    for name in BASELINES if names is None else names:
        off = sorted(term for p, w in RECIPES.get(name, {}).items() if w and (term := p.removeprefix("w_")) in idle)
        if off:
            (log.info if names is None else log.warning)(
                "baseline %s skipped: the %s term applies to no trial here", name, " and ".join(off)
            )
            continue
        params, why = baseline_params(name, space, candidates, base, defaults)
        if why:
            if names is not None:
                raise ConfigError(f"search.baselines: {name} is not in this search space: {why}")
            log.info("baseline %s skipped: %s", name, why)
            continue
        planned[name] = params
    return planned


def prior_params(space: SpaceConfig, best: dict[str, str], students: list[str]) -> dict[str, Any]:
    """The Optuna parameters of the prior's best mapping (``best``: student tap -> teacher tap;
    other ``students`` off) with the Gram term on; every other value is left to the sampler."""
    from autogram.study.space import gram_weight

    weight = gram_weight(space)
    params: dict[str, Any] = {"use_w_gram": True} if isinstance(weight, Range) and weight.optional else {}
    params.update({map_param(s): best.get(s, OFF) for s in students})
    return params


def enqueue_baselines(
    study: Any, planned: dict[str, dict[str, Any]], trials: int, prior: dict[str, Any] | None = None
) -> list[str]:
    """Enqueue the baselines as the study's first trials, at most ``trials`` of them (an
    enqueued trial never asked would end as a failed one), then the prior's best mapping
    (``prior``, tagged ``prior``) when a trial is left; not again on a resumed study.
    Returns the names enqueued."""
    if (not planned and not prior) or study.get_trials(deepcopy=False):
        return []
    names = list(planned)[:trials]
    if len(names) < len(planned):
        log.warning(
            "only %d trial(s): baselines %s left out (raise --trials to run them)",
            trials,
            ", ".join(list(planned)[trials:]),
        )
    for name in names:
        study.enqueue_trial(planned[name], user_attrs={"baseline": name}, skip_if_exists=False)
    if prior and len(names) < trials:
        study.enqueue_trial(prior, user_attrs={"tag": "prior"}, skip_if_exists=False)
        names.append("prior")
    return names
