"""Device placement, GPU sizing and the GPU bench figures.

Without a GPU, the ``meta`` device stands in for CUDA: a model on ``meta`` fed a CPU tensor
fails exactly as a CUDA model fed a CPU tensor does ("Input type (torch.FloatTensor) and
weight type (torch.cuda.FloatTensor) should be the same"), so every path that feeds a
model must pass its inputs on the model's own device to get through these tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from autogram.config import TrialConfig, load_config, validate
from autogram.distill import _step
from autogram.models import build_student, build_teacher, example_inputs, model_taps, parameter_count, resolved_taps
from autogram.teacher import ensure_teacher, teacher_from_bytes
from autogram.teacher.cache import ensure_cache
from autogram.teacher.reader import CachedTeacher
from autogram.teacher.signals import LiveTeacher
from autogram.tensors.runtime import batch_indices, correct_count, device_split, drop_modalities
from autogram.trial import prepare, run_trial, trial_cache
from tests.conftest import ROOT, tiny_raw

META = torch.device("meta")
CPU = torch.device("cpu")


def test_a_meta_model_fed_host_tensors_fails_like_a_cuda_model(tiny_config: TrialConfig) -> None:
    """The stand-in is sound: the mistake that crashed the search on CUDA fails here too."""
    data = prepare(tiny_config, CPU).data
    teacher = build_teacher(data, tiny_config.teacher.architecture()).to(META)
    with pytest.raises(RuntimeError, match="not on the expected device"):
        teacher(example_inputs(data))


def test_the_drivers_teacher_and_tap_paths_feed_each_model_on_its_own_device(tiny_config: TrialConfig) -> None:
    data = prepare(tiny_config, CPU).data
    trained = ensure_teacher(tiny_config.teacher, data, CPU)  # trains (or reuses) the checkpoint on the CPU
    on_cpu = [(t.name, t.shape) for t in trained.taps]

    # What the search driver does before the first trial: load the teacher onto the search's
    # device and list its taps with shapes (the call that crashed on CUDA).
    handle = ensure_teacher(tiny_config.teacher, data, META)
    assert next(handle.model.parameters()).device == META
    assert [(t.name, t.shape) for t in handle.taps] == on_cpu
    assert [(t.name, t.shape) for t in resolved_taps(handle.model, data)] == on_cpu

    # What a trial does: its student and taps on the trial's device, the teacher from bytes.
    parts = prepare(tiny_config, META, data, teacher=handle)
    assert next(parts.student.parameters()).device == META
    worker = teacher_from_bytes(trained.path.read_bytes(), data, META, handle.taps)
    assert next(worker.model.parameters()).device == META

    # The student's taps on a student that already sits on the device.
    student = build_student(data, tiny_config.student).to(META)
    assert len(model_taps(student, tiny_config.student, data, "student")) == len(parts.student_taps)

    # The live teacher and the evaluation get batches from the device they run on.
    batch = {k: v.to(META) for k, v in example_inputs(data, 4).items()}
    signals = LiveTeacher(handle.model, handle.taps[:2], META)(torch.arange(4), batch)
    assert signals.logits.device == META and all(f.device == META for f in signals.features.values())
    with pytest.raises(RuntimeError, match="meta"):  # counts run on the device; reading one back is the only exit
        correct_count(student, batch, torch.zeros(4, dtype=torch.long, device=META), 2, META)


def test_batch_indices_give_the_same_order_on_the_host_and_the_device() -> None:
    generator = torch.Generator().manual_seed(3)
    pairs = list(batch_indices(10, 4, generator, CPU))
    assert [len(h) for h, _ in pairs] == [4, 4, 2]
    assert all(torch.equal(h, d) for h, d in pairs)
    assert sorted(torch.cat([h for h, _ in pairs]).tolist()) == list(range(10))
    again = [h for h, _ in batch_indices(10, 4, torch.Generator().manual_seed(3))]
    assert all(torch.equal(a, h) for a, (h, _) in zip(again, pairs, strict=True))


def test_gpu_config_is_sized_for_a_gpu() -> None:
    cfg = load_config(ROOT / "search_spaces" / "gpu.yaml", ["data.builtin.n_train=200", "data.builtin.n_val=100"])
    from autogram.data import load_data

    data = load_data(cfg.data)
    with torch.device("meta"):  # sizes only: nothing is allocated
        teacher = build_teacher(data, cfg.teacher.architecture())
        student = build_student(data, cfg.student)
    assert parameter_count(teacher) >= 20_000_000
    assert parameter_count(student) >= 1_000_000
    assert cfg.train.batch_size >= 256 and cfg.device == "cuda"
    assert cfg.search.resources.gpu == pytest.approx(1 / cfg.search.concurrency)
    assert cfg.search.trials == 32


def test_gpu_bench_figures_are_null_without_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the cuda tests cover the figures")
    from autogram.bench.gpu import GPU_KEYS, gpu_figures

    def never(*_: object) -> dict:
        raise AssertionError("no search runs without CUDA")

    assert gpu_figures({}, tmp_path, trials=8, search=never) == dict.fromkeys(GPU_KEYS)


def test_trial_overhead_counts_only_trials_after_the_first_wave() -> None:
    from autogram.bench.gpu import trial_overheads

    events = [
        {"event": "start", "trial": "a", "time": 0.0},
        {"event": "start", "trial": "b", "time": 0.5},
        {"event": "complete", "trial": "a", "time": 10.0, "status": "ok", "train_seconds": 5, "eval_seconds": 1},
        {"event": "start", "trial": "c", "time": 10.0},
        {"event": "complete", "trial": "b", "time": 10.5, "status": "ok", "train_seconds": 9, "eval_seconds": 0.5},
        {"event": "start", "trial": "d", "time": 10.5},
        {"event": "complete", "trial": "c", "time": 14.0, "status": "ok", "train_seconds": 3, "eval_seconds": 0.6},
        {"event": "complete", "trial": "d", "time": 14.5, "status": "failed"},
    ]
    assert trial_overheads(events, first_wave=2) == [pytest.approx(0.1)]
    assert trial_overheads(events, first_wave=0)[0] == pytest.approx(0.4)


def test_packed_run_refuses_a_throughput_of_crashed_trials(tmp_path: Path) -> None:
    """A packed search whose trials crashed is an error, not 0 trials/h (the GPU check of
    2026-12-04 printed 0.0 for packing 4 and 8 when every packed trial had failed)."""
    from autogram.bench.gpu import packed_run

    def search(statuses: list[str]) -> Callable[[dict, Path, str], dict]:
        def run(raw: dict, root: Path, name: str) -> dict:
            assert raw["search"]["space"]["max_pairs"] is None  # every sampled trial may train
            events = [{"event": "start", "trial": str(i), "time": 0.1 * i} for i in range(len(statuses))]
            events += [
                {"event": "complete", "trial": str(i), "time": 2.0 + i, "status": status, "train_seconds": 1.0}
                for i, status in enumerate(statuses)
            ]
            return {"events": events, "wall_seconds": 3600.0}

        return run

    base = {"search": {"resources": {"cpu": 1}, "space": {"max_pairs": 3}}}
    with pytest.raises(RuntimeError, match="1 of 3 trials at concurrency 2 failed"):
        packed_run(base, tmp_path, trials=3, concurrency=2, search=search(["ok", "failed", "infeasible"]), device="cpu")
    # Trials the space refused untrained are no crash: the rate counts the trained ones.
    refused = search(["ok", "ok", "infeasible"])
    figures = packed_run(base, tmp_path, trials=3, concurrency=2, search=refused, device="cpu")
    assert figures["gpu_trials_per_hour"] == pytest.approx(2.0)


@pytest.mark.slow
def test_packed_run_measures_throughput_and_overhead_from_a_real_search(tmp_path: Path, teacher_cache: Path) -> None:
    """The GPU bench's measurement, run on the CPU (a real local Ray search; no NVML there)."""
    from autogram.bench import _search
    from autogram.bench.gpu import GPU_KEYS, packed_run

    raw = tiny_raw(teacher_cache)
    raw["train"]["epochs"] = 1
    base = validate(raw).model_dump(mode="json")
    figures = packed_run(base, tmp_path, trials=4, concurrency=2, search=_search, device="cpu")
    assert set(figures) == set(GPU_KEYS)
    assert figures["gpu_trials_per_hour"] > 0
    assert figures["gpu_busy_fraction"] is None and figures["gpu_peak_memory_mb"] is None
    assert 0 <= figures["gpu_trial_overhead"] < 1
    events = [json.loads(line) for line in (tmp_path / "bench-packed-cpu-2" / "trials.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "complete"]
    assert len(done) == 4 and all(e["train_seconds"] > 0 and e["eval_seconds"] > 0 for e in done)
    assert sorted(e["number"] for e in done) == [0, 1, 2, 3]
    # Ray reused the two worker processes, and a reused worker still held the data: the
    # trials after the first wave started with nothing to load.
    assert len({e["worker_pid"] for e in done}) == 2
    starts = sorted((e for e in events if e["event"] == "start"), key=lambda e: e["time"])
    later = {e["trial"] for e in starts[2:]}
    assert [e["warm_start"] for e in done if e["trial"] in later] == [True, True]
    assert not any(e["warm_start"] for e in done if e["trial"] not in later)


# --- on a GPU (skipped elsewhere) -------------------------------------------------------


def _device_raw(teacher_cache: Path, name: str) -> dict:
    """The tiny test config on device ``name``."""
    return {**tiny_raw(teacher_cache), "device": name}


# The CPU runs the same calls as the GPU, so a renamed import or argument fails on every
# machine rather than first on a GPU (two did: the GPU check of 2026-12-04 found them).
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("name", DEVICES)
def test_trial_and_teacher_cache_on_the_device(name: str, teacher_cache: Path, tmp_path: Path) -> None:
    """A trial and the teacher cache on the device; on CUDA the cache's arrays stay on the GPU
    (a batch is an index there)."""
    cfg = validate(_device_raw(teacher_cache, name))
    result = run_trial(cfg)
    assert result.status == "ok" and result.device.startswith(name) and result.teacher["source"] == "cache"
    device = torch.device(name)
    data = prepare(cfg, device).data
    handle = ensure_teacher(cfg.teacher, data, device)
    assert next(handle.model.parameters()).device.type == name
    directory = ensure_cache(handle.model, handle.key, data, handle.taps, device, tmp_path / "signals")
    cached = CachedTeacher(directory, handle.taps, device)
    assert {t.device.type for t in cached.store.values()} == {name}
    out = cached(torch.tensor([0, 5, 9]), {})
    assert out.logits.device.type == name and out.logits.shape[0] == 3


@pytest.mark.parametrize("name", DEVICES)
def test_training_steps_never_wait_for_the_device(name: str, teacher_cache: Path) -> None:
    """Training steps read nothing back to the host: on CUDA, torch's sync debug mode raises
    at any host-device sync; on the CPU the same steps run and train."""
    cfg = validate(_device_raw(teacher_cache, name))
    device = torch.device(name)
    parts = prepare(cfg, device)
    data = parts.data
    objective = parts.objective(cfg.distill).to(device)
    handle = ensure_teacher(cfg.teacher, data, device)
    directory = trial_cache(cfg, parts, handle, device)
    signals = CachedTeacher(directory, objective.teacher_taps, device, uses=objective.teacher_uses)
    student = parts.student.to(device).train()
    optimizer = torch.optim.AdamW(list(student.parameters()) + list(objective.parameters()), lr=1e-3)
    train = device_split(data, "train", device)
    generator = torch.Generator().manual_seed(0)
    batches = list(batch_indices(len(train), 50, generator, device))[:4]
    cuda = device.type == "cuda"
    steps = []
    try:
        for host_idx, idx in batches:
            clean = train.batch(idx, host_idx)
            inputs = drop_modalities(clean, data.modalities, 0.2, generator)
            labels = train.labels[idx]
            steps.append(_step(student, objective, signals, optimizer, device, host_idx, clean, inputs, labels))
            if cuda and len(steps) == 1:  # the first step may sync (lazy CUDA set-up); no later one
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")  # any host-device sync raises
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    assert {terms["loss"].device.type for terms in steps} == {name} and len(steps) == 4
    assert all(torch.isfinite(terms["loss"]) for terms in steps) and objective.teacher_taps


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_search_packs_four_trials_on_one_gpu_then_export_and_train(teacher_cache: Path, tmp_path: Path) -> None:
    import yaml

    from tests.conftest import run_cli

    raw = _device_raw(teacher_cache, "cuda")
    raw["search"] = {"trials": 4, "concurrency": 4, "resources": {"cpu": 1, "gpu": 0.25}}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "gpu.yaml", "--name", "g", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "autogram-runs" / "g" / "front.json").read_text())
    assert [t["status"] for t in front["trials"]] == ["ok"] * 4
    events = [json.loads(line) for line in (tmp_path / "autogram-runs" / "g" / "trials.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "complete"]
    assert all(e["gpu_peak_mb"] and e["gpu_peak_mb"] > 0 for e in done)
    proc = run_cli("export", "g", "-o", "best.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("train", "best.yaml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["status"] == "ok"
