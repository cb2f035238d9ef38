"""The GPU figures of ``autogram bench``: short trials packed on one GPU.

The same search (random sampler, one seed: the same trials; no ``max_pairs`` cap, so the
sampled trials train rather than being refused) runs at concurrency 1, 4 and 8 with
``resources.gpu`` = 1 / concurrency, and for each this reports:

- ``gpu_trials_per_hour``: finished trials per hour of the search's wall time;
- ``gpu_busy_fraction``: the mean of NVML's utilisation (the share of time a kernel was
  running) sampled while the search runs;
- ``gpu_peak_memory_mb``: the largest peak of GPU memory one trial allocated;
- ``gpu_trial_overhead``: the median share of a trial's wall time (from the driver's start
  event to its completion) spent outside training and evaluation, over the trials started
  after the first wave (the first wave also pays for starting the worker processes).

On a machine without CUDA every key is ``null``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("autogram")
GPU_KEYS = ("gpu_trials_per_hour", "gpu_busy_fraction", "gpu_peak_memory_mb", "gpu_trial_overhead")
CONCURRENCIES = (1, 4, 8)


class UtilisationSampler:
    """Samples NVML's GPU utilisation of one device in a thread while a block runs."""

    def __init__(self, index: int = 0, interval: float = 0.2) -> None:
        self.index = index
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> UtilisationSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as exc:  # no nvidia-ml-py or no NVIDIA driver: this figure is null
            log.info("bench: GPU utilisation not sampled (%s)", type(exc).__name__)
            return self

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            import pynvml

            pynvml.nvmlShutdown()

    @property
    def mean(self) -> float | None:
        """Mean utilisation in [0, 1], ``None`` when nothing was sampled."""
        return statistics.mean(self.samples) if self.samples else None


def visible_gpu_index() -> int:
    """NVML's index of the first GPU this process sees (CUDA_VISIBLE_DEVICES renumbers them)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def trial_overheads(events: list[dict[str, Any]], first_wave: int) -> list[float]:
    """Per trial, (wall time - training - evaluation) / wall time, for trials that finished ``ok``
    and started after the first ``first_wave`` starts; wall time runs from the driver's start
    event to the trial's completion event."""
    starts = [e for e in events if e["event"] == "start"]
    started_at = {e["trial"]: e["time"] for e in starts}
    later = {e["trial"] for e in sorted(starts, key=lambda e: e["time"])[first_wave:]}
    shares = []
    for event in events:
        if event["event"] != "complete" or event.get("status") != "ok" or event["trial"] not in later:
            continue
        wall = event["time"] - started_at[event["trial"]]
        busy = (event.get("train_seconds") or 0.0) + (event.get("eval_seconds") or 0.0)
        if wall > 0:
            shares.append(max(0.0, wall - busy) / wall)
    return shares


def packed_run(
    base: dict[str, Any],
    root: Path,
    trials: int,
    concurrency: int,
    search: Callable[[dict[str, Any], Path, str], dict[str, Any]],
    device: str = "cuda",
) -> dict[str, float | None]:
    """One search of ``trials`` trials, ``concurrency`` at a time (on CUDA each with 1/concurrency
    of the GPU): trials per hour, GPU busy fraction, peak MB per trial, median overhead share.

    ``search(raw, root, name)`` runs one untracked search and returns its front document with
    the driver's ``events``.
    """
    raw = json.loads(json.dumps(base))
    raw["device"] = device
    raw["search"].update(
        trials=trials, concurrency=concurrency, sampler="random", seed=0, early_stopping=None, constraints=[]
    )
    if "space" in raw["search"]:
        # No cap on the Gram pairs a trial draws: the random sampler toggles each candidate pair,
        # so under a max_pairs of 3 (gpu.yaml's, until it went) five of 8 trials were refused untrained, and
        # "8 to a GPU" packed 3 trainings (seen on an H200, 2026-12-04).
        raw["search"]["space"] = {**raw["search"]["space"], "max_pairs": None}
    share = 1.0 / concurrency if device == "cuda" else 0.0
    raw["search"]["resources"] = {**raw["search"].get("resources", {}), "gpu": share}
    log.info("bench gpu: %d trials at concurrency %d (%.3g GPU each)", trials, concurrency, share)
    with UtilisationSampler(visible_gpu_index()) as sampler:
        document = search(raw, root, f"bench-packed-{device}-{concurrency}")
    events = document["events"]
    ended = [e for e in events if e["event"] == "complete"]
    done = [e for e in ended if e.get("status") == "ok"]
    crashed = [e for e in ended if e.get("status") == "failed"]
    if crashed:
        # A throughput of trials that crashed is not a figure: say so rather than print 0/h.
        # (An `infeasible` trial is the space's own: its sampled pairs were refused untrained.)
        raise RuntimeError(
            f"bench gpu: {len(crashed)} of {len(ended)} trials at concurrency {concurrency} failed "
            "(their errors are above on stderr)"
        )
    peaks = [e["gpu_peak_mb"] for e in done if e.get("gpu_peak_mb") is not None]
    shares = trial_overheads(events, first_wave=concurrency)
    return {
        "gpu_trials_per_hour": len(done) / document["wall_seconds"] * 3600,
        "gpu_busy_fraction": sampler.mean,
        "gpu_peak_memory_mb": max(peaks) if peaks else None,
        "gpu_trial_overhead": statistics.median(shares) if shares else None,
    }


def gpu_figures(
    base: dict[str, Any],
    root: Path,
    trials: int,
    search: Callable[[dict[str, Any], Path, str], dict[str, Any]],
    concurrencies: tuple[int, ...] = CONCURRENCIES,
) -> dict[str, Any]:
    """:func:`packed_run` at each concurrency, by key then concurrency (all ``null`` without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return dict.fromkeys(GPU_KEYS)
    out: dict[str, dict[str, float | None]] = {key: {} for key in GPU_KEYS}
    for concurrency in concurrencies:
        for key, value in packed_run(base, root, trials, concurrency, search).items():
            out[key][str(concurrency)] = value
    return out
