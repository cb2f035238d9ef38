"""Ray's OptunaSearch, told the truth about every trial.

Stock ``OptunaSearch`` tells Optuna a trial stopped early by a scheduler as COMPLETE
with its partial values, which then lands on the Pareto front; it knows nothing of
diverged trials or constraints. Here a trial without its final report is PRUNED, a
crashed one FAIL, and every COMPLETE trial carries constraints: ``valid`` (0 for a
trained trial, 1 for a diverged or infeasible one) and one per user constraint. A layer
subset drawn outside ``min_pairs``..``max_pairs`` is told to Optuna as infeasible at once and
drawn again, so that each Ray trial (and ``--trials``) trains.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from autogram.study.space import PAIR_REDRAWS, SpaceSampler, pair_violation
from autogram.study.worker import FINAL, infeasible_result

log = logging.getLogger("autogram")


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


# What a finished trial's result keeps as Optuna user attributes (front.json reads them).
_KEPT = ("status", "reason", "train_seconds", "train_gflops", "epochs_done", "reads_teacher", "balanced_accuracy")
_KEPT += ("terms", "pairs_aligned")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's RDB storage; a database that refuses to create its tables (a full disk, a
    read-only file) is one line naming it, not SQLAlchemy's traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from autogram.config import ConfigError
    from autogram.config.base import first_line
    from autogram.config.credentials import masked

    try:
        return optuna.storages.RDBStorage(url)
    except SQLAlchemyError as exc:
        raise ConfigError(f"{masked(url)}: the study storage refused a write ({first_line(exc)[:200]})") from None


def constraint_name(metric: str, op: str, bound: float) -> str:
    """A stable name for a user constraint, e.g. ``cost<=800``."""
    return f"{metric}{op}{bound:g}"


def violation(value: float, op: str, bound: float) -> float:
    """Optuna's convention: <= 0 is feasible."""
    return value - bound if op == "<=" else bound - value


