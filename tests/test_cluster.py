"""Searches on a real two-node Ray cluster on 127.0.0.1 (``ray start``, token auth): trials on
both nodes, a worker node's raylet killed mid-trial, the user's code shipped through
``search.runtime_env``, and a node that cannot see ``--out``. Nodes are stopped by PID."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import ray_trials
from tests.servers import RayCluster, ray_cluster

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parent / "fixtures_byo"


@pytest.fixture()
def cluster() -> Iterator[RayCluster]:
    started = ray_cluster()
    try:
        started.start_node(head=True)
        yield started
    finally:
        started.stop()


def _user_config(tmp_path: Path, trials: int, epochs: int, n_train: int) -> Path:
    """A user's package (a copy of the test models) shipped to workers with ``py_modules``;
    the driver imports it through ``python_path``. Nothing of it is on the nodes' path."""
    package = tmp_path / "userpkg" / "byo_cluster"
    package.mkdir(parents=True)
    shutil.copy(FIXTURES / "byo_test_models.py", package / "__init__.py")
    raw = {
        "name": "cluster",
        "device": "cpu",
        "python_path": [str(package.parent)],
        "data": {"factory": "byo_cluster:make_datasets", "kwargs": {"n_train": n_train}},
        "teacher": {"factory": "byo_cluster:make_teacher", "cache_dir": str(tmp_path / "teachers")},
        "student": {"factory": "byo_cluster:make_student"},
        "train": {"epochs": epochs, "batch_size": 32},
        "search": {
            "trials": trials,
            "concurrency": 2,
            "max_failures": 2,
            "sampler": "random",
            "runtime_env": {"py_modules": [str(package)]},
        },
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _search_command(config: Path, cluster: RayCluster, out: Path) -> list[str]:
    return [sys.executable, "-m", "autogram", "search", str(config), "--address", cluster.address, "--out", str(out)]


def _run_search(config: Path, cluster: RayCluster, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``autogram search CONFIG --address ... --out OUT`` as a user on the cluster runs it."""
    command = _search_command(config, cluster, out)
    return subprocess.run(command, cwd=cwd, env=_env(cluster), capture_output=True, text=True, timeout=900)


def _env(cluster: RayCluster) -> dict[str, str]:
    env = dict(cluster.env)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _children(tmp_path: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 1 + len(children)
    return children


def _events(directory: Path) -> list[dict]:
    path = directory / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_search_runs_trials_on_both_nodes_with_the_users_code(cluster: RayCluster, tmp_path: Path) -> None:
    worker = cluster.start_node()
    head = cluster.nodes[0]
    config = _user_config(tmp_path, trials=4, epochs=4, n_train=3000)  # as the node-kill test: wall times compare
    proc = _run_search(config, cluster, tmp_path / "runs", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "cluster" / "front.json").read_text())
    assert [t["status"] for t in front["trials"]] == ["ok"] * 4
    children = _children(tmp_path)
    assert len(children) == 4
    # Each child run names the node its trial ran on: both nodes ran the user's factories,
    # which reached the worker node only through search.runtime_env's py_modules.
    assert {r.data.tags["ray_node_id"] for r in children} == {head.node_id, worker.node_id}
    assert all(r.data.tags["status"] == "ok" for r in children)
    print(f"\ntwo-node search, no failure: wall {front['wall_seconds']:.1f}s")


def test_a_worker_node_killed_mid_trial_loses_and_duplicates_nothing(cluster: RayCluster, tmp_path: Path) -> None:
    worker = cluster.start_node()
    head = cluster.nodes[0]
    config = _user_config(tmp_path, trials=4, epochs=4, n_train=3000)
    directory = tmp_path / "runs" / "cluster"
    driver = subprocess.Popen(
        _search_command(config, cluster, tmp_path / "runs"),
        cwd=tmp_path,
        env=_env(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait for a trial to run on the worker node, then kill that node's raylet (by PID).
    deadline = time.time() + 600
    while time.time() < deadline and not worker.trial_workers():
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(1.0)
    assert not [e for e in _events(directory) if e["event"] == "complete"], "the kill must come mid-trial"
    worker.raylet().kill()
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]

    events = _events(directory)
    starts = [e["trial"] for e in events if e["event"] == "start"]
    completes = [e["trial"] for e in events if e["event"] == "complete"]
    assert len(completes) == len(set(completes)) == 4  # none lost, none twice
    restarted = {t for t in starts if starts.count(t) > 1}
    assert restarted, "the killed trial was not retried"
    study = optuna.load_study(study_name="cluster", storage=f"sqlite:///{directory / 'optuna.db'}")
    trials = ray_trials(study)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4 == len(trials)
    assert len({t.user_attrs["ray_trial_id"] for t in trials}) == 4
    front = json.loads((directory / "front.json").read_text())
    assert [t["status"] for t in front["trials"]] == ["ok"] * 4
    children = _children(tmp_path)
    assert len(children) == 4
    retried = [r for r in children if r.data.tags["ray_trial_id"] in restarted]
    assert retried and all(r.data.tags["ray_node_id"] == head.node_id for r in retried)
    # The teacher cache was built by Ray tasks over shards of the train split, on both nodes
    # (one CPU per node: six one-CPU shards spill over from the head), before the kill.
    shard_nodes = set(re.findall(r"teacher cache: shard \d+/\d+ done \(.*node (\w+)\)", err))
    assert "from 6 shards" in err and shard_nodes == {head.node_id[:12], worker.node_id[:12]}, err[-3000:]
    print(f"\ntwo-node search, worker raylet killed mid-trial: wall {front['wall_seconds']:.1f}s")

    # confirm on the cluster (what is left of it: the head), its retrainings as Ray tasks.
    command = [sys.executable, "-m", "autogram", "confirm", str(directory), "--seeds", "1", "--points", "front"]
    command += ["--address", cluster.address, "--concurrency", "2", "--json"]
    proc = subprocess.run(command, cwd=tmp_path, env=_env(cluster), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["rows"] and all(len(row["runs"]) == 1 for row in result["rows"])
    assert all(0.0 <= row["runs"][0]["accuracy"] <= 1.0 for row in result["rows"])
    assert f"confirm: {len(result['rows'])} retraining(s) as Ray tasks, 2 at a time" in proc.stderr
    assert (directory / "confirm" / "confirm.json").is_file()


def test_an_out_folder_a_node_cannot_see_fails_before_any_trial(cluster: RayCluster, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to hide a folder from one node")
    hidden = tmp_path / "private"
    hidden.mkdir()
    # The worker node runs in its own mount namespace where `hidden` is an empty tmpfs: the
    # driver's files there are invisible to it, as a head's local disk is to another host.
    cluster.start_node(
        wrap=[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs tmpfs "$0" && exec "$@"',
            str(hidden),
        ]
    )
    config = _user_config(tmp_path, trials=2, epochs=1, n_train=240)
    proc = _run_search(config, cluster, hidden / "runs", tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"autogram: error: --out {hidden / 'runs'}: not visible from"), lines
    assert "every node mounts" in lines[0]
    assert list(hidden.iterdir()) == [] and not (tmp_path / "mlflow.db").exists()
