"""Export one point of a search's front as a self-contained training config.

The front comes from MLflow (a search or experiment name) or from a search folder's
``front.json``; ``pareto.pick`` chooses among the ``ok`` trials that pass every
``--where`` filter. Nothing is written unless every check passes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, SpaceConfig, validate
from autogram.config.base import bound_number, read_json
from autogram.report.documents import checked_front, checked_spec

log = logging.getLogger("autogram")

_WHERE = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*(\S+)\s*$")


def parse_where(items: list[str], names: list[str]) -> list[tuple[str, str, float]]:
    """``["cost<=2.5e3", "accuracy>=0.9"]`` -> ``[(metric, op, bound), ...]`` (comma-separated too)."""
    out = []
    for item in (part for raw in items for part in raw.split(",") if part.strip()):
        match = _WHERE.match(item)
        if not match:
            raise ConfigError(f"--where {item!r}: expected METRIC<=VALUE (or >=, <, >)")
        metric, op, raw_bound = match.groups()
        if metric not in names:
            raise ConfigError(f"--where {item!r}: unknown metric {metric!r} (have: {', '.join(names)})")
        bound = bound_number(raw_bound)
        if bound is None:
            raise ConfigError(f"--where {item!r}: {raw_bound!r} is not a number")
        out.append((metric, op, bound))
    return out


def _passes(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, ">=": value >= bound, "<": value < bound, ">": value > bound}[op]


def choose(document: dict[str, Any], pick: str, weights: list[float] | None, where: list[str]) -> dict[str, Any]:
    """The trial entry chosen by ``pick`` among ok trials passing ``where``; ConfigError if none."""
    from autogram.report.pareto import pick as pareto_pick

    names = [o["name"] for o in document["objectives"]]
    directions = [o["direction"] for o in document["objectives"]]
    filters = parse_where(where, names)
    if pick not in (*names, "knee"):
        raise ConfigError(f"--pick {pick!r}: expected one of {', '.join((*names, 'knee'))}")
    if weights is not None and len(weights) != len(names):
        raise ConfigError(f"--weights: {len(weights)} numbers for {len(names)} objectives ({', '.join(names)})")
    # A negative weight rewards being worse, all zeros or a NaN make every point tie: each
    # would pick a point that no preference chose.
    if weights is not None and not (all(math.isfinite(w) and w >= 0 for w in weights) and any(weights)):
        shown = ",".join(f"{w:g}" for w in weights)
        raise ConfigError(
            f"--weights {shown}: expected finite numbers >= 0, at least one above 0 (1 = how much it counts)"
        )
    ok = [t for t in document["trials"] if t["status"] == "ok" and all(n in t["values"] for n in names)]
    if not ok:
        raise ConfigError(f"search {document['name']!r} has no finished (ok) trial to export")
    mask = [all(_passes(t["values"][m], op, b) for m, op, b in filters) for t in ok]
    if not any(mask):
        raise ConfigError(f"--where {' and '.join(where)}: no ok trial of {document['name']!r} matches")
    values = [[t["values"][n] for n in names] for t in ok]
    by = "weights" if weights is not None else pick
    return ok[pareto_pick(values, directions, by=by, weights=weights, names=names, mask=mask)]


def number_ranges(numbers: list[int]) -> str:
    """Sorted trial numbers in short: ``[0, 1, 2, 4, 6, 7]`` -> ``0-2, 4, 6-7``. A search's
    numbers have gaps (a draw out of the pair bounds is drawn again under a number of its own),
    so a bare ``0..max`` would offer numbers no trial has."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def numbered(document: dict[str, Any], number: int, option: str) -> dict[str, Any]:
    """The ``ok`` trial ``number`` of the search ``document``; a one-line ConfigError naming
    ``option`` for a number no trial has (listing those there are) or a trial that did not
    finish ok."""
    by_number = {t["number"]: t for t in document["trials"]}
    if number not in by_number:
        there = number_ranges(sorted(by_number)) or "none"
        raise ConfigError(f"{option} {number}: search {document['name']!r} has no trial {number} (trials: {there})")
    trial = by_number[number]
    if trial["status"] != "ok":
        raise ConfigError(f"{option} {number}: trial {number} of {document['name']!r} is {trial['status']}")
    return trial


