"""The Optuna study on a real PostgreSQL: a search, a resume after SIGKILL, and no password in
any file the search writes or in MLflow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import ROOT, ray_trials, run_cli, start_cli, tiny_raw
from tests.servers import Postgres, postgres_bin, start_postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    if postgres_bin() is None or os.geteuid() != 0:
        pytest.skip("needs Debian's postgresql package and root (to run it as user postgres)")
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def _leaks(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _events(directory: Path) -> list[dict]:
    path = directory / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_search_and_resume_on_postgresql_write_no_password(
    postgres: Postgres, tmp_path: Path, teacher_cache: Path, form: str
) -> None:
    database = f"study_{form}"
    postgres.create_database(database)
    raw = tiny_raw(teacher_cache)
    raw["search"] = {"trials": 5, "concurrency": 1}
    (tmp_path / "pg.yaml").write_text(yaml.safe_dump(raw))
    directory = tmp_path / "runs" / "pg"
    # libpq also takes the password as a query parameter; both forms must be scrubbed.
    bare = postgres.url(database, with_password=False)
    url = postgres.url(database) if form == "userinfo" else f"{bare}?password={postgres.password}"
    # Ray's own temp folder (logs, session files, the job table) is scanned too: a short path of
    # our own, since Ray's socket paths must stay under 107 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="agpg", dir="/tmp"))
    ray_env = {"RAY_TMPDIR": str(ray_tmp)}
    args = ["search", "pg.yaml", "--out", "runs", "--name", "pg", "--storage", url]
    driver = start_cli(*args, cwd=tmp_path, capture=True, env=ray_env)
    deadline = time.time() + 300
    while time.time() < deadline and sum(e["event"] == "complete" for e in _events(directory)) < 2:
        time.sleep(0.2)
    time.sleep(0.5)  # let the controller save its state after that completion
    os.killpg(driver.pid, signal.SIGKILL)
    out, err = driver.communicate()
    finished_before = {e["trial"] for e in _events(directory) if e["event"] == "complete"}
    assert 2 <= len(finished_before) < 5, "the driver must be killed mid-search for the test to mean anything"
    assert not (directory / "optuna.db").exists()  # the study lives in PostgreSQL

    # The resume names no storage: it is read from search.json; the password from PGPASSWORD.
    proc = run_cli(
        "search",
        "pg.yaml",
        "--out",
        "runs",
        "--name",
        "pg",
        "--resume",
        cwd=tmp_path,
        timeout=900,
        env={"PGPASSWORD": postgres.password, **ray_env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="pg", storage=postgres.url(database))
    complete = [t for t in ray_trials(study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and len({t.user_attrs["ray_trial_id"] for t in complete}) == 5
    front = json.loads((directory / "front.json").read_text())
    assert sum(t["status"] == "ok" for t in front["trials"]) == 5
    spec = json.loads((directory / "search.json").read_text())
    assert spec["storage"] == postgres.url(database, with_password=False)

    # The password is in no file of the search (Tune's pickles included), Ray's temp folder,
    # the MLflow store, its artifacts or the output.
    try:
        assert _leaks(tmp_path, postgres.password) == []
        assert any(ray_tmp.rglob("*.log")), "Ray wrote no logs there: the scan would mean nothing"
        assert _leaks(ray_tmp, postgres.password) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for text in (out, err, proc.stdout, proc.stderr):
        assert postgres.password not in text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autogram").experiment_id], max_results=1000)
    for run in runs:
        blob = json.dumps([run.data.params, run.data.tags])
        assert postgres.password not in blob
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("not a url", "search.storage: 'not a url' is not a database URL"),
        ("mysql+pymysql://u:secret@127.0.0.1/db", "only PostgreSQL URLs may carry one"),
        ("postgresql+psycopg://postgres:wrong@127.0.0.1:{port}/postgres", "search.storage: cannot connect to"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/postgres", "search.storage: cannot connect to"),
    ],
)
def test_bad_storage_is_one_line_exit_2_and_writes_nothing(
    postgres: Postgres, tmp_path: Path, teacher_cache: Path, storage: str, expected: str
) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli("search", "s.yaml", "--storage", storage.format(port=postgres.port), cwd=tmp_path, timeout=900)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "secret" not in proc.stderr and ":wrong@" not in proc.stderr  # masked
    assert sorted(tmp_path.rglob("*")) == before


def test_quickstart_still_uses_sqlite_in_the_search_folder() -> None:
    from autogram.config import load_config

    assert load_config(ROOT / "search_spaces" / "quickstart.yaml").search.storage is None


def test_a_new_search_refuses_a_study_of_its_name_and_drops_one_it_never_started(
    postgres: Postgres, tmp_path: Path, teacher_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autogram.study.stopping
    from autogram.config import ConfigError, validate
    from autogram.study import plan_search, run_search

    database = "study_names"
    postgres.create_database(database)
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    bare = postgres.url(database, with_password=False)
    raw = tiny_raw(teacher_cache)
    raw["search"] = {"trials": 2, "concurrency": 1, "storage": bare}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))

    # An earlier study of the name: Optuna would load it and its trials would join the new
    # front. A new search refuses, in one line, and writes nothing.
    optuna.create_study(study_name="taken", storage=bare, directions=["maximize", "maximize", "minimize"])
    env = {"PGPASSWORD": postgres.password}
    proc = run_cli("search", "s.yaml", "--out", "runs", "--name", "taken", cwd=tmp_path, timeout=900, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a study named 'taken'" in lines[0], proc.stderr
    assert not (tmp_path / "runs" / "taken").exists() or not any((tmp_path / "runs" / "taken").iterdir())

    # A new search that fails after creating its study, before Ray Tune ran a trial (here: the
    # scheduler cannot be built), leaves neither files nor a study: the name stays usable.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no scheduler today")

    cfg = validate(raw)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = plan_search(cfg, "fresh", tmp_path / "runs", resume=False, tracking_uri=uri)
    monkeypatch.setattr(autogram.study.stopping, "scheduler_for", broken)
    with pytest.raises(RuntimeError, match="no scheduler today"):
        run_search(plan, track=False)
    assert "fresh" not in optuna.get_all_study_names(storage=bare)
    assert not any((tmp_path / "runs" / "fresh").iterdir())
    monkeypatch.undo()
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    again = plan_search(cfg, "fresh", tmp_path / "runs", resume=False, tracking_uri=uri)
    assert again.name == "fresh"

    # Two drivers planning the same name at once both pass the plan's check; the one that
    # creates the study second refuses at creation, and leaves the other's study alone.
    other = optuna.create_study(study_name="fresh", storage=bare, directions=["maximize", "maximize", "minimize"])
    other.set_user_attr("owner", "the other driver")
    with pytest.raises(ConfigError, match="already holds a study named 'fresh'"):
        run_search(again, track=False)
    kept = optuna.load_study(study_name="fresh", storage=bare)
    assert kept.user_attrs == {"owner": "the other driver"} and kept.trials == []
    assert not any((tmp_path / "runs" / "fresh").iterdir())
