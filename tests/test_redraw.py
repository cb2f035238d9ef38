"""A layer subset drawn outside min_pairs..max_pairs is told to Optuna as infeasible and drawn
again in the driver, so a Ray trial (one of ``--trials``) always gets a subset it can train.
The searcher runs against a real Optuna RDB storage (sqlite); no Ray cluster is needed to ask."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from autogram.config import SpaceConfig
from autogram.study.optuna_search import AutogramOptunaSearch, finished_trials, make_sampler
from autogram.study.space import SpaceSampler, pair_violation

# Six candidate pairs, as the quickstart's default pairing has.
CANDIDATES = [f"s{i}:t{i}" for i in range(6)]
OBJECTIVES = ["accuracy", "robustness", "cost"]


def _searcher(tmp_path: Path, space: SpaceConfig, sampler: str = "random") -> AutogramOptunaSearch:
    return AutogramOptunaSearch(
        space=SpaceSampler(space, CANDIDATES),
        metric=OBJECTIVES,
        mode=["max", "max", "min"],
        sampler=make_sampler(sampler, 0, 8),
        study_name="s",
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"),
        constraints=[("cost", "<=", 800.0)],
    )


def _tight() -> SpaceConfig:
    # The Gram term always on, at most one of six pairs: 6 of 64 random subsets fit.
    return SpaceConfig(w_gram=100.0, min_pairs=1, max_pairs=1)


def test_each_suggestion_fits_the_pair_bounds_and_the_redraws_are_told_infeasible(tmp_path: Path) -> None:
    space = _tight()
    searcher = _searcher(tmp_path, space)
    configs = {f"ray{i}": searcher.suggest(f"ray{i}") for i in range(4)}
    for config in configs.values():
        assert pair_violation(config, space, CANDIDATES) == ""
    study = searcher._ot_study
    asked = {t.user_attrs.get("ray_trial_id"): t for t in study.get_trials(deepcopy=False)}
    # Each Ray trial id names the one draw it trains: still running, its number in its config.
    for trial_id, config in configs.items():
        assert asked[trial_id].state == TrialState.RUNNING
        assert asked[trial_id].number == config["trial_number"]
    redrawn = [t for t in study.get_trials(deepcopy=False) if "ray_trial_id" not in t.user_attrs]
    assert redrawn, "at most one of six pairs: random draws must have broken the bound"
    for trial in redrawn:
        assert trial.state == TrialState.COMPLETE and trial.values == [0.0, 0.0, 0.0]
        assert trial.user_attrs["status"] == "infeasible"
        assert trial.user_attrs["reason"].endswith("; drawn again, not trained")
        assert "outside min_pairs..max_pairs = 1..1" in trial.user_attrs["reason"]
        # The sampler learns from it as from any infeasible trial: the valid constraint is broken.
        assert trial.constraints["valid"] == 1.0 and trial.constraints["cost<=800"] <= 0
        assert sum(v for k, v in trial.params.items() if k.startswith("pair:")) != 1
    # A resumed search skips Ray trials the study holds as finished: no redraw is one of them.
    assert finished_trials(f"sqlite:///{tmp_path / 'optuna.db'}", "s") == frozenset()


def test_a_finished_ray_trial_is_told_to_its_own_draw(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, _tight())
    config = searcher.suggest("ray0")
    result = {"accuracy": 0.5, "robustness": 0.4, "cost": 10.0, "status": "ok", "final": True}
    searcher.on_trial_complete("ray0", result)
    trial = searcher._ot_study.get_trials(deepcopy=False)[config["trial_number"]]
    assert trial.state == TrialState.COMPLETE and trial.values == [0.5, 0.4, 10.0]
    assert trial.user_attrs["ray_trial_id"] == "ray0" and trial.user_attrs["status"] == "ok"
    assert finished_trials(f"sqlite:///{tmp_path / 'optuna.db'}", "s") == frozenset({"ray0"})


def test_a_space_with_no_feasible_subset_stops_redrawing_and_lets_the_trial_report_it(tmp_path: Path) -> None:
    # Seven pairs at least of six: nothing fits (the plan refuses such a space; the bound on
    # redraws keeps a search from asking forever whatever the space).
    space = SpaceConfig(w_gram=100.0, min_pairs=7)
    searcher = _searcher(tmp_path, space)
    searcher.REDRAWS = 5
    config = searcher.suggest("ray0")
    assert pair_violation(config, space, CANDIDATES)
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert len(trials) == 6 and [t.state for t in trials].count(TrialState.RUNNING) == 1
    assert trials[-1].user_attrs["ray_trial_id"] == "ray0"


def test_a_space_without_bounds_to_break_asks_once(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, SpaceConfig(w_gram=0.0))
    searcher.suggest("ray0")
    assert len(searcher._ot_study.get_trials(deepcopy=False)) == 1


def test_the_front_lists_the_trials_that_ran_and_counts_the_redraws(tmp_path: Path) -> None:
    from autogram.report.front import build_front, format_front
    from autogram.report.plots import hypervolume_history

    searcher = _searcher(tmp_path, _tight())
    for i in range(2):
        searcher.suggest(f"ray{i}")
        result = {"accuracy": 0.5 + i / 10, "robustness": 0.4, "cost": 10.0 + i, "status": "ok", "final": True}
        searcher.on_trial_complete(f"ray{i}", result)
    study = searcher._ot_study
    redrawn = [t.number for t in study.trials if t.user_attrs.get("redrawn")]
    assert redrawn
    directions = ["maximize", "maximize", "minimize"]
    objectives = [{"name": n, "direction": d} for n, d in zip(OBJECTIVES, directions, strict=True)]
    document = build_front(study, "s", objectives)
    assert [t["status"] for t in document["trials"]] == ["ok", "ok"]
    assert not {t["number"] for t in document["trials"]} & set(redrawn)
    assert document["redrawn"] == len(redrawn)
    header = format_front(document).splitlines()[0]
    assert f"2 of 2 trials (ok 2; {len(redrawn)} draw" in header and "drawn again, untrained" in header
    # The hypervolume after each trial that ran: two steps, not one per draw.
    _, history = hypervolume_history(study, document)
    assert len(history) == 2 and history[1] > history[0] > 0
