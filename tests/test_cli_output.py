"""What a user reads: ``-q`` on every command, errors that name what was wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, cli_env, run_cli, tiny_raw

# Every command, with arguments that make it stop at its first check (exit 2).
COMMANDS = {
    "layers": ["layers", "missing.yaml"],
    "teacher": ["teacher", "missing.yaml"],
    "trial": ["trial", "missing.yaml"],
    "search": ["search", "missing.yaml"],
    "front": ["front", "nosuch"],
    "export": ["export", "nosuch", "-o", "out.yaml"],
    "train": ["train", "missing.yaml"],
    "bench": ["bench", "missing.yaml"],
    "confirm": ["confirm", "nosuch"],
}


def test_every_command_is_listed_here() -> None:
    from autogram.cli import main

    assert set(main.commands) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_quiet(command: str, tmp_path: Path) -> None:
    for flag in ("-q", "--quiet"):
        proc = run_cli(*COMMANDS[command], flag, cwd=tmp_path)
        assert "No such option" not in proc.stderr, proc.stderr
        assert proc.returncode == 2 and proc.stderr.startswith("autogram: error: "), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["confirm", "nosuch", "--concurrency", "0"], "'--concurrency': 0"),
        (["search", "missing.yaml", "--trials", "abc"], "'--trials': 'abc'"),
        (["export", "nosuch"], "'--output'"),
        (["trial", "missing.yaml", "--bogus"], "'--bogus'"),
        (["train"], "'CONFIG'"),
        (["nosuch"], "'nosuch'"),
    ],
)
def test_a_command_line_mistake_is_one_line_naming_the_option(args: list[str], named: str, tmp_path: Path) -> None:
    # click's own report is four lines (usage, hint, blank, error); every other user error is one.
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("autogram: error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert named in proc.stderr and "--help')" in proc.stderr, proc.stderr


def test_help_and_version_still_exit_0(tmp_path: Path) -> None:
    for args in (["--help"], ["confirm", "--help"], ["--version"]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout and not proc.stderr, (args, proc.stderr)


def test_quiet_trial_prints_no_progress(tmp_path: Path, teacher_cache: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    loud = run_cli("trial", "tiny.yaml", "--set", "train.epochs=1", cwd=tmp_path)
    quiet = run_cli("trial", "tiny.yaml", "--set", "train.epochs=1", "-q", cwd=tmp_path)
    assert loud.returncode == 0 and quiet.returncode == 0, quiet.stderr
    assert "[autogram] epoch 1/1" in loud.stderr
    assert "[autogram]" not in quiet.stderr
    assert quiet.stdout.splitlines()[:3] == loud.stdout.splitlines()[:3]  # status, accuracy, robustness


FROZEN_AT_EXIT = """
import atexit, gc, sys
# Registered before the command's own exit step, so it runs after it (atexit: last in, first out).
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), file=sys.stderr))
from autogram.cli import main
main(sys.argv[1:])
"""


def test_a_command_freezes_what_it_loaded_before_the_interpreter_exits(tmp_path: Path, teacher_cache: Path) -> None:
    # The interpreter's last collections would walk everything torch and mlflow loaded (1-2 s
    # per command, nothing to free); a command freezes it all instead, and its output is whole.
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    args = ["trial", "tiny.yaml", "--set", "train.epochs=1", "--json", "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", FROZEN_AT_EXIT, *args], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["status"] == "ok"
    frozen = int(proc.stderr.split("frozen at exit:")[1].split()[0])
    assert frozen > 100_000  # torch's modules alone hold more objects than this


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", "autogram: error: --set train.epochs=abc: train.epochs: Input should be a valid integer"),
        ("teacher.hidden_size=31", "autogram: error: --set teacher.hidden_size=31: teacher: hidden_size (31) must be"),
        ("train.nope=1", "autogram: error: --set train.nope=1: train.nope: unknown key"),
    ],
)
def test_a_bad_override_is_named_not_the_file(
    tmp_path: Path, teacher_cache: Path, override: str, expected: str
) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    proc = run_cli("trial", "tiny.yaml", "--set", override, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(expected), proc.stderr
    # A bad value in the file itself is still named by the file.
    raw = tiny_raw(teacher_cache)
    raw["train"]["epochs"] = "abc"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("trial", "bad.yaml", "--set", "train.lr=0.01", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("autogram: error: bad.yaml: train.epochs:"), proc.stderr


def test_a_cuda_search_without_a_gpu_share_is_refused(tmp_path: Path, teacher_cache: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    proc = run_cli("search", "tiny.yaml", "--set", "device=cuda", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("autogram: error: search.resources.gpu: 0"), proc.stderr
    assert not (tmp_path / "autogram-runs").exists() or not any((tmp_path / "autogram-runs").iterdir())


def test_a_gpu_share_on_a_machine_without_cuda_is_refused(tmp_path: Path, teacher_cache: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    proc = run_cli("search", "tiny.yaml", "--set", "search.resources.gpu=0.25", cwd=tmp_path)
    assert proc.returncode == 2 and "search.resources.gpu: 0.25, but this machine has no CUDA device" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--address", "127.0.0.1:{port}"], "--address 127.0.0.1:{port}: no Ray cluster answers there"),
        (["--address", "nohost:notaport"], "--address 'nohost:notaport': expected host:port"),
        (["--set", "search.runtime_env={{pip: [numpy]}}"], "search.runtime_env.pip: unknown key"),
        (["--storage", "postgresql+psycopg://u@127.0.0.1:{port}/db"], "search.storage: cannot connect to"),
    ],
)
def test_bad_cluster_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, teacher_cache: Path, args: list[str], expected: str
) -> None:
    from tests.servers import free_port

    port = free_port()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli("search", "tiny.yaml", *[a.format(port=port) for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected.format(port=port) in lines[0], proc.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_bench_run_outside_the_checkout_says_its_default_config_is_a_checkout_path(tmp_path: Path) -> None:
    proc = run_cli("bench", "--quick", cwd=tmp_path)
    assert proc.returncode == 2 and "bench's default" in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bench_json_has_the_gpu_keys(tmp_path: Path) -> None:
    import json

    import torch

    proc = run_cli("bench", str(ROOT / "search_spaces" / "gpu.yaml"), "--gpu-only", "--json", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    keys = ("gpu_trials_per_hour", "gpu_busy_fraction", "gpu_peak_memory_mb", "gpu_trial_overhead")
    if torch.cuda.is_available():
        assert all(set(result[k]) == {"1", "4", "8"} for k in keys)
    else:
        assert {k: result[k] for k in keys} == dict.fromkeys(keys)


def test_a_json_commands_stdout_holds_only_its_json(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from autogram.console import stdout_for_json

    def notice() -> None:  # as Ray's driver prints a dead node's notice, from a thread of its own
        print("(raylet) The node with node id ... has been marked dead")

    for as_json in (True, False):
        with stdout_for_json(as_json):
            thread = threading.Thread(target=notice)
            thread.start()
            thread.join()
        print('{"rows": []}')
        out, err = capsys.readouterr()
        if as_json:
            assert json.loads(out) == {"rows": []} and "marked dead" in err
        else:
            assert "marked dead" in out and not err


def test_a_resumed_search_s_best_so_far_counts_the_trials_it_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # After a resume, each trial's line said the best of the resumed part only (e.g. accuracy
    # 0.657 while a kept trial had 0.804): the kept trials' values now come from the event log.
    import logging
    from types import SimpleNamespace

    from autogram.study.progress import Progress

    objectives = [{"name": "accuracy", "direction": "maximize"}, {"name": "cost", "direction": "minimize"}]
    plan = SimpleNamespace(directory=tmp_path, objectives=objectives)
    first = Progress(plan, 3)
    first.trial_started("a", {"trial_number": 0})
    first.trial_finished("a", {"final": True, "status": "ok", "accuracy": 0.8, "cost": 50.0}, False)
    first.trial_started("b", {"trial_number": 1})
    first.trial_finished("b", {"final": False, "epoch": 2}, False)  # pruned: no values to keep
    resumed = Progress(plan, 4)
    resumed.trial_started("c", {"trial_number": 2})
    with caplog.at_level(logging.INFO, logger="autogram"):
        resumed.trial_finished("c", {"final": True, "status": "ok", "accuracy": 0.6, "cost": 40.0}, False)
    assert caplog.text.strip().endswith(
        "trial 2 ok  accuracy 0.6  cost 40 | done 3/4, running 0, failed 0 | "
        "best so far: accuracy 0.8 (trial 0), cost 40 (trial 2)"
    ), caplog.text
