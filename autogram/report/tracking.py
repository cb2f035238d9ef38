"""MLflow: a parent run per search, a child run per trial, the front and its plots.

Only the driver writes to MLflow (sqlite allows one writer): child runs are created and
closed by a Ray Tune callback in the driver, never inside trials. Every run is ended
with a terminal status when the search ends, after failures and after a resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autogram.version import __version__

log = logging.getLogger("autogram")
TAG_SEARCH, TAG_DIR, TAG_KIND = "autogram.search", "autogram.search_dir", "autogram.kind"
PARENT = "mlflow.parentRunId"
TAG_BASELINE = "autogram.baseline"
TAG_TAG = "autogram.tag"  # e.g. "prior": the prior's best layer mapping
TAG_WARM = "autogram.warm"  # "<search>#<number>": a trial copied by --warm-start
TAG_READS_TEACHER = "autogram.reads_teacher"  # "true" when a term of the trial read the teacher
TAG_TERMS = "autogram.terms"  # the loss terms that ran, "ce+kd+gram"
TAG_PAIRS = "autogram.pairs_aligned"  # how many tap pairs the pair-reading terms aligned


def tracking_uri(option: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def metric_key(name: str) -> str:
    """MLflow refuses '@' in names: ``image:noise@0.5`` becomes ``image:noise-0.5``."""
    return name.replace("@", "-")


def log_metrics(client: Any, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Log metrics in batches, names made MLflow-safe."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
    for start in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[start : start + 500])


def client_for(uri: str) -> Any:
    """An MLflow client bound to ``uri`` (no global state)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# The experiment tag MLflow's UI reads to choose an experiment's landing page.
EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"


def experiment_link(uri: str, experiment_id: str) -> str:
    """The MLflow UI's address of an experiment, opening on its runs table: MLflow 3's UI shows
    its GenAI overview (traces) unless the link asks for the model-training workflow. For a
    local store, the path to open once ``mlflow ui`` serves it."""
    page = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (after: mlflow ui --backend-store-uri {uri})"


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment's id, creating it (with a local artifact root for sqlite) if needed."""
    client = client_for(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND not in experiment.tags:  # made by an older autogram, or by hand
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        # Fixed at creation: keep artifacts beside the database, not wherever cwd happens to be.
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    # MLflow 3 opens an experiment of unknown kind on its GenAI overview (traces); this kind
    # opens it on the runs table, where the search's runs are.
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT})


