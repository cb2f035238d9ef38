"""Shared fixtures: small configs on the built-in data, a teacher trained once per session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autogram.config import TrialConfig, validate

ROOT = Path(__file__).resolve().parents[1]
AVMNIST = ROOT.parent / "shared" / "data" / "avmnist" / "avmnist.npz"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` on a machine without a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def tiny_raw(cache_dir: Path) -> dict:
    """A config whose trial runs in a few seconds: small data, small teacher, 2 epochs."""
    return {
        "seed": 0,
        "device": "cpu",
        "data": {"builtin": {"n_train": 600, "n_val": 200, "n_test": 200}},
        "teacher": {
            "cache_dir": str(cache_dir),
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 64,
            "embed_dim": 32,
            "epochs": 2,
        },
        "student": {"width": 8, "embed_dim": 16},
        "train": {"epochs": 2, "batch_size": 50, "modality_dropout": 0.1},
        "eval": {"noise_severities": [0.5, 1.0, 2.0]},
    }


def ray_trials(study: Any) -> list[Any]:
    """The study's trials that Ray trials ran: not the layer subsets out of bounds that the
    searcher told as infeasible and drew again (``redrawn``; AutogramOptunaSearch.suggest)."""
    return [t for t in study.trials if not t.user_attrs.get("redrawn")]


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teacher cache directory for the whole session, so each teacher trains once."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="session")
def quickstart_teachers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the quickstart's default teacher is kept for the whole session: it trains once
    (about a minute on 2 cores) for every test that uses the quickstart config as it ships."""
    return tmp_path_factory.mktemp("quickstart-teachers")


@pytest.fixture()
def tiny_config(teacher_cache: Path) -> TrialConfig:
    """A validated tiny trial config."""
    return validate(tiny_raw(teacher_cache))


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a CLI subprocess gets: this one without the stores and credentials each
    test picks itself (the default store: sqlite in the test's working folder), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PGPASSWORD")}
    return {**env, "PYTHONWARNINGS": "ignore", **(extra or {})}


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m autogram ARGS`` as a user would and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "autogram", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_search(folder: Path, teacher_cache: Path, name: str, trials: int, epochs: int, *args: str) -> None:
    """Run a finished tiny search ``name`` from ``folder`` (its config written as ``NAME.yaml``)."""
    import yaml

    raw = tiny_raw(teacher_cache)
    raw["name"] = name
    raw["train"]["epochs"] = epochs
    raw["search"] = {"trials": trials, "concurrency": 2}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", f"{name}.yaml", *args, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]


def start_cli(*args: str, cwd: Path, capture: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m autogram ARGS`` in its own session, so a test can SIGKILL it whole;
    ``capture`` keeps its output (text) for ``communicate()``; ``env`` adds variables."""
    stream = subprocess.PIPE if capture else subprocess.DEVNULL
    with _ctrl_c_at_its_default():
        return subprocess.Popen(
            [sys.executable, "-m", "autogram", *args],
            cwd=cwd,
            env=cli_env(env),
            stdout=stream,
            stderr=stream,
            text=True,
            start_new_session=True,
        )


@contextlib.contextmanager
def _ctrl_c_at_its_default() -> Iterator[None]:
    """A child inherits an ignored SIGINT, and Python then installs no KeyboardInterrupt handler:
    a test run started in the background (``cmd &`` in a script, as a CI runner may) made every
    CLI it started deaf to the Ctrl-C its test sends, and the interrupt tests failed or passed by
    what ran before them in that worker. A CLI stands for a user at a terminal: while it is
    started, this process catches SIGINT (a handler, which the child's exec resets to default)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
