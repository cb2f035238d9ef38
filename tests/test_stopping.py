"""Early stopping by Pareto rank: the rung rule on hand-made rungs, the scheduler inside a real
Ray Tune run, and a real search with ``kind: pareto``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from autogram.report.pareto import crowding_distance, pareto_ranks
from autogram.study.stopping import promoted, rung_columns
from tests.conftest import run_cli, tiny_raw

DIRECTIONS = ["maximize", "minimize"]  # (accuracy so far, cost so far)


def test_pareto_ranks_and_crowding_by_hand() -> None:
    values = [[0.9, 100], [0.8, 10], [0.7, 50], [0.85, 200], [0.6, 5]]
    assert pareto_ranks(values, DIRECTIONS) == [0, 0, 1, 1, 0]
    # Front A, B, E in minimisation form: accuracy -0.9, -0.8, -0.6; cost 100, 10, 5. B sits
    # between the two ends on both: (0.9 - 0.6) / 0.3 + (100 - 5) / 95 = 2.
    minimised = [[-a, c] for a, c in values]
    distance = crowding_distance(minimised, [0, 1, 4])
    assert distance[0] == distance[4] == float("inf") and distance[1] == pytest.approx(2.0)


def test_a_rung_keeps_its_front_and_fills_up_to_one_in_reduction_factor() -> None:
    rung = {"A": [0.9, 100.0], "B": [0.8, 10.0], "C": [0.7, 50.0], "D": [0.85, 200.0], "E": [0.6, 5.0]}
    # 5 trials, keep ceil(5 / 2) = 3: exactly the front (A, B and the cheapest, E).
    assert {t for t in rung if promoted(rung, t, DIRECTIONS, 2.0)} == {"A", "B", "E"}
    # keep ceil(5 / 1.5) = 4: the front and one of the second rank.
    kept = {t for t in rung if promoted(rung, t, DIRECTIONS, 1.5)}
    assert {"A", "B", "E"} < kept and len(kept) == 4
    # A front larger than 1/reduction_factor of the rung is kept whole: CE-cheap and accurate alike.
    wide = {f"t{i}": [0.5 + 0.05 * i, 10.0 * (i + 1)] for i in range(8)}
    assert all(promoted(wide, t, DIRECTIONS, 4.0) for t in wide)
    # ASHA on accuracy alone would stop the cheapest trial here; by Pareto rank it continues.
    assert promoted(rung, "E", DIRECTIONS, 4.0) and not promoted(rung, "C", DIRECTIONS, 4.0)


def test_a_tie_in_crowding_distance_goes_to_the_better_trial_not_the_earlier_one() -> None:
    # A rung seen in a bench search (epoch 2 of 8): a cheap CE-only trial on the front, then
    # two KD trials behind it only, 9 reaching the rung before 11. Both have infinite crowding
    # distance (a rank of two); keep ceil(4 / 2) = 2: trial 11, far ahead on accuracy (it
    # finished on the search's front), continues and 9 stops, whichever arrived first.
    for order in (["1", "7", "9", "11"], ["1", "7", "11", "9"]):
        seen = {"1": [0.24, 8.6], "7": [0.098, 74.4], "9": [0.147, 74.4], "11": [0.225, 75.3]}
        rung = {t: seen[t] for t in order}
        assert promoted(rung, "11", DIRECTIONS, 2.0) and not promoted(rung, "9", DIRECTIONS, 2.0)


def test_a_trial_on_the_rungs_front_is_never_stopped() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        rung = {f"t{i}": [float(rng.random()), float(rng.random())] for i in range(n)}
        ranks = pareto_ranks(list(rung.values()), DIRECTIONS)
        for (trial, _), rank in zip(rung.items(), ranks, strict=True):
            if rank == 0:
                assert promoted(rung, trial, DIRECTIONS, float(rng.choice([1.5, 2.0, 3.0, 4.0])))


def test_rung_columns_follow_the_objectives() -> None:
    objectives = [
        {"name": "balanced_accuracy", "direction": "maximize"},
        {"name": "robustness", "direction": "maximize"},
        {"name": "cost", "direction": "minimize"},
    ]
    # Robustness is scored only at the end: a rung compares accuracy so far and cost so far.
    assert rung_columns(objectives, "train_gflops") == [("accuracy", "maximize"), ("train_gflops", "minimize")]


def test_no_rung_at_the_last_epoch_for_either_kind() -> None:
    from autogram.config import validate
    from autogram.study.stopping import rung_epochs, scheduler_for

    # Stopping after the last epoch saves only the scoring and throws away a trained point.
    assert rung_epochs(1, 2.0, 8) == [1, 2, 4]
    assert rung_epochs(1, 3.0, 4) == [1, 3]
    assert rung_epochs(2, 2.0, 2) == []
    for kind in ("asha", "pareto"):
        search = validate({"search": {"early_stopping": {"kind": kind, "reduction_factor": 2}}}).search
        scheduler = scheduler_for(search, 8, "train_gflops")
        milestones = (
            scheduler.milestones if kind == "pareto" else sorted(m for b in scheduler._brackets for m, _ in b._rungs)
        )
        assert milestones == [1, 2, 4], kind


def test_the_scheduler_stops_what_a_rung_does_not_promote_in_a_real_tune_run(tmp_path: Path) -> None:
    import ray
    from ray import tune

    from autogram.study.stopping import ParetoSuccessiveHalving

    # Run one at a time, in this order: A, B, C, D, E as in the hand-made rung above.
    points = [(0.9, 100.0), (0.8, 10.0), (0.7, 50.0), (0.85, 200.0), (0.6, 5.0)]
    scheduler = ParetoSuccessiveHalving(
        rung_columns(
            [
                {"name": "accuracy", "direction": "maximize"},
                {"name": "cost", "direction": "minimize"},
            ],
            "train_gflops",
        ),
        epochs=4,
        grace_period=1,
        reduction_factor=2.0,
    )

    def curve(config: dict) -> None:  # defined here: Ray ships it by value, not by module name
        accuracy, cost = points[config["point"]]
        for epoch in range(1, 5):
            tune.report({"accuracy": accuracy * epoch / 4, "train_gflops": cost * epoch})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            curve,
            param_space={"point": tune.grid_search(list(range(len(points))))},
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    epochs = {r.config["point"]: r.metrics["training_iteration"] for r in results}
    # Rung 1 sees A, then A+B, A+B+C (C dominated by B: 3 trials keep 2 -> stopped), then D
    # (dominated by A; keep 2 of 4 -> stopped), then E (the cheapest: on the front).
    assert epochs[0] == 4 and epochs[1] == 4 and epochs[4] == 4
    assert epochs[2] == 1 and epochs[3] == 1


@pytest.mark.slow
def test_a_search_with_pareto_early_stopping(tmp_path: Path, teacher_cache: Path) -> None:
    raw = {**tiny_raw(teacher_cache), "name": "ps"}
    raw["train"]["epochs"] = 4
    raw["search"] = {
        "trials": 6,
        "concurrency": 2,
        "baselines": ["ce", "kd"],
        "early_stopping": {"kind": "pareto", "grace_period": 1, "reduction_factor": 2},
    }
    (tmp_path / "ps.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "ps.yaml", "--out", "runs", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "ps" / "front.json").read_text())
    statuses = [t["status"] for t in front["trials"]]
    assert len(statuses) == 6 and set(statuses) <= {"ok", "pruned", "infeasible"}
    assert not [t for t in front["trials"] if t["status"] == "pruned" and t["pareto"]]
    assert any(t["pareto"] for t in front["trials"])
    spec = json.loads((tmp_path / "runs" / "ps" / "search.json").read_text())
    assert spec["config"]["search"]["early_stopping"]["kind"] == "pareto"
