"""Repeated, alternating timings: a ratio is only as good as its spread.

One short run of each side can measure noise (a cold cache once came out faster than a warm
one). Every timing ratio of ``autogram bench`` is therefore the median of >= 3 repeats, the
sides taking turns within each repeat so that drift in the machine's load hits them alike,
reported with the min-max range of the per-repeat ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def alternate(sides: dict[str, Callable[[], Any]], repeats: int = 3) -> dict[str, list[float]]:
    """Wall seconds of each side, ``repeats`` rounds, the sides in turn within a round."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """The per-round ratios' median, min-max spread and count."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {"median": statistics.median(ratios), "spread": [min(ratios), max(ratios)], "repeats": len(ratios)}


def spread_text(stats: dict[str, Any]) -> str:
    """``1.23x (median of 3, 1.10-1.31)``."""
    low, high = stats["spread"]
    return f"{stats['median']:.2f}x (median of {stats['repeats']}, {low:.2f}-{high:.2f})"


def machine_busy_seconds() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot, every process counted (Linux's
    ``/proc/stat``: user, nice, system, irq, softirq and steal time); None where it is not
    readable. Taken before and after a command, the difference is what that command cost the
    machine, its children and the daemons it started included (which its own rusage leaves out:
    Ray's processes are not its children)."""
    import os

    try:
        with open("/proc/stat") as stat:
            first = stat.readline().split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if not first or first[0] != "cpu" or len(first) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / ticks


def core_bound(serial_seconds: float, parallel_cpu_seconds: float, cores: int) -> float:
    """The largest speed-up over ``serial_seconds`` that work costing ``parallel_cpu_seconds`` of
    CPU could reach on ``cores`` cores, even packed onto them perfectly: it cannot finish in
    less than its CPU-seconds / cores."""
    return serial_seconds / (parallel_cpu_seconds / cores)
