"""The Ray Tune trainable: one trial of the search, run on a worker.

Data and the teacher's checkpoint bytes arrive once per worker through
``tune.with_parameters`` (the object store), never through the config: trials run no
teacher training and need no shared disk. Ray reuses a worker process for the next
trial, and what a trial moved to its device (data splits, corrupted evaluation copies,
the teacher or its cached signals) stays there for it (:func:`autogram.tensors.runtime.resident`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, SpaceConfig, validate
from autogram.study.space import pair_violation, trial_config

FINAL = "final"


def _flat_result(result: Any) -> dict[str, Any]:
    out = {
        "accuracy": result.accuracy,
        "robustness": result.robustness,
        "cost": result.cost,
        "balanced_accuracy": result.balanced_accuracy,
        "train_seconds": result.train_seconds,
        "train_gflops": result.train_gflops,
        "status": result.status,
        "reason": result.reason,
        "epochs_done": result.epochs,
        "eval_seconds": result.eval_seconds,
        "device": result.device,
        # Whether any active term read the teacher: "what the teacher adds" compares the two groups.
        "reads_teacher": bool(result.teacher),
        # What ran, not what was sampled: a sampled weight can apply to nothing (a Gram term
        # with no pair selected), and a fixed weight is no parameter at all.
        "terms": "+".join(result.terms),
        "pairs_aligned": len(result.pairs),
        FINAL: True,
    }
    out.update({f"corruption.{name}": acc for name, acc in result.corruptions.items()})
    out.update({f"detail.{name}": value for name, value in result.detail.items()})
    return out


def infeasible_result(reason: str) -> dict[str, Any]:
    """The final report of a trial refused untrained (``reason``): its values are placeholders
    that the ``valid`` constraint marks unusable."""
    return {
        "accuracy": 0.0,
        "robustness": 0.0,
        "cost": 0.0,
        "balanced_accuracy": 0.0,
        "train_seconds": 0.0,
        "train_gflops": 0.0,
        "status": "infeasible",
        "reason": reason,
        "epochs_done": 0,
        FINAL: True,
    }


def trainable(
    config: dict[str, Any],
    base: dict[str, Any] | None = None,
    space: SpaceConfig | None = None,
    candidates: list[str] | None = None,
    data: Any = None,
    teacher_blob: bytes | None = None,
    teacher_meta: Any = None,
    python_objects: dict[str, Any] | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    cache_dir: str | None = None,
    finished: frozenset[str] = frozenset(),
    extensions: bytes | None = None,
) -> None:
    """Build the trial config from the sampled ``config``, run it, report per epoch and at the end."""
    import ray
    import torch
    from ray import tune

    from autogram.models.source import PYTHON_OBJECTS
    from autogram.tensors.runtime import is_resident, limit_gpu_memory, split_key
    from autogram.trial import run_trial

    assert base is not None and space is not None and candidates is not None
    if tune.get_context().get_trial_id() in finished:
        # Its result reached the study before the driver was killed, after Ray's last saved
        # state: end it at once (the searcher keeps the told result, the listeners skip it).
        tune.report({FINAL: True, "status": "already_finished"})
        return
    PYTHON_OBJECTS.update(python_objects or {})
    _register_extensions(extensions)
    logging.getLogger("autogram").setLevel(logging.WARNING)
    # Ray sets OMP_NUM_THREADS to the trial's CPUs; size torch's pool to match on purpose.
    torch.set_num_threads(max(1, int(cpus)))

    built = _build_trial(config, base, space, candidates, gpus)
    if isinstance(built, str):
        tune.report(infeasible_result(built))
        return
    trial_cfg, device = built
    limit_gpu_memory(device, gpus)
    teacher = _teacher(teacher_meta, teacher_blob, cache_dir, data, device)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "epoch": epoch})

    # Whether this worker process kept the data from an earlier trial (Ray reuses workers).
    warm = data is not None and is_resident(split_key(data, "train", device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # The teacher cache is on local (or shared) disk, built by the driver before any trial.
    cache = Path(cache_dir) if cache_dir else None
    result = run_trial(trial_cfg, report=report, data=data, teacher=teacher, cache_dir=cache)
    final = _flat_result(result)
    final["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    final.update(worker_pid=os.getpid(), warm_start=warm, node_id=ray.get_runtime_context().get_node_id())
    tune.report(final)


def _build_trial(
    config: dict[str, Any], base: dict[str, Any], space: SpaceConfig, candidates: list[str], gpus: float
) -> tuple[Any, Any] | str:
    """The trial's config and device from the sampled ``config``, or why it is infeasible."""
    violation = pair_violation(config, space, candidates)
    if violation:
        return violation
    try:
        trial_cfg = validate(trial_config(base, config, space, candidates), "search trial")
        device = _trial_device(trial_cfg.device, gpus)
    except ConfigError as exc:
        return str(exc)
    return trial_cfg.model_copy(update={"device": device.type}), device


def _teacher(meta: Any, blob: bytes | None, cache_dir: str | None, data: Any, device: Any) -> Any:
    """The teacher a trial gets. With the cache, its key and taps are all a trial needs: no
    model is built. Without it, the built-in teacher loads from its bytes once per worker
    process; a user's is built by its factory (or comes from the object store) when the trial
    resolves its taps (None here)."""
    from autogram.teacher import teacher_from_bytes
    from autogram.tensors.runtime import resident

    if cache_dir:
        return meta
    if blob is None:
        return None
    return resident((meta.key, "teacher", str(device)), lambda: teacher_from_bytes(blob, data, device, meta.taps))


def pack_extensions() -> bytes | None:
    """The loss terms and model sources registered in this process but defined outside
    autogram, pickled by value for the workers (their module, a user's script or a test, need
    not be importable there); None if there are none."""
    from ray import cloudpickle

    from autogram.distill.terms import outside_terms
    from autogram.models.sources import MODEL_SOURCES

    models = [cls for cls in MODEL_SOURCES.values() if not cls.__module__.startswith("autogram.")]
    extensions = {"terms": outside_terms(), "models": models}
    classes = [*extensions["terms"], *models]
    if not classes:
        return None
    modules = {sys.modules[c.__module__] for c in classes if c.__module__ != "__main__" and c.__module__ in sys.modules}
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(extensions)
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _register_extensions(blob: bytes | None) -> None:
    """Register the driver's own terms and model sources in this worker, in the driver's
    order (once per process: Ray reuses workers)."""
    if blob is None:
        return
    from ray import cloudpickle

    from autogram.distill.terms import TERMS, register_term
    from autogram.models.sources import MODEL_SOURCES, register_model_source

    extensions = cloudpickle.loads(blob)
    for cls in extensions["terms"]:
        if cls.name not in TERMS:
            register_term(cls)
    for cls in extensions["models"]:
        if cls.name not in MODEL_SOURCES:
            register_model_source(cls)


def _trial_device(requested: str, gpus: float) -> Any:
    """The device a trial trains on: the GPU Ray assigned it (``resources.gpu`` > 0; Ray sets
    CUDA_VISIBLE_DEVICES, so it is ``cuda``), else the CPU (``auto``)."""
    import ray
    import torch

    if gpus > 0 and ray.get_gpu_ids():
        return torch.device("cuda")
    if requested == "cuda":
        raise ConfigError("device: cuda, but Ray assigned this trial no GPU (set search.resources.gpu > 0)")
    return torch.device("cpu")
