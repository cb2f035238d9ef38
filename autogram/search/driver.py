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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, TrialConfig
from autogram.search.resume import TUNE_DIR, TUNE_NOISE, SearchInterrupted, interrupted, requeue_lost_trials

log = logging.getLogger("autogram")
STUDY_FILE = "optuna.db"
FRONT_FILE = "front.json"
SPEC_FILE = "search.json"


@dataclass
class SearchPlan:
    """A validated search, ready to launch."""

    config: TrialConfig
    base: dict[str, Any]
    candidates: list[str]
    directory: Path
    name: str
    tracking_uri: str = ""
    experiment: str = ""
    # Resolved while planning, reused by the run: the data and, for a user's teacher, the
    # loaded teacher (a built-in one is trained or found when the search starts).
    data: Any = None
    teacher: Any = None
    # In-memory objects of the Python API, by the names the config's ``python:`` fields hold.
    python_objects: dict[str, Any] | None = None
    # Other user objects whose code workers must import (the Python API's datasets).
    code_targets: list[Any] | None = None
    # The standard recipes run first: {baseline name: fixed Optuna parameters}.
    baselines: dict[str, dict[str, Any]] | None = None

    @property
    def storage_url(self) -> str:
        """The Optuna RDB storage of this search: ``search.storage`` (its password, if any, moved
        to the environment while planning), else an sqlite file in the search's folder."""
        return self.config.search.storage or f"sqlite:///{(self.directory / STUDY_FILE).resolve()}"

    @property
    def objectives(self) -> list[dict[str, str]]:
        """Objectives as plain dicts, in order."""
        return [o.model_dump() for o in self.config.search.objectives]


def plan_search(
    cfg: TrialConfig,
    name: str | None,
    out: Path,
    resume: bool,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    data: Any = None,
    address: str | None = None,
) -> SearchPlan:
    """Validate the space against the real taps and the search directory; raises ConfigError.

    ``address`` is the Ray cluster the search will join (``None``: a local Ray on this machine).
    """
    from autogram.models import resolve_pairs
    from autogram.runtime import pick_device
    from autogram.search.cluster import check_execution
    from autogram.search.space import gram_possible
    from autogram.trial import prepare

    spec = (out / (name or cfg.name or "") / SPEC_FILE).resolve()
    if resume and not cfg.search.storage and spec.is_file():  # resume against the study's own database
        recorded = json.loads(spec.read_text()).get("config", {}).get("search", {}).get("storage")
        if recorded:
            cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"storage": recorded})})
    # Devices, storage and cluster first: a bad one fails in seconds, before models are built.
    cfg = check_execution(cfg, out, address)
    space = cfg.search.space
    parts = prepare(cfg, pick_device(cfg.device), data)
    try:
        pairs = resolve_pairs(space.pairs, parts["student_taps"], parts["teacher_taps"])
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("distill.pairs", "search.space.pairs")) from None
    candidates = [p.name for p in pairs]
    if gram_possible(space) and space.min_pairs > len(candidates):
        raise ConfigError(f"search.space.min_pairs: {space.min_pairs} exceeds the {len(candidates)} candidate pairs")
    if space.max_pairs is not None and space.max_pairs > len(candidates):
        raise ConfigError(f"search.space.max_pairs: {space.max_pairs} exceeds the {len(candidates)} candidate pairs")
    name = name or cfg.name
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name: {name!r} is not a usable directory name")
    directory = (out / name).resolve()
    if resume:
        if not (directory / TUNE_DIR).is_dir():
            raise ConfigError(f"--resume: no search to resume in {directory}")
    elif directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"search directory {directory} already holds a search: use --resume or another --name")
    if cfg.teacher.cache:  # a cache too big for the disk is refused now, before anything is built
        from autogram.cache_plan import search_layout
        from autogram.teacher_cache import check_cache_size

        layout = search_layout(cfg, candidates, parts["teacher_taps"])
        if all(t.shape for t in layout.taps):
            train = parts["data"].splits["train"]
            check_cache_size(layout, len(train), parts["data"].num_classes, cfg.teacher.cache_max_gb)
    base = cfg.model_dump(mode="json", exclude={"search"})
    from autogram.search.baselines import plan_baselines

    baselines = plan_baselines(cfg.search.baselines, space, candidates, base)
    from autogram.credentials import tracking_url
    from autogram.tracking import tracking_uri as resolve_uri

    return SearchPlan(
        config=cfg,
        base=base,
        candidates=candidates,
        directory=directory,
        name=name,
        tracking_uri=tracking_url(resolve_uri(tracking_uri)),
        experiment=experiment or cfg.search.experiment or cfg.name,
        data=parts["data"],
        teacher=parts["teacher"],
        baselines=baselines,
    )


