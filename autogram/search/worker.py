"""The Ray Tune trainable: one trial of the search, run on a worker.

Data and the teacher's checkpoint bytes arrive once per worker through
``tune.with_parameters`` (the object store), never through the config: trials run no
teacher training and need no shared disk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from autogram.config import ConfigError, SpaceConfig, validate
from autogram.search.space import pair_violation, trial_config

FINAL = "final"


def _flat_result(result: Any) -> dict[str, Any]:
    out = {
        "accuracy": result.accuracy,
        "robustness": result.robustness,
        "cost": result.cost,
        "train_seconds": result.train_seconds,
        "train_gflops": result.train_gflops,
        "status": result.status,
        "reason": result.reason,
        "epochs_done": result.epochs,
        FINAL: True,
    }
    out.update({f"corruption.{name}": acc for name, acc in result.corruptions.items()})
    return out


def _infeasible(reason: str) -> dict[str, Any]:
    # Nothing was trained: the values are placeholders the `valid` constraint marks unusable.
    return {
        "accuracy": 0.0,
        "robustness": 0.0,
        "cost": 0.0,
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
    cache_dir: str | None = None,
) -> None:
    """Build the trial config from the sampled ``config``, run it, report per epoch and at the end."""
    import torch
    from ray import tune

    from autogram.models.source import PYTHON_OBJECTS
    from autogram.runtime import pick_device
    from autogram.teacher import teacher_from_bytes
    from autogram.trial import run_trial

    assert base is not None and space is not None and candidates is not None
    PYTHON_OBJECTS.update(python_objects or {})
    logging.getLogger("autogram").setLevel(logging.WARNING)
    # Ray sets OMP_NUM_THREADS to the trial's CPUs; size torch's pool to match on purpose.
    torch.set_num_threads(max(1, int(cpus)))

    violation = pair_violation(config, space, candidates)
    if violation:
        tune.report(_infeasible(violation))
        return
    try:
        trial_cfg = validate(trial_config(base, config, space, candidates), "search trial")
    except ConfigError as exc:
        tune.report(_infeasible(str(exc)))
        return

    # With the cache, the teacher's key and taps are all a trial needs: no model is built.
    # Without it, the built-in teacher loads from its bytes; a user's is built here by its
    # factory (or comes from the object store) when the trial resolves its taps.
    teacher = teacher_meta if cache_dir else None
    if not cache_dir and teacher_blob is not None:
        teacher = teacher_from_bytes(teacher_blob, data, pick_device(trial_cfg.device), teacher_meta.taps)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "epoch": epoch})

    # The teacher cache is on local (or shared) disk, built by the driver before any trial.
    cache = Path(cache_dir) if cache_dir else None
    result = run_trial(trial_cfg, report=report, data=data, teacher=teacher, cache_dir=cache)
    tune.report(_flat_result(result))