class AutogramOptunaSearch(OptunaSearch):
    """OptunaSearch that records status, reason and constraints, prunes early-stopped trials, and
    tells each Ray trial's outcome to its Optuna trial exactly once, across driver restarts.

    Ray saves this searcher's state (a pickle) and its own list of trials at different moments,
    so after a killed driver the two can disagree: Ray may rerun a trial the restored searcher
    never asked. Each Optuna trial therefore carries its Ray trial id from the moment it is
    asked, and a trial missing from the pickle is found in the study by that id.
    """

    REDRAWS = PAIR_REDRAWS

    def __init__(self, *args: Any, constraints: list[tuple[str, str, float]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._constraints = list(constraints or [])

    def suggest(self, trial_id: str) -> dict | None:
        """Ask Optuna as usual, and record the Ray trial id in the study at once. A draw whose
        layer subset breaks ``min_pairs``/``max_pairs`` is told as infeasible (the sampler
        learns from it as before) and drawn again, up to :attr:`REDRAWS` times, instead of
        taking a Ray trial, and with it a trial of the budget, that would train nothing."""
        config = super().suggest(trial_id)
        for _ in range(self.REDRAWS):
            reason = self._pair_violation(config)
            if not reason:
                break
            self._tell_redrawn(trial_id, reason)
            config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return config

    def _pair_violation(self, config: dict | None) -> str:
        """Why ``config``'s layer subset is out of bounds ("" when it is not, or not ours)."""
        if config is None or not isinstance(self._space, SpaceSampler):
            return ""
        return pair_violation(config, self._space.space, self._space.candidates)

    def _tell_redrawn(self, trial_id: str, reason: str) -> None:
        """Tell the draw asked for ``trial_id`` as infeasible, untrained, with ``reason``; it
        carries no Ray trial id (no Ray trial ran it), and the next ask replaces it."""
        ot_trial = self._ot_trials.pop(trial_id)
        state, values, attrs, constraints = self._outcome(trial_id, infeasible_result(reason), False)
        attrs.pop("ray_trial_id", None)
        attrs.update(reason=f"{reason}; drawn again, not trained", redrawn=True)
        self._tell(ot_trial, state, values, attrs, constraints)
        log.info("trial %d infeasible  (%s)", ot_trial.number, attrs["reason"])

    def _tell(
        self,
        ot_trial: Any,
        state: TrialState,
        values: list[float] | None,
        attrs: dict[str, Any],
        constraints: dict[str, float],
    ) -> None:
        """Record ``attrs`` and ``constraints`` on the asked ``ot_trial``, then tell Optuna its outcome."""
        for key, value in attrs.items():
            ot_trial.set_user_attr(key, value)
        for name, value in constraints.items():
            ot_trial.set_constraint(name, value)
        self._ot_study.tell(ot_trial, values, state=state)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Ray's save of this searcher; the save before it is first bundled (see tune_state)."""
        from autogram.study.tune_state import keep_previous_save

        keep_previous_save(checkpoint_dir, session_str)
        super().save_to_dir(checkpoint_dir, session_str)

    def _ot_trial(self, trial_id: str) -> Any:
        """The Optuna trial asked for ``trial_id``: from this searcher's state, else the study."""
        if trial_id in self._ot_trials:
            return self._ot_trials[trial_id]
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.user_attrs.get("ray_trial_id") == trial_id:
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
                return self._ot_trials[trial_id]
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell Optuna the trial's real outcome (once)."""
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trial(trial_id)
        if ot_trial is None:
            return
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if frozen.state.is_finished() and frozen.state != TrialState.FAIL:
            # Told before the driver stopped, but Ray had not saved it as finished: the resumed
            # run restarted it (and the worker reported it done at once, see ``finished_trials``).
            # The result Optuna holds stands: told twice would count twice.
            self._completed_trials.add(trial_id)
            return
        state, values, attrs, constraints = self._outcome(trial_id, result or {}, error)
        if frozen.state.is_finished():
            # It had failed (cut by an interrupt, or crashed); if the rerun finished, its result
            # goes into a new trial that replaces it, since Optuna cannot change a finished trial.
            if state != TrialState.FAIL:
                self._replace(frozen, state, values, attrs, constraints)
            self._completed_trials.add(trial_id)
            return
        self._tell(ot_trial, state, values, attrs, constraints)
        self._completed_trials.add(trial_id)

    def _outcome(
        self, trial_id: str, result: dict, error: bool
    ) -> tuple[TrialState, list[float] | None, dict[str, Any], dict[str, float]]:
        """(state, values, user attributes, constraints) that Optuna should record."""
        attrs: dict[str, Any] = {"ray_trial_id": trial_id}
        if error or not result:
            return TrialState.FAIL, None, {**attrs, "status": "failed"}, {}
        if not result.get(FINAL):
            attrs.update(status="pruned", epochs_done=int(result.get("epoch", 0)))
            return TrialState.PRUNED, None, attrs, {}
        status = str(result.get("status", "ok"))
        for key in _KEPT:
            if key in result:
                attrs[key] = result[key]
        missing = {k.removeprefix("detail."): v for k, v in result.items() if k.startswith("detail.missing:")}
        if missing:
            attrs["missing"] = missing
        constraints = {"valid": 0.0 if status == "ok" else 1.0}
        for metric, op, bound in self._constraints:
            constraints[constraint_name(metric, op, bound)] = violation(float(result[metric]), op, bound)
        return TrialState.COMPLETE, [float(result[m]) for m in self.metric], attrs, constraints

    def _replace(
        self,
        frozen: Any,
        state: TrialState,
        values: list[float] | None,
        attrs: dict[str, Any],
        constraints: dict[str, float],
    ) -> None:
        """Add ``frozen``'s rerun as a new trial marked ``replaces`` (the front leaves the old out)."""
        kept = {k: v for k, v in frozen.user_attrs.items() if k in ("baseline", "tag")}
        self._ot_study.add_trial(
            optuna.trial.create_trial(
                state=state,
                values=values,
                params=frozen.params,
                distributions=frozen.distributions,
                user_attrs={**kept, **attrs, "replaces": frozen.number},
                constraints=constraints or None,
            )
        )


def finished_trials(storage_url: str, name: str) -> frozenset[str]:
    """Ray trial ids whose result the study already holds (COMPLETE or PRUNED): a resumed search
    must not train or report them again. Empty when the study does not exist yet."""
    try:
        study = optuna.load_study(study_name=name, storage=storage_url)
    except KeyError:
        return frozenset()
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return frozenset(
        t.user_attrs["ray_trial_id"]
        for t in study.get_trials(deepcopy=False)
        if t.state in done and "ray_trial_id" in t.user_attrs
    )


def requeue_orphans(storage_url: str, name: str, saved: set[str]) -> list[str]:
    """Close the trials the killed driver asked for but Ray never saved (``saved``: the Ray trial
    ids of Ray's saved state), and queue each one's parameters again, so the resumed search
    runs that point (a baseline keeps its name) under a trial that ``replaces`` it. Returns the
    orphans' Ray trial ids (their MLflow runs are dropped by the caller)."""
    study = optuna.load_study(study_name=name, storage=storage_url)
    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ray_id = trial.user_attrs.get("ray_trial_id")
        if ray_id in saved:
            continue  # Ray restarts it and its result is told as usual
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "status", "failed")
        storage.set_trial_user_attr(trial._trial_id, "reason", "interrupted before Ray saved it: queued again")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:
            kept = {k: v for k, v in trial.user_attrs.items() if k in ("baseline", "tag")}
            study.enqueue_trial(trial.params, user_attrs={**kept, "replaces": trial.number}, skip_if_exists=False)
        if ray_id:
            orphans.append(ray_id)
    return orphans


def close_stale_trials(storage_url: str, name: str) -> int:
    """Mark trials asked but never told (a driver killed mid-search) as FAIL; returns how many."""
    study = optuna.load_study(study_name=name, storage=storage_url)
    stale = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "status", "failed")
        study._storage.set_trial_user_attr(trial._trial_id, "reason", "interrupted: the driver stopped mid-trial")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)


def check_new_study(url: str, name: str) -> None:
    """Refuse a new search whose shared storage already holds a study of its name: Optuna would
    load it, and the earlier trials would join this search's front unannounced."""
    if name in optuna.get_all_study_names(storage=open_storage(url)):
        raise _taken(url, name)


def claim_study(url: str, name: str, directions: list[str]) -> None:
    """Create a new search's study on the shared storage, refusing one of its name that appeared
    since the plan was checked (another driver planning the same name at the same time): the
    check and the creation are then one step of the database."""
    try:
        optuna.create_study(study_name=name, storage=open_storage(url), directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        raise _taken(url, name) from None


def _taken(url: str, name: str) -> Exception:
    from autogram.config import ConfigError
    from autogram.config.credentials import masked

    return ConfigError(
        f"search.storage {masked(url)} already holds a study named {name!r} (an earlier search of that "
        f"name): resume it with --resume from its folder, pick another --name, or delete it with "
        f"`optuna delete-study --study-name {name} --storage URL`"
    )


def drop_study(url: str, name: str) -> None:
    """Delete the study ``name`` that a new search created and never started (a failure before
    Ray Tune ran a trial), so the name stays usable; a storage that cannot be reached is logged."""
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:
        pass  # never created: the search failed before its study
    except SQLAlchemyError as exc:
        logging.getLogger("autogram").warning("could not delete the unstarted study %r: %s", name, exc)