def _trainable(
    plan: SearchPlan,
    data: Any,
    blob: bytes | None,
    cache_dir: Path | None,
    teacher: Any,
    finished: frozenset[str] = frozenset(),
) -> Any:
    from dataclasses import replace

    from ray import tune

    from autogram.search.worker import trainable

    resources = plan.config.search.resources
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
    )
    return tune.with_resources(fn, {"cpu": resources.cpu, "gpu": resources.gpu})


def _tuner(plan: SearchPlan, trainable: Any) -> Any:
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from autogram.search.callbacks import DriverCallback
    from autogram.search.optuna_search import AutogramOptunaSearch, make_sampler
    from autogram.search.space import SpaceSampler

    search = plan.config.search
    searcher = AutogramOptunaSearch(
        space=SpaceSampler(search.space, plan.candidates),
        metric=[o.name for o in search.objectives],
        mode=["max" if o.direction == "maximize" else "min" for o in search.objectives],
        sampler=make_sampler(search.sampler, search.seed, search.trials),
        study_name=plan.name,
        storage=optuna.storages.RDBStorage(plan.storage_url),
        constraints=search.parsed_constraints(),
    )
    from autogram.search.baselines import enqueue_baselines

    enqueued = enqueue_baselines(searcher._ot_study, plan.baselines or {}, search.trials)
    if enqueued:
        log.info("baselines first: %s", ", ".join(enqueued))
    scheduler = None
    if search.early_stopping is not None:
        stop = search.early_stopping
        # Per-epoch reports are iterations 1..epochs, the final scored report is epochs + 1.
        scheduler = tune.schedulers.ASHAScheduler(
            metric=stop.metric,
            mode=stop.mode,
            max_t=plan.config.train.epochs + 1,
            grace_period=stop.grace_period,
            reduction_factor=stop.reduction_factor,
        )
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


def _space_summary(plan: SearchPlan) -> dict[str, Any]:
    search = plan.config.search
    params: dict[str, Any] = {f"space.{k}": json.dumps(v) for k, v in search.space.model_dump(mode="json").items()}
    params.update(
        {
            "sampler": search.sampler,
            "seed": search.seed,
            "trials": search.trials,
            "concurrency": search.concurrency,
            "objectives": json.dumps(plan.objectives),
            "constraints": json.dumps(search.constraints),
            "early_stopping": json.dumps(search.early_stopping.model_dump() if search.early_stopping else None),
            "candidate_pairs": json.dumps(plan.candidates),
            "trial_epochs": plan.config.train.epochs,
        }
    )
    return params


def pin_teacher(raw: dict[str, Any], path: str, key: str) -> None:
    """Pin the search's teacher in an exported config: a built-in one by its checkpoint file,
    a user's by its key (its factory rebuilds it; changed weights are refused)."""
    teacher = raw["teacher"]
    if teacher.get("factory") is None and teacher.get("python") is None:
        teacher["checkpoint"] = path
    teacher["checkpoint_key"] = key or None


