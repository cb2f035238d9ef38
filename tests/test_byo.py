"""The whole loop on the user's own models and data: a Hugging Face teacher and a torchvision
student named by import path, AV-MNIST-shaped data in a Hugging Face dataset on disk, and
the Python API with in-memory objects. Real local Ray, real sqlite stores, no built-in model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from tests.conftest import ROOT, ray_trials

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "byo"
FIXTURES = ROOT / "tests" / "fixtures_byo"
sys.path[:0] = [str(EXAMPLE), str(FIXTURES)]
TINY_ARCH = {"hidden": 32, "layers": 3, "heads": 2}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, with built-in models forbidden in every process it starts."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "AUTOGRAM_NO_BUILTIN_MODELS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "autogram", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's preparation: a DatasetDict on disk and a (briefly) trained teacher, then a config."""
    from avmnist_byo.data import save_dataset, synthetic_arrays
    from avmnist_byo.training import train_teacher

    work = tmp_path_factory.mktemp("byo")
    save_dataset(synthetic_arrays(n_train=300, n_test=80), work / "hf")
    train_teacher(work / "hf", work / "teacher", epochs=2, arch=TINY_ARCH)
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    config["python_path"] = [str(EXAMPLE)]
    # Relative paths, as a user writes them: they must mean the same on every Ray worker.
    config["data"]["hf"] = "hf"
    config["teacher"]["kwargs"] = {"folder": "teacher"}
    config["teacher"]["cache_dir"] = "teachers"
    config["student"]["kwargs"] = {"width": 8}
    config["train"].update(epochs=2, batch_size=32)
    config["search"].update(trials=3, concurrency=2)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


