"""The search's outcome, read back from its Optuna study: statuses, Pareto front, hypervolume.

Only trials that trained to the end (``ok``) and meet every constraint can be on the
front; pruned, diverged, failed and infeasible ones never are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autogram.config.pairs import mapping_text, pair_count
from autogram.report.headline import recorded_terms
from autogram.report.pareto import hypervolume, pareto_front
from autogram.report.verdict import judgement, teacher_adds, verdict


def trial_status(trial: Any) -> str:
    """ok, pruned, diverged, failed or infeasible, from the Optuna trial's state and attributes."""
    from optuna.trial import TrialState

    if trial.state == TrialState.PRUNED:
        return "pruned"
    if trial.state != TrialState.COMPLETE:
        return "failed"
    status = trial.user_attrs.get("status", "ok")
    if status != "ok":
        return status
    if any(v > 0 for v in trial.constraints.values()):
        return "infeasible"
    return "ok"


def default_reference(objectives: list[dict[str, str]], rows: list[list[float]]) -> list[float]:
    """Accuracies and robustness: 0 (maximised) ; cost: 1.1 x the largest cost seen (minimised)."""
    reference = []
    for k, objective in enumerate(objectives):
        if objective["name"] in ("accuracy", "balanced_accuracy", "robustness"):
            reference.append(0.0 if objective["direction"] == "maximize" else 1.0)
        else:
            worst = max((row[k] for row in rows), default=1.0)
            reference.append(worst * 1.1 if objective["direction"] == "minimize" else 0.0)
    return reference


def build_front(
    study: Any, name: str, objectives: list[dict[str, str]], reference: dict[str, float] | None = None
) -> dict[str, Any]:
    """The ``front.json`` document for ``study``."""
    names = [o["name"] for o in objectives]
    directions = [o["direction"] for o in objectives]

    every = study.get_trials(deepcopy=False)
    # Draws the searcher refused before any Ray trial (a layer subset out of bounds, drawn
    # again): the sampler learned from them, but no trial ran them, nor did MLflow record one.
    redrawn = sum(bool(t.user_attrs.get("redrawn")) for t in every)
    every = [t for t in every if not t.user_attrs.get("redrawn")]
    replaced = replaced_numbers(every)  # a failed trial rerun on resume is listed once, as its rerun
    trials = sorted((t for t in every if t.number not in replaced), key=lambda t: t.number)
    entries = []
    for trial in trials:
        status = trial_status(trial)
        values = dict(zip(names, trial.values, strict=True)) if trial.values is not None else {}
        entries.append(
            {
                "number": trial.number,
                "status": status,
                "params": dict(trial.params),
                "values": values,
                "reason": trial.user_attrs.get("reason", ""),
                "pareto": False,
                "baseline": trial.user_attrs.get("baseline"),
                "tag": trial.user_attrs.get("tag"),
                "reads_teacher": trial.user_attrs.get("reads_teacher"),
                # The terms that ran ("ce+kd") and the pairs aligned; None before they were kept.
                "terms": trial.user_attrs.get("terms"),
                "pairs_aligned": trial.user_attrs.get("pairs_aligned"),
                "missing": trial.user_attrs.get("missing", {}),
                "balanced_accuracy": trial.user_attrs.get("balanced_accuracy"),
                # --warm-start: copied from an earlier search, "<search>#<its trial number>"
                "warm": _warm(trial.user_attrs),
            }
        )
    ok = [e for e in entries if e["status"] == "ok"]
    rows = [[e["values"][n] for n in names] for e in ok]
    for index in pareto_front(rows, directions):
        ok[index]["pareto"] = True
    ref = [reference[n] for n in names] if reference else default_reference(objectives, rows)
    document = {
        "name": name,
        "objectives": objectives,
        "reference_point": ref,
        "hypervolume": hypervolume(rows, directions, ref) if rows else 0.0,
        "trials": entries,
        "redrawn": redrawn,
    }
    document["verdict"] = verdict(document)
    document["teacher_adds"] = teacher_adds(document)
    return document