class SearchTracker:
    """Creates and closes the runs of one search; all calls happen in the driver."""

    def __init__(self, uri: str, experiment: str, search_name: str, directory: Path) -> None:
        self.uri = uri
        self.client = client_for(uri)
        self.experiment_id = ensure_experiment(uri, experiment)
        self.search_name = search_name
        self.directory = str(directory)
        self.parent_id = ""
        self.children: dict[str, str] = {}  # ray trial id -> run id

    def start_parent(self, params: dict[str, Any], tags: dict[str, str], resume: bool = False) -> str:
        """Create the parent run, or on a resume reopen the newest one of this search folder.

        A new search in a folder that once held another (deleted since) gets its own run:
        reopening the old one would mix the two searches' trials under one parent.
        """
        existing = (
            self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_DIR}` = '{self.directory}' and tags.`{TAG_KIND}` = 'search'",
                order_by=["attributes.start_time DESC"],
            )
            if resume
            else []
        )
        if existing:
            self.parent_id = existing[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            for run in self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{PARENT}` = '{self.parent_id}'"
            ):
                if "ray_trial_id" in run.data.tags:
                    self.children[run.data.tags["ray_trial_id"]] = run.info.run_id
            log.info("mlflow: resuming parent run %s", self.parent_id)
            return self.parent_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.search_name,
            tags={TAG_SEARCH: self.search_name, TAG_DIR: self.directory, TAG_KIND: "search", **tags},
        )
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, {**params, "autogram_version": __version__})
        log.info("mlflow: parent run %s in experiment %s (%s)", self.parent_id, self.experiment_id, self.uri)
        return self.parent_id

    def drop_children(self, trial_ids: list[str]) -> None:
        """Delete the child runs of trials a resume queued again under new ids (MLflow's delete
        is soft: the runs stay restorable), so each point is one run, as in front.json."""
        for trial_id in trial_ids:
            run_id = self.children.pop(trial_id, None)
            if run_id is not None:
                self.client.delete_run(run_id)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        """Open the trial's child run (or reopen it when a resumed trial restarts)."""
        if trial_id in self.children:
            self.client.update_run(self.children[trial_id], status="RUNNING")
            return
        tags = {
            "ray_trial_id": trial_id,
            "status": "running",
            **({TAG_BASELINE: str(config["baseline"])} if config.get("baseline") else {}),
            **({TAG_TAG: str(config["tag"])} if config.get("tag") else {}),
        }
        params = {k: v for k, v in config.items() if k != "trial_number"}
        self.children[trial_id] = self.open_child(config.get("trial_number", ""), tags, params)

    def open_child(self, number: int | str, tags: dict[str, str], params: dict[str, Any]) -> str:
        """Create trial ``number``'s child run under the parent with ``tags`` and ``params``; its id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={PARENT: self.parent_id, TAG_SEARCH: self.search_name, TAG_KIND: "trial", "trial_number": str(number)}
            | tags,
        )
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Per-epoch curve points (``curve/<metric>`` at step = epoch) and the host."""
        run_id = self.children.get(trial_id)
        if run_id is None or result.get("final") or "epoch" not in result:
            return
        from autogram.distill.terms import TERMS

        keys = ("loss", *TERMS, "accuracy", "epoch_seconds")  # every registered term's curve
        log_metrics(
            self.client, run_id, {f"curve/{k}": result[k] for k in keys if k in result}, step=int(result["epoch"])
        )
        if result.get("hostname"):
            self.client.set_tag(run_id, "host", f"{result['hostname']} ({result.get('node_ip', '?')})")

    def trial_finished(self, trial_id: str, result: dict[str, Any], error: bool) -> None:
        """Final metrics and a terminal status: FINISHED, KILLED (pruned) or FAILED."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        if error:
            status, state = "failed", "FAILED"
        elif not result.get("final"):
            status, state = "pruned", "KILLED"
        else:
            status, state = str(result.get("status", "ok")), "FINISHED"
            keys = (
                "accuracy",
                "balanced_accuracy",
                "robustness",
                "cost",
                "train_seconds",
                "train_gflops",
                "eval_seconds",
                "gpu_peak_mb",
            )
            metrics = {k: result[k] for k in keys if result.get(k) is not None}
            metrics.update(
                {k.replace("corruption.", "corruption/"): v for k, v in result.items() if k.startswith("corruption.")}
            )
            metrics.update(
                {k.replace("detail.", "robustness/"): v for k, v in result.items() if k.startswith("detail.")}
            )
            log_metrics(self.client, run_id, metrics)
        if result.get("hostname"):
            self.client.set_tag(run_id, "host", f"{result['hostname']} ({result.get('node_ip', '?')})")
        if "reads_teacher" in result:
            self.client.set_tag(run_id, TAG_READS_TEACHER, str(bool(result["reads_teacher"])).lower())
        if "terms" in result:
            self.client.set_tag(run_id, TAG_TERMS, str(result["terms"]))
            self.client.set_tag(run_id, TAG_PAIRS, str(int(result.get("pairs_aligned", 0))))
        for key, tag in (("device", "device"), ("node_id", "ray_node_id")):
            if result.get(key):
                self.client.set_tag(run_id, tag, str(result[key]))
        self.client.set_tag(run_id, "status", status)
        self.client.set_terminated(run_id, state)

    def finish(self, document: dict[str, Any], history: list[float], artifacts: Path, failed: bool = False) -> None:
        """Tag every child with its final status and ``pareto``, log the parent's metrics and
        artifacts, and end every run still RUNNING."""
        by_number = {str(t["number"]): t for t in document["trials"]}
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT}` = '{self.parent_id}'", max_results=50000
        )
        for run in children:
            entry = by_number.get(run.data.tags.get("trial_number", ""))
            status = entry["status"] if entry else run.data.tags.get("status", "failed")
            self.client.set_tag(run.info.run_id, "status", "failed" if status == "running" else status)
            self.client.set_tag(run.info.run_id, "pareto", "true" if entry and entry["pareto"] else "false")
            if run.info.status == "RUNNING":  # a trial cut by a crash that never restarted
                self.client.set_terminated(run.info.run_id, "KILLED")
        counts: dict[str, int] = {}
        for trial in document["trials"]:
            counts[trial["status"]] = counts.get(trial["status"], 0) + 1
        metrics = {"hypervolume": document["hypervolume"], "front_size": sum(t["pareto"] for t in document["trials"])}
        metrics.update(
            {f"trials_{s}": float(counts.get(s, 0)) for s in ("ok", "pruned", "diverged", "failed", "infeasible")}
        )
        # Draws of a layer subset out of bounds, drawn again before any trial ran them.
        metrics["draws_redrawn"] = float(document.get("redrawn", 0))
        metrics.update(
            {
                f"reference/{o['name']}": r
                for o, r in zip(document["objectives"], document["reference_point"], strict=True)
            }
        )
        log_metrics(self.client, self.parent_id, metrics)
        for step, value in enumerate(history, start=1):
            log_metrics(self.client, self.parent_id, {"hypervolume_history": value}, step=step)
        self.client.log_artifacts(self.parent_id, str(artifacts))
        # The run page's description: the outcome in words, and where the front plot is.
        from autogram.report.headline import headline

        note = headline(document) or "No trial finished."
        plots = "Trade-offs: the artifacts `plots/front_2d.png` (2-D projections) and `plots/front_3d.html`."
        self.client.set_tag(self.parent_id, "mlflow.note.content", f"{note}\n\n{plots}")
        self.client.set_terminated(self.parent_id, "FAILED" if failed else "FINISHED")

    def abort(self, status: str = "FAILED") -> None:
        """End the parent (``status``: FAILED after an exception, KILLED after an interrupt) and
        every open child after the driver stopped early."""
        if not self.parent_id:
            return
        for run_id in self.children.values():
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "KILLED")
        self.client.set_terminated(self.parent_id, status)


def write_artifacts(
    document: dict[str, Any], study: Any, candidates: list[str], configs: dict[int, dict], directory: Path
) -> list[float]:
    """Write front files, plots and one training YAML per Pareto point; returns the HV history."""
    import csv

    import yaml

    from autogram.report import plots
    from autogram.report.verdict import judgement

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pareto_front.json").write_text(json.dumps(document, indent=2))
    judged = judgement(document)
    if judged:
        (directory / "verdict.txt").write_text(judged + "\n")
    names = [o["name"] for o in document["objectives"]]
    params = sorted({k for t in document["trials"] for k in t["params"]})
    with (directory / "pareto_front.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "status", "pareto", "baseline", *names, *params])
        for t in document["trials"]:
            writer.writerow(
                [
                    t["number"],
                    t["status"],
                    t["pareto"],
                    t.get("baseline") or "",
                    *[t["values"].get(n, "") for n in names],
                    *[t["params"].get(p, "") for p in params],
                ]
            )
    figures = {
        "front_2d": plots.front_2d(document),
        "parallel_coordinates": plots.parallel_coordinates(document, plots.log_scale_params(study)),
        "pair_selection": plots.pair_selection(document, candidates),
        "importances": plots.importances(study, document),
    }
    if len(names) >= 3:
        figures["front_3d"] = plots.front_3d(document)
    history_fig, history = plots.hypervolume_history(study, document)
    figures["hypervolume_history"] = history_fig
    plots.save_figures(figures, directory / "plots")
    for number, config in configs.items():
        path = directory / "configs" / f"trial_{number}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Ready to train: Pareto point trial {number} of search {document['name']}\n"
            + yaml.safe_dump(config, sort_keys=False)
        )
    return history


def host() -> str:
    """This machine's name, for the parent run's tags."""
    return socket.gethostname()


@contextlib.contextmanager
def temp_artifacts() -> Iterator[Path]:
    """A fresh temporary folder for artifacts before upload, removed afterwards (a search's
    plots are tens of MB: left behind, a head node running many searches fills its /tmp)."""
    with tempfile.TemporaryDirectory(prefix="autogram-artifacts-") as folder:
        yield Path(folder)
