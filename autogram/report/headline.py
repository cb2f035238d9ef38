"""The search's outcome in plain words: the best recipe for each objective, what it gains over
each baseline and at what cost, and whether any searched trial beat the baselines."""

from __future__ import annotations

from typing import Any

# Parameters that switch a pair on: "pair:<s>:<t>" flags (listed candidates) and "map:<s>"
# choices (pairs: all; "none" leaves the student tap unmapped).
_PAIR_PREFIXES = ("pair:", "map:")


def recorded_terms(trial: dict[str, Any]) -> list[str] | None:
    """The terms that ran in ``trial`` as it recorded them (``terms``, ``"ce+kd+gram"``); None for
    a trial written before the record was kept."""
    return None if trial.get("terms") is None else [t for t in str(trial["terms"]).split("+") if t]


def recipe_words(trial: dict[str, Any], fixed: dict[str, float] | None = None) -> str:
    """A trial named by what it is: a baseline by its name, a searched trial by the terms that
    ran, the pairs they aligned and its modality dropout (sampled, or the space's ``fixed`` one).

    The terms come from the trial's own record (``terms``, ``pairs_aligned``) where it has one:
    a sampled weight can apply to nothing (a Gram term with no pair selected) and a weight the
    space fixes is no parameter. A front.json written before they were kept falls back on the
    parameters."""
    if trial.get("baseline"):
        return f"baseline {trial['baseline']} (trial {trial['number']})"
    params = trial["params"]
    recorded = recorded_terms(trial)
    if recorded is not None:
        terms = recorded
        pairs = int(trial.get("pairs_aligned") or 0)
        nothing = "no loss term"
    else:
        terms = [
            key.removeprefix("w_")
            for key in params
            if key.startswith("w_") and params.get(f"use_{key}", True) and float(params[key]) > 0
        ]
        pairs = sum(1 for k, v in params.items() if k.startswith(_PAIR_PREFIXES) and v not in (0, "none", None))
        nothing = "the space's fixed weights"
    parts = [" + ".join(terms) if terms else nothing]
    if pairs:
        parts.append(f"{pairs} pair{'s' if pairs != 1 else ''}")
    dropout = float(params.get("modality_dropout", (fixed or {}).get("modality_dropout", 0)) or 0)
    if dropout >= 0.05:
        parts.append(f"modality dropout {dropout:.2f}")
    label = "prior's mapping" if trial.get("tag") == "prior" else "searched"
    return f"{label} trial {trial['number']} ({', '.join(parts)})"


def _value(name: str, value: float) -> str:
    return f"{value:.3f}" if name in ("accuracy", "balanced_accuracy", "robustness") else f"{value:.4g}"


def _beats(a: dict[str, float], b: dict[str, float], objectives: list[dict[str, str]]) -> bool:
    """``a`` at least as good as ``b`` on every objective and better on one."""
    signs = [(o["name"], 1 if o["direction"] == "maximize" else -1) for o in objectives]
    return all(s * (a[n] - b[n]) >= 0 for n, s in signs) and any(s * (a[n] - b[n]) > 0 for n, s in signs)


def headline(document: dict[str, Any]) -> str:
    """The few lines a user reads first (see the module docstring); "" when no trial finished."""
    objectives = document["objectives"]
    ok = [t for t in document["trials"] if t["status"] == "ok"]
    if not ok:
        return ""
    baselines = [t for t in ok if t.get("baseline")]
    has_cost = any(o["name"] == "cost" for o in objectives)
    lines = ["In short:"]
    for objective in objectives:
        name, sign = objective["name"], 1 if objective["direction"] == "maximize" else -1
        best = max(ok, key=lambda t: sign * t["values"][name])
        words = recipe_words(best, document.get("fixed"))
        line = f"  best {name}: {words}, {name} {_value(name, best['values'][name])}"
        gains = []
        for base in baselines:
            if base is best:
                continue
            delta = best["values"][name] - base["values"][name]
            if sign > 0:
                gain = f"{delta:+.3g} over {base['baseline']}"
            elif delta == 0:
                gain = f"the same as {base['baseline']}"
            else:  # lower is better: say how far below (or above) the baseline it is
                gain = f"{abs(delta):.3g} {'below' if delta < 0 else 'above'} {base['baseline']}"
            if has_cost and name != "cost" and base["values"]["cost"] > 0:
                gain += f" at {best['values']['cost'] / base['values']['cost']:.2g}x its cost"
            gains.append(gain)
        lines.append(line + (f" ({'; '.join(gains)})" if gains else ""))
    searched = [t for t in ok if not t.get("baseline")]
    if baselines:
        on_front = [t for t in searched if t.get("pareto")]
        beaten = {
            t["number"]: [b["baseline"] for b in baselines if _beats(t["values"], b["values"], objectives)]
            for t in searched
        }
        winners = [f"trial {n} beats {', '.join(names)}" for n, names in sorted(beaten.items()) if names]
        verdict = (
            f"on every objective, {'; '.join(winners)}"
            if winners
            else "none beats a baseline on every objective: the standard recipes win this budget"
        )
        lines.append(f"  searched: {len(on_front)} of {len(searched)} searched trials reached the front; {verdict}")
    return "\n".join(lines)
