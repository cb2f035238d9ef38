"""``autogram bench``'s teacher-cache figures, measured side by side in one run.

- ``cache_bytes_per_sample`` and ``cache_build_seconds``: the search's cache stored exact
  (float32 features) and at the configured sketch size and precision, both built here;
  ``cache_bytes_per_sample_per_tap``: the largest tap array of the sketched cache;
- ``vit_tap``: the same figures for one ViT-B/16-sized tap (197 x 768), by the layout's
  arithmetic, and the measured time to sketch it;
- ``sketch_loss_rel_error`` / ``sketch_grad_rel_error``: median and 95th percentile, over
  real training batches, of the relative error of the sample-Gram loss and of its gradient
  with respect to the student's features, sketched teacher against exact teacher;
- ``cache_speedup_cold`` / ``cache_speedup_warm``: a trial's wall time with the live teacher
  over its wall time with the cache, the cache's files first evicted from the page cache
  (``posix_fadvise(DONTNEED)``) and the process's in-memory copy dropped, then again warm;
  the three in turns, 3 rounds, each speed-up the median of the rounds with its range.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from autogram.config import validate

log = logging.getLogger("autogram")
VIT_TAP = (197, 768)


def evict(directory: Path) -> None:
    """Drop the cache's files from the page cache, so the next read comes from the disk."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def cache_speedup(base: dict[str, Any], data: Any, epochs: int, repeats: int = 3) -> dict[str, Any]:
    """The same trial cached from a cold page cache, cached warm, and live, in turns, ``repeats``
    rounds: each speed-up is the median of the rounds' ratios, with their range."""
    from autogram.bench.repeats import alternate, ratio
    from autogram.teacher.reader import RESIDENT_KIND
    from autogram.tensors.runtime import drop_resident
    from autogram.trial import run_trial

    raw = json.loads(json.dumps(base))
    raw["train"]["epochs"] = epochs
    cached = validate(raw)
    raw["teacher"]["cache"] = False
    live = validate(raw)
    # Warm-up: the same code paths once (building the cache if need be), so the cold trial
    # differs from the warm one only in its reads; it names the cache it read.
    warm_up = run_trial(cached.model_copy(update={"train": cached.train.model_copy(update={"epochs": 1})}), data=data)
    folder = warm_up.teacher.get("cache")  # none when the config's terms never read the teacher

    def cold() -> None:
        if folder:
            evict(Path(folder))
        drop_resident(RESIDENT_KIND)
        run_trial(cached, data=data)

    seconds = alternate(
        {"cold": cold, "warm": lambda: run_trial(cached, data=data), "live": lambda: run_trial(live, data=data)},
        repeats,
    )
    speedup_cold, speedup_warm = ratio(seconds["live"], seconds["cold"]), ratio(seconds["live"], seconds["warm"])
    return {
        "trial_seconds_cached_cold": statistics.median(seconds["cold"]),
        "trial_seconds_cached": statistics.median(seconds["warm"]),
        "trial_seconds_live": statistics.median(seconds["live"]),
        "cache_speedup_cold": speedup_cold["median"],
        "cache_speedup_cold_spread": speedup_cold["spread"],
        "cache_speedup_warm": speedup_warm["median"],
        "cache_speedup_warm_spread": speedup_warm["spread"],
        "cache_speedup": speedup_warm["median"],
        "cache_speedup_repeats": repeats,
        "trial_epochs": epochs,
    }


def _vit_tap(k: int, precision: str) -> dict[str, float]:
    from autogram.models.taps import Tap
    from autogram.teacher.cache import CacheLayout
    from autogram.teacher.sketch import Sketcher

    tap = Tap("vit.block", "image", 0.5, "blocks.5", "feature", "tokens_last", VIT_TAP)
    exact = CacheLayout.plan([tap], {tap.name: {"sample"}}, 0, "float32").bytes_per_sample(0)
    sketched = CacheLayout.plan([tap], {tap.name: {"sample"}}, k, precision).bytes_per_sample(0)
    sketcher = Sketcher(tap.name, VIT_TAP[0] * VIT_TAP[1], k, 0, torch.device("cpu"))
    batch = torch.randn(32, VIT_TAP[1], VIT_TAP[0])
    sketcher(batch)
    start = time.perf_counter()
    sketcher(batch)
    return {
        "bytes_per_sample_exact": exact,
        "bytes_per_sample_sketched": sketched,
        "sketch_ms_per_sample_cpu": (time.perf_counter() - start) / len(batch) * 1e3,
    }


