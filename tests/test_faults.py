"""Faults a flaky machine or a hostile user causes: corrupt teacher weights, a retrained teacher
behind an old cache, a pinned teacher gone missing, a cut cache manifest, an unreachable tracking
server, a full disk. Each is refused or repaired with a log line, never used silently.

Interrupts (SIGINT / SIGKILL mid-trial, then ``--resume``) are in ``test_search.py``; two searches
of one name started together in ``test_lock.py``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from autogram.config import ConfigError, validate
from autogram.data import load_data
from autogram.teacher import ensure_teacher
from autogram.teacher.cache import MANIFEST, ensure_cache
from tests.conftest import cli_env, run_cli, tiny_raw

CPU = torch.device("cpu")


def _flip(path: Path, count: int = 4096) -> None:
    """Invert ``count`` bytes in the middle of a safetensors file's tensor data (its header intact)."""
    blob = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(blob[:8], "little")
    middle = start + (len(blob) - start) // 2 - count // 2
    blob[middle : middle + count] = bytes(b ^ 0xFF for b in blob[middle : middle + count])
    path.write_bytes(bytes(blob))


def test_flipped_teacher_weights_are_retrained_or_refused_never_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = validate(tiny_raw(tmp_path / "teachers"))
    data = load_data(cfg.data)
    first = ensure_teacher(cfg.teacher, data, CPU)
    assert not first.reused and first.path is not None and first.weights
    _flip(first.path)

    with caplog.at_level(logging.WARNING, logger="autogram"):
        again = ensure_teacher(cfg.teacher, data, CPU)
    assert not again.reused  # trained anew, in place of the corrupt file
    assert "do not match the fingerprint saved with them" in caplog.text and "training a new one" in caplog.text
    assert ensure_teacher(cfg.teacher, data, CPU).reused  # the new file is whole

    # Named explicitly (an exported config): refused in one line, not trained over.
    raw = tiny_raw(tmp_path / "teachers")
    raw["teacher"]["checkpoint"] = str(first.path)
    _flip(first.path)
    with pytest.raises(ConfigError, match=r"do not match the fingerprint saved with them \(corrupt file"):
        ensure_teacher(validate(raw).teacher, data, CPU)


def test_the_teacher_cache_follows_the_teachers_weights_not_only_its_key(tmp_path: Path) -> None:
    from autogram.teacher import save_teacher

    cfg = validate(tiny_raw(tmp_path / "teachers"))
    data = load_data(cfg.data)
    handle = ensure_teacher(cfg.teacher, data, CPU)
    assert handle.model is not None and handle.path is not None
    taps = handle.taps[:1]
    root = tmp_path / "signals"
    before = ensure_cache(handle.model, handle.identity, data, taps, CPU, root)
    # Other weights under the same config and data (a retrained teacher that came out
    # differently): the same key, so only the weights' fingerprint can tell the caches apart.
    with torch.no_grad():
        next(handle.model.parameters()).add_(0.01)
    save_teacher(handle.model, handle.path, handle.key, data, handle.val_accuracy)
    changed = ensure_teacher(cfg.teacher, data, CPU)
    assert changed.reused and changed.key == handle.key and changed.weights != handle.weights
    after = ensure_cache(changed.model, changed.identity, data, taps, CPU, root)
    assert after != before
    # `teacher --retrain` on a CPU reproduces the first weights (same seed): their cache again.
    same = ensure_teacher(cfg.teacher, data, CPU, retrain=True)
    assert same.weights == handle.weights
    assert ensure_cache(same.model, same.identity, data, taps, CPU, root) == before


def test_a_cut_cache_manifest_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = validate(tiny_raw(tmp_path / "teachers"))
    data = load_data(cfg.data)
    handle = ensure_teacher(cfg.teacher, data, CPU)
    root = tmp_path / "signals"
    directory = ensure_cache(handle.model, handle.identity, data, handle.taps[:1], CPU, root)
    manifest = directory / MANIFEST
    manifest.write_text(manifest.read_text()[:40])
    with caplog.at_level(logging.WARNING, logger="autogram"):
        again = ensure_cache(handle.model, handle.identity, data, handle.taps[:1], CPU, root)
    assert again == directory and "unreadable manifest" in caplog.text and "rebuilding" in caplog.text
    assert yaml.safe_load(manifest.read_text())["arrays"]  # whole again


