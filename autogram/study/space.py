"""The search space: YAML ranges -> define-by-run Optuna suggestions -> a trial config.

A layer subset is one fixed 0/1 parameter per candidate pair, ``pair:<student>:<teacher>``
(Optuna cannot take lists, and a categorical whose choices change between trials is
refused); with ``pairs: all`` it is one categorical per student tap, ``map:<student tap>``
(``off`` or one of its candidate teacher taps; see :mod:`autogram.config.pairs`). A
selection outside ``min_pairs``..``max_pairs`` is not repaired: the trial is reported as
``infeasible`` without training and told to Optuna as violating the ``valid`` constraint,
so the sampler learns to avoid it.
"""

from __future__ import annotations

import copy
from typing import Any

from autogram.config import Range, SpaceConfig
from autogram.config.pairs import OFF, PAIR_PREFIX, map_param, mapping_choices, pair_param, selected_pairs

__all__ = [
    "PAIR_PREFIX",
    "PAIR_REDRAWS",
    "SpaceSampler",
    "fixed_values",
    "gram_enabled",
    "gram_possible",
    "gram_weight",
    "pair_param",
    "pair_violation",
    "pair_weights",
    "searched_paths",
    "selected_pairs",
    "trial_config",
]
# Draws of a layer subset outside min_pairs..max_pairs that the searcher tells as infeasible
# and draws again before one goes to a trial as it is (and is reported infeasible there):
# with max_pairs 1 of 6 candidate pairs, 9% of random subsets fit, and 0.91**50 < 1%; each
# draw costs one ask and one tell of the study's storage.
PAIR_REDRAWS = 50

# Searched name -> (config section, field); the loss terms' weights come first (see _targets).
_TARGETS = {
    "temperature": ("distill", "temperature"),
    "gram_kind": ("distill", "gram_kind"),
    "lr": ("train", "lr"),
    "modality_dropout": ("train", "modality_dropout"),
    "input_noise": ("train", "input_noise"),
}


def _targets(space: SpaceConfig) -> list[tuple[str, Any, tuple[str, ...]]]:
    """``(parameter, fixed value or Range, config path)`` of everything the space sets: each
    registered loss term's weight (``w_<term>``), then the other searched values."""
    from autogram.distill.terms import TERMS, searched_weights, weight_param

    out: list[tuple[str, Any, tuple[str, ...]]] = []
    for term, value in searched_weights(space).items():
        legacy = TERMS[term].legacy_field
        # A built-in term keeps writing its w_* field (so trial configs are as before);
        # a new term, or one set through search.space.weights, writes distill.weights.
        path = ("distill", legacy) if legacy and term not in space.weights else ("distill", "weights", term)
        out.append((weight_param(term), value, path))
    out += [(name, getattr(space, name), target) for name, target in _TARGETS.items()]
    return out


def searched_paths(space: SpaceConfig) -> set[str]:
    """The config fields (dotted paths) each trial sets from its own parameters: the searched
    ranges and choices, and the Gram pairs."""
    paths = {".".join(path) for _, value, path in _targets(space) if isinstance(value, Range | list)}
    return paths | {"distill.pairs"}


class SpaceSampler:
    """A picklable define-by-run function: suggests every searched value on an Optuna trial."""

    def __init__(self, space: SpaceConfig, candidates: list[str]) -> None:
        self.space = space
        self.candidates = list(candidates)

    def __call__(self, trial: Any) -> dict[str, Any]:
        """Suggest on ``trial``; returns the fixed (unsearched) values to add to the config."""
        fixed: dict[str, Any] = {}
        from autogram.distill.terms import weight_param

        # The pair-reading terms (Gram, CKA) that may be on; one switched off here leaves the set.
        pair_terms = {weight_param(t) for t, w in pair_weights(self.space).items() if w != 0}
        for name, value, _ in _targets(self.space):
            if value is None:
                continue
            if isinstance(value, Range):
                if value.optional and not trial.suggest_categorical(f"use_{name}", [True, False]):
                    pair_terms.discard(name)
                    continue
                if value.low == value.high:
                    fixed[name] = value.low
                else:
                    trial.suggest_float(name, value.low, value.high, log=value.log)
            elif isinstance(value, list):
                if len(value) == 1:
                    fixed[name] = value[0]
                else:
                    trial.suggest_categorical(name, list(value))
            else:
                fixed[name] = value
        gram_on = bool(pair_terms)
        if gram_on and self.space.pairs == "all":  # which teacher tap, if any, per student tap
            for student, teachers in mapping_choices(self.candidates).items():
                trial.suggest_categorical(map_param(student), [OFF, *teachers])
        elif gram_on:  # the subset only means something when the Gram term is on
            for pair in self.candidates:
                trial.suggest_int(pair_param(pair), 0, 1)
        # Not parameters: let the driver name MLflow runs after Optuna's trial number, and
        # tag the standard recipes enqueued first (autogram/study/baselines.py).
        fixed["trial_number"] = trial.number
        if trial.user_attrs.get("baseline"):
            fixed["baseline"] = trial.user_attrs["baseline"]
        if trial.user_attrs.get("tag"):
            fixed["tag"] = trial.user_attrs["tag"]
        return fixed


