"""``autogram confirm``: retrain chosen front points and every baseline over several seeds,
score them on the **test** split (a search only ever saw validation), and say whether a
point beats each baseline by more than the seed-to-seed spread.

Each row is a trial's own config (as ``autogram export`` rebuilds it, teacher pinned) run
at its own budget with seeds ``seed, seed + 1, ...``. The table gives the mean and the
standard deviation over seeds of accuracy, balanced accuracy (mean per-class recall),
robustness (the suite mean, the search's objective), cost, and accuracy with each modality
missing. A point *beats* a baseline in
a metric when its mean is higher by more than the sum of the two standard deviations.
Files (``confirm.json``, ``confirm.md``, ``confirm.png``) go to ``<search folder>/confirm/``
when the search folder is at hand, and onto the search's MLflow parent run under
``confirm/``. The retrainings run here or as Ray tasks, and an interrupted confirm resumes
without redoing a finished one (``autogram/confirm_runs.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, validate
from autogram.confirm_ray import in_background, ray_started, ray_stopped
from autogram.confirm_runs import LEDGER, Job, Ledger, load_for, run_jobs, score, search_threads, seed_list

__all__ = ["confirm", "format_table", "judge", "load_for", "score", "search_threads", "summary", "teacher_adds"]

log = logging.getLogger("autogram")
METRICS = ("accuracy", "balanced_accuracy", "robustness", "cost")


def choose_points(document: dict[str, Any], points: str, option: str = "--points") -> list[dict[str, Any]]:
    """The trials ``points`` names: ``knee``, ``front`` (every Pareto point) or trial numbers,
    comma-separated; a ConfigError naming ``option`` for anything else, or a trial that did
    not finish ok."""
    from autogram.export import choose, number_ranges, numbered

    chosen: dict[int, dict[str, Any]] = {}
    by_number = {t["number"]: t for t in document["trials"]}
    for item in (p.strip() for p in points.split(",")):
        if item == "knee":
            trial = choose(document, "knee", None, [])
            chosen[trial["number"]] = trial
        elif item == "front":
            chosen.update({t["number"]: t for t in document["trials"] if t.get("pareto")})
        elif item.isdigit() and int(item) in by_number:
            trial = numbered(document, int(item), option)
            chosen[trial["number"]] = trial
        else:
            raise ConfigError(
                f"{option} {item!r}: expected knee, front or a trial number of {document['name']!r} "
                f"({number_ranges(sorted(by_number)) or 'none'})"
            )
    return list(chosen.values())


def judged_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics a verdict compares (every one but cost) that some row has, in table order."""
    have = {k for r in rows for k in r["summary"]}
    fixed = [m for m in METRICS if m != "cost" and m in have]
    return fixed + sorted(k for k in have if k.startswith("missing:"))


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds of every metric."""
    keys = sorted({k for run in runs for k in run})
    return {
        k: {
            "mean": statistics.mean(run[k] for run in runs),
            "std": statistics.stdev(run[k] for run in runs) if len(runs) > 1 else 0.0,
        }
        for k in keys
    }


def judge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (baseline, point): deltas of the means and whether each exceeds the spread.
    A point is a row that is not a baseline, or a baseline that was chosen as one (a front
    made of baselines still says which recipe beats which)."""
    out = []
    points = [r for r in rows if not r["baseline"] or r.get("chosen")]
    for baseline in (r for r in rows if r["baseline"]):
        for point in (p for p in points if p is not baseline):
            deltas = {}
            for metric in judged_metrics([point]):
                if metric not in baseline["summary"]:
                    continue
                p, b = point["summary"][metric], baseline["summary"][metric]
                delta = p["mean"] - b["mean"]
                deltas[metric] = {"delta": delta, "beyond_spread": abs(delta) > p["std"] + b["std"]}
            cost = point["summary"]["cost"]["mean"] - baseline["summary"]["cost"]["mean"]
            beats = all(d["delta"] >= 0 for d in deltas.values()) and any(
                d["delta"] > 0 and d["beyond_spread"] for d in deltas.values()
            )
            out.append(
                {
                    "baseline": baseline["label"],
                    "point": point["label"],
                    "deltas": deltas,
                    "cost_delta": cost,
                    "beats": beats,
                }
            )
    return _once_per_pair(out)


