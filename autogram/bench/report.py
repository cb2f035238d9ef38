"""``autogram bench``'s figures as the text the command prints (``--json`` prints them raw)."""

from __future__ import annotations

from typing import Any


def format_bench(result: dict[str, Any]) -> str:
    """The CPU figures of ``autogram bench`` as text."""
    lines = _cache_lines(result)
    steps = result["step_ratio"]
    lines.append(f"step time / CE+KD step ({steps['ce_kd_step_ms']:.1f} ms, teacher cached):")
    for name, spread in steps["spread"].items():
        lines.append(f"  {name:<34} {_ranged(steps[name], spread, steps['repeats'])}")
    lines.append(
        f"Gram loss {result['gram_gflops']:.1f} GFLOP/s vs matmul {result['matmul_gflops']:.1f} GFLOP/s "
        f"({_ranged(result['gram_vs_matmul'], result['gram_vs_matmul_spread'], 3)})"
    )
    low, high = result["orchestration_overhead_spread"]
    lines.append(
        f"search orchestration overhead {100 * result['orchestration_overhead']:.1f}% (median of "
        f"{result['orchestration_repeats']} searches, {100 * low:.1f}-{100 * high:.1f}%; trials of "
        f"{result['mean_trial_seconds']:.1f}s, wall {result['search_wall_seconds']:.1f}s)"
    )
    if "confirm_speedup_concurrency_2" in result:
        low, high = result["confirm_speedup_spread"]
        seconds = result["confirm_seconds"]
        lines.append(
            f"confirm of the front: {seconds['1']:.1f}s in one process vs {seconds['2']:.1f}s as 2 Ray tasks at a time "
            f"-> speed-up {result['confirm_speedup_concurrency_2']:.2f}x (median of {result['confirm_repeats']} "
            f"alternating repeats, {low:.2f}-{high:.2f})"
        )
        if result.get("confirm_cpu_seconds"):
            cpu = result["confirm_cpu_seconds"]
            lines.append(
                f"  the machine's CPU-seconds: {cpu['1']:.1f} in one process vs {cpu['2']:.1f} on Ray (its daemons and "
                f"workers included): on {result['confirm_cores']} core(s) no scheduling of the Ray side beats "
                f"{result['confirm_speedup_core_bound']:.2f}x"
            )
    lines.append(
        f"hypervolume after {result['hv_trials']} trials (median of {result['hv_seeds']} seeds): "
        f"{result['sampler']} {result['hv_sampler']:.4g} vs random {result['hv_random']:.4g}"
    )
    lines += _stopping_lines(result.get("early_stopping"))
    return "\n".join(lines)


def _cache_lines(result: dict[str, Any]) -> list[str]:
    """The teacher cache's figures: sizes, sketch error, trial speed-ups, the sharded build."""
    lines: list[str] = []
    sizes, builds = result["cache_bytes_per_sample"], result["cache_build_seconds"]
    lines.append(
        f"teacher cache: {sizes['exact'] / 1e3:.1f} kB/sample exact ({builds['exact']:.1f}s to build) vs "
        f"{sizes['sketched'] / 1e3:.2f} kB/sample sketched (k={result['sketch_k']}, {result['cache_precision']}, "
        f"{builds['sketched']:.1f}s; largest tap {result['cache_bytes_per_sample_per_tap']:.0f} B)"
    )
    vit = result["vit_tap"]
    lines.append(
        f"  a ViT-B/16 tap (197x768): {vit['bytes_per_sample_exact'] / 1e3:.0f} kB/sample exact vs "
        f"{vit['bytes_per_sample_sketched']:.0f} B sketched ({vit['sketch_ms_per_sample_cpu']:.2f} ms/sample to sketch)"
    )
    loss, grad = result["sketch_loss_rel_error"], result["sketch_grad_rel_error"]
    lines.append(
        f"  sketch error over {result['sketch_batches']} batches: sample-Gram loss median {loss['median']:.2%} "
        f"(p95 {loss['p95']:.2%}), its gradient median {grad['median']:.2%} (p95 {grad['p95']:.2%})"
    )
    repeats = result["cache_speedup_repeats"]
    lines.append(
        f"  trial {result['trial_seconds_live']:.1f}s live vs {result['trial_seconds_cached_cold']:.1f}s cached "
        f"(cold page cache) / {result['trial_seconds_cached']:.1f}s (warm) -> speed-up "
        f"{_ranged(result['cache_speedup_cold'], result['cache_speedup_cold_spread'], repeats)} cold, "
        f"{_ranged(result['cache_speedup_warm'], result['cache_speedup_warm_spread'], repeats)} warm"
    )
    built = result["cache_build_seconds_compared"]
    sharded = _ranged(
        result["cache_build_speedup_2_workers"], result["cache_build_speedup_spread"], result["cache_build_repeats"]
    )
    lines.append(
        f"  cache build: {built['one_process']:.1f}s in one process vs {built['sharded']:.1f}s as shards on 2 "
        f"one-CPU Ray workers -> {sharded}"
    )
    return lines


def _stopping_lines(stopping: dict[str, Any] | None) -> list[str]:
    """The early-stopping table: none, asha and pareto on the same random trials."""
    if not stopping:
        return []
    lines: list[str] = []
    same = "the same trials in each" if stopping.get("same_trials") else "NOT the same trials in each"
    lines.append(
        f"early stopping, {stopping['trials']} random trials of {stopping['epochs']} epochs ({same}; "
        f"median of {stopping['seeds']} seed(s)):  hypervolume  CPU-seconds  pruned"
    )
    for kind in ("none", "asha", "pareto"):
        row = stopping[kind]
        versus = ""
        if kind != "none":
            low, high = stopping[f"{kind}_hypervolume_vs_none_spread"]
            versus = (
                f"  ({stopping[f'{kind}_hypervolume_vs_none']:.0%} ({low:.0%}-{high:.0%}) of none's hypervolume "
                f"on {stopping[f'{kind}_cpu_seconds_vs_none']:.0%} of its CPU-seconds, paired by seed)"
            )
        lines.append(
            f"  {kind:<8} {row['hypervolume']:>11.4g}  {row['cpu_seconds']:>11.1f}  {row['pruned']:>6g}{versus}"
        )
    return lines


def _ranged(value: float, spread: list[float], repeats: int) -> str:
    return f"{value:.2f}x (median of {repeats}, {spread[0]:.2f}-{spread[1]:.2f})"


def format_gpu_bench(result: dict[str, Any]) -> str:
    """The GPU figures (packed trials) as text."""
    lines: list[str] = []
    if result["gpu_trials_per_hour"] is None:
        return "GPU figures: none (no CUDA device)"

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines.append("trials packed on one GPU:  concurrency  trials/hour  GPU busy  peak MB/trial  overhead/trial")
    for key, per_hour in result["gpu_trials_per_hour"].items():
        lines.append(
            f"  {key:>24}  {fmt(per_hour, '11.0f')}  {fmt(result['gpu_busy_fraction'][key], '8.1%')}  "
            f"{fmt(result['gpu_peak_memory_mb'][key], '13.0f')}  {fmt(result['gpu_trial_overhead'][key], '14.1%')}"
        )
    return "\n".join(lines)
