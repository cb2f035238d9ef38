"""``autogram bench``: where the time goes, measured side by side in one run.

Every figure is a ratio of two measurements taken side by side in one run on the same
machine, on the built-in data at the quickstart config's default sizes (unless noted);
every timing ratio is the median of >= 3 rounds with the sides in turn, with its range
(:mod:`autogram.bench.repeats`):

- ``cache_speedup_cold`` / ``cache_speedup_warm`` (``cache_speedup`` = warm): a trial's wall
  time with the teacher live / with the teacher cache, the cache's files evicted from the
  page cache first, then warm; cache sizes, build times and sketch errors
  (:mod:`autogram.bench.cache`);
- ``step_ratio``: training-step time of CE only, CE+KD, CE+KD+Gram (sample, default
  pairs), CE+KD+Gram (channel), CE+KD+cross-modal, each / CE+KD (teacher cached: the
  setting a search runs in);
- ``gram_gflops`` vs ``matmul_gflops``: the sample-Gram loss's achieved GFLOP/s next to a
  plain ``torch.matmul`` of the same shapes;
- ``orchestration_overhead``: a small search's wall time / (sum of its trial times /
  concurrency) - 1;
- ``confirm_speedup_concurrency_2``: ``autogram confirm`` of that search's front in one
  process / as Ray tasks 2 at a time, each a fresh ``autogram confirm`` process as a user
  runs it (Ray's start included), the median of alternating repeats with their min-max spread;
  beside it the CPU-seconds each side cost the whole machine (``confirm_cpu_seconds``, Ray's
  daemons and workers included; Linux) and the ratio those of the Ray side allow on its cores
  at best (``confirm_speedup_core_bound``);
- ``hv_sampler`` vs ``hv_random``: median hypervolume after N trials over several seeds, for
  the configured sampler and for random search, with one shared reference point;
- ``cache_build_speedup_2_workers`` and ``early_stopping`` (:mod:`autogram.bench.scaling`);
- ``gpu_*``: trials per hour, GPU busy fraction, peak memory and per-trial overhead of the
  same trials packed 1, 4 and 8 to a GPU (:mod:`autogram.bench.gpu`; null without CUDA).
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autogram.config import TrialConfig, validate

log = logging.getLogger("autogram")


def step_ratios(base: dict[str, Any], data: Any, steps: int = 30) -> dict[str, Any]:
    """Median step time of each loss variant / the CE+KD step, teacher cached."""
    from autogram.bench.repeats import ratio
    from autogram.distill import _step
    from autogram.distill.cache_plan import layout_for
    from autogram.teacher import ensure_teacher
    from autogram.teacher.cache import ensure_cache
    from autogram.teacher.reader import CachedTeacher
    from autogram.tensors.runtime import DeviceSplit, pick_device
    from autogram.trial import prepare

    variants = {
        "ce": {"w_kd": 0, "w_gram": 0, "w_xmodal": 0},
        "ce_kd": {"w_gram": 0, "w_xmodal": 0},
        "ce_kd_gram_sample": {"w_xmodal": 0, "gram_kind": "sample"},
        "ce_kd_gram_sample_student_sketch": {"w_xmodal": 0, "gram_kind": "sample", "student_sketch": 256},
        "ce_kd_gram_channel": {"w_xmodal": 0, "gram_kind": "channel"},
        "ce_kd_xmodal": {"w_gram": 0},
    }
    cfg = validate(base)
    device = pick_device(cfg.device)
    handle = ensure_teacher(cfg.teacher, data, device)
    train = DeviceSplit(data.splits["train"], device)
    labels = train.labels
    batch = cfg.train.batch_size
    setups = {}
    for name, overrides in variants.items():
        raw = json.loads(json.dumps(base))
        raw["distill"].update(overrides)
        vcfg = validate(raw)
        parts = prepare(vcfg, device, data, teacher=handle)
        objective = parts.objective(vcfg.distill)
        objective = objective.to(device)
        signals = None
        if objective.needs_teacher:  # each variant's cache at the configured sketch size and precision
            layout = layout_for(vcfg, handle.taps, objective.teacher_uses)
            cache_dir = ensure_cache(
                handle.model, handle.identity, data, layout, device, cfg.teacher.cache_dir / "signals"
            )
            signals = CachedTeacher(cache_dir, objective.teacher_taps, device, uses=objective.teacher_uses)
        student = parts.student.train()
        optimizer = torch.optim.AdamW(list(student.parameters()) + list(objective.parameters()), lr=1e-3)
        setups[name] = (student, objective, signals, optimizer)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    # A step queues GPU work without waiting for it: wait before reading the clock.
    settle = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    # Variants take turns step by step, so a change in machine load hits them all alike; the
    # steps fall into 3 blocks, each block's medians give one ratio (median and range kept).
    for step in range(steps + 5):
        idx = torch.arange(step * batch, (step + 1) * batch) % len(labels)
        on_device = idx.to(device)
        inputs = train.batch(on_device, idx)
        for name, (student, objective, signals, optimizer) in setups.items():
            settle()
            start = time.perf_counter()
            _step(student, objective, signals, optimizer, device, idx, inputs, inputs, labels[on_device])
            settle()
            if step >= 5:  # warm-up steps excluded
                samples[name].append(time.perf_counter() - start)
    blocks = 3
    size = len(samples["ce_kd"]) // blocks
    medians = {n: [statistics.median(v[b * size : (b + 1) * size]) for b in range(blocks)] for n, v in samples.items()}
    ratios = {name: ratio(per_block, medians["ce_kd"]) for name, per_block in medians.items()}
    out: dict[str, Any] = {name: r["median"] for name, r in ratios.items()}
    out["ce_kd_step_ms"] = statistics.median(samples["ce_kd"]) * 1e3
    out["spread"] = {name: r["spread"] for name, r in ratios.items() if name != "ce_kd"}
    out["repeats"] = blocks
    return out


def gram_throughput(batch: int = 64, repeats: int = 50, rounds: int = 3) -> dict[str, Any]:
    """GFLOP/s of the sample-Gram loss on a default tap pair's shapes vs a plain matmul, in
    turns for ``rounds`` rounds (medians, and the ratio's range)."""
    from torch.utils.flop_counter import FlopCounterMode

    from autogram.bench.repeats import ratio
    from autogram.tensors.losses import gram_loss

    student, teacher = torch.randn(batch, 16, 256), torch.randn(batch, 128, 17)

    def rate(fn: Any) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        for _ in range(5):
            fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return counter.get_total_flops() * repeats / (time.perf_counter() - start) / 1e9

    flat_s, flat_t = student.reshape(batch, -1), teacher.reshape(batch, -1)
    grams, matmuls = [], []
    for _ in range(rounds):
        grams.append(rate(lambda: gram_loss(student, teacher, "sample")))
        matmuls.append(rate(lambda: (torch.matmul(flat_s, flat_s.t()), torch.matmul(flat_t, flat_t.t()))))
    share = ratio(grams, matmuls)
    return {
        "gram_gflops": statistics.median(grams),
        "matmul_gflops": statistics.median(matmuls),
        "gram_vs_matmul": share["median"],
        "gram_vs_matmul_spread": share["spread"],
    }


def _search(raw: dict[str, Any], root: Path, name: str) -> dict[str, Any]:
    from autogram.study import plan_search, run_search

    raw = {**raw, "search": {**raw["search"], "baselines": []}}  # the sampler's own trials only

    plan = plan_search(validate(raw), name, root, resume=False, tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    document = run_search(plan, track=False)
    events = [json.loads(line) for line in (plan.directory / "trials.jsonl").read_text().splitlines()]
    document["trial_seconds"] = [e["seconds"] for e in events if e["event"] == "complete" and e.get("seconds")]
    document["events"] = events
    return document


def orchestration(
    base: dict[str, Any], root: Path, trials: int, concurrency: int, epochs: int, repeats: int = 3
) -> dict[str, Any]:
    """A small search's wall time against the ideal, sum of trial times / concurrency: the median
    of ``repeats`` searches, with their range (the first is kept for the confirm figure)."""
    raw = json.loads(json.dumps(base))
    raw["train"]["epochs"] = epochs
    raw["search"].update(trials=trials, concurrency=concurrency, early_stopping=None)
    overheads, walls, trial_seconds = [], [], []
    for index in range(repeats):
        document = _search(raw, root, "bench-orchestration" + (f"-{index}" if index else ""))
        overheads.append(document["wall_seconds"] / (sum(document["trial_seconds"]) / concurrency) - 1)
        walls.append(document["wall_seconds"])
        trial_seconds += document["trial_seconds"]
    return {
        "search_wall_seconds": statistics.median(walls),
        "mean_trial_seconds": statistics.mean(trial_seconds),
        "orchestration_overhead": statistics.median(overheads),
        "orchestration_overhead_spread": [min(overheads), max(overheads)],
        "orchestration_repeats": repeats,
    }


def confirm_speedup(directory: Path, seeds: int, repeats: int = 3) -> dict[str, Any]:
    """``autogram confirm --points front`` of the search in ``directory``, run as a user runs
    it (a fresh process each time) in one process / as Ray tasks 2 at a time: the median ratio
    of alternating repeats (so drift hits both alike), and its spread.

    A fresh process, not a call in this one: here torch and its optimiser's first-use imports
    are already loaded, which a user's ``autogram confirm`` pays for (and the serial side alone
    would be spared), while each Ray worker pays for them anyway."""
    import os

    from autogram.bench.repeats import core_bound, machine_busy_seconds

    uri = f"sqlite:///{directory.parent / 'mlflow.db'}"
    ratios: list[float] = []
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for concurrency in (1, 2):
            command = [sys.executable, "-m", "autogram", "confirm", str(directory), "--seeds", str(seeds)]
            command += ["--points", "front", "--tracking-uri", uri, "--concurrency", str(concurrency), "--quiet"]
            busy, started = machine_busy_seconds(), time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            walls[concurrency].append(time.perf_counter() - started)
            after = machine_busy_seconds()
            if busy is not None and after is not None:
                cpu[concurrency].append(after - busy)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"bench: autogram confirm --concurrency {concurrency} failed: {last}")
        ratios.append(walls[1][-1] / walls[2][-1])
    result: dict[str, Any] = {
        "confirm_speedup_concurrency_2": statistics.median(ratios),
        "confirm_speedup_spread": [min(ratios), max(ratios)],
        "confirm_seconds": {str(k): statistics.median(v) for k, v in walls.items()},
        "confirm_repeats": repeats,
        "confirm_cpu_seconds": None,
        "confirm_cores": os.cpu_count() or 1,
        "confirm_speedup_core_bound": None,
    }
    if len(cpu[2]) == repeats:
        # What each side cost the machine (Ray's daemons and workers included), and the ratio no
        # scheduling could beat on these cores given the Ray side's CPU-seconds.
        cores = result["confirm_cores"]
        result["confirm_cpu_seconds"] = {str(k): statistics.median(v) for k, v in cpu.items()}
        result["confirm_speedup_core_bound"] = statistics.median(
            core_bound(serial, spent, cores) for serial, spent in zip(walls[1], cpu[2], strict=True)
        )
    return result


def efficiency(base: dict[str, Any], root: Path, trials: int, seeds: int, epochs: int) -> dict[str, float]:
    """Median hypervolume after ``trials`` trials: the configured sampler vs random search."""
    from autogram.report.pareto import hypervolume

    raw = json.loads(json.dumps(base))
    raw["train"]["epochs"] = epochs
    sampler = raw["search"]["sampler"]
    runs: dict[str, list[dict]] = {sampler: [], "random": []}
    for seed in range(seeds):
        for name in runs:
            raw["search"].update(trials=trials, sampler=name, seed=seed)
            runs[name].append(_search(raw, root, f"bench-{name}-{seed}"))
    objectives = runs[sampler][0]["objectives"]
    directions = [o["direction"] for o in objectives]
    rows = {
        key: [
            [[t["values"][o["name"]] for o in objectives] for t in doc["trials"] if t["status"] == "ok"] for doc in docs
        ]
        for key, docs in runs.items()
    }
    costs = [r[-1] for per_run in rows.values() for run in per_run for r in run]
    reference = [0.0 if d == "maximize" else 1.1 * max(costs) for d in directions]
    hv = {
        key: statistics.median(hypervolume(run, directions, reference) if run else 0.0 for run in per_run)
        for key, per_run in rows.items()
    }
    return {
        "hv_sampler": hv[sampler],
        "hv_random": hv["random"],
        "sampler": sampler,
        "hv_trials": trials,
        "hv_seeds": seeds,
    }


def run_bench(cfg: TrialConfig, quick: bool = False, gpu_only: bool = False) -> dict[str, Any]:
    """All measurements; ``quick`` shrinks the searches (fewer trials, epochs and seeds);
    ``gpu_only`` measures only the GPU figures (packed trials), for a short turn on a GPU."""
    from autogram.bench.cache import cache_figures, cache_speedup
    from autogram.bench.gpu import gpu_figures
    from autogram.bench.scaling import cache_build_speedup, early_stopping
    from autogram.data import load_data

    base = cfg.model_dump(mode="json")
    if not torch.cuda.is_available():  # a GPU config still benchmarks here, on the CPU
        base["device"] = "cpu"
        base["search"]["resources"]["gpu"] = 0
    started = time.perf_counter()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autogram-bench-") as tmp:
        root = Path(tmp)
        if not gpu_only:
            data = load_data(cfg.data)
            log.info("bench 1/8: teacher cache: size, build time, sketch error; trial time cached (cold, warm) vs live")
            out.update(cache_figures(base, data, root))
            out.update(cache_speedup(base, data, epochs=2 if quick else base["train"]["epochs"]))
            log.info("bench 2/8: teacher cache built in one process vs over 2 one-CPU Ray workers")
            out.update(cache_build_speedup(base, data, root))
            log.info("bench 3/8: training-step time per loss variant")
            out["step_ratio"] = step_ratios(base, data)
            log.info("bench 4/8: Gram GFLOP/s vs matmul")
            out.update(gram_throughput())
            log.info("bench 5/8: search orchestration overhead; confirm in one process vs on Ray, 2 at a time")
            out.update(orchestration(base, root, trials=4, concurrency=2, epochs=1 if quick else 6))
            out.update(confirm_speedup(root / "bench-orchestration", seeds=2))
            small = json.loads(json.dumps(base))
            small["data"]["builtin"].update(n_train=1000, n_val=400)  # many searches: keep each short
            log.info("bench 6/8: search efficiency, %s vs random", base["search"]["sampler"])
            out.update(efficiency(small, root, trials=6 if quick else 12, seeds=3, epochs=2 if quick else 4))
            log.info("bench 7/8: early stopping: none vs asha vs pareto, hypervolume and CPU-seconds")
            trials, epochs = (8, 4) if quick else (16, 8)
            out.update(early_stopping(small, root, _search, trials=trials, epochs=epochs, seeds=1 if quick else 3))
        log.info("bench 8/8: GPU throughput of packed trials (null without CUDA)")
        out.update(gpu_figures(base, root, trials=8 if quick else 32, search=_search))
    out["bench_seconds"] = time.perf_counter() - started
    return out
