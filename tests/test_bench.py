"""The bench's repeated timings and its figures for work spread over Ray (real local Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autogram.bench.repeats import alternate, ratio, spread_text
from autogram.bench.report import format_bench
from tests.conftest import tiny_raw


def test_sides_take_turns_and_a_ratio_keeps_its_range() -> None:
    order: list[str] = []
    seconds = alternate({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b"] * 3 and [len(v) for v in seconds.values()] == [3, 3]
    stats = ratio([2.0, 3.0, 9.0], [1.0, 1.0, 1.0])
    assert stats == {"median": 3.0, "spread": [2.0, 9.0], "repeats": 3}
    assert spread_text(stats) == "3.00x (median of 3, 2.00-9.00)"


def test_the_machine_s_busy_seconds_count_this_process_s_work_and_bound_the_speed_up() -> None:
    import time

    from autogram.bench.repeats import core_bound, machine_busy_seconds

    before = machine_busy_seconds()
    if before is None:
        pytest.skip("no /proc/stat here")
    spent = time.process_time()
    while time.process_time() - spent < 0.3:  # 0.3 CPU-seconds of this process's own work
        sum(range(1000))
    # The whole machine was busy at least as long as this process alone.
    assert machine_busy_seconds() - before >= 0.25
    # 40 CPU-seconds on 2 cores take 20 s at best: against 30 s, at most 1.5x.
    assert core_bound(30.0, 40.0, 2) == pytest.approx(1.5)
    text = format_bench(
        {
            **_cpu_figures_shape(),
            "confirm_speedup_concurrency_2": 1.25,
            "confirm_speedup_spread": [1.2, 1.3],
            "confirm_seconds": {"1": 30.0, "2": 24.0},
            "confirm_repeats": 3,
            "confirm_cpu_seconds": {"1": 31.0, "2": 40.0},
            "confirm_cores": 2,
            "confirm_speedup_core_bound": 1.5,
        }
    )
    assert "31.0 in one process vs 40.0 on Ray" in text and "on 2 core(s) no scheduling" in text
    assert "beats 1.50x" in text


def test_confirm_figure_runs_the_command_a_user_runs_and_says_why_it_failed(tmp_path: Path) -> None:
    from autogram.bench import confirm_speedup

    # No search there: the command the bench builds is accepted (no unknown option) and
    # fails on the folder, and the bench says which side failed and why, in one line.
    with pytest.raises(RuntimeError) as failure:
        confirm_speedup(tmp_path / "no-such-search", seeds=1, repeats=1)
    message = str(failure.value)
    assert message.startswith("bench: autogram confirm --concurrency 1 failed: autogram: error: ")
    assert "no-such-search" in message or "MLflow" in message
    assert "No such option" not in message and "\n" not in message


@pytest.mark.slow
def test_cache_build_and_early_stopping_figures_are_measured(teacher_cache: Path, tmp_path: Path) -> None:
    from autogram.bench import _search
    from autogram.bench.report import format_bench
    from autogram.bench.scaling import cache_build_speedup, early_stopping
    from autogram.config import validate
    from autogram.data import load_data

    raw = validate(tiny_raw(teacher_cache)).model_dump(mode="json")
    data = load_data(validate(raw).data)
    build = cache_build_speedup(raw, data, tmp_path)
    low, high = build["cache_build_speedup_spread"]
    assert build["cache_build_repeats"] == 3 and 0 < low <= build["cache_build_speedup_2_workers"] <= high
    assert not list(tmp_path.glob("build-*")) and not list(tmp_path.glob(".build-*"))  # nothing left behind

    raw["search"]["concurrency"] = 2
    figures = early_stopping(raw, tmp_path, _search, trials=8, epochs=4, seeds=1)["early_stopping"]
    assert figures["none"]["pruned"] == 0
    # Every kind's search ran and reached a front; how many trials a rung stops depends on how
    # far apart the tiny trials' accuracies are (all at chance, none is behind), so it is only
    # bounded here (the schedulers' rules are tested on hand-made rungs in test_stopping.py).
    for kind in ("none", "asha", "pareto"):
        assert figures[kind]["hypervolume"] > 0 and figures[kind]["cpu_seconds"] > 0, figures
        assert 0 <= figures[kind]["pruned"] < 8
    # Random sampling: the three kinds ran the very same trials, so stopping can only lose
    # hypervolume (the ratio measures the rule, not where the sampler went next).
    assert figures["same_trials"] is True
    for kind in ("asha", "pareto"):
        spent = figures[kind]["cpu_seconds"] / figures["none"]["cpu_seconds"]
        assert figures[f"{kind}_cpu_seconds_vs_none"] == pytest.approx(spent)
        assert figures[kind]["hypervolume"] <= figures["none"]["hypervolume"] + 1e-9
    text = format_bench({"early_stopping": figures, **_cpu_figures_shape()})
    assert "early stopping, 8 random trials of 4 epochs (the same trials in each" in text and "pareto" in text


def _cpu_figures_shape() -> dict:
    """The other keys format_bench reads, as run_bench writes them (values from this machine
    are not needed to check the text's shape)."""
    spread = [1.0, 1.0]
    return {
        "cache_bytes_per_sample": {"exact": 1e3, "sketched": 1e2},
        "cache_build_seconds": {"exact": 1.0, "sketched": 1.0},
        "sketch_k": 512,
        "cache_precision": "float16",
        "cache_bytes_per_sample_per_tap": 10.0,
        "vit_tap": {"bytes_per_sample_exact": 1e5, "bytes_per_sample_sketched": 1e3, "sketch_ms_per_sample_cpu": 1.0},
        "sketch_loss_rel_error": {"median": 0.01, "p95": 0.02},
        "sketch_grad_rel_error": {"median": 0.01, "p95": 0.02},
        "sketch_batches": 50,
        "trial_seconds_live": 2.0,
        "trial_seconds_cached_cold": 1.0,
        "trial_seconds_cached": 1.0,
        "cache_speedup_cold": 2.0,
        "cache_speedup_cold_spread": spread,
        "cache_speedup_warm": 2.0,
        "cache_speedup_warm_spread": spread,
        "cache_speedup_repeats": 3,
        "cache_build_seconds_compared": {"one_process": 2.0, "sharded": 1.0},
        "cache_build_speedup_2_workers": 2.0,
        "cache_build_speedup_spread": spread,
        "cache_build_repeats": 3,
        "step_ratio": {"ce_kd": 1.0, "ce": 0.5, "ce_kd_step_ms": 3.0, "spread": {"ce": spread}, "repeats": 3},
        "gram_gflops": 1.0,
        "matmul_gflops": 2.0,
        "gram_vs_matmul": 0.5,
        "gram_vs_matmul_spread": spread,
        "orchestration_overhead": 0.1,
        "orchestration_overhead_spread": [0.05, 0.2],
        "orchestration_repeats": 3,
        "mean_trial_seconds": 3.0,
        "search_wall_seconds": 10.0,
        "hv_trials": 6,
        "hv_seeds": 3,
        "sampler": "tpe",
        "hv_sampler": 1.0,
        "hv_random": 1.0,
    }