def search_folder(source: str) -> Path | None:
    """The finished search folder ``source`` names (the folder, or its ``front.json``); None
    where it names none here (a search or experiment name, read from MLflow)."""
    path = Path(source)
    if path.is_file() and path.name == "front.json":
        path = path.parent
    if not path.is_dir():
        return None
    if not (path / "front.json").is_file() or not (path / "search.json").is_file():
        raise ConfigError(f"{path}: not a finished search folder (needs front.json and search.json)")
    return path


def read_front_source(source: str, tracking_uri: str | None) -> dict[str, Any]:
    """The front of ``source``: a search folder's ``front.json``, or the front recorded in MLflow."""
    folder = search_folder(source)
    if folder is not None:
        return _folder_file(folder, "front.json")
    from autogram.report.readback import read_front
    from autogram.report.tracking import tracking_uri as resolve_uri

    try:
        return read_front(resolve_uri(tracking_uri), source)
    except ConfigError as exc:
        # A path that is not there reads better as that than as a name MLflow lacks.
        if "/" in source or os.sep in source or source.endswith(".json"):
            raise ConfigError(f"{source}: no such search folder here, and {exc}") from None
        raise


def _folder_file(folder: Path, name: str) -> dict[str, Any]:
    """A search folder's ``front.json`` or ``search.json``, read and its shape checked."""
    if name == "front.json":
        return checked_front(read_json(folder / name, "front"), folder / name)
    return checked_spec(read_json(folder / name, "search spec"), folder / name)


