"""One short distillation trial, scored on accuracy, robustness and cost.

Imports neither Ray nor MLflow: a trial runs and tests on its own.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from autogram.config import TrialConfig

log = logging.getLogger("autogram")


@dataclass
class TrialResult:
    """The scores of one trial (``cost`` is ``train_gflops`` or ``train_seconds``)."""

    accuracy: float
    robustness: float
    cost: float
    train_seconds: float
    train_gflops: float
    status: str
    corruptions: dict[str, float]
    reason: str = ""
    epochs: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    hooked_taps: dict[str, list[str]] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    student_params: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def evaluate_robustness(
    model: Any, data: Any, cfg: TrialConfig, device: Any, split: str = "val"
) -> tuple[float, dict[str, float]]:
    """Clean accuracy on ``split`` (validation by default) and the accuracy under each corruption."""
    import torch

    from autogram.data.corruptions import corrupted_views
    from autogram.runtime import accuracy, to_tensors

    val = data.splits[split]
    labels = torch.from_numpy(val.labels).to(device)
    clean = accuracy(model, to_tensors(val.inputs, device), labels, cfg.eval.batch_size, device)
    scores = {
        c.name: accuracy(model, to_tensors(view, device), labels, cfg.eval.batch_size, device)
        for c, view in corrupted_views(val.inputs, data.modalities, cfg.eval.noise_severities, cfg.seed)
    }
    return clean, scores


def prepare(cfg: TrialConfig, device: Any, data: Any = None) -> dict[str, Any]:
    """Load data, build the student and resolve taps and pairs (fails fast on a bad tap name)."""
    import torch

    from autogram.data import load_data
    from autogram.models import build_student, build_teacher, embedding_taps, resolve_pairs, resolved_taps
    from autogram.teacher import architecture_for

    data = data if data is not None else load_data(cfg.data)
    # Shapes are discovered on throwaway instances, so the trained models only ever carry
    # the hooks their active loss terms need.
    student_taps = resolved_taps(build_student(data, cfg.student), data)
    torch.manual_seed(cfg.seed)
    student = build_student(data, cfg.student)
    # An untrained teacher of the same architecture is enough to know its taps and shapes,
    # so a wrong tap name fails before minutes of teacher training.
    teacher_taps = resolved_taps(build_teacher(data, architecture_for(cfg.teacher)), data)
    pairs = resolve_pairs(cfg.distill.pairs, student_taps, teacher_taps)
    return {
        "data": data,
        "student": student.to(device),
        "student_taps": student_taps,
        "teacher_taps": teacher_taps,
        "pairs": pairs,
        "student_embeds": embedding_taps(student_taps),
        "teacher_embeds": embedding_taps(teacher_taps),
    }


def run_trial(
    config: TrialConfig, report: Any = None, data: Any = None, teacher: Any = None, cache_dir: Any = None
) -> TrialResult:
    """Train the student for the configured short budget against the frozen teacher and score it.

    ``report(epoch, metrics)`` is called after each epoch. ``data`` and ``teacher`` (a
    :class:`~autogram.teacher.TeacherHandle`) may be passed in when the caller already has
    them (a search loads them once); otherwise they are loaded, and the teacher trained if
    no checkpoint matches. With ``teacher.cache`` on (the default) the teacher's signals are
    read from a cache computed once (``cache_dir``, or found/built here) instead of running
    the teacher every step. Returns a :class:`TrialResult`; a non-finite loss ends the trial
    early with ``status="diverged"`` instead of raising.
    """
    import torch

    from autogram.distill import Objective, train_student
    from autogram.models import parameter_count
    from autogram.runtime import pick_device
    from autogram.signals import LiveTeacher
    from autogram.teacher import ensure_teacher

    device = pick_device(config.device)
    parts = prepare(config, device, data)
    data = parts["data"]
    objective = Objective(config.distill, parts["pairs"], parts["student_embeds"], parts["teacher_embeds"]).to(device)
    teacher_info: dict[str, Any] = {}
    signals = None
    if objective.needs_teacher:
        handle = teacher if teacher is not None else ensure_teacher(config.teacher, data, device)
        handle.model.to(device)
        teacher_info = {
            "path": str(handle.path),
            "key": handle.key,
            "val_accuracy": handle.val_accuracy,
            "params": parameter_count(handle.model),
            "source": "live",
        }
        if config.teacher.cache:
            from autogram.teacher_cache import CachedTeacher, ensure_cache

            if cache_dir is None:
                cache_dir = ensure_cache(
                    handle.model, handle.key, data, parts["teacher_taps"], device, config.teacher.cache_dir / "signals"
                )
            signals = CachedTeacher(cache_dir, objective.teacher_taps, device)
            teacher_info.update(source="cache", cache=str(cache_dir))
        else:
            signals = LiveTeacher(handle.model, objective.teacher_taps, device)
    torch.manual_seed(config.seed)
    outcome = train_student(parts["student"], objective, signals, data, config.train, config.seed, device, report)
    clean, corruptions = evaluate_robustness(parts["student"], data, config, device)
    robustness = sum(corruptions.values()) / len(corruptions)
    flops_per_sample = outcome.flops_per_sample
    if teacher_info.get("source") == "cache":
        # The cost objective is the recipe's compute, wherever the teacher's forward ran:
        # add the forward the cache replaced, so cached and live trials score the same cost.
        flops_per_sample += signals.flops_per_sample
    gflops = flops_per_sample * outcome.samples / 1e9
    result = TrialResult(
        accuracy=clean,
        robustness=robustness,
        cost=gflops if config.cost == "train_gflops" else outcome.seconds,
        train_seconds=outcome.seconds,
        train_gflops=gflops,
        status=outcome.status,
        corruptions=corruptions,
        reason=outcome.reason,
        epochs=outcome.epochs,
        steps=outcome.steps,
        history=outcome.history,
        pairs=[p.name for p in objective.pairs],
        hooked_taps={
            "student": [t.name for t in objective.student_taps],
            "teacher": [t.name for t in objective.teacher_taps],
        },
        teacher=teacher_info,
        student_params=parameter_count(parts["student"]),
        device=str(device),
    )
    log.info(
        "trial %s: accuracy %.4f  robustness %.4f  cost %.4g (%s)",
        result.status,
        result.accuracy,
        result.robustness,
        result.cost,
        config.cost,
    )
    return result