def _warm(attrs: dict[str, Any]) -> str | None:
    return f"{attrs['warm']}#{attrs.get('warm_number')}" if attrs.get("warm") else None


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: readers never see a half-written file."""
    from autogram.config.base import atomic_write

    text = json.dumps(document, indent=2)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def format_front(document: dict[str, Any]) -> str:
    """The Pareto front as a text table, best first by the first objective."""
    names = [o["name"] for o in document["objectives"]]
    front = [t for t in document["trials"] if t["pareto"]]
    first = document["objectives"][0]
    front.sort(key=lambda t: t["values"][names[0]], reverse=first["direction"] == "maximize")
    counts: dict[str, int] = {}
    for trial in document["trials"]:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    weight_columns = _weight_columns(document)
    lines = [
        f"Pareto front of {document['name']}: {len(front)} of {len(document['trials'])} trials "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}{_redrawn(document.get('redrawn', 0))}); "
        f"hypervolume {document['hypervolume']:.4g} (reference point "
        f"{', '.join(f'{r:.4g}' for r in document['reference_point'])}; docs: concepts/search.md)",
        "  trial  "
        + "  ".join(f"{n:>11}" for n in names)
        + f"  pairs  weights ({'/'.join(c.removeprefix('w_') for c in weight_columns)})  T",
    ]
    for trial in front:
        params = trial["params"]
        label = trial.get("baseline") or trial.get("tag") or (f"warm {trial['warm']}" if trial.get("warm") else "")
        tag = f"  [{label}]" if label else ""
        count = pair_count(params)
        pairs = "-" if count is None else str(count)
        fixed, recorded = document.get("fixed", {}), recorded_terms(trial)
        ran = None if recorded is None else set(recorded)
        shown = {w: _fmt(params, w, fixed, ran) for w in weight_columns}
        weights = "/".join(shown.values())
        mapping = mapping_text(params)
        # No softmax term on (KD, DIST): its temperature means nothing for this row.
        softened = any(shown[w] not in ("off", "0") for w in ("w_kd", "w_dist") if w in shown)
        temperature = _fmt(params, "temperature", fixed) if softened else "-"
        lines.append(
            f"  {trial['number']:>5}  "
            + "  ".join(f"{trial['values'][n]:>11.4g}" for n in names)
            + f"  {pairs:>5}  {weights:<28}  {temperature}{tag}"
            + (f"  {mapping}" if mapping else "")
        )
    from autogram.report.headline import headline

    judged, words = judgement(document), headline(document)
    return "\n".join(lines + [part for part in (judged, words) if part])


def _weight_columns(document: dict[str, Any]) -> list[str]:
    """``w_<term>`` of the four built-in terms, then of every other term a trial searched (read
    from the trials' parameters: the process printing the front need not have that term
    registered, and need not import torch to print it)."""
    columns = ["w_ce", "w_kd", "w_gram", "w_xmodal"]
    for trial in document["trials"]:
        for key in trial["params"]:
            name = key.removeprefix("use_")
            if name.startswith("w_") and name not in columns:
                columns.append(name)
    return columns


def _fmt(params: dict[str, Any], name: str, fixed: dict[str, float] | None = None, ran: set[str] | None = None) -> str:
    """A weight or the temperature of one row: its sampled value, "off", or the space's fixed
    value; "off" too for a weight whose term did not run (``ran``, the trial's recorded terms;
    None for a front.json from before the record: a Gram weight with no pair selected aligned
    nothing)."""
    if params.get(f"use_{name}") is False:
        return "off"
    if ran is not None and name.startswith("w_") and name.removeprefix("w_") not in ran:
        return "off"
    if name in params:
        return f"{float(params[name]):.3g}"
    if fixed and name in fixed:
        return f"{fixed[name]:.3g}"
    return "fixed"


def _redrawn(count: int) -> str:
    """The header's note of draws the searcher redrew (see ``AutogramOptunaSearch.suggest``)."""
    if not count:
        return ""
    return f"; {count} draw{'s' if count > 1 else ''} out of the pair bounds drawn again, untrained"


def replaced_numbers(trials: list[Any]) -> set[int]:
    """Numbers of failed trials that a later rerun replaced (see ``AutogramOptunaSearch`` and
    ``requeue_orphans``; a queued rerun counts once it has run)."""
    from optuna.trial import TrialState

    return {
        int(t.user_attrs["replaces"]) for t in trials if "replaces" in t.user_attrs and t.state != TrialState.WAITING
    }
