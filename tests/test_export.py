"""Export a Pareto point and train from it: picking, reproduction, the MLflow model, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml

from autogram.config import ConfigError, load_config
from autogram.export import choose
from tests.conftest import run_cli, start_cli, tiny_raw, tiny_search

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "robustness", "direction": "maximize"},
    {"name": "cost", "direction": "minimize"},
]


HAND_SPEC = {"name": "hand", "config": {"search": {"space": {}}}, "candidates": [], "teacher": "x"}


def _front() -> dict:
    rows = [  # number, status, accuracy, robustness, cost
        (0, "ok", 0.95, 0.60, 900.0),  # most accurate
        (1, "ok", 0.90, 0.80, 500.0),  # balanced: the knee
        (2, "ok", 0.70, 0.50, 100.0),  # cheapest
        (3, "ok", 0.80, 0.55, 950.0),  # dominated
        (4, "diverged", 0.99, 0.99, 1.0),  # never eligible, however good it looks
        (5, "ok", 0.89, 0.81, 2600.0),  # most robust, but expensive
    ]
    trials = [
        {
            "number": n,
            "status": s,
            "params": {"w_kd": 1.0},
            "pareto": False,
            "values": {"accuracy": a, "robustness": r, "cost": c},
        }
        for n, s, a, r, c in rows
    ]
    return {
        "name": "hand",
        "objectives": OBJECTIVES,
        "reference_point": [0, 0, 3000],
        "hypervolume": 1.0,
        "trials": trials,
    }


def test_pick_knee_objective_weights_and_where_on_a_hand_made_front() -> None:
    front = _front()
    assert choose(front, "knee", None, [])["number"] == 1
    assert choose(front, "accuracy", None, [])["number"] == 0
    assert choose(front, "robustness", None, [])["number"] == 5
    assert choose(front, "cost", None, [])["number"] == 2
    assert choose(front, "robustness", None, ["cost<=2.5e3"])["number"] == 1
    assert choose(front, "accuracy", None, ["cost<600,robustness>=0.6"])["number"] == 1
    assert choose(front, "knee", [0.0, 0.0, 1.0], [])["number"] == 2
    with pytest.raises(ConfigError, match="no ok trial of 'hand' matches"):
        choose(front, "knee", None, ["cost<=50"])
    with pytest.raises(ConfigError, match="unknown metric 'latency'"):
        choose(front, "knee", None, ["latency<=5"])
    with pytest.raises(ConfigError, match="expected METRIC<=VALUE"):
        choose(front, "knee", None, ["cost=5"])
    with pytest.raises(ConfigError, match="--pick 'speed'"):
        choose(front, "speed", None, [])
    with pytest.raises(ConfigError, match="2 numbers for 3 objectives"):
        choose(front, "knee", [0.5, 0.5], [])
    empty = {**front, "trials": [t for t in front["trials"] if t["status"] != "ok"]}
    with pytest.raises(ConfigError, match="no finished"):
        choose(empty, "knee", None, [])


def test_export_errors_exit_2_and_write_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "front.json").write_text(json.dumps(_front()))
    (folder / "search.json").write_text(json.dumps(HAND_SPEC))
    out = tmp_path / "best.yaml"
    for args in (
        ["--where", "cost<=50"],
        ["--pick", "speed"],
        ["--weights", "1,x,2"],
        ["--where", "latency<1"],
        ["--weights", "-1,0,0"],
        ["--weights", "0,0,0"],
        ["--weights", "nan,1,1"],
        ["--where", "cost<=nan"],  # it parsed, and then "no ok trial matches"
        ["--trial", "9"],
        ["--trial", "4"],
        ["--trial", "1", "--where", "cost<=600"],
    ):
        proc = run_cli("export", str(folder), "-o", str(out), *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().startswith("autogram: error:") and len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists() and not list(tmp_path.glob(".best.yaml*"))
    for args, said in (
        (["--trial", "9"], "--trial 9: search 'hand' has no trial 9 (trials: 0-5)"),
        (["--trial", "4"], "--trial 4: trial 4 of 'hand' is diverged"),
        (["--trial", "1", "--where", "cost<=600"], "--trial 1: names the trial itself; drop --weights and --where"),
    ):
        proc = run_cli("export", str(folder), "-o", str(out), *args, cwd=tmp_path)
        assert proc.stderr.strip() == f"autogram: error: {said}", proc.stderr
    nan = run_cli("export", str(folder), "-o", str(out), "--where", "cost<=nan", cwd=tmp_path)
    assert "--where 'cost<=nan': 'nan' is not a number" in nan.stderr, nan.stderr
    missing = run_cli("export", "nothing-here", "-o", str(out), cwd=tmp_path)
    assert missing.returncode == 2 and "no MLflow database" in missing.stderr and not out.exists()
    # A path that is not there is named as such, not only as a name MLflow lacks.
    gone = tmp_path / "gone" / "search"
    for command in (["export", str(gone), "-o", str(out)], ["confirm", str(gone)], ["front", str(gone)]):
        proc = run_cli(*command, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"autogram: error: {gone}: no such search folder here, and no MLflow database")


def _bad_value(document: dict) -> dict:
    document["trials"][2]["values"]["accuracy"] = "high"
    return document


@pytest.mark.parametrize(
    ("file", "broken", "named"),
    [
        ("front.json", lambda d: {}, "front.json: does not read as a search's front (name: Field required)"),
        ("front.json", lambda d: [d], "front.json: does not read as a search's front (the file: expected a JSON"),
        ("front.json", _bad_value, "(trials.2.values.accuracy: Input should be a valid number"),
        ("search.json", lambda d: {"name": "hand"}, "search.json: does not read as a search's spec (config: Field"),
        ("search.json", lambda d: {**d, "candidates": [3]}, "(candidates.0: Input should be a valid string"),
    ],
)
def test_a_search_folder_with_a_broken_file_is_one_line_naming_it(
    file: str, broken: Any, named: str, tmp_path: Path
) -> None:
    # Cut, hand-edited or from another tool: named with the field, never a KeyError inside a command.
    folder = tmp_path / "search"
    folder.mkdir()
    documents = {"front.json": _front(), "search.json": dict(HAND_SPEC)}
    documents[file] = broken(documents[file])
    for name, document in documents.items():
        (folder / name).write_text(json.dumps(document))
    out = tmp_path / "best.yaml"
    commands = [["export", str(folder), "-o", str(out)], ["confirm", str(folder)]]
    for command in commands + ([["front", str(folder)]] if file == "front.json" else []):
        proc = run_cli(*command, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("autogram: error: ") and named in proc.stderr, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["front.json", "search.json"] and not out.exists()


def test_front_reads_a_search_folder(tmp_path: Path) -> None:
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "front.json").write_text(json.dumps(_front()))
    (folder / "search.json").write_text(json.dumps(HAND_SPEC))
    for source in (folder, folder / "front.json"):
        table = run_cli("front", str(source), cwd=tmp_path)
        assert table.returncode == 0 and table.stdout.startswith(f"Pareto front of {_front()['name']}:"), table.stderr
        as_json = run_cli("front", str(source), "--json", cwd=tmp_path)
        assert as_json.returncode == 0 and json.loads(as_json.stdout) == _front(), as_json.stderr


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, teacher_cache: Path) -> Path:
    tmp_path = tmp_path_factory.mktemp("export")
    tiny_search(tmp_path, teacher_cache, "exp", 4, 3)
    return tmp_path


def test_an_export_whose_mlflow_is_gone_is_written_and_says_so_once(searched: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    shutil.copytree(searched / "autogram-runs" / "exp", folder)
    spec = json.loads((folder / "search.json").read_text())
    gone = tmp_path / "gone" / "mlflow.db"
    (folder / "search.json").write_text(json.dumps({**spec, "tracking_uri": f"sqlite:///{gone}"}))
    proc = run_cli("export", str(folder), "-o", "best.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_config(tmp_path / "best.yaml").provenance["search"] == "exp"
    assert (tmp_path / "best.recipe.json").is_file()
    warned = [line for line in proc.stderr.splitlines() if "did not log it to MLflow" in line]
    assert warned == [
        f"[autogram] export: wrote best.yaml, best.recipe.json, but did not log it to MLflow (no MLflow "
        f"database at {gone} (pass --tracking-uri?))"
    ], proc.stderr


def test_export_trial_writes_that_trial_as_a_pick_would(searched: Path, tmp_path: Path) -> None:
    # The front table names trials by number; --trial exports the one the user read there.
    # A copy of the search whose MLflow is elsewhere: these exports are not logged on the shared
    # search's parent run, whose exports/ another test lists.
    folder = tmp_path / "exp"
    shutil.copytree(searched / "autogram-runs" / "exp", folder)
    spec = json.loads((folder / "search.json").read_text())
    (folder / "search.json").write_text(json.dumps({**spec, "tracking_uri": f"sqlite:///{tmp_path / 'none.db'}"}))
    document = json.loads((folder / "front.json").read_text())
    knee = run_cli("export", str(folder), "-o", str(tmp_path / "knee.yaml"), cwd=tmp_path)
    assert knee.returncode == 0, knee.stderr[-2000:]
    number = load_config(tmp_path / "knee.yaml").provenance["trial"]
    same = run_cli("export", str(folder), "--trial", str(number), "-o", str(tmp_path / "same.yaml"), cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    by_pick, by_number = (yaml.safe_load((tmp_path / f"{n}.yaml").read_text()) for n in ("knee", "same"))
    assert by_number["provenance"].pop("pick") == "trial" and by_pick["provenance"].pop("pick") == "knee"
    assert by_number == by_pick
    recipes = [json.loads((tmp_path / f"{n}.recipe.json").read_text()) for n in ("knee", "same")]
    assert [r["provenance"].pop("pick") for r in recipes] == ["knee", "trial"] and recipes[0] == recipes[1]
    other = next(t for t in document["trials"] if t["status"] == "ok" and t["number"] != number)
    proc = run_cli("export", str(folder), "--trial", str(other["number"]), "-o", str(tmp_path / "o.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    provenance = load_config(tmp_path / "o.yaml").provenance
    assert provenance["trial"] == other["number"] and provenance["objectives"] == other["values"]
    assert proc.stdout.startswith(f"exported trial {other['number']} of exp ")
    assert ("is not on its Pareto front" in proc.stderr) == (not other["pareto"]), proc.stderr


@pytest.mark.slow
def test_export_train_round_trip_reproduces_the_trial_and_logs_a_loadable_model(
    searched: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Onto a file system that refuses writes: one line, exit 2, nothing written anywhere.
    refused = run_cli("export", "exp", "--pick", "accuracy", "-o", "/proc/best.yaml", cwd=searched)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("autogram: error: -o: ")
    assert "cannot write into /proc" in refused.stderr and not (searched / "best.recipe.json").exists()
    proc = run_cli("export", "exp", "--pick", "accuracy", "-o", "best.yaml", cwd=searched)
    assert proc.returncode == 0, proc.stderr
    assert "Downloading artifacts" not in proc.stderr  # MLflow's progress bar says nothing here
    config = load_config(searched / "best.yaml")
    provenance = config.provenance
    assert provenance["search"] == "exp" and provenance["mlflow_run_id"] and provenance["trial_epochs"] == 3
    assert config.teacher.checkpoint.is_file() and config.teacher.checkpoint_key
    assert config.train.epochs == 3  # the trial's own budget
    front = json.loads((searched / "autogram-runs" / "exp" / "front.json").read_text())
    trial = next(t for t in front["trials"] if t["number"] == provenance["trial"])
    assert trial["status"] == "ok" and trial["values"] == provenance["objectives"]

    proc = run_cli("train", "best.yaml", "--json", cwd=searched)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One line of ours on the pickle format, saying why and where the safetensors copy is.
    assert "Saving pytorch model by Pickle" not in proc.stderr
    assert "the pickle-free copy is best.student.safetensors" in proc.stderr
    result = json.loads(proc.stdout)
    # Default settings (no OMP_NUM_THREADS): train runs with the trial's thread count, so the
    # trial's budget and seed give exactly the trial's validation scores on a CPU.
    assert result["accuracy"] == trial["values"]["accuracy"]
    assert result["robustness"] == trial["values"]["robustness"]
    assert 0 <= result["test_accuracy"] <= 1 and result["epochs"] == 3

    # Runs never collide: an export onto an existing file needs --force; a config other than the
    # one best.checkpoints/ belongs to is refused, naming the one it belongs to.
    again = run_cli("export", "exp", "--pick", "cost", "-o", "best.yaml", cwd=searched)
    assert again.returncode == 2 and "best.yaml: the file exists" in again.stderr and "--force" in again.stderr
    forced = run_cli("export", "exp", "--pick", "cost", "-o", "other.yaml", cwd=searched)
    assert forced.returncode == 0, forced.stderr[-2000:]
    (searched / "best.yaml").write_text(
        (searched / "other.yaml").read_text().replace("temperature:", "temperature: 2.5 #")
    )
    other = run_cli("train", "best.yaml", "--resume", cwd=searched)
    assert other.returncode == 2, other.stderr[-2000:]
    assert f"holds the checkpoint of best.yaml (search 'exp', trial {provenance['trial']}), not of this config" in (
        other.stderr
    )

    # The same file, and the recipe beside it, were logged on the search's parent run.
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{searched / 'mlflow.db'}")
    parent = client.get_run(provenance["mlflow_parent_run_id"])
    logged = sorted(a.path for a in client.list_artifacts(parent.info.run_id, "exports"))
    assert logged == [
        "exports/best.recipe.json",
        "exports/best.yaml",
        "exports/other.recipe.json",
        "exports/other.yaml",
    ]
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["autogram.source_run"] == provenance["mlflow_run_id"]
    assert {"val_accuracy", "test_accuracy", "test_robustness"} <= run.data.metrics.keys()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "curve/accuracy")] == [1, 2, 3]

    from autogram.data import load_data
    from autogram.training import load_student

    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch undoes that after the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{searched / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{searched / 'mlflow.db'}")
    logged = mlflow.pytorch.load_model(result["model_uri"])
    saved = load_student(
        result["student_path"] if os.path.isabs(result["student_path"]) else searched / result["student_path"], config
    )
    inputs = {k: torch.from_numpy(v) for k, v in load_data(config.data).splits["val"].inputs.items()}
    with torch.no_grad():
        assert torch.equal(logged.eval()(inputs), saved(inputs))


@pytest.mark.slow
def test_train_resume_after_sigkill_continues_from_the_last_checkpoint(tmp_path: Path, teacher_cache: Path) -> None:
    raw = tiny_raw(teacher_cache)
    raw["data"]["builtin"]["n_train"] = 3000
    raw["train"]["epochs"] = 6
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(raw))
    state = tmp_path / "long.checkpoints" / "last.json"
    proc = start_cli("train", str(config), cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and not (state.is_file() and json.loads(state.read_text())["epoch"] >= 2):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert 2 <= killed_at < 6, "the run must be killed mid-way for the test to mean anything"

    again = run_cli("train", str(config), cwd=tmp_path)
    assert again.returncode == 2 and "pass --resume" in again.stderr

    resumed = run_cli("train", str(config), "--resume", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert result["resumed_from_epoch"] == killed_at and result["epochs"] == 6
    assert f"resuming from the checkpoint of epoch {killed_at}" in resumed.stderr
    assert "epoch 1/6" not in resumed.stderr and f"epoch {killed_at + 1}/6" in resumed.stderr
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4, 5, 6]