def fixed_values(space: SpaceConfig) -> dict[str, float]:
    """The space's values that every trial shares, so no trial has them as parameters (fixed
    weights, temperature, modality dropout), for the front table and the headline."""
    names = ("w_ce", "w_kd", "w_gram", "w_xmodal", "temperature", "modality_dropout")
    fixed: dict[str, Any] = {k: getattr(space, k) for k in names}
    fixed.update({f"w_{k}": v for k, v in space.weights.items()})
    return {k: float(v) for k, v in fixed.items() if isinstance(v, int | float)}


def gram_weight(space: SpaceConfig) -> float | Range:
    """The Gram term's weight in the space (``search.space.weights.gram`` wins over ``w_gram``)."""
    from autogram.distill.terms import searched_weights

    return searched_weights(space).get("gram", 0.0)


def pair_weights(space: SpaceConfig) -> dict[str, float | Range]:
    """The space's weights of the terms that align tap pairs (``reads_pairs``: Gram, CKA)."""
    from autogram.distill.terms import TERMS, searched_weights

    return {t: w for t, w in searched_weights(space).items() if TERMS[t].reads_pairs}


def gram_possible(space: SpaceConfig) -> bool:
    """Whether any point of the space can use a pair-reading term (so tap pairs are searched)."""
    return any(w != 0 for w in pair_weights(space).values())


def gram_enabled(params: dict[str, Any], space: SpaceConfig) -> bool:
    """Whether the sampled point uses a pair-reading term at all (so pair bounds apply)."""
    for term, weight in pair_weights(space).items():
        if isinstance(weight, Range):
            if not weight.optional or params.get(f"use_w_{term}"):
                return True
        elif weight != 0:
            return True
    return False


def trial_config(base: dict[str, Any], params: dict[str, Any], space: SpaceConfig, candidates: list[str]) -> dict:
    """The raw trial config: ``base`` with every sampled or fixed value written in.

    A range marked ``optional`` whose flag is off becomes 0 (the term is skipped).
    """
    raw = copy.deepcopy(base)
    for name, value, path in _targets(space):
        if value is None:
            continue  # not part of the space: the config's own value stands
        if name in params:
            chosen = params[name]
        elif isinstance(value, Range) and value.optional and not params.get(f"use_{name}", False):
            chosen = 0.0
        elif isinstance(value, Range):
            chosen = value.low
        elif isinstance(value, list):
            chosen = value[0]
        else:
            chosen = value
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = chosen
    raw.setdefault("distill", {})["pairs"] = selected_pairs(params, candidates)
    return raw


def pair_violation(params: dict[str, Any], space: SpaceConfig, candidates: list[str]) -> str:
    """Why the selected subset breaks ``min_pairs``/``max_pairs`` ("" when it does not)."""
    if not gram_enabled(params, space):
        return ""
    count = len(selected_pairs(params, candidates))
    most = len(mapping_choices(candidates)) if space.pairs == "all" else len(candidates)
    upper = space.max_pairs if space.max_pairs is not None else most
    if count < space.min_pairs or count > upper:
        return f"{count} tap pairs selected, outside min_pairs..max_pairs = {space.min_pairs}..{upper}"
    return ""
