"""--warm-start: an earlier search's finished trials that fit the new space seed the new study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autogram.config import ConfigError, Range, SpaceConfig, validate
from autogram.study.space import SpaceSampler
from autogram.study.warm import WarmSource, check_setup, check_teacher, find_source, fit, seed_study
from tests.conftest import run_cli, tiny_raw

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "robustness", "direction": "maximize"},
    {"name": "cost", "direction": "minimize"},
]
# Only lr and w_kd searched: a small space whose parameters are easy to write by hand.
SPACE = dict(w_kd=Range(low=0.1, high=10.0, log=True), w_gram=0.0, w_xmodal=0.0, temperature=4.0, modality_dropout=0.1)


def _old_search(folder: Path, trials: list[dict], objectives: list[dict] = OBJECTIVES) -> WarmSource:
    """A finished earlier search: a real sqlite Optuna study and its search.json."""
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    study = optuna.create_study(study_name="old", storage=storage, directions=[o["direction"] for o in objectives])
    for spec in trials:
        params = spec["params"]
        distributions = {
            "lr": FloatDistribution(1e-4, 1e-1, log=True),
            "w_kd": FloatDistribution(0.01, 100.0, log=True),
            "modality_dropout": FloatDistribution(0.0, 0.5),
        }
        study.add_trial(
            create_trial(
                state=spec.get("state", TrialState.COMPLETE),
                values=spec.get("values"),
                params=params,
                distributions={k: distributions[k] for k in params},
                user_attrs=spec.get("attrs", {"status": "ok", "train_gflops": 3.0}),
                constraints={"valid": 0.0} if spec.get("state", TrialState.COMPLETE) == TrialState.COMPLETE else None,
            )
        )
    spec = {"name": "old", "storage": storage, "config": {"search": {"objectives": objectives}}}
    (folder / "search.json").write_text(json.dumps(spec))
    return find_source(folder.parent, folder.name)


def test_only_finished_trials_that_fit_the_new_space_are_copied(tmp_path: Path) -> None:
    old = _old_search(
        tmp_path / "old",
        [
            {"params": {"lr": 3e-3, "w_kd": 1.0}, "values": [0.8, 0.7, 100.0]},  # fits
            {"params": {"lr": 5e-2, "w_kd": 1.0}, "values": [0.9, 0.8, 90.0]},  # lr outside 1e-3..1e-2
            {"params": {"lr": 2e-3, "w_kd": 50.0}, "values": [0.7, 0.6, 80.0]},  # w_kd outside 0.1..10
            {"params": {"lr": 2e-3, "w_kd": 2.0, "modality_dropout": 0.3}, "values": [0.85, 0.9, 95.0]},  # fixed now
            {"params": {"lr": 4e-3, "w_kd": 0.5}, "state": TrialState.FAIL},  # not finished
            {"params": {"lr": 4e-3, "w_kd": 0.5}, "values": [0.6, 0.5, 70.0], "attrs": {"baseline": "kd"}},
            {"params": {"lr": 5e-3, "w_kd": 3.0}, "values": [0.75, 0.72, 60.0]},  # fits
            # Fits, but never trained: its layer subset was out of bounds and drawn again.
            {"params": {"lr": 6e-3, "w_kd": 3.0}, "values": [0.0, 0.0, 0.0], "attrs": {"redrawn": True}},
        ],
    )
    space = SpaceConfig(**SPACE)
    new = optuna.create_study(storage=f"sqlite:///{tmp_path / 'new.db'}", directions=["maximize", "minimize"])
    objectives = [OBJECTIVES[1], OBJECTIVES[2]]  # a subset, in another order than the old search
    report = seed_study(new, old, SpaceSampler(space, []), objectives, [("accuracy", ">=", 0.78)])

    assert report.copied == [0, 6]
    assert report.skipped == {
        1: "outside the new space",
        2: "outside the new space",
        3: "outside the new space",
        5: "baseline(s)",
        7: "draw(s) out of the pair bounds, never trained",
    }
    copied = new.get_trials()
    assert [t.values for t in copied] == [[0.7, 100.0], [0.72, 60.0]]
    assert [t.user_attrs["warm"] for t in copied] == ["old", "old"]
    assert [t.user_attrs["warm_number"] for t in copied] == [0, 6]
    assert copied[0].user_attrs["train_gflops"] == 3.0
    # The user constraint is recomputed from the old accuracy: 0.8 meets >= 0.78, 0.75 does not.
    assert copied[0].constraints["accuracy>=0.78"] <= 0 < copied[1].constraints["accuracy>=0.78"]
    # The copies carry the new space's distributions, so the sampler models them at once.
    assert copied[0].distributions["w_kd"] == FloatDistribution(0.1, 10.0, log=True)
    assert "ray_trial_id" not in copied[0].user_attrs  # never mistaken for a Ray trial on resume


def test_replay_asks_the_new_space_and_names_what_does_not_fit() -> None:
    space = SpaceConfig(**{**SPACE, "gram_kind": ["sample", "channel"]})
    sampler = SpaceSampler(space, [])
    asked, problem = fit(sampler, {"lr": 3e-3, "w_kd": 1.0, "gram_kind": "sample"})
    assert problem == ""
    assert asked["gram_kind"] == CategoricalDistribution(["sample", "channel"])
    assert fit(sampler, {"lr": 3e-3, "w_kd": 1.0})[1] == "no value for gram_kind"
    assert fit(sampler, {"lr": 3e-3, "w_kd": 1.0, "gram_kind": "spatial"})[1] == "gram_kind outside the new space"


def test_objectives_the_earlier_search_did_not_measure_are_an_error(tmp_path: Path) -> None:
    old = _old_search(tmp_path / "old", [], objectives=OBJECTIVES[:2])
    new = optuna.create_study(directions=["minimize"])
    with pytest.raises(ConfigError, match=r"search 'old' did not measure cost \(minimize\)"):
        seed_study(new, old, SpaceSampler(SpaceConfig(**SPACE), []), [OBJECTIVES[2]], [])


def test_an_unknown_earlier_search_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--warm-start: no earlier search 'nope'"):
        find_source(tmp_path, "nope")


def _spec_from(folder: Path, raw: dict, teacher_key: str = "k" * 64) -> WarmSource:
    """An earlier search's search.json written from the config ``raw``, as the driver writes it."""
    folder.mkdir(parents=True)
    cfg = validate(raw)
    spec = {"name": folder.name, "storage": "sqlite:///x.db", "teacher_key": teacher_key, "candidates": []}
    spec["config"] = cfg.model_dump(mode="json")
    (folder / "search.json").write_text(json.dumps(spec))
    return find_source(folder.parent, folder.name)


