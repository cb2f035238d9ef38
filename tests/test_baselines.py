"""Standard recipes as the first trials of a search, and the verdict against them."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from autogram.config import ConfigError, validate
from autogram.report.verdict import format_verdict, verdict
from autogram.study.baselines import plan_baselines
from tests.conftest import run_cli, tiny_raw

CANDIDATES = ["image.block1:image.layer1", "tokens.block1:tokens.layer1"]
BASE = {"train": {"lr": 0.003, "modality_dropout": 0.1}}
OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "robustness", "direction": "maximize"},
    {"name": "cost", "direction": "minimize"},
]


def test_every_standard_recipe_the_default_space_allows_with_its_fixed_values() -> None:
    space = validate({"search": {}}).search.space
    planned = plan_baselines(None, space, CANDIDATES, BASE)
    assert list(planned) == ["ce", "kd", "kd_gram_all", "kd_xmodal"]
    plain = {"temperature": 4.0, "lr": 0.003, "modality_dropout": 0.1}
    assert planned["ce"] == {**plain, "use_w_kd": False, "use_w_gram": False, "use_w_xmodal": False}
    assert planned["kd"] == {**plain, "use_w_kd": True, "w_kd": 1.0, "use_w_gram": False, "use_w_xmodal": False}
    assert planned["kd_gram_all"] == {
        **plain,
        "use_w_kd": True,
        "w_kd": 1.0,
        "use_w_gram": True,
        "w_gram": 3000.0,
        "use_w_xmodal": False,
        **{f"pair:{c}": 1 for c in CANDIDATES},
    }
    assert planned["kd_xmodal"]["w_xmodal"] == 10.0 and planned["kd_xmodal"]["use_w_gram"] is False


def test_a_searched_input_noise_is_suggested_and_baselines_take_the_configs_value() -> None:
    import optuna

    from autogram.study.space import SpaceSampler, trial_config

    space = validate({"search": {"space": {"input_noise": {"low": 0.0, "high": 1.5}}}}).search.space
    planned = plan_baselines(None, space, CANDIDATES, {"train": {**BASE["train"], "input_noise": 0.25}})
    assert {recipe["input_noise"] for recipe in planned.values()} == {0.25}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    fixed = SpaceSampler(space, CANDIDATES)(trial)
    assert 0.0 <= trial.params["input_noise"] <= 1.5
    cfg = trial_config(validate({}).model_dump(mode="json"), {**trial.params, **fixed}, space, CANDIDATES)
    assert validate(cfg).train.input_noise == trial.params["input_noise"]
    # Left out of the space, the config's own train.input_noise stands in every trial.
    default = validate({"search": {}}).search.space
    base = validate({"train": {"input_noise": 0.3}}).model_dump(mode="json")
    assert trial_config(base, {}, default, CANDIDATES)["train"]["input_noise"] == 0.3


def test_recipes_the_space_does_not_allow_are_skipped_or_refused_by_name() -> None:
    raw = {"search": {"space": {"w_xmodal": 0.0, "max_pairs": 1, "temperature": {"low": 5, "high": 8}}}}
    space = validate(raw).search.space
    planned = plan_baselines(None, space, CANDIDATES, BASE)
    assert list(planned) == ["ce", "kd"]  # no cross-modal term; max_pairs forbids every pair at once
    assert planned["kd"]["temperature"] == 5.0  # clipped into the space's range
    with pytest.raises(ConfigError, match="search.baselines: kd_xmodal is not in this search space: w_xmodal"):
        plan_baselines(["kd_xmodal"], space, CANDIDATES, BASE)
    assert plan_baselines([], space, CANDIDATES, BASE) == {}


def test_teacher_free_moddrop_and_dist_baselines_when_named() -> None:
    dist = {"low": 0.1, "high": 10.0, "log": True, "optional": True}
    space = validate({"search": {"space": {"weights": {"dist": dist}}}}).search.space
    assert list(plan_baselines(None, space, CANDIDATES, BASE)) == ["ce", "kd", "kd_gram_all", "kd_xmodal"]
    planned = plan_baselines(["ce_moddrop", "kd_moddrop", "dist"], space, CANDIDATES, BASE)
    assert planned["ce_moddrop"]["modality_dropout"] == 0.4  # ModDrop's 0.5, clipped into the space's 0..0.4
    assert planned["ce_moddrop"]["use_w_kd"] is False and planned["kd_moddrop"]["w_kd"] == 1.0
    assert {k: planned["dist"][k] for k in ("use_w_dist", "w_dist", "use_w_kd", "temperature")} == {
        "use_w_dist": True,
        "w_dist": 2.0,
        "use_w_kd": False,
        "temperature": 4.0,
    }
    plain = validate({"search": {"space": {"modality_dropout": 0.0}}}).search.space
    with pytest.raises(ConfigError, match="search.baselines: dist is not in this search space: w_dist is not in"):
        plan_baselines(["dist"], plain, CANDIDATES, BASE)
    with pytest.raises(ConfigError, match="ce_moddrop is not in this search space: modality dropout is fixed at 0"):
        plan_baselines(["ce_moddrop"], plain, CANDIDATES, BASE)


@pytest.mark.slow
def test_named_new_baselines_run_first_tagged_in_front_and_mlflow(tmp_path: Path, teacher_cache: Path) -> None:
    raw = tiny_raw(teacher_cache)
    raw["train"]["epochs"] = 1
    raw["name"] = "nb"
    raw["search"] = {
        "trials": 4,
        "concurrency": 2,
        "baselines": ["ce_moddrop", "kd_moddrop", "dist"],
        "space": {"weights": {"dist": {"low": 0.1, "high": 10.0, "log": True, "optional": True}}},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "s.yaml", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "nb" / "front.json").read_text())
    assert [t["baseline"] for t in front["trials"]] == ["ce_moddrop", "kd_moddrop", "dist", None]
    assert [e["baseline"] for e in front["verdict"]] == ["ce_moddrop", "kd_moddrop", "dist"]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nb").experiment_id])
    tags = {r.data.tags.get("trial_number"): r.data.tags.get("autogram.baseline") for r in runs}
    assert tags == {"0": "ce_moddrop", "1": "kd_moddrop", "2": "dist", "3": None, None: None}
    # What the teacher adds: the best point reading it against the best without it (ce_moddrop
    # here, or the searched trial if it switched every teacher term off).
    reads = {r.data.tags.get("trial_number"): r.data.tags.get("autogram.reads_teacher") for r in runs}
    assert reads["0"] == "false" and reads["1"] == reads["2"] == "true"
    adds = front["teacher_adds"]
    assert {"accuracy", "robustness", "cost", "missing:image", "missing:tokens"} <= set(adds)
    assert adds["accuracy"]["without"]["trial"] in (0, 3) and adds["accuracy"]["with"]["trial"] in (1, 2, 3)
    by_number = {t["number"]: t for t in front["trials"]}
    best = adds["missing:image"]["with"]
    assert best["value"] == by_number[best["trial"]]["missing"]["missing:image"]
    assert "What the teacher adds" in proc.stdout
    bad = run_cli("search", "s.yaml", "--set", "search.baselines=[ce_dropout]", "--out", "other", cwd=tmp_path)
    assert bad.returncode == 2 and "search.baselines" in bad.stderr and "ce_dropout" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_what_the_teacher_adds_compares_the_best_point_with_and_without_it() -> None:
    from autogram.report.verdict import format_teacher_adds, teacher_adds

    def trial(number: int, values: tuple[float, float, float], reads: bool | None, missing: float) -> dict:
        entry = _trial(number, values, False)
        return {**entry, "reads_teacher": reads, "missing": {"missing:audio": missing}}

    document = {
        "objectives": OBJECTIVES,
        "trials": [
            trial(0, (0.70, 0.40, 100.0), False, 0.50),
            trial(1, (0.72, 0.45, 90.0), False, 0.40),
            trial(2, (0.80, 0.42, 500.0), True, 0.45),
            trial(3, (0.75, 0.50, 400.0), True, 0.60),
        ],
    }
    adds = teacher_adds(document)
    assert adds is not None
    assert (adds["accuracy"]["with"]["trial"], adds["accuracy"]["without"]["trial"]) == (2, 1)
    assert adds["accuracy"]["delta"] == pytest.approx(0.08)
    assert (adds["cost"]["with"]["trial"], adds["cost"]["without"]["trial"]) == (3, 1)  # lowest cost of each
    assert adds["cost"]["delta"] == pytest.approx(310.0)
    assert adds["missing:audio"]["delta"] == pytest.approx(0.10)  # trial 3 vs trial 0
    assert "missing:audio" in format_teacher_adds(adds) and "+0.1" in format_teacher_adds(adds)
    for entry in document["trials"][2:]:
        entry["reads_teacher"] = False
    assert teacher_adds(document) is None  # nothing read the teacher: nothing to compare
    assert format_teacher_adds(None) == ""


def _trial(number: int, values: tuple[float, float, float], pareto: bool, baseline: str | None = None) -> dict:
    return {
        "number": number,
        "status": "ok",
        "params": {},
        "values": dict(zip(["accuracy", "robustness", "cost"], values, strict=True)),
        "pareto": pareto,
        "baseline": baseline,
    }


def test_verdict_on_a_hand_made_front() -> None:
    objectives = [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "robustness", "direction": "maximize"},
        {"name": "cost", "direction": "minimize"},
    ]
    trials = [
        _trial(0, (0.90, 0.40, 100.0), False, "ce"),  # dominated by 4 and 5
        _trial(1, (0.95, 0.30, 50.0), True, "kd"),  # on the front itself
        _trial(2, (0.80, 0.20, 500.0), False, "kd_xmodal"),  # by 1 (a baseline on the front) and 4; 5 costs more
        _trial(3, (0.99, 0.50, 900.0), False),
        _trial(4, (0.92, 0.45, 90.0), True),
        _trial(5, (0.97, 0.60, 600.0), True),
        {**_trial(6, (0, 0, 0), False, "kd_gram_all"), "status": "diverged", "values": {}},
    ]
    document = {"objectives": objectives, "trials": trials}
    entries = {e["baseline"]: e for e in verdict(document)}
    assert [p["trial"] for p in entries["ce"]["dominated_by"]] == [4]
    assert entries["ce"]["dominated_by"][0]["deltas"] == pytest.approx(
        {"accuracy": 0.02, "robustness": 0.05, "cost": -10.0}
    )
    assert entries["kd"]["dominated_by"] == [] and entries["kd"]["on_front"]
    assert [p["trial"] for p in entries["kd_xmodal"]["dominated_by"]] == [1, 4]
    assert entries["kd_gram_all"]["status"] == "diverged" and "dominated_by" not in entries["kd_gram_all"]
    text = format_verdict(verdict(document))
    assert "ce           trial 0: dominated by 1 front point(s)" in text
    assert "trial 4: accuracy +0.02, robustness +0.05, cost -10" in text
    assert "kd           trial 1: no front point dominates it (it is on the front)" in text
    assert "kd_gram_all  trial 6: diverged, no verdict" in text


@pytest.mark.slow
def test_baselines_are_the_first_trials_tagged_in_front_and_mlflow(tmp_path: Path, teacher_cache: Path) -> None:
    raw = tiny_raw(teacher_cache)
    raw["train"]["epochs"] = 1
    raw["name"] = "b"
    raw["search"] = {"trials": 5, "concurrency": 2, "space": {"max_pairs": 6}}
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "b" / "front.json").read_text())
    by_number = {t["number"]: t for t in front["trials"]}
    assert [by_number[n]["baseline"] for n in range(5)] == ["ce", "kd", "kd_gram_all", "kd_xmodal", None]
    assert by_number[0]["params"]["use_w_kd"] is False and by_number[0]["params"]["use_w_gram"] is False
    assert by_number[1]["params"]["w_kd"] == 1.0 and by_number[1]["params"]["temperature"] == 4.0
    gram_all = by_number[2]["params"]
    assert gram_all["w_gram"] == 3000.0 and all(v == 1 for k, v in gram_all.items() if k.startswith("pair:"))
    assert sum(k.startswith("pair:") for k in gram_all) == 6
    assert [e["baseline"] for e in front["verdict"]] == ["ce", "kd", "kd_gram_all", "kd_xmodal"]
    assert "Against the baselines" in proc.stdout and "In short:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("search b done in ")  # the whole command's time

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("b").experiment_id])
    tags = {r.data.tags.get("trial_number"): r.data.tags.get("autogram.baseline") for r in runs}
    assert tags == {"0": "ce", "1": "kd", "2": "kd_gram_all", "3": "kd_xmodal", "4": None, None: None}
    parent = next(r for r in runs if r.data.tags.get("autogram.kind") == "search")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "verdict.txt" in artifacts

    shown = run_cli("front", "b", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Against the baselines" in shown.stdout and "ce           trial 0" in shown.stdout


def test_an_unknown_baseline_is_a_one_line_error_and_writes_nothing(tmp_path: Path, teacher_cache: Path) -> None:
    raw = tiny_raw(teacher_cache)
    raw["search"] = {"baselines": ["ce", "fitnets"]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.baselines" in lines[0] and "fitnets" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_no_more_baselines_are_enqueued_than_trials() -> None:
    import optuna

    from autogram.study.baselines import enqueue_baselines

    space = validate({"search": {}}).search.space
    planned = plan_baselines(None, space, CANDIDATES, BASE)
    study = optuna.create_study(directions=["maximize"])
    assert enqueue_baselines(study, planned, trials=2) == ["ce", "kd"]
    waiting = study.get_trials(deepcopy=False)
    assert [t.user_attrs["baseline"] for t in waiting] == ["ce", "kd"]
    assert enqueue_baselines(study, planned, trials=4) == []  # a study with trials is a resume: none again


def test_autogram_search_stays_the_function_once_the_search_package_is_imported() -> None:
    import autogram
    import autogram.study.baselines  # noqa: F401 - the package no longer shares the function's name

    assert callable(autogram.search) and autogram.search.__module__ == "autogram"


def test_headline_on_a_hand_made_front() -> None:
    from autogram.report.headline import headline

    objectives = [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "robustness", "direction": "maximize"},
        {"name": "cost", "direction": "minimize"},
    ]
    searched = {**_trial(3, (0.99, 0.50, 700.0), True), "params": {"use_w_kd": True, "w_kd": 2.0, "w_gram": 50.0}}
    searched["params"].update({"pair:a:b": 1, "pair:c:d": 0, "modality_dropout": 0.3})
    trials = [
        _trial(0, (0.50, 0.40, 100.0), True, "ce"),
        _trial(1, (0.95, 0.30, 800.0), True, "kd"),
        searched,
        _trial(4, (0.40, 0.20, 950.0), False),
    ]
    text = headline({"objectives": objectives, "trials": trials})
    lines = text.splitlines()
    assert lines[0] == "In short:"
    assert lines[1] == (
        "  best accuracy: searched trial 3 (kd + gram, 1 pair, modality dropout 0.30), accuracy 0.990 "
        "(+0.49 over ce at 7x its cost; +0.04 over kd at 0.88x its cost)"
    )
    assert lines[2].startswith("  best robustness: searched trial 3 ") and "+0.2 over kd at 0.88x its cost" in lines[2]
    assert lines[3] == "  best cost: baseline ce (trial 0), cost 100 (700 below kd)"
    assert lines[4] == ("  searched: 1 of 2 searched trials reached the front; on every objective, trial 3 beats kd")
    # Without a searched winner, the headline says the standard recipes won.
    text = headline({"objectives": objectives, "trials": [t for t in trials if t["number"] != 3]})
    assert "none beats a baseline on every objective: the standard recipes win this budget" in text
    assert headline({"objectives": objectives, "trials": []}) == ""
    # A modality dropout the space fixes is no parameter of the trial: front.json's `fixed` has it.
    del searched["params"]["modality_dropout"]
    text = headline({"objectives": objectives, "trials": trials, "fixed": {"modality_dropout": 0.25}})
    assert "searched trial 3 (kd + gram, 1 pair, modality dropout 0.25)" in text
    assert "searched trial 3 (kd + gram, 1 pair)," in headline({"objectives": objectives, "trials": trials})


@pytest.mark.slow
def test_a_trial_is_named_by_the_terms_that_ran_not_by_its_sampled_weights(tmp_path: Path, teacher_cache: Path) -> None:
    """min_pairs 0 with one candidate pair: a trial that selected no pair ran no Gram term
    although its weight is 100. The headline named it "the space's fixed weights" (ce, fixed,
    is no parameter) and a Gram trial "..., 1 pair" without the Gram term."""
    from autogram.report.headline import recipe_words
    from autogram.report.readback import read_front

    raw = tiny_raw(teacher_cache)
    raw["name"], raw["train"]["epochs"] = "terms", 1
    pair = "image.block2:image.layer1"
    raw["search"] = {
        "trials": 6,
        "concurrency": 2,
        "sampler": "random",
        "seed": 0,  # this seed draws the pair in 5 trials and leaves it out of 1
        "baselines": [],
        "space": {
            **{"w_ce": 1.0, "w_kd": 0.0, "w_gram": 100.0, "w_xmodal": 0.0, "modality_dropout": 0.0},
            "lr": {"low": 0.001, "high": 0.01},
            **{"pairs": [pair], "min_pairs": 0, "max_pairs": 1},
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "s.yaml", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "terms" / "front.json").read_text())
    drawn = {t["number"]: t["params"][f"pair:{pair}"] for t in front["trials"]}
    assert sorted(set(drawn.values())) == [0, 1], drawn
    for trial in front["trials"]:
        on = drawn[trial["number"]] == 1
        assert (trial["terms"], trial["pairs_aligned"]) == (("ce+gram", 1) if on else ("ce", 0)), trial
        words = recipe_words(trial)
        assert words.endswith("(ce + gram, 1 pair)" if on else "(ce)"), words
    # confirm groups its rows by what ran too: the trial without a pair reads no teacher, so
    # "what the teacher adds" compares it with one that does (before, both counted as reading
    # it, from their weights, and the comparison was left out).
    off, on = (next(n for n, v in drawn.items() if v == flag) for flag in (0, 1))
    proc = run_cli("confirm", "runs/terms", "--points", f"{off},{on}", "--seeds", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    confirmed = json.loads((tmp_path / "runs" / "terms" / "confirm" / "confirm.json").read_text())
    assert {r["trial"]: r["reads_teacher"] for r in confirmed["rows"]} == {off: False, on: True}
    assert confirmed["teacher_adds"]["accuracy"]["without"] == f"trial {off}"
    # An ablation switches off what ran: the trial without a pair has no Gram term to remove
    # (before, a "without gram" row retrained the point itself under that name).
    for number, labels in ((off, ["full"]), (on, ["full", "without gram"])):
        proc = run_cli("confirm", "runs/terms", "--ablate", str(number), "--seeds", "1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ablation = json.loads((tmp_path / "runs" / "terms" / "confirm" / f"ablation_{number}.json").read_text())
        assert [r["label"] for r in ablation["rows"]] == labels
        assert ("nothing to switch off" in proc.stdout) == (number == off), proc.stdout
    # The exported recipe's terms, which other frameworks read, are the ones that ran too.
    from autogram.distiller import recipe_document
    from autogram.export import trial_training_config

    spec = json.loads((tmp_path / "runs" / "terms" / "search.json").read_text())
    by_number = {t["number"]: t for t in front["trials"]}
    for number, terms in ((off, {"ce": 1.0}), (on, {"ce": 1.0, "gram": 100.0})):
        assert recipe_document(trial_training_config(spec, by_number[number]), None)["terms"] == terms
    # MLflow keeps them too: a front read back from it names trials the same way.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    back = {t["number"]: t for t in read_front(uri, "terms")["trials"]}
    assert {n: (t["terms"], t["pairs_aligned"]) for n, t in back.items()} == {
        t["number"]: (t["terms"], t["pairs_aligned"]) for t in front["trials"]
    }
