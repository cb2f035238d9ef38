"""The search driver: Ray Tune runs the trials, Optuna (in an RDB storage) chooses them.

Everything that can be wrong with the search space is checked before Ray starts. The
teacher is trained (or found) once, here, and shipped to workers as bytes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autogram.config import ConfigError
from autogram.study.plan import (
    FRONT_FILE,
    SPEC_FILE,
    STUDY_FILE,
    SearchPlan,
    candidate_taps,
    plan_search,
    space_summary,
)
from autogram.study.resume import TUNE_DIR, TUNE_NOISE, SearchInterrupted, interrupted, requeue_lost_trials
from autogram.study.warm import earlier_teacher

__all__ = ["FRONT_FILE", "SPEC_FILE", "STUDY_FILE", "SearchPlan", "plan_search", "run_search"]

log = logging.getLogger("autogram")


def _trainable(
    plan: SearchPlan,
    data: Any,
    cache_dir: Path | None,
    teacher: Any,
    finished: frozenset[str] = frozenset(),
) -> Any:
    """The Ray trainable with what every trial shares (Ray must be running: it goes through
    the object store)."""
    from dataclasses import replace

    from ray import tune

    from autogram.models.sources import model_source
    from autogram.study.worker import pack_extensions, trainable

    resources = plan.config.search.resources
    blob = teacher.path.read_bytes() if model_source(plan.config.teacher, "teacher").trained_here else None
    shipped = dict(plan.python_objects or {})
    if cache_dir is not None:  # trials read the cache: an in-memory teacher need not travel
        shipped.pop(plan.config.teacher.python or "", None)
    # Through the object store, once per worker: data, the built-in teacher's bytes, the
    # teacher's taps and key (all a trial reading the cache needs), in-memory user objects.
    fn = tune.with_parameters(
        trainable,
        base=plan.base,
        space=plan.config.search.space,
        candidates=plan.candidates,
        data=data,
        teacher_blob=blob,
        teacher_meta=replace(teacher, model=None),
        python_objects=shipped,
        cpus=resources.cpu,
        gpus=resources.gpu,
        cache_dir=str(cache_dir.resolve()) if cache_dir else None,
        finished=finished,
        extensions=pack_extensions(),  # loss terms and model sources defined outside autogram
    )
    return tune.with_resources(fn, {"cpu": resources.cpu, "gpu": resources.gpu})


def _tuner(plan: SearchPlan, trainable: Any, tracker: Any) -> Any:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from autogram.study.callbacks import DriverCallback
    from autogram.study.optuna_search import AutogramOptunaSearch, claim_study, make_sampler, open_storage
    from autogram.study.space import SpaceSampler

    search = plan.config.search
    if search.storage:  # shared: another driver may have planned the same name meanwhile
        claim_study(plan.storage_url, plan.name, [o.direction for o in search.objectives])
        plan.created_study = True
    sampler = SpaceSampler(search.space, plan.candidates)
    searcher = AutogramOptunaSearch(
        space=sampler,
        metric=[o.name for o in search.objectives],
        mode=["max" if o.direction == "maximize" else "min" for o in search.objectives],
        sampler=make_sampler(search.sampler, search.seed, search.trials),
        study_name=plan.name,
        storage=open_storage(plan.storage_url),
        constraints=search.parsed_constraints(),
    )
    from autogram.study.baselines import enqueue_baselines
    from autogram.study.warm import warm_up

    warm_up(plan, searcher._ot_study, sampler, tracker)  # before the baselines: TPE sees them first

    enqueued = enqueue_baselines(searcher._ot_study, plan.baselines or {}, search.trials, plan.prior)
    if enqueued:
        log.info("baselines first: %s", ", ".join(enqueued))
    from autogram.study.stopping import scheduler_for

    scheduler = scheduler_for(search, plan.config.train.epochs, plan.config.cost)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=search.trials,
            max_concurrent_trials=search.concurrency,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(plan.directory),
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            # Only Ray's JSON logger (its result grid reads result.json): with the default set,
            # the TensorBoard logger warns "Summary name ... is illegal" for names like noise@0.5.
            callbacks=[DriverCallback(str(plan.directory)), JsonLoggerCallback()],
            verbose=0,
        ),
    )


def pin_teacher(raw: dict[str, Any], path: str, key: str) -> None:
    """Pin the search's teacher in an exported config: a built-in one by its checkpoint file,
    a user's by its key (its factory rebuilds it; changed weights are refused)."""
    from autogram.config import TeacherConfig
    from autogram.models.sources import model_source

    teacher = raw["teacher"]
    if model_source(TeacherConfig.model_validate(teacher), "teacher").trained_here:
        teacher["checkpoint"] = path
    teacher["checkpoint_key"] = key or None


def _pareto_configs(plan: SearchPlan, study: Any, document: dict[str, Any], teacher: Any) -> dict[int, dict]:
    """A self-contained training config for each Pareto point (teacher pinned)."""
    from autogram.study.space import trial_config

    params = {t.number: t.params for t in study.get_trials(deepcopy=False)}
    configs = {}
    for entry in document["trials"]:
        if entry["pareto"]:
            raw = trial_config(plan.base, params[entry["number"]], plan.config.search.space, plan.candidates)
            pin_teacher(raw, str(teacher.path or ""), teacher.key)
            configs[entry["number"]] = raw
    return configs