def load_source(source: str, tracking_uri: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(front document, search spec, parent MLflow run id or "") from a folder or from MLflow."""
    folder = search_folder(source)
    if folder is not None:  # front.json first: a folder with both broken names it
        return _folder_file(folder, "front.json"), _folder_file(folder, "search.json"), ""
    from autogram.report.tracking import client_for
    from autogram.report.tracking import tracking_uri as resolve_uri

    document = read_front_source(source, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="autogram-download-") as folder_name:
        local = client_for(resolve_uri(tracking_uri)).download_artifacts(document["run_id"], "search.json", folder_name)
        spec = checked_spec(read_json(Path(local), "search spec"), Path(local))
    return document, spec, document["run_id"]


def trial_training_config(spec: dict[str, Any], trial: dict[str, Any]) -> dict[str, Any]:
    """The raw config that retrains ``trial`` of the search ``spec`` describes, teacher pinned."""
    from autogram.study.driver import pin_teacher
    from autogram.study.space import trial_config
    from autogram.teacher import read_metadata

    config = spec["config"]
    space = SpaceConfig.model_validate(config["search"]["space"])
    base = {k: v for k, v in config.items() if k not in ("search", "provenance")}
    raw = trial_config(base, trial["params"], space, spec["candidates"])
    # A built-in teacher is pinned by its checkpoint file, a user's by its key: `autogram
    # train` rebuilds it through the same factory and refuses it if its weights changed.
    key = spec.get("teacher_key")
    if key is None and spec.get("teacher") and Path(spec["teacher"]).is_file():  # a search from before keys
        key = read_metadata(Path(spec["teacher"]))["key"]
    pin_teacher(raw, spec.get("teacher") or "", key or "")
    return raw


def export(
    source: str,
    out: Path,
    pick: str = "knee",
    weights: list[float] | None = None,
    where: list[str] | None = None,
    epochs: int | None = None,
    tracking_uri: str | None = None,
    force: bool = False,
    trial: int | None = None,
) -> dict[str, Any]:
    """Write the chosen trial's training config to ``out``; returns the raw config. ``trial``
    names the trial by number instead of choosing (no ``weights`` nor ``where`` with it). An
    existing ``out`` is refused unless ``force`` (another run's config, and its checkpoints,
    may go with it)."""
    from autogram.distiller import recipe_document, recipe_path

    if trial is not None and (weights is not None or where):
        raise ConfigError(f"--trial {trial}: names the trial itself; drop --weights and --where")
    if not force and out.exists():
        raise ConfigError(f"-o {out}: the file exists (another export?); pass --force to overwrite it, or another -o")
    if not force and recipe_path(out).exists():
        raise ConfigError(f"-o {out}: {recipe_path(out)} exists; pass --force to overwrite it, or another -o")
    document, spec, parent_id = load_source(source, tracking_uri)
    if trial is None:
        chosen = choose(document, pick, weights, list(where or []))
    else:
        chosen = numbered(document, trial, "--trial")
        if not chosen.get("pareto"):
            log.info("export: trial %d of %s is not on its Pareto front", trial, document["name"])
    if not chosen.get("run_id") and spec.get("tracking_uri"):
        parent_id, chosen["run_id"] = _mlflow_ids(tracking_uri or spec["tracking_uri"], spec["name"], chosen["number"])
    raw = trial_training_config(spec, chosen)
    trial_epochs = raw["train"]["epochs"]
    if epochs is not None:
        raw["train"]["epochs"] = epochs  # the cosine schedule stretches over the new budget
    how = "trial" if trial is not None else "weights" if weights else pick
    raw["provenance"] = _provenance(document, spec, chosen, parent_id, trial_epochs, how, where)
    validate(raw, str(out))  # refuse to write a config that would not load
    recipe = recipe_document(raw, spec.get("taps"))  # built before anything is written
    recipe_file = _write_export(
        out, raw, recipe, f"# Exported from search {document['name']!r}, trial {chosen['number']}\n"
    )
    if parent_id or spec.get("tracking_uri"):
        _log_export([out, recipe_file], spec, parent_id, tracking_uri)
    return raw


def _provenance(
    document: dict[str, Any],
    spec: dict[str, Any],
    chosen: dict[str, Any],
    parent_id: str,
    trial_epochs: int,
    pick: str,
    where: list[str] | None,
) -> dict[str, Any]:
    """Where an exported config came from: the search, its trial, MLflow runs and scores."""
    return {
        "search": document["name"],
        "trial": chosen["number"],
        "mlflow_run_id": chosen.get("run_id", ""),
        "mlflow_parent_run_id": parent_id,
        "experiment": spec.get("experiment", ""),
        "objectives": chosen["values"],
        "trial_epochs": trial_epochs,
        # The torch threads the trial ran with: `autogram train` uses as many on a CPU, so the
        # trial's budget reproduces the trial's scores exactly (float sums depend on it).
        "threads": max(1, int(spec["config"].get("search", {}).get("resources", {}).get("cpu", 1))),
        "pick": pick,
        "teacher_source": spec.get("teacher_source", {"source": "builtin"}),
        "where": list(where or []),
    }


def _write_export(out: Path, raw: dict[str, Any], recipe: dict[str, Any], header: str) -> Path:
    """The YAML at ``out`` and the recipe beside it; returns the recipe's path. A failed write
    (a full disk) leaves no half-written file and is one line."""
    import yaml

    from autogram.config.base import check_writable
    from autogram.distiller import write_recipe

    check_writable(out.parent, "-o")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(header + yaml.safe_dump(raw, sort_keys=False))
        # Plain data beside the YAML: what was found, readable from any framework.
        recipe_file = write_recipe(out, recipe)
        os.replace(tmp, out)
    except OSError as exc:  # a full disk mid-write: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"-o {out}: cannot write ({exc.strerror or type(exc).__name__})") from None
    return recipe_file


def _mlflow_ids(uri: str, name: str, number: int) -> tuple[str, str]:
    """(parent run id, the trial's child run id) of a search folder's MLflow record, or ("", "")."""
    from autogram.report.readback import find_parent
    from autogram.report.tracking import PARENT, client_for

    try:
        parent = find_parent(uri, name)
        runs = client_for(uri).search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.trial_number = '{number}'",
        )
    except Exception:  # no MLflow record reachable: the export still works from the folder
        return "", ""
    return parent.info.run_id, runs[0].info.run_id if runs else ""


def _log_export(files: list[Path], spec: dict[str, Any], parent_id: str, tracking_uri: str | None) -> None:
    import logging

    from autogram.report.readback import find_parent
    from autogram.report.tracking import client_for

    uri = tracking_uri or spec.get("tracking_uri", "")
    try:
        parent_id = parent_id or find_parent(uri, spec["name"]).info.run_id
        client = client_for(uri)
        for path in files:
            client.log_artifact(parent_id, str(path), "exports")
    except Exception as exc:  # the files are written; MLflow being unreachable must not undo that
        written = ", ".join(str(path) for path in files)
        logging.getLogger("autogram").warning("export: wrote %s, but did not log it to MLflow (%s)", written, exc)