@pytest.fixture(scope="module")
def byo_search(byo: Path) -> Path:
    """The how-to's search (``autogram search config.yaml``, default ``--out``) run once in the
    user's folder; the module's tests read, export and train from it. Returns its folder."""
    proc = _cli("search", "config.yaml", cwd=byo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return byo / "autogram-runs" / "byo"


def test_layers_lists_the_user_models_taps_and_pairing(byo: Path) -> None:
    proc = _cli("layers", "config.yaml", "--json", cwd=byo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layers = json.loads(proc.stdout)
    for modality in ("image", "audio"):
        teacher = [t for t in layers["teacher"] if t["modality"] == modality and t["role"] == "feature"]
        assert len(teacher) >= 3 and all(t["module_path"].startswith(f"{modality}.") for t in teacher)
        assert all(len(t["shape"]) == 2 for t in teacher)  # (tokens, hidden) of the ViT / AST blocks
        student = [t for t in layers["student"] if t["modality"] == modality and t["role"] == "feature"]
        assert [t["module_path"] for t in student] == [f"branches.{modality}.{i}" for i in range(3)]
    assert [t["module_path"] for t in layers["teacher"] if t["modality"] == "fused"] == ["fusion.layers.0"]
    assert len(layers["default_pairs"]) == 6
    assert all(p.split(":")[0].split(".")[1] == p.split(":")[1].split(".")[0] for p in layers["default_pairs"])


def test_search_export_train_on_user_models_and_hugging_face_data(byo: Path, byo_search: Path) -> None:
    folder = byo_search
    front = json.loads((folder / "front.json").read_text())
    spec = json.loads((folder / "search.json").read_text())
    assert len(front["trials"]) == 3 and {t["status"] for t in front["trials"]} == {"ok"}
    assert any(t["pareto"] for t in front["trials"])
    assert spec["teacher_source"]["factory"] == "avmnist_byo.models:load_teacher" and spec["teacher"] == ""
    caches = list((byo / "teachers" / "signals").iterdir())
    manifest = json.loads((caches[0] / "manifest.json").read_text())
    # Only what a candidate pair or the cross-modal term can use: never the fused layer.
    assert len(caches) == 1 and not any(name.startswith("fusion") for name in manifest["arrays"])

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{byo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("byo")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("autogram.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parent[0].data.tags["teacher_key"] == spec["teacher_key"]

    proc = _cli("export", "byo", "--pick", "knee", "-o", "best.yaml", cwd=byo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = yaml.safe_load((byo / "best.yaml").read_text())
    assert exported["teacher"]["factory"] == "avmnist_byo.models:load_teacher"
    assert exported["teacher"]["kwargs"] == {"folder": "teacher"}
    assert exported["teacher"]["checkpoint_key"] == spec["teacher_key"] and exported["teacher"]["checkpoint"] is None
    assert exported["student"]["factory"] == "avmnist_byo.models:make_student"
    trial = next(t for t in front["trials"] if t["number"] == exported["provenance"]["trial"])

    # confirm imports the user's factories from python_path, as the search did.
    proc = _cli("confirm", "byo", "--seeds", "1", "--points", str(trial["number"]), "--json", cwd=byo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert trial["number"] in [row["trial"] for row in json.loads(proc.stdout)["rows"]]

    proc = _cli("train", "best.yaml", "--json", cwd=byo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert abs(result["accuracy"] - trial["values"]["accuracy"]) <= 0.01
    assert abs(result["robustness"] - trial["values"]["robustness"]) <= 0.01

    # The safetensors copy carries the user's own parameter names; the MLflow model is the
    # user's module, logged with its code, and predicts what the safetensors student predicts.
    from avmnist_byo.models import AVStudent
    from safetensors.torch import load_file

    weights = load_file(str(byo / result["student_path"]))
    assert "branches.image.0.0.weight" in weights
    mlflow.set_tracking_uri(f"sqlite:///{byo / 'mlflow.db'}")
    try:
        logged = mlflow.pytorch.load_model(result["model_uri"])
        model_dir = Path(mlflow.artifacts.download_artifacts(result["model_uri"], dst_path=str(byo / "model")))
        assert (model_dir / "code" / "avmnist_byo" / "models.py").is_file()  # code_paths: loads without this repo
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert type(logged).__name__ == "AVStudent"
    student = AVStudent(dict.fromkeys(logged.branches, 1), num_classes=4, width=8)  # the data's modality order
    student.load_state_dict(weights)
    batch = {"image": torch.randn(3, 1, 28, 28), "audio": torch.randn(3, 1, 32, 32)}
    with torch.no_grad():
        assert torch.allclose(logged.eval()(batch), student.eval()(batch))

    again = _cli("train", "best.yaml", "--resume", cwd=byo)
    assert again.returncode == 2 and "already finished" in again.stderr

    # The exported recipe in the user's own loop and in a Hugging Face Trainer (the README's examples).
    for script, extra, expect in (
        ("own_loop.py", ["--epochs", "1"], "test accuracy"),
        ("hf_trainer.py", ["--max-steps", "10"], "step 10: loss"),
    ):
        command = [sys.executable, str(EXAMPLE / script), "best.yaml", "--data", "hf", "--teacher", "teacher", *extra]
        run = subprocess.run(command, cwd=byo, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0 and expect in run.stdout, run.stderr[-3000:]
    assert json.loads((byo / "best.recipe.json").read_text())["teacher"]["key"] == spec["teacher_key"]

    # New teacher weights: a new key, so the exported config refuses the changed teacher. They
    # go to a folder of their own: the module's other tests still train from the first teacher.
    from avmnist_byo.training import train_teacher

    train_teacher(byo / "hf", byo / "teacher2", epochs=1, arch=TINY_ARCH, seed=1)
    other = yaml.safe_load((byo / "best.yaml").read_text())
    other["teacher"]["kwargs"] = {"folder": "teacher2"}
    (byo / "other.yaml").write_text(yaml.safe_dump(other))
    changed = _cli("train", "other.yaml", cwd=byo)
    assert changed.returncode == 2 and "teacher.checkpoint_key" in changed.stderr and "changed" in changed.stderr


def test_python_api_with_in_memory_teacher_student_and_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import byo_test_models as user
    import optuna

    import autogram

    monkeypatch.setenv("AUTOGRAM_NO_BUILTIN_MODELS", "1")  # inherited by the local Ray's workers
    raw = {
        "name": "api",
        "device": "cpu",
        "teacher": {"cache_dir": str(tmp_path / "teachers")},
        "student": {"kwargs": {"width": 4}},
        "train": {"epochs": 2, "batch_size": 32},
        "search": {"trials": 3, "concurrency": 2},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    front = autogram.search(
        tmp_path / "run.yaml",
        teacher=user.make_teacher(),
        student=user.make_student,
        data=user.make_datasets(),
        out=tmp_path / "runs",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert len(front["trials"]) == 3 and {t["status"] for t in front["trials"]} == {"ok"}
    spec = json.loads((tmp_path / "runs" / "api" / "search.json").read_text())
    assert spec["teacher_source"]["source"] == "python"
    study = optuna.load_study(study_name="api", storage=f"sqlite:///{tmp_path / 'runs' / 'api' / 'optuna.db'}")
    assert len(ray_trials(study)) == 3


def test_runtime_env_reaches_every_trial(tmp_path: Path) -> None:
    """The student factory refuses to build inside a Ray worker unless BYO_MARK arrived there
    through ``search.runtime_env``; the driver's own environment does not have it."""
    raw = {
        "name": "env",
        "device": "cpu",
        "python_path": [str(FIXTURES)],
        "data": {"factory": "byo_test_models:make_datasets"},
        "teacher": {"factory": "byo_test_models:make_teacher", "cache_dir": str(tmp_path / "teachers")},
        "student": {"factory": "byo_test_models:make_student_checked"},
        "train": {"epochs": 1, "batch_size": 32},
        "search": {"trials": 2, "concurrency": 2, "runtime_env": {"env_vars": {"BYO_MARK": "shipped"}}},
    }
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(raw))
    assert "BYO_MARK" not in os.environ
    proc = _cli("search", "env.yaml", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "env" / "front.json").read_text())
    assert [t["status"] for t in front["trials"]] == ["ok", "ok"]


def _doc_commands(path: Path, prefix: str) -> list[list[str]]:
    """The ``autogram ...`` commands of a doc's code blocks that start with ``prefix``, split
    on ``&&`` and stripped of comments, as a user copies them."""
    import shlex

    commands = []
    for line in path.read_text().splitlines():
        if not line.startswith("autogram "):
            continue  # prose, or another command
        for part in line.split("#")[0].split("&&"):
            words = shlex.split(part)
            if words[: len(prefix.split())] == prefix.split():
                commands.append(words[1:])
    return commands


def test_the_readme_sequence_quick_start_then_byo_runs_without_a_collision(
    byo: Path, byo_search: Path, teacher_cache: Path
) -> None:
    """The README's quick start (search, export, train) then the byo how-to's export and train,
    in one working folder, with the docs' own file names: neither overwrites or refuses the
    other's files. The how-to's search is the module's (``byo_search``), run in this folder too."""
    from tests.conftest import run_cli, tiny_raw

    quick_export, quick_train = (
        _doc_commands(ROOT / "README.md", "autogram export quickstart")[0],
        [c for c in _doc_commands(ROOT / "README.md", "autogram train") if len(c) == 2][0],
    )
    byo_export = _doc_commands(ROOT / "docs" / "how-to" / "own-models.md", "autogram export byo")[0]
    byo_train = _doc_commands(ROOT / "docs" / "how-to" / "own-models.md", "autogram train")[0]
    assert quick_export[-1] == quick_train[-1] != byo_export[-1] == byo_train[-1]  # e.g. quickstart-best.yaml

    raw = tiny_raw(teacher_cache)
    raw["name"] = "quickstart"
    raw["train"]["epochs"] = 1
    raw["search"] = {"trials": 2, "concurrency": 2, "baselines": ["ce"]}
    (byo / "quickstart.yaml").write_text(yaml.safe_dump(raw))
    for command in (["search", "quickstart.yaml"], quick_export, quick_train):
        proc = run_cli(*command, cwd=byo)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    quick_checkpoints = sorted(p.name for p in (byo / f"{Path(quick_train[-1]).stem}.checkpoints").iterdir())

    for command in (byo_export, byo_train):
        proc = _cli(*command, cwd=byo)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    exported = {name: yaml.safe_load((byo / name).read_text()) for name in (quick_export[-1], byo_export[-1])}
    assert exported[quick_export[-1]]["provenance"]["search"] == "quickstart"
    assert exported[byo_export[-1]]["provenance"]["search"] == "byo"
    # Each training kept its own checkpoints: the byo run did not touch the quick start's.
    assert sorted(p.name for p in (byo / f"{Path(quick_train[-1]).stem}.checkpoints").iterdir()) == quick_checkpoints
    assert (byo / f"{Path(byo_train[-1]).stem}.checkpoints").is_dir()