def run_search(
    plan: SearchPlan, resume: bool = False, address: str | None = None, track: bool = True
) -> dict[str, Any]:
    """Run (or resume) the search; writes ``front.json``, logs to MLflow (unless ``track`` is
    off, as in benchmarks), returns the front."""
    from autogram.study.lock import discard_unstarted, search_lock

    with search_lock(plan.directory):  # one driver per search folder, released on any exit
        try:
            return _run_locked(plan, resume, address, track)
        except BaseException:
            # Failed before any trial (a full disk, Ctrl-C in the teacher): no debris, and a
            # study it created on a shared storage goes too (the name stays usable).
            if not resume and discard_unstarted(plan.directory, TUNE_DIR) and plan.created_study:
                from autogram.study.optuna_search import drop_study

                drop_study(plan.storage_url, plan.name)
            raise


def _run_locked(plan: SearchPlan, resume: bool, address: str | None, track: bool) -> dict[str, Any]:
    """:func:`run_search` with the search folder's lock held."""
    import optuna

    from autogram.data import load_data
    from autogram.study import tune_state
    from autogram.study.optuna_search import finished_trials
    from autogram.study.ray_setup import ray_session
    from autogram.tensors.runtime import pick_device

    cfg = plan.config
    data = plan.data if plan.data is not None else load_data(cfg.data)
    device = pick_device(cfg.device)
    if device.type == "cuda" and cfg.search.resources.gpu == 0:
        log.info(
            "trials run on the CPU: search.resources.gpu is 0 (the teacher and its cache use the GPU); "
            "set it to pack trials on the GPU, e.g. --set search.resources.gpu=0.25"
        )
    # Ray from the start: a search's teacher cache is built by Ray tasks (teacher/shards.py).
    with ray_session(plan, address):
        handle, cache_dir = _teacher_and_cache(plan, data, device, resume, address)
        earlier_teacher(plan, handle.key, resume, data.fingerprint)  # kept or copied trials: this teacher, data
        _write_spec(plan, handle, data)
        if resume:
            try:  # before anything reads Ray's state: a file cut by the kill goes back one save
                tune_state.repair(plan.directory / TUNE_DIR)
            except tune_state.TuneStateError as exc:
                raise ConfigError(f"--resume: {exc}") from None
        tracker = _start_tracker(plan, handle, resume) if track else None
        _tune_environment()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.perf_counter()
        finished = finished_trials(plan.storage_url, plan.name) if resume else frozenset()
        if resume:
            requeue_lost_trials(plan.directory, plan.storage_url, plan.name, tracker)
        _fit(plan, lambda: _trainable(plan, data, cache_dir, handle, finished), finished, resume, address, tracker)
    return _finish(plan, handle, tracker, started)


def _teacher_and_cache(
    plan: SearchPlan, data: Any, device: Any, resume: bool, address: str | None
) -> tuple[Any, Path | None]:
    """The teacher, trained or found once for every trial, the layer-mapping prior (with
    ``pairs: all``), and the teacher's signals cached when ``teacher.cache`` is on (trials
    then run no teacher forward at all)."""
    from autogram.study.plan import apply_prior
    from autogram.teacher import ensure_teacher

    cfg = plan.config
    handle = plan.teacher if plan.teacher is not None else ensure_teacher(cfg.teacher, data, device)
    handle.model.to(device)
    apply_prior(plan, handle.model, device, resume)  # narrows the candidates the cache serves
    if not cfg.teacher.cache:
        return handle, None
    from autogram.distill.cache_plan import search_layout
    from autogram.teacher.cache import ensure_cache
    from autogram.teacher.shards import search_builder

    # Only the taps some term of the space can read, in the forms it reads them.
    layout = search_layout(cfg, plan.setup, handle.taps)
    root = cfg.teacher.cache_dir / "signals"
    return handle, ensure_cache(
        handle.model,
        handle.identity,
        data,
        layout,
        device,
        root,
        max_gb=cfg.teacher.cache_max_gb,
        builder=search_builder(cfg, device, address),
    )


def _write_spec(plan: SearchPlan, handle: Any, data: Any) -> None:
    """``search.json``: what `autogram export` and `confirm` need to rebuild any trial."""
    from autogram.report.front import write_json

    write_json(
        plan.directory / SPEC_FILE,
        {
            "name": plan.name,
            "config": plan.config.model_dump(mode="json"),
            "candidates": plan.candidates,
            "taps": candidate_taps(plan.setup),
            "teacher": str(handle.path or ""),
            "teacher_key": handle.key,
            "teacher_source": handle.source,
            "data_fingerprint": data.fingerprint,  # confirm retrains on this very data
            "data_source": data.source,
            "storage": plan.storage_url,
            "tracking_uri": plan.tracking_uri,
            "experiment": plan.experiment,
        },
    )


