"""``autogram bench``'s figures for work spread over Ray: the sharded teacher-cache build and
early stopping, each measured side by side in one run.

- ``cache_build_speedup_2_workers``: the search's teacher cache built in one process (torch
  using every core) / as Ray tasks over shards on 2 one-CPU workers, Ray already running (as
  in a search), in turns, the median of the rounds' ratios with their range;
- ``early_stopping``: the same seeded search with no early stopping, ASHA and Pareto
  successive halving: the hypervolume reached (one reference point shared by all runs) and
  the CPU-seconds spent (each trial's wall seconds x its CPUs, stopped trials included).
  The searches sample at random, so the three kinds run the very same trials (checked:
  ``same_trials``) and a ratio measures what the stopping rule kept and saved. With TPE, a
  pruned trial changes what the sampler tries next: each kind then searched other points, and
  two identical 2-seed runs of this figure gave ASHA 58% and 91% of none's hypervolume.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autogram.config import validate


def cache_build_speedup(base: dict[str, Any], data: Any, root: Path, repeats: int = 3) -> dict[str, Any]:
    """One process vs 2 one-CPU Ray workers building the same cache (rebuilt every time)."""
    import ray

    from autogram.bench.repeats import alternate, ratio
    from autogram.teacher import ensure_teacher
    from autogram.teacher.cache import CacheLayout, build_cache, cache_key
    from autogram.teacher.shards import build_sharded
    from autogram.trial import prepare

    cfg = validate(base)
    device = torch.device("cpu")
    handle = ensure_teacher(cfg.teacher, data, device)
    parts = prepare(cfg, device, data, teacher=handle)
    uses = {p.teacher.name: {"sample"} for p in parts.pairs}
    layout = CacheLayout.plan(handle.taps, uses, cfg.teacher.cache_sketch, cfg.teacher.cache_precision)
    key = cache_key(handle.identity, data.fingerprint, layout, device)
    split = data.splits["train"]
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        build = {
            "one_process": lambda: build_cache(handle.model, split, layout, device, root / "build-single", key),
            "sharded": lambda: build_sharded(
                handle.model, split, layout, device, root / "build-sharded", key, shards=8, resources={"cpu": 1}
            ),
        }
        seconds = alternate(build, repeats)
    finally:
        if started:
            ray.shutdown()
        for name in ("build-single", "build-sharded"):
            shutil.rmtree(root / name, ignore_errors=True)
    speedup = ratio(seconds["one_process"], seconds["sharded"])
    return {
        "cache_build_speedup_2_workers": speedup["median"],
        "cache_build_speedup_spread": speedup["spread"],
        "cache_build_seconds_compared": {k: statistics.median(v) for k, v in seconds.items()},
        "cache_build_repeats": repeats,
    }


def early_stopping(
    base: dict[str, Any], root: Path, search: Callable[..., dict[str, Any]], trials: int, epochs: int, seeds: int
) -> dict[str, Any]:
    """Hypervolume and CPU-seconds of the same seeded random searches stopped by none, asha
    and pareto; the ratios to none are paired by seed (median and range)."""
    from autogram.report.pareto import hypervolume

    raw = json.loads(json.dumps(base))
    raw["train"]["epochs"] = epochs
    kinds = {"none": None, "asha": {"kind": "asha"}, "pareto": {"kind": "pareto"}}
    cpus = float(raw["search"]["resources"]["cpu"])
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for seed in range(seeds):
        for kind, stopping in kinds.items():
            rung = {"grace_period": 1, "reduction_factor": 2} if stopping else {}
            stop = {**stopping, **rung} if stopping else None
            raw["search"].update(trials=trials, seed=seed, sampler="random", early_stopping=stop)
            runs[kind].append(search(raw, root, f"bench-stopping-{kind}-{seed}"))
    objectives = runs["none"][0]["objectives"]
    directions = [o["direction"] for o in objectives]

    def rows(document: dict[str, Any]) -> list[list[float]]:
        return [[t["values"][o["name"]] for o in objectives] for t in document["trials"] if t["status"] == "ok"]

    costs = [r[-1] for docs in runs.values() for doc in docs for r in rows(doc)]
    reference = [0.0 if d == "maximize" else 1.1 * max(costs) for d in directions]
    volumes = {k: [hypervolume(rows(d), directions, reference) if rows(d) else 0.0 for d in v] for k, v in runs.items()}
    spent = {
        k: [cpus * sum(e.get("seconds") or 0.0 for e in d["events"] if e["event"] == "complete") for d in v]
        for k, v in runs.items()
    }
    out: dict[str, Any] = {
        kind: {
            "hypervolume": statistics.median(volumes[kind]),
            "cpu_seconds": statistics.median(spent[kind]),
            "pruned": statistics.median(sum(t["status"] == "pruned" for t in d["trials"]) for d in runs[kind]),
        }
        for kind in kinds
    }
    for kind in ("asha", "pareto"):
        for name, per_seed in (("hypervolume", volumes), ("cpu_seconds", spent)):
            paired = [x / max(y, 1e-12) for x, y in zip(per_seed[kind], per_seed["none"], strict=True)]
            out[f"{kind}_{name}_vs_none"] = statistics.median(paired)
            out[f"{kind}_{name}_vs_none_spread"] = [min(paired), max(paired)]
    out.update(trials=trials, epochs=epochs, seeds=seeds, reference_point=reference, sampler="random")
    pairs = [(runs["none"][i], runs[kind][i]) for kind in ("asha", "pareto") for i in range(seeds)]
    out["same_trials"] = all(_same_trials(reference_run, run) for reference_run, run in pairs)
    return {"early_stopping": out}


def _same_trials(reference: dict[str, Any], stopped: dict[str, Any]) -> bool:
    """Whether every trial of ``stopped`` has the parameters of ``reference``'s trial of the
    same number, and each finished one its values too."""
    by_number = {t["number"]: t for t in reference["trials"]}
    for trial in stopped["trials"]:
        twin = by_number.get(trial["number"])
        if twin is None or twin["params"] != trial["params"]:
            return False
        if trial["status"] == "ok" and twin["values"] != trial["values"]:
            return False
    return True
