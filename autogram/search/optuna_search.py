"""Ray's OptunaSearch, told the truth about every trial.

Stock ``OptunaSearch`` tells Optuna a trial stopped early by a scheduler as COMPLETE
with its partial values, which then lands on the Pareto front; it knows nothing of
diverged trials or constraints. Here a trial without its final report is PRUNED, a
crashed one FAIL, and every COMPLETE trial carries constraints: ``valid`` (0 for a
trained trial, 1 for a diverged or infeasible one) and one per user constraint.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from autogram.search.worker import FINAL


def make_sampler(name: str, seed: int, trials: int = 100) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``search.sampler``.

    TPE starts from random trials (Optuna's default: 10); searches here are short, so it
    starts modelling after a quarter of the budget (3 to 10 random trials) instead.
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def constraint_name(metric: str, op: str, bound: float) -> str:
    """A stable name for a user constraint, e.g. ``cost<=800``."""
    return f"{metric}{op}{bound:g}"


def violation(value: float, op: str, bound: float) -> float:
    """Optuna's convention: <= 0 is feasible."""
    return value - bound if op == "<=" else bound - value


class AutogramOptunaSearch(OptunaSearch):
    """OptunaSearch that records status, reason and constraints, and prunes early-stopped trials."""

    def __init__(self, *args: Any, constraints: list[tuple[str, str, float]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._constraints = list(constraints or [])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell Optuna the trial's real outcome."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            # Told before the driver died, after the searcher's last saved state: the resumed
            # run ran it again. Optuna keeps its first outcome; telling twice would raise.
            self._completed_trials.add(trial_id)
            return
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        result = result or {}
        if error or not result:
            ot_trial.set_user_attr("status", "failed")
            self._tell(ot_trial, None, TrialState.FAIL)
        elif not result.get(FINAL):
            ot_trial.set_user_attr("status", "pruned")
            ot_trial.set_user_attr("epochs_done", int(result.get("epoch", 0)))
            self._tell(ot_trial, None, TrialState.PRUNED)
        else:
            status = str(result.get("status", "ok"))
            for key in ("status", "reason", "train_seconds", "train_gflops", "epochs_done"):
                if key in result:
                    ot_trial.set_user_attr(key, result[key])
            ot_trial.set_constraint("valid", 0.0 if status == "ok" else 1.0)
            for metric, op, bound in self._constraints:
                ot_trial.set_constraint(constraint_name(metric, op, bound), violation(float(result[metric]), op, bound))
            values = [float(result[m]) for m in self.metric]
            self._tell(ot_trial, values, TrialState.COMPLETE)
        self._completed_trials.add(trial_id)

    def _tell(self, ot_trial: Any, values: list[float] | None, state: TrialState) -> None:
        self._ot_study.tell(ot_trial, values, state=state)


def close_stale_trials(storage_url: str, name: str) -> int:
    """Mark trials asked but never told (a driver killed mid-search) as FAIL; returns how many."""
    study = optuna.load_study(study_name=name, storage=storage_url)
    stale = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "status", "failed")
        study._storage.set_trial_user_attr(trial._trial_id, "reason", "interrupted: the driver stopped mid-trial")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)