def _start_tracker(plan: SearchPlan, handle: Any, resume: bool) -> Any:
    """The search's MLflow parent run: its database and experiment exist before any trial
    starts, and only this process writes to them."""
    from autogram.report.tracking import SearchTracker, host

    tracker = SearchTracker(plan.tracking_uri, plan.experiment, plan.name, plan.directory)
    tracker.start_parent(
        space_summary(plan),
        {
            "optuna_storage": plan.storage_url,
            "host": host(),
            "teacher_checkpoint": str(handle.path or ""),
            "teacher_key": handle.key,
            "teacher_source": json.dumps(handle.source, default=str),
        },
        resume=resume,
    )
    return tracker


def _tune_environment() -> None:
    """Ray Tune's settings for a search, through its environment variables."""
    from autogram.study.ray_setup import CHDIR_ENV

    # Save the experiment state at every controller step, so a killed driver resumes
    # without rerunning a trial that had already finished.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Per-epoch reports carry only the training curve; the objectives come in the final one.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Trials run in the driver's working directory, not one folder per trial: relative paths
    # in the config (data, python_path, a factory's kwargs) mean the same on every worker.
    os.environ.setdefault(CHDIR_ENV, "0")
    # Results go to Optuna, MLflow and trials.jsonl; of Ray's default loggers only the JSON one
    # is kept (see _tuner): TensorBoard's warns once per metric per trial on names like noise@0.5.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def _fit(
    plan: SearchPlan,
    make_trainable: Callable[[], Any],
    finished: frozenset[str],
    resume: bool,
    address: str | None,
    tracker: Any,
) -> None:
    """Run the trials on Ray (a local one unless ``address``); raises SearchInterrupted on Ctrl-C."""
    from ray import tune

    from autogram.study import callbacks, tune_state
    from autogram.study.progress import Progress

    cfg = plan.config
    key = str(plan.directory)
    callbacks.register(key, [Progress(plan, cfg.search.trials), *([tracker] if tracker else [])], finished)
    try:
        log.info(
            "search %s: %d trials, concurrency %d, sampler %s -> %s",
            plan.name,
            cfg.search.trials,
            cfg.search.concurrency,
            cfg.search.sampler,
            plan.directory,
        )
        trainable = make_trainable()
        if resume:
            tune_path = str(plan.directory / TUNE_DIR)
            if not tune.Tuner.can_restore(tune_path):
                raise ConfigError(f"--resume: {tune_path} has no restorable Ray Tune state")
            log.info("resuming from %s", tune_path)
            tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, restart_errored=True)
        else:
            tuner = _tuner(plan, trainable, tracker)
        logging.getLogger("ray.tune.tune").addFilter(TUNE_NOISE)  # adds it once per process
        tune_state.keep_in(plan.directory / TUNE_DIR)
        if interrupted(tuner.fit(), cfg.search.trials):
            # Trials cut now stay RUNNING in the study (not failed): the resume reruns them and
            # tells their results, and the baselines never started stay queued for it.
            raise SearchInterrupted(plan.directory, plan.name)
    except BaseException as exc:
        if tracker is not None:
            tracker.abort("KILLED" if isinstance(exc, SearchInterrupted | KeyboardInterrupt) else "FAILED")
        raise
    finally:
        tune_state.keep_in(None)
        callbacks.unregister(key)


def _finish(plan: SearchPlan, handle: Any, tracker: Any, started: float) -> dict[str, Any]:
    """The front from the finished study: ``front.json``, the verdict, MLflow's records."""
    import optuna

    from autogram.report.front import build_front, write_json
    from autogram.report.tracking import temp_artifacts, write_artifacts
    from autogram.study.optuna_search import close_stale_trials
    from autogram.study.space import fixed_values

    stale = close_stale_trials(plan.storage_url, plan.name)
    if stale:
        log.info("marked %d interrupted trial(s) from before the resume as failed", stale)
    study = optuna.load_study(study_name=plan.name, storage=plan.storage_url)
    document = build_front(study, plan.name, plan.objectives, plan.config.search.reference_point)
    # The space's fixed values (never sampled, so not among a trial's parameters): the front
    # table shows them as numbers, as `autogram front` does from MLflow's parameters.
    document["fixed"] = fixed_values(plan.config.search.space)
    document["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json(plan.directory / FRONT_FILE, document)
    if tracker is None:
        return document
    with temp_artifacts() as artifacts:
        history = write_artifacts(
            document, study, plan.candidates, _pareto_configs(plan, study, document, handle), artifacts
        )
        shutil.copy(plan.directory / SPEC_FILE, artifacts / SPEC_FILE)  # lets `autogram export` rebuild any trial
        if plan.ranking is not None:  # the layer-mapping prior, beside the front it led to
            from autogram.study.prior import RANKING_FILE

            shutil.copy(plan.directory / RANKING_FILE, artifacts / RANKING_FILE)
        tracker.finish(document, history, artifacts)
    log.info(
        "wrote %s (trials took %.1fs); MLflow run %s",
        plan.directory / FRONT_FILE,
        document["wall_seconds"],
        tracker.parent_id,
    )
    from autogram.report.tracking import experiment_link

    log.info("MLflow: %s", experiment_link(plan.tracking_uri, tracker.experiment_id))
    return document
