"""One driver per search folder: the lock, its stale takeover, and two same-name searches
started together (real local Ray and stores)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autogram.config import ConfigError
from autogram.study.lock import LOCK_FILE, search_lock
from tests.conftest import ray_trials, start_cli, tiny_raw


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_refuses_a_second_driver_and_is_released_on_any_exit(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with search_lock(folder):
        holder = json.loads((folder / LOCK_FILE).read_text())
        assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
        busy = f"search folder {folder} is in use by a search driver .PID {os.getpid()}"
        with pytest.raises(ConfigError, match=busy), search_lock(folder):
            pass
    assert not (folder / LOCK_FILE).exists()
    with pytest.raises(RuntimeError), search_lock(folder):
        raise RuntimeError("a crash")
    assert not (folder / LOCK_FILE).exists()  # released on the way out of a crash too


def test_a_stale_lock_is_taken_over_and_one_of_another_host_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    dead = _dead_pid()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with caplog.at_level("INFO", logger="autogram"), search_lock(folder):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of driver PID {dead}, which is gone" in caplog.text
    (folder / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": "another-node"}))
    other = "on another-node\\); wait for it, or if no search runs there, delete"
    with pytest.raises(ConfigError, match=other), search_lock(folder):
        pass


@pytest.mark.slow
def test_two_searches_with_one_name_started_together_make_one_search(tmp_path: Path, teacher_cache: Path) -> None:
    raw = tiny_raw(teacher_cache)
    raw["train"]["epochs"] = 1
    raw["search"] = {"trials": 3, "concurrency": 2}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    args = ("search", "s.yaml", "--out", "runs", "--name", "s")
    drivers = [start_cli(*args, cwd=tmp_path, capture=True) for _ in range(2)]
    outcomes = [(d.wait(timeout=600), d.communicate()[1]) for d in drivers]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], [err[-2000:] for _, err in outcomes]
    loser = next(err for code, err in outcomes if code == 2)
    errors = [line for line in loser.splitlines() if line.startswith("autogram: error:")]
    assert len(errors) == 1 and ("in use by a search driver" in errors[0] or "already holds a search" in errors[0])
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'runs' / 's' / 'optuna.db'}")
    trials = ray_trials(study)
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    front = json.loads((tmp_path / "runs" / "s" / "front.json").read_text())
    assert len(front["trials"]) == 3 and not (tmp_path / "runs" / "s" / LOCK_FILE).exists()