def _once_per_pair(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two chosen baselines are judged both ways ("kd beats ce", "ce does not beat kd"): keep one
    verdict per pair, the one that says which beats the other when one does."""
    kept: dict[frozenset[str], dict[str, Any]] = {}
    for item in items:
        key = frozenset((item["baseline"], item["point"]))
        if key not in kept or (item["beats"] and not kept[key]["beats"]):
            kept[key] = item
    return [item for item in items if kept[frozenset((item["baseline"], item["point"]))] is item]


def reads_teacher(raw: dict[str, Any]) -> bool:
    """Whether a retraining config weights any term that reads the teacher above 0."""
    from autogram.distill.terms import TERMS, term_weight

    distill = validate(raw).distill
    return any(cls.reads_teacher and term_weight(distill, name) > 0 for name, cls in TERMS.items())


def teacher_adds(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per metric (accuracies, robustness, missing:<m>): the best row reading the teacher against
    the best row without it, by mean, and whether the difference is beyond the two stds
    added; None when every row reads the teacher or none does."""
    groups = {flag: [r for r in rows if r.get("reads_teacher") is flag] for flag in (True, False)}
    if not groups[True] or not groups[False]:
        return None
    out: dict[str, Any] = {}
    for metric in judged_metrics(rows):
        best = {
            flag: max((r for r in group if metric in r["summary"]), key=lambda r: r["summary"][metric]["mean"])
            for flag, group in groups.items()
        }
        a, b = best[True]["summary"][metric], best[False]["summary"][metric]
        delta = a["mean"] - b["mean"]
        out[metric] = {
            "with": best[True]["label"],
            "without": best[False]["label"],
            "delta": delta,
            "beyond_spread": abs(delta) > a["std"] + b["std"],
        }
    return out


def summary_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table of each row's metrics (mean +- std over seeds), missing-modality
    columns after the judged ones; shared by the confirm table and the ablation."""
    extra = sorted({k for r in rows for k in r["summary"] if k.startswith("missing:")})
    head = ["row", *METRICS, *extra]
    lines = [title, "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["label"]]
        for metric in head[1:]:
            s = row["summary"].get(metric)
            cells.append("-" if s is None else f"{s['mean']:.4g} +- {s['std']:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_table(document: dict[str, Any]) -> str:
    """The confirm table (mean +- std over seeds, test split) and the verdicts, as Markdown."""
    lines = summary_table(f"Confirmed on the test split, {document['seeds']} seeds (mean +- std):", document["rows"])
    if document["verdict"]:
        lines.append("Verdicts (differences of the means; * = beyond the seed spread, |delta| > std + std):")
    for item in document["verdict"]:
        word = "beats" if item["beats"] else "does not beat"
        deltas = ", ".join(
            f"{k} {v['delta']:+.3f}{'*' if v['beyond_spread'] else ''}" for k, v in item["deltas"].items()
        )
        lines.append(f"- {item['point']} {word} {item['baseline']}: {deltas}; cost {item['cost_delta']:+.4g}")
    if document.get("teacher_adds"):
        lines.append(
            "What the teacher adds (the best row reading it - the best row without it; * = beyond the spread):"
        )
        for metric, item in document["teacher_adds"].items():
            star = "*" if item["beyond_spread"] else ""
            lines.append(f"- {metric}: {item['delta']:+.3f}{star} ({item['with']} vs {item['without']})")
    return "\n".join(lines)


def _plot(document: dict[str, Any], path: Path) -> None:
    """Mean +- std of the accuracies, robustness and missing-modality accuracy per row (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["rows"]
    metrics = judged_metrics(rows)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [m + (i - (len(rows) - 1) / 2) * width for m in range(len(metrics))]
        means = [row["summary"].get(k, {"mean": 0})["mean"] for k in metrics]
        stds = [row["summary"].get(k, {"std": 0})["std"] for k in metrics]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=row["label"], hatch="//" if row["baseline"] else None)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"test split, mean +- std over {document['seeds']} seeds")
    ax.set_title(f"{document['search']}: confirmed points vs baselines")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confirm(
    source: str,
    seeds: int = 3,
    points: str = "knee",
    tracking_uri: str | None = None,
    concurrency: int = 1,
    address: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the confirmation; returns its document (also written and logged, see module doc).

    ``concurrency`` > 1 or an ``address`` runs each (row, seed) as a Ray task with the search's
    per-trial resources; ``resume`` keeps the retrainings an interrupted confirm finished."""
    from autogram.export import load_source

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: needs at least 1 seed")
    document, spec, parent_id = load_source(source, tracking_uri)
    seed_list(int(spec["config"].get("seed", 0)), seeds)  # before Ray starts or a row is built
    chosen = choose_points(document, points)
    parallel = _parallel(spec, concurrency, address)
    folder = Path(source).parent if Path(source).is_file() else Path(source)
    ledger = Ledger(folder / LEDGER if folder.is_dir() else None)
    kept = ledger.check(resume)
    if not kept:  # every retraining runs, and each needs the teacher: say so before Ray starts
        _teacher_there(spec)
    # Ray starts (and warms its workers) while the rows are built: both take seconds. Runs kept
    # from an interrupted confirm may be all there is to it: then Ray starts only if one is left.
    early = parallel if not kept else None
    prepared = in_background(lambda: _rows_and_jobs(document, spec, chosen, seeds), "confirm-rows")
    with ray_started(early):
        rows, jobs = prepared()
        done = ledger.kept(jobs)
        if kept and len(done) < len(jobs):  # kept runs may be all there is: then no teacher is needed
            _teacher_there(spec)
        # MLflow's import and its parent-run lookup (about 2 s) overlap the retrainings, not follow them.
        tracking = in_background(lambda: mlflow_parent(spec, parent_id, tracking_uri), "confirm-mlflow")
        results = run_jobs(jobs, ledger, done, search_threads(spec), parallel, spec)
    try:
        result = _result(document["name"], seeds, rows, results)
        _write(result, source, spec, tracking)
        ledger.close()
    finally:
        ray_stopped()  # the Ray started here, stopping meanwhile, is gone when confirm returns
    return result


def _result(name: str, seeds: int, rows: list[dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    """The confirm's document: each row's runs and their summary, the verdict, the teacher's share."""
    for row in rows:
        row["runs"] = [results[job.key] for job in row.pop("jobs")]
        row["summary"] = summary(row["runs"])
    result = {"search": name, "seeds": seeds, "split": "test", "rows": rows}
    result["verdict"] = judge(rows)
    result["teacher_adds"] = teacher_adds(rows)
    return result


def _teacher_there(spec: dict[str, Any]) -> None:
    """Every retraining is pinned to the search's built-in teacher checkpoint: one that is gone
    is one line before anything starts (on Ray, Ray's start came first)."""
    teacher = spec.get("teacher") or ""
    if (spec.get("teacher_source") or {}).get("source", "builtin") != "builtin" or not teacher:
        return
    if not Path(teacher).is_file():
        raise ConfigError(
            f"{teacher}: the search's teacher checkpoint (search.json's teacher) is not there: moved, deleted, "
            "or a relative path from another working directory?"
        )


def _parallel(spec: dict[str, Any], concurrency: int, address: str | None) -> dict[str, Any] | None:
    """How :func:`run_jobs` fans out on Ray (None: in this process)."""
    if concurrency <= 1 and address is None:
        return None
    from autogram.study.ray_setup import ray_runtime_env

    return {
        "concurrency": concurrency,
        "address": address,
        "resources": spec["config"].get("search", {}).get("resources"),
        "runtime_env": ray_runtime_env(validate(spec["config"]), address),
    }


def _rows_and_jobs(
    document: dict[str, Any], spec: dict[str, Any], chosen: list[dict[str, Any]], seeds: int
) -> tuple[list[dict[str, Any]], list[Job]]:
    """One row per chosen point and per finished baseline, and its (point, seed) retrainings;
    each row keeps its jobs under ``jobs`` until their results replace them."""
    from autogram.export import trial_training_config

    picked = {t["number"] for t in chosen}
    baselines = [t for t in document["trials"] if t.get("baseline") and t["status"] == "ok"]
    rows, jobs = [], []
    for trial in [*[t for t in chosen if not t.get("baseline")], *baselines]:
        raw = trial_training_config(spec, trial)
        label = (
            f"{trial['baseline']} (trial {trial['number']})" if trial.get("baseline") else f"trial {trial['number']}"
        )
        row_jobs = [Job(trial["number"], seed, raw, label) for seed in seed_list(int(raw.get("seed", 0)), seeds)]
        jobs += row_jobs
        rows.append(
            {
                "label": label,
                "trial": trial["number"],
                "baseline": trial.get("baseline"),
                "chosen": trial["number"] in picked,
                # The search's record of what ran where it has one: a weight above 0 may apply
                # to nothing (a Gram term with no pair selected reads no teacher).
                "reads_teacher": trial["reads_teacher"]
                if trial.get("reads_teacher") is not None
                else reads_teacher(raw),
                "jobs": row_jobs,
            }
        )
    return rows, jobs


def _write(result: dict[str, Any], source: str, spec: dict[str, Any], tracking: Callable[[], Any]) -> None:
    files = {"confirm.json": json.dumps(result, indent=2), "confirm.md": format_table(result) + "\n"}

    def plot(folder: Path) -> None:
        _plot(result, folder / "confirm.png")

    publish(files, source, spec, "", None, plot, tracking)


def mlflow_parent(spec: dict[str, Any], parent_id: str, tracking_uri: str | None) -> tuple[str, Any]:
    """(the search's MLflow parent run id, a client of its store): where confirm files are logged."""
    from autogram.report.readback import find_parent
    from autogram.report.tracking import client_for

    uri = tracking_uri or spec.get("tracking_uri", "")
    return parent_id or find_parent(uri, spec["name"]).info.run_id, client_for(uri)


def publish(
    files: dict[str, str],
    source: str,
    spec: dict[str, Any],
    parent_id: str,
    tracking_uri: str | None,
    extra: Any = None,
    tracking: Callable[[], Any] | None = None,
) -> None:
    """Write ``files`` (name -> text; ``extra(folder)`` may add more) to ``<search folder>/confirm/``
    when the search folder is at hand, and log them under ``confirm/`` on the search's parent run
    (``tracking``: waits for :func:`mlflow_parent` started earlier, else it is called here)."""
    import tempfile

    folder = Path(source)
    folder = folder.parent if folder.is_file() else folder
    staged = not folder.is_dir()  # a search read from MLflow: the files only stage the upload
    target = folder / "confirm" if not staged else Path(tempfile.mkdtemp(prefix="autogram-confirm-"))
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (target / name).write_text(text)
    if extra is not None:
        extra(target)
    try:
        parent_id, client = tracking() if tracking is not None else mlflow_parent(spec, parent_id, tracking_uri)
        client.log_artifacts(parent_id, str(target), "confirm")
    except Exception as exc:  # the files are written; an unreachable MLflow must not undo that
        log.warning("confirm written to %s, but not logged to MLflow (%s)", target, exc)
        return
    if staged:
        shutil.rmtree(target, ignore_errors=True)
        log.info("confirm: logged under confirm/ on MLflow run %s", parent_id)
    else:
        log.info("confirm: wrote %s and logged it under confirm/ on MLflow run %s", target, parent_id)
