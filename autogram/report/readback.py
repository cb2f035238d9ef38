"""A search as MLflow recorded it, read back: its parent run by name, and its front in
``front.json``'s shape (``autogram front``, ``export`` and ``confirm`` from MLflow alone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autogram.report.tracking import (
    PARENT,
    TAG_BASELINE,
    TAG_KIND,
    TAG_PAIRS,
    TAG_READS_TEACHER,
    TAG_SEARCH,
    TAG_TAG,
    TAG_TERMS,
    client_for,
)


def _parse_param(value: str) -> Any:
    """An MLflow param (a string) as the value it was logged from."""
    if value in ("True", "False"):
        return value == "True"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def find_parent(uri: str, name: str) -> Any:
    """The newest search run named ``name``, else the newest search run of experiment ``name``."""
    from autogram.config import ConfigError

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no MLflow database at {uri.removeprefix('sqlite:///')} (pass --tracking-uri?)")
    client = client_for(uri)
    experiments = client.search_experiments()

    def newest_search(ids: list[str], extra: str = "") -> list:
        if not ids:
            return []
        return client.search_runs(
            ids,
            filter_string=f"tags.`{TAG_KIND}` = 'search'{extra}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )

    runs = newest_search([e.experiment_id for e in experiments], f" and tags.`{TAG_SEARCH}` = '{name}'")
    if not runs:
        runs = newest_search([e.experiment_id for e in experiments if e.name == name])
    if not runs:
        raise ConfigError(f"no search or experiment named {name!r} in MLflow at {uri}")
    return runs[0]


def read_front(uri: str, name: str) -> dict[str, Any]:
    """The search's front as recorded in MLflow (parent and child runs), in front.json's shape."""
    parent = find_parent(uri, name)  # first: it refuses to create a database that is not there
    client = client_for(uri)
    objectives = json.loads(parent.data.params["objectives"])
    names = [o["name"] for o in objectives]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'", max_results=50000
    )
    trials = []
    for run in children:
        tags, metrics = run.data.tags, run.data.metrics
        trials.append(
            {
                "number": int(tags["trial_number"]),
                "status": tags.get("status", "failed"),
                "params": {k: _parse_param(v) for k, v in run.data.params.items()},
                "values": {n: metrics[n] for n in names if n in metrics} if tags.get("status") != "pruned" else {},
                "pareto": tags.get("pareto") == "true",
                "baseline": tags.get(TAG_BASELINE),
                "tag": tags.get(TAG_TAG),
                "reads_teacher": {"true": True, "false": False}.get(tags.get(TAG_READS_TEACHER, "")),
                "terms": tags.get(TAG_TERMS),
                "pairs_aligned": int(tags[TAG_PAIRS]) if tags.get(TAG_PAIRS, "").isdigit() else None,
                "missing": {
                    k.removeprefix("robustness/"): v for k, v in metrics.items() if k.startswith("robustness/missing:")
                },
                "run_id": run.info.run_id,
            }
        )
    trials.sort(key=lambda t: t["number"])
    return {
        "name": parent.data.tags.get(TAG_SEARCH, name),
        "objectives": objectives,
        "reference_point": [parent.data.metrics.get(f"reference/{n}") for n in names],
        "hypervolume": parent.data.metrics.get("hypervolume"),
        "trials": trials,
        "redrawn": int(parent.data.metrics.get("draws_redrawn", 0)),
        "run_id": parent.info.run_id,
        "experiment_id": parent.info.experiment_id,
    }