def _setup(raw: dict) -> tuple[dict, SpaceConfig]:
    cfg = validate(raw)
    return cfg.model_dump(mode="json", exclude={"search"}), cfg.search.space


def _searched(raw: dict, **space: object) -> dict:
    raw = json.loads(json.dumps(raw))
    raw["search"] = {"space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "w_gram": 0.0, **space}}
    return raw


def test_a_warm_start_from_trials_measured_under_another_setup_is_refused(tmp_path: Path) -> None:
    old_raw = _searched(tiny_raw(tmp_path / "teachers"))
    old = _spec_from(tmp_path / "runs" / "old", old_raw)

    # Only what the trials' parameters set (the searched lr's base value), the search's own
    # settings, names and storage places differ: the earlier trials describe these points.
    same = _searched(tiny_raw(tmp_path / "elsewhere"))
    same.update(name="other")
    same["train"]["lr"] = 0.05
    same["search"].update(trials=50, sampler="random")
    same["teacher"].update(checkpoint=str(tmp_path / "teacher.safetensors"))
    check_setup(old, *_setup(same), [])

    longer = _searched(tiny_raw(tmp_path / "teachers"))
    longer["train"]["epochs"] = 6
    longer["data"]["builtin"]["n_train"] = 900
    with pytest.raises(
        ConfigError,
        match=r"search 'old' measured its trials under another setup: data\.builtin\.n_train "
        r"600 there, 900 here \(and 1 more: train\.epochs\); warm-start from a search of the same",
    ):
        check_setup(old, *_setup(longer), [])

    # A weight the old space fixed at 0 and the new one fixes at 1 is no parameter of any
    # trial (fit cannot see it), yet every copied value would mean another loss.
    with pytest.raises(ConfigError, match=r"distill\.w_gram 0\.0 there, 1\.0 here"):
        check_setup(old, *_setup(_searched(tiny_raw(tmp_path / "teachers"), w_gram=1.0)), [])

    # The device changes no FLOP count, but it changes seconds.
    on_gpu = _searched(tiny_raw(tmp_path / "teachers"))
    on_gpu["device"] = "auto"
    check_setup(old, *_setup(on_gpu), [])
    on_gpu["cost"] = old_raw["cost"] = "train_seconds"
    timed = _spec_from(tmp_path / "runs" / "timed", old_raw)
    with pytest.raises(ConfigError, match=r"device 'cpu' there, 'auto' here"):
        check_setup(timed, *_setup(on_gpu), [])

    # An earlier config this version cannot read is one line, not a traceback.
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    spec = {"name": "broken", "storage": "sqlite:///x.db", "config": {**old_raw, "train": {"epochs": 0}}}
    (broken / "search.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"^--warm-start: \S+broken/search\.json: config: train\.epochs: "):
        check_setup(find_source(tmp_path / "runs", "broken"), *_setup(same), [])


def test_a_warm_start_from_another_teacher_is_refused(tmp_path: Path) -> None:
    old = _spec_from(tmp_path / "runs" / "old", tiny_raw(tmp_path), teacher_key="a" * 64)
    spec = old.directory / "search.json"
    check_teacher(spec, "old", "a" * 64)
    refused = r"^--warm-start: search 'old' distilled another teacher \(key a{16} there, b{16} here"
    with pytest.raises(ConfigError, match=refused):
        check_teacher(spec, "old", "b" * 64)
    with pytest.raises(ConfigError, match=r"^--resume: search 'old' distilled another teacher"):
        check_teacher(spec, "old", "b" * 64, "--resume")
    # The same teacher (a checkpoint named, whose key does not cover the data) on rewritten data.
    document = json.loads(spec.read_text())
    spec.write_text(json.dumps({**document, "data_fingerprint": "d" * 64}))
    check_teacher(spec, "old", "a" * 64, "--resume", "d" * 64)
    check_teacher(spec, "old", "a" * 64)  # a caller that does not know the data checks only the teacher
    for flag in ("--warm-start", "--resume"):
        with pytest.raises(
            ConfigError, match=rf"^{flag}: search 'old' ran on other data \(fingerprint d{{16}} there, e{{16}}"
        ):
            check_teacher(spec, "old", "a" * 64, flag, "e" * 64)


@pytest.mark.slow
def test_a_warm_search_starts_from_the_earlier_trials_and_tags_them(tmp_path: Path, teacher_cache: Path) -> None:
    raw = tiny_raw(teacher_cache)
    raw["name"] = "first"
    raw["train"]["epochs"] = 1
    raw["search"] = {"trials": 3, "concurrency": 2, "baselines": [], "space": {"w_gram": 0.0, "w_xmodal": 0.0}}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "first.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((tmp_path / "autogram-runs" / "first" / "front.json").read_text())
    finished = [t for t in first["trials"] if t["status"] == "ok"]
    assert finished

    proc = run_cli("search", "first.yaml", "--name", "second", "--trials", "1", "--warm-start", "first", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"warm start from first: {len(finished)} finished trial(s) copied" in proc.stderr
    second = json.loads((tmp_path / "autogram-runs" / "second" / "front.json").read_text())
    warm = [t for t in second["trials"] if t["warm"]]
    assert [t["warm"] for t in warm] == [f"first#{t['number']}" for t in finished]
    assert [t["values"] for t in warm] == [t["values"] for t in finished]
    assert len(second["trials"]) == len(warm) + 1  # plus the one trial this search ran

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("first")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`autogram.warm` LIKE 'first#%'")
    assert sorted(r.data.tags["autogram.warm"] for r in runs) == sorted(t["warm"] for t in warm)
    assert all(r.info.status == "FINISHED" and "pareto" in r.data.tags for r in runs)

    # Its resume names no --trials (the config says 3): it runs the 1 trial it started with,
    # where Ray's restored run of 1 trial used to count as interrupted (exit 130) forever.
    proc = run_cli("search", "first.yaml", "--name", "second", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--resume: search second runs the 1 trial(s) it started with (search.trials 3 here" in proc.stderr
    proc = run_cli("search", "first.yaml", "--name", "second", "--resume", "--set", "train.epochs=2", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "--resume: search 'second' was started with another config: train.epochs 1 there, 2 here" in proc.stderr

    # Trials of 1 epoch do not describe a search of 2: refused before anything is written.
    proc = run_cli(
        "search", "first.yaml", "--name", "longer", "--warm-start", "first", "--set", "train.epochs=2", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "search 'first' measured its trials under another setup: train.epochs 1 there, 2 here" in proc.stderr
    assert not (tmp_path / "autogram-runs" / "longer").exists()

    proc = run_cli("search", "first.yaml", "--name", "third", "--warm-start", "nosuch", cwd=tmp_path)
    assert proc.returncode == 2 and "--warm-start: no earlier search 'nosuch'" in proc.stderr