def test_a_pinned_teacher_that_is_missing_is_refused_not_retrained(tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path / "teachers")
    raw["teacher"]["checkpoint"] = str(tmp_path / "gone.safetensors")
    raw["teacher"]["checkpoint_key"] = "0" * 64
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("train", "best.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("autogram: error: teacher.checkpoint: ")
    assert "gone.safetensors not found, and this config pins that teacher" in proc.stderr
    assert not (tmp_path / "gone.safetensors").exists() and not (tmp_path / "best.checkpoints").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "postgresql+psycopg://autogram@127.0.0.1:9/none"])
def test_an_unreachable_tracking_server_fails_in_one_line_before_anything_is_written(
    tmp_path: Path, teacher_cache: Path, uri: str
) -> None:
    raw = tiny_raw(teacher_cache)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    # MLflow's own client retries for minutes before its traceback: the timeout catches that.
    proc = run_cli("search", "s.yaml", "--tracking-uri", uri, "--out", "runs", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("autogram: error: ") and "Traceback" not in proc.stderr
    assert "tracking" in lines[-1]
    assert not (tmp_path / "runs").exists()
    assert time.monotonic() - started < 120


def _on_a_small_disk(folder: Path, size: str, *args: str) -> tuple[int, str, list[str]]:
    """Run ``autogram ARGS`` in ``folder`` with ``folder/runs`` a tmpfs of ``size`` (in a
    private user + mount namespace: a real full file system, gone when the command ends);
    its exit code, stderr, and what it left in ``runs/s``."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no user and mount namespaces here: cannot make a small file system")
    (folder / "runs").mkdir()
    script = (
        f"mount -t tmpfs -o size={size} tmpfs runs || exit 97\n"
        f'"{sys.executable}" -m autogram {" ".join(args)}\n'
        "code=$?\necho left: $(ls -A runs/s 2>/dev/null)\nexit $code\n"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 97, proc.stderr
    left = proc.stdout.strip().splitlines()[-1].removeprefix("left:").split()
    return proc.returncode, proc.stderr, left


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("8k", "runs/s/search.json: No space left on device"),  # a file autogram writes
        ("64k", "optuna.db: the study storage refused a write ((sqlite3.OperationalError) database or disk is full)"),
    ],
)
def test_a_full_disk_is_one_line_exit_2_and_leaves_the_name_usable(
    tmp_path: Path, teacher_cache: Path, size: str, expected: str
) -> None:
    raw = tiny_raw(teacher_cache)
    raw["search"] = {"trials": 2}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    code, stderr, left = _on_a_small_disk(tmp_path, size, "search", "s.yaml", "--out", "runs", "--name", "s", "-q")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[-1].startswith("autogram: error: ") and expected in lines[-1], lines[-1]
    # No half-written file, no study a rerun would call "already holds a search".
    assert left == [], left


@pytest.mark.slow
def test_ray_processes_a_sigkilled_driver_leaves_are_stopped_by_the_next_driver(
    tmp_path: Path, teacher_cache: Path
) -> None:
    import json
    import os
    import signal

    from autogram.study.lock import LOCK_FILE, _start_time, search_lock
    from tests.conftest import start_cli

    raw = tiny_raw(teacher_cache)
    raw["train"]["epochs"] = 50  # trials outlast the wait below
    raw["search"] = {"trials": 4, "concurrency": 1, "baselines": []}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(raw))
    driver = start_cli("search", "long.yaml", "--out", "runs", "--name", "long", cwd=tmp_path)
    lock = tmp_path / "runs" / "long" / LOCK_FILE
    recorded: list[list[int]] = []

    def alive() -> list[int]:  # the recorded processes still running (a reused PID starts later)
        return [pid for pid, started in recorded if _start_time(pid) == started]

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(recorded) < 4:  # driver's Ray: GCS, raylet, agents, a worker
            time.sleep(1)
            try:
                recorded = json.loads(lock.read_text()).get("processes", [])
            except (OSError, ValueError):
                continue
        assert len(recorded) >= 4, recorded
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: nothing of it can clean up
        driver.wait()
        time.sleep(10)
        assert alive(), "Ray's agents outlive a SIGKILLed driver (the case this guards against)"
        with search_lock(tmp_path / "runs" / "long"):  # what a --resume does first
            pass
        # SIGKILLed: gone once the kernel has torn them down (a moment; longer on a loaded machine).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and alive():
            time.sleep(0.2)
        assert alive() == []
    finally:
        for pid in alive():  # only what this test started, by PID
            os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
