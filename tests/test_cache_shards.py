"""A search's teacher cache built by Ray tasks over shards: the same bytes as the driver's own
build, and a build killed after a shard resumes the rest (real local Ray, real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from autogram.config import TrialConfig, validate
from autogram.models import build_teacher, resolved_taps
from autogram.teacher import ensure_teacher
from autogram.teacher.cache import MANIFEST, CacheLayout, build_cache, cache_key, open_cache
from autogram.teacher.shards import shard_bounds, staging_folder
from autogram.trial import prepare
from tests.conftest import ROOT, cli_env, tiny_raw

CPU = torch.device("cpu")


def test_shards_are_whole_batches_covering_the_split_once() -> None:
    assert shard_bounds(600, 50, 4) == [(0, 150), (150, 300), (300, 450), (450, 600)]
    assert shard_bounds(610, 50, 4) == [(0, 200), (200, 400), (400, 600), (600, 610)]
    assert shard_bounds(120, 256, 8) == [(0, 120)]  # one batch: one shard
    for samples, batch, shards in ((1000, 64, 3), (7, 2, 5), (256, 256, 2)):
        bounds = shard_bounds(samples, batch, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == samples
        assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:], strict=False))
        assert all(lo % batch == 0 for lo, _ in bounds) and len(bounds) <= shards


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != MANIFEST}


# Builds one cache of the tiny config (exact features, float32) in a fresh process: "single" in
def test_a_search_shards_its_cache_where_there_is_more_than_one_device_to_spread_over() -> None:
    """A local Ray on the CPU builds in the driver unless ``cache_shards`` asks for shards; a
    cluster (an address) shards by default, 4 per concurrent trial; ``cache_shards: 1`` never does."""
    from autogram.teacher.shards import search_builder

    def cfg(**teacher: object) -> TrialConfig:
        raw = tiny_raw(Path("teachers"))
        raw["teacher"].update(teacher)
        raw["search"] = {**raw.get("search", {}), "concurrency": 2}
        return validate(raw)

    assert search_builder(cfg(), CPU) is None
    on_cluster = search_builder(cfg(), CPU, "10.0.0.1:6379")
    assert on_cluster is not None and on_cluster.keywords["shards"] == 8
    assert on_cluster.keywords["resources"] == {"cpu": 1, "gpu": 0}
    assert search_builder(cfg(cache_shards=3), CPU).keywords["shards"] == 3
    assert search_builder(cfg(cache_shards=1), CPU, "10.0.0.1:6379") is None


# the driver, "sharded" as 3 Ray tasks on a 1-CPU local Ray; SLOW_FROM makes the rows from that
# index on take a minute per batch, so the test can kill the build mid-way.
_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    from pathlib import Path

    import ray, torch

    from autogram.config import TrialConfig, validate
    from autogram.models import build_teacher, resolved_taps
    from autogram.teacher import ensure_teacher
    from autogram.teacher.cache import CacheLayout, build_cache, cache_key
    from autogram.teacher.shards import build_sharded
    from autogram.trial import prepare

    raw, mode, out, slow_from = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])


    class Slow:
        def __init__(self, split, start):
            self.split, self.start = split, start

        def __len__(self):
            return len(self.split)

        def rows(self, indices):
            if indices[0] >= self.start:
                time.sleep(60)
            return self.split.rows(indices)


    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = validate(raw)
    cpu = torch.device("cpu")
    parts = prepare(cfg, cpu)
    handle = ensure_teacher(cfg.teacher, parts.data, cpu)
    taps = resolved_taps(build_teacher(parts.data, handle.model.arch), parts.data)
    layout = CacheLayout.plan(taps, precision="float32")
    key = cache_key(handle.key, parts.data.fingerprint, layout, cpu)
    split = parts.data.splits["train"]
    if mode == "single":
        torch.set_num_threads(1)  # as the 1-CPU shard tasks: CPU kernels' sums depend on the thread count
        build_cache(handle.model, split, layout, cpu, out, key, batch_size=50)
    else:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        split = Slow(split, slow_from) if slow_from >= 0 else split
        build_sharded(handle.model, split, layout, cpu, out, key, shards=3, resources={"cpu": 1}, batch_size=50)
        ray.shutdown()
    """
)


