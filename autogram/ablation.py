"""``autogram confirm NAME --ablate POINT``: which part of a recipe carries its gain.

The point is retrained as it is (``full``) and once with each of its active parts switched
off in turn: every loss term weighted above 0 except cross-entropy, then modality dropout
and input noise when the point uses them. Each row runs with the same seeds on the test
split, as ``confirm`` does. A part *carries* a metric's gain when switching it off lowers
that metric's mean by more than the two rows' standard deviations added; the part whose
removal costs most is named per metric. Files: ``<search>/confirm/ablation_<N>.json`` and
``.md``, also under ``confirm/`` on the search's MLflow parent run.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from autogram.config import ConfigError, validate

log = logging.getLogger("autogram")


def variants(raw: dict[str, Any], ran: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``[(label, config)]``: the point itself, then one config per active part switched off
    (a term's weight set to 0 through ``distill.weights``, which wins over its ``w_*`` key).

    ``ran``: the terms the search's trial recorded as run (:func:`autogram.report.headline.recorded_terms`; None: every
    term weighted above 0). A weighted term that applied to nothing, a Gram term without a pair, has
    nothing to switch off: its row would retrain the point itself under another name."""
    from autogram.distill.terms import TERMS, term_weight

    cfg = validate(raw)
    active = set(ran) if ran is not None else None
    out = [("full", raw)]
    for term in TERMS:
        if term == "ce" or term_weight(cfg.distill, term) <= 0 or (active is not None and term not in active):
            continue
        changed = copy.deepcopy(raw)
        changed["distill"].setdefault("weights", {})[term] = 0.0
        out.append((f"without {term}", changed))
    for knob in ("modality_dropout", "input_noise"):
        if getattr(cfg.train, knob) > 0:
            changed = copy.deepcopy(raw)
            changed["train"][knob] = 0.0
            out.append((f"without {knob}", changed))
    return out


def carriers(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric (accuracies, robustness, missing:<m>): the part whose removal lowers it most,
    with the drop and whether it is beyond the seed spread (None: no removal lowers it)."""
    from autogram.confirm import judged_metrics

    full = rows[0]["summary"]
    out: dict[str, dict[str, Any]] = {}
    for metric in judged_metrics(rows[:1]):
        drops = [
            (full[metric]["mean"] - row["summary"][metric]["mean"], row) for row in rows[1:] if metric in row["summary"]
        ]
        drop, row = max(drops, key=lambda item: item[0], default=(0.0, None))
        if row is None or drop <= 0:
            out[metric] = {"part": None}
            continue
        spread = full[metric]["std"] + row["summary"][metric]["std"]
        out[metric] = {"part": row["label"].removeprefix("without "), "drop": drop, "beyond_spread": drop > spread}
    return out


def format_ablation(document: dict[str, Any]) -> str:
    """The ablation table (mean +- std, test split) and which part carries each gain, as Markdown."""
    from autogram.confirm import summary_table

    title = f"Ablation of trial {document['point']} on the test split, {document['seeds']} seeds (mean +- std):"
    lines = summary_table(title, document["rows"])
    if len(document["rows"]) == 1:
        lines.append("- nothing to switch off: only CE ran, with no modality dropout or input noise")
        return "\n".join(lines)
    for metric, carrier in document["carriers"].items():
        if carrier["part"] is None:
            lines.append(f"- {metric}: no part's removal lowers it")
        else:
            within = "" if carrier["beyond_spread"] else " (within spread)"
            lines.append(f"- {metric}: carried most by {carrier['part']} (-{carrier['drop']:.3f} without it{within})")
    return "\n".join(lines)


def ablate(source: str, point: str, seeds: int = 3, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the ablation of trial ``point`` (a number, or ``knee``) of search ``source``."""
    from autogram.confirm import choose_points, load_for, publish, score, search_threads, summary
    from autogram.confirm_runs import Job, same_data, seed_list, shared_teacher
    from autogram.export import load_source, trial_training_config
    from autogram.report.headline import recorded_terms

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: needs at least 1 seed")
    document, spec, parent_id = load_source(source, tracking_uri)
    if "," in point or point == "front":
        raise ConfigError(f"--ablate {point!r}: one point, a trial number or knee")
    (trial,) = choose_points(document, point, "--ablate")
    raw = trial_training_config(spec, trial)
    chosen_seeds = seed_list(int(raw.get("seed", 0)), seeds)
    data = same_data(load_for(validate(raw)), spec)
    threads = search_threads(spec)  # as the trial (and confirm) trained: the same scores
    rows = []
    # One job per variant and seed (a variant's index stands for the trial number), so the
    # teacher is resolved and each variant's cache found once, as confirm does.
    jobs = [
        [Job(index, seed, config, label) for seed in chosen_seeds]
        for index, (label, config) in enumerate(variants(raw, recorded_terms(trial)))
    ]
    shared = shared_teacher([job for row in jobs for job in row], data)
    for row in jobs:
        runs = []
        for i, job in enumerate(row):
            log.info("ablation of trial %d: %s, seed %d of %d", trial["number"], job.label, i + 1, seeds)
            runs.append(score(job.raw, job.seed, data, threads, *shared.serial(job)))
        rows.append({"label": row[0].label, "runs": runs, "summary": summary(runs)})
    result = {"search": document["name"], "point": trial["number"], "seeds": seeds, "split": "test", "rows": rows}
    result["carriers"] = carriers(rows)
    stem = f"ablation_{trial['number']}"
    files = {f"{stem}.json": json.dumps(result, indent=2), f"{stem}.md": format_ablation(result) + "\n"}
    publish(files, source, spec, parent_id, tracking_uri)
    return result