def _pareto_configs(plan: SearchPlan, study: Any, document: dict[str, Any], teacher: Any) -> dict[int, dict]:
    """A self-contained training config for each Pareto point (teacher pinned)."""
    from autogram.search.space import trial_config

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
    import optuna
    import ray
    from ray import tune

    from autogram.data import load_data
    from autogram.runtime import pick_device
    from autogram.search import callbacks
    from autogram.search.front import build_front, write_json
    from autogram.search.progress import Progress
    from autogram.search.ray_setup import CHDIR_ENV, code_path, init_ray, ray_runtime_env
    from autogram.teacher import ensure_teacher
    from autogram.tracking import SearchTracker, host, temp_artifacts, write_artifacts

    cfg = plan.config
    plan.directory.mkdir(parents=True, exist_ok=True)
    data = plan.data if plan.data is not None else load_data(cfg.data)
    device = pick_device(cfg.device)
    if device.type == "cuda" and cfg.search.resources.gpu == 0:
        log.info(
            "trials run on the CPU: search.resources.gpu is 0 (the teacher and its cache use the GPU); "
            "set it to pack trials on the GPU, e.g. --set search.resources.gpu=0.25"
        )
    handle = plan.teacher if plan.teacher is not None else ensure_teacher(cfg.teacher, data, device)  # once
    handle.model.to(device)
    blob = handle.path.read_bytes() if cfg.teacher.source == "builtin" else None
    cache_dir = None
    if cfg.teacher.cache:  # the teacher's signals too: trials then run no teacher forward at all
        from autogram.cache_plan import search_layout
        from autogram.teacher_cache import ensure_cache

        # Only the taps a candidate pair or the cross-modal term can use, in the forms they need.
        layout = search_layout(cfg, plan.candidates, handle.taps)
        root = cfg.teacher.cache_dir / "signals"
        cache_dir = ensure_cache(handle.model, handle.key, data, layout, device, root, max_gb=cfg.teacher.cache_max_gb)
    write_json(
        plan.directory / SPEC_FILE,
        {
            "name": plan.name,
            "config": cfg.model_dump(mode="json"),
            "candidates": plan.candidates,
            "teacher": str(handle.path or ""),
            "teacher_key": handle.key,
            "teacher_source": handle.source,
            "storage": plan.storage_url,
            "tracking_uri": plan.tracking_uri,
            "experiment": plan.experiment,
        },
    )
    from autogram.search import tune_state

    if resume:
        try:  # before anything reads Ray's state: a file cut by the kill goes back one save
            tune_state.repair(plan.directory / TUNE_DIR)
        except tune_state.TuneStateError as exc:
            raise ConfigError(f"--resume: {exc}") from None
    # MLflow's database and experiment exist before any trial starts; only this process writes.
    tracker = SearchTracker(plan.tracking_uri, plan.experiment, plan.name, plan.directory) if track else None
    if tracker is not None:
        tracker.start_parent(
            _space_summary(plan),
            {
                "optuna_storage": plan.storage_url,
                "host": host(),
                "teacher_checkpoint": str(handle.path or ""),
                "teacher_key": handle.key,
                "teacher_source": json.dumps(handle.source, default=str),
            },
            resume=resume,
        )
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    key = str(plan.directory)
    from autogram.search.optuna_search import finished_trials

    finished = finished_trials(plan.storage_url, plan.name) if resume else frozenset()
    if resume:
        requeue_lost_trials(plan.directory, plan.storage_url, plan.name, tracker)
    callbacks.register(key, [Progress(plan, cfg.search.trials), *([tracker] if tracker else [])], finished)
    restore = code_path(plan, address)
    try:
        if not ray.is_initialized():  # a cluster (--address) was joined while planning
            init_ray(address, ray_runtime_env(cfg, address))
        log.info(
            "search %s: %d trials, concurrency %d, sampler %s -> %s",
            plan.name,
            cfg.search.trials,
            cfg.search.concurrency,
            cfg.search.sampler,
            plan.directory,
        )
        trainable = _trainable(plan, data, blob, cache_dir, handle, finished)
        if resume:
            tune_path = str(plan.directory / TUNE_DIR)
            if not tune.Tuner.can_restore(tune_path):
                raise ConfigError(f"--resume: {tune_path} has no restorable Ray Tune state")
            log.info("resuming from %s", tune_path)
            tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, restart_errored=True)
        else:
            tuner = _tuner(plan, trainable)
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
        if address is None and ray.is_initialized():
            ray.shutdown()
        for name, value in (restore or {}).items():
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
    from autogram.search.optuna_search import close_stale_trials

    stale = close_stale_trials(plan.storage_url, plan.name)
    if stale:
        log.info("marked %d interrupted trial(s) from before the resume as failed", stale)
    study = optuna.load_study(study_name=plan.name, storage=plan.storage_url)
    document = build_front(study, plan.name, plan.objectives, cfg.search.reference_point)
    document["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json(plan.directory / FRONT_FILE, document)
    if document["verdict"]:
        from autogram.search.baselines import format_verdict

        log.info("%s", format_verdict(document["verdict"]))
    if tracker is None:
        return document
    with temp_artifacts() as artifacts:
        history = write_artifacts(
            document, study, plan.candidates, _pareto_configs(plan, study, document, handle), artifacts
        )
        shutil.copy(plan.directory / SPEC_FILE, artifacts / SPEC_FILE)  # lets `autogram export` rebuild any trial
        tracker.finish(document, history, artifacts)
    log.info(
        "wrote %s (wall time %.1fs); MLflow run %s",
        plan.directory / FRONT_FILE,
        document["wall_seconds"],
        tracker.parent_id,
    )
    return document