def cache_figures(base: dict[str, Any], data: Any, root: Path, batches: int = 50) -> dict[str, Any]:
    """Sizes, build times and sketch errors of exact vs sketched storage (built under ``root``)."""
    from autogram.models.features import capture
    from autogram.teacher import ensure_teacher
    from autogram.teacher.cache import CacheLayout, ensure_cache, read_manifest
    from autogram.teacher.reader import CachedTeacher
    from autogram.tensors.losses import ce_loss, sample_gram_losses
    from autogram.tensors.runtime import DeviceSplit, pick_device
    from autogram.trial import prepare

    cfg = validate(base)
    device = pick_device(cfg.device)
    handle = ensure_teacher(cfg.teacher, data, device)
    parts = prepare(cfg, device, data, teacher=handle)
    pairs = parts.pairs
    uses = {p.teacher.name: {"sample"} for p in pairs}
    k, precision = cfg.teacher.cache_sketch, cfg.teacher.cache_precision
    layouts = {
        "exact": CacheLayout.plan(handle.taps, uses, 0, "float32"),
        "sketched": CacheLayout.plan(handle.taps, uses, k, precision),
    }
    out: dict[str, Any] = {"sketch_k": k, "cache_precision": precision, "cache_bytes_per_sample": {}}
    out["cache_build_seconds"] = {}
    readers = {}
    for name, layout in layouts.items():
        directory = ensure_cache(handle.model, handle.identity, data, layout, device, root / "signals")
        manifest = read_manifest(directory)
        out["cache_bytes_per_sample"][name] = manifest["bytes_per_sample"]
        out["cache_build_seconds"][name] = manifest["build_seconds"]
        readers[name] = CachedTeacher(directory, [p.teacher for p in pairs], device, uses=uses)
        if name == "sketched":
            samples = manifest["samples"]
            per_tap = [e["bytes"] / samples for n, e in manifest["arrays"].items() if n != "logits"]
            out["cache_bytes_per_sample_per_tap"] = max(per_tap)
    out["vit_tap"] = _vit_tap(k, precision)

    # A real training trajectory: CE + the exact sample Gram; both teachers scored on each batch.
    student = parts.student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.train.lr)
    train = DeviceSplit(data.splits["train"], device)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_errors, grad_errors = [], []
    for _ in range(batches):
        idx = torch.randperm(len(train.labels), generator=generator)[: cfg.train.batch_size]
        inputs = train.batch(idx.to(device), idx)
        with capture(student, [p.student for p in pairs]) as feats:
            logits = student(inputs)
        student_feats = [feats[p.student.name].float() for p in pairs]
        losses = {}
        grads = {}
        for name, reader in readers.items():
            signals = reader(idx, inputs)
            teacher = [signals.for_sample_gram(p.teacher.name) for p in pairs]
            losses[name] = sample_gram_losses(student_feats, teacher).mean()
            grads[name] = torch.cat(
                [g.flatten() for g in torch.autograd.grad(losses[name], student_feats, retain_graph=True)]
            )
        exact = float(losses["exact"].detach())
        loss_errors.append(abs(float(losses["sketched"].detach()) - exact) / exact)
        grad_errors.append(float((grads["sketched"] - grads["exact"]).norm() / grads["exact"].norm()))
        total = ce_loss(logits.float(), train.labels[idx.to(device)]) + cfg.distill.w_gram * losses["exact"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    out["sketch_loss_rel_error"] = _percentiles(loss_errors)
    out["sketch_grad_rel_error"] = _percentiles(grad_errors)
    out["sketch_batches"] = batches
    return out