def _start(raw: dict, mode: str, out: Path, script: Path, slow_from: int = -1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(raw), mode, str(out), str(slow_from)],
        cwd=ROOT,
        env=cli_env({"PYTHONPATH": str(ROOT)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _run(raw: dict, mode: str, out: Path, script: Path) -> str:
    proc = _start(raw, mode, out, script)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_a_sharded_cache_equals_the_single_process_one_and_a_killed_build_resumes(
    teacher_cache: Path, tmp_path: Path
) -> None:
    raw = tiny_raw(teacher_cache)
    cfg = validate(raw)
    parts = prepare(cfg, CPU)
    ensure_teacher(cfg.teacher, parts.data, CPU)  # trained once here, found by both builds
    script = tmp_path / "build.py"
    script.write_text(_SCRIPT)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _run(raw, "single", single, script)

    # Killed while shard 2 of 3 is slow: shard 1 stays in the staging folder.
    driver = _start(raw, "sharded", sharded, script, slow_from=200)
    staged = staging_folder(sharded) / "shard-0000" / MANIFEST
    tree: set[psutil.Process] = set()
    deadline = time.time() + 300
    while time.time() < deadline and not staged.is_file():
        try:
            tree |= set(psutil.Process(driver.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    assert staged.is_file(), driver.communicate(timeout=60)[0][-3000:] if driver.poll() is not None else "no shard"
    time.sleep(1.0)
    tree |= set(psutil.Process(driver.pid).children(recursive=True))
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    for process in tree:  # Ray's own processes, should any have left the group
        try:
            process.kill()
        except psutil.Error:
            pass
    assert not sharded.exists()  # nothing half-assembled where the cache belongs
    kept = staged.read_bytes()
    assert not (staging_folder(sharded) / "shard-0001" / MANIFEST).exists()

    output = _run(raw, "sharded", sharded, script)
    assert "1 finished by an earlier build are kept" in output
    assert output.count("teacher cache: shard") == 2, output  # only the two missing shards ran
    assert not staging_folder(sharded).exists()
    assert _files(sharded) == _files(single)  # byte for byte
    manifest, reference = (json.loads((d / MANIFEST).read_text()) for d in (sharded, single))
    assert manifest["arrays"] == reference["arrays"] and manifest["key"] == reference["key"]
    assert manifest["teacher_flops_per_sample"] == reference["teacher_flops_per_sample"]
    assert open_cache(sharded, verify=True)
    assert kept  # the killed build's shard was read, not rebuilt (its rows ran once: counted above)


def test_sketched_shards_share_the_first_batchs_basis_and_a_stale_staging_folder_is_not_reused(
    teacher_cache: Path, tmp_path: Path
) -> None:
    """Sketches keep their top principal directions exact in a basis fixed by the split's first
    batch: every shard must use that one basis (a last shard of 10 samples has fewer
    directions than the basis keeps), else its inner products with other shards' are wrong."""
    import ray

    from autogram.teacher.shards import build_sharded

    cfg = validate(tiny_raw(teacher_cache))
    parts = prepare(cfg, CPU)
    handle = ensure_teacher(cfg.teacher, parts.data, CPU)
    taps = resolved_taps(build_teacher(parts.data, handle.model.arch), parts.data)
    layout = CacheLayout.plan(taps, {t.name: {"sample"} for t in taps}, sketch=64, precision="float16")
    assert "sketch" in {form for forms in layout.forms.values() for form in forms}
    key = cache_key(handle.key, parts.data.fingerprint, layout, CPU)
    split = parts.data.splits["train"]
    target = tmp_path / "cache"
    staging = staging_folder(target)
    staging.mkdir()
    (staging / "plan.json").write_text(json.dumps({"key": "other", "bounds": [[0, 600]]}))
    (staging / "shard-0000").mkdir()
    (staging / "shard-0000" / MANIFEST).write_text("{}")  # junk that must not be read
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 1-CPU shard tasks: CPU kernels' sums depend on the thread count
    try:
        build_cache(handle.model, split, layout, CPU, tmp_path / "single", key, batch_size=295)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        build_sharded(handle.model, split, layout, CPU, target, key, shards=2, resources={"cpu": 1}, batch_size=295)
    finally:
        ray.shutdown()
    assert _files(target) == _files(tmp_path / "single")
    assert not staging.exists()


def test_a_user_error_in_a_shard_task_is_the_same_one_line_error(teacher_cache: Path, tmp_path: Path) -> None:
    import copy

    import ray

    from autogram.config import ConfigError
    from autogram.teacher.shards import build_sharded

    cfg = validate(tiny_raw(teacher_cache))
    parts = prepare(cfg, CPU)
    handle = ensure_teacher(cfg.teacher, parts.data, CPU)
    model = copy.deepcopy(handle.model)
    with torch.no_grad():  # features far beyond float16's range
        for parameter in model.parameters():
            parameter.mul_(1e3)
    taps = resolved_taps(build_teacher(parts.data, handle.model.arch), parts.data)
    layout = CacheLayout.plan(taps, precision="float16")
    key = cache_key(handle.key, parts.data.fingerprint, layout, CPU)
    split = parts.data.splits["train"]
    with pytest.raises(ConfigError, match="beyond float16's range") as single:
        build_cache(model, split, layout, CPU, tmp_path / "single", key)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(ConfigError, match="beyond float16's range") as sharded:
            build_sharded(model, split, layout, CPU, tmp_path / "sharded", key, shards=2, resources={"cpu": 1})
    finally:
        ray.shutdown()
    assert str(sharded.value) == str(single.value) and "\n" not in str(sharded.value)
    assert not (tmp_path / "sharded").exists() and not (tmp_path / "single").exists()
