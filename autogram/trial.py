"""One short distillation trial, scored on accuracy, robustness and cost.

Imports neither Ray nor MLflow: a trial runs and tests on its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autogram.config import TrialConfig

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from autogram.config import DistillConfig
    from autogram.data.base import MultiModalData
    from autogram.distill import Objective
    from autogram.distill.terms import TermSetup
    from autogram.models.taps import Tap, TapPair
    from autogram.teacher import TeacherHandle

log = logging.getLogger("autogram")


@dataclass
class TrialResult:
    """The scores of one trial (``cost`` is ``train_gflops`` or ``train_seconds``; accuracy,
    balanced accuracy and robustness are on the validation split, or test for ``confirm``)."""

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
    # The loss terms that ran (weighted above 0 and applying here: a Gram term with no pair
    # does not), in summation order: what the headline names a trial by.
    terms: list[str] = field(default_factory=list)
    hooked_taps: dict[str, list[str]] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    student_params: int = 0
    device: str = "cpu"
    eval_seconds: float = 0.0
    # Accuracy with each modality missing and the per-modality noise AUC (robustness_detail).
    detail: dict[str, float] = field(default_factory=dict)
    # Mean per-class recall on the clean split: accuracy that a majority class cannot carry.
    balanced_accuracy: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def mean_robustness(corruptions: dict[str, float]) -> float:
    """The robustness objective: the mean accuracy over the corruption suite (one definition,
    so a trial and `autogram train` score the same quantity)."""
    return sum(corruptions.values()) / len(corruptions)


def robustness_detail(clean: float, corruptions: dict[str, float], severities: list[float]) -> dict[str, float]:
    """Beside the suite mean (the objective): ``missing:<m>``, the accuracy with modality m
    blanked, and ``auc:<m>``, the area under accuracy vs noise severity on m from 0 (clean)
    to the largest severity, divided by that severity (MultiBench's relative robustness, in
    accuracy units: the clean accuracy when noise costs nothing)."""
    out: dict[str, float] = {}
    for modality in sorted({name.split(":")[0] for name in corruptions}):
        if f"{modality}:missing" in corruptions:
            out[f"missing:{modality}"] = corruptions[f"{modality}:missing"]
        curve = [(0.0, clean)] + [
            (float(s), corruptions[f"{modality}:noise@{s:g}"])
            for s in sorted(severities)
            if f"{modality}:noise@{s:g}" in corruptions and s > 0
        ]
        if len(curve) > 1:
            area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(curve[:-1], curve[1:], strict=True))
            out[f"auc:{modality}"] = area / curve[-1][0]
    return out


def evaluate_robustness(
    model: Any, data: Any, cfg: TrialConfig, device: Any, split: str = "val"
) -> tuple[float, dict[str, float], float]:
    """Clean accuracy on ``split`` (validation by default), the accuracy under each corruption,
    and the clean balanced accuracy (mean per-class recall)."""
    import numpy as np
    import torch

    from autogram.data.corruptions import corrupted_views
    from autogram.tensors.runtime import accuracy, balanced_accuracy, class_hits, correct_count, resident, to_tensors

    part = data.splits[split]
    severities, scale = cfg.eval.noise_severities, data.noise_scale
    if part.in_memory:  # the whole split at once, as it always was: same draws, same scores

        def views() -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, dict[str, torch.Tensor]]]]:
            corrupted = corrupted_views(part.inputs, data.modalities, severities, cfg.seed, scale)
            return (
                torch.from_numpy(part.labels).to(device),
                to_tensors(part.inputs, device),
                [(c.name, to_tensors(view, device)) for c, view in corrupted],
            )

        # The corrupted copies are the same for every trial of a search: a worker keeps them
        # on its device instead of corrupting and copying the split again for each trial.
        key = (data.fingerprint, f"eval:{split}:{cfg.seed}:{severities}:{scale}", str(device))
        labels, inputs, corrupted = resident(key, views)
        hits, counts = class_hits(model, inputs, labels, cfg.eval.batch_size, device, data.num_classes)
        scores = {name: accuracy(model, view, labels, cfg.eval.batch_size, device) for name, view in corrupted}
        return int(hits.sum()) / max(int(counts.sum()), 1), scores, balanced_accuracy(hits, counts)
    # A lazy split is read chunk by chunk; each chunk is scored clean and under every corruption.
    correct: dict[str, int] = {}
    hits = counts = torch.zeros(data.num_classes, dtype=torch.long)
    size = cfg.eval.batch_size
    for number, start in enumerate(range(0, len(part), size)):
        rows = part.rows(np.arange(start, min(start + size, len(part))))
        labels = torch.from_numpy(part.labels[start : start + size]).to(device)
        chunk_hits, chunk_counts = class_hits(model, to_tensors(rows, device), labels, size, device, data.num_classes)
        hits, counts = hits + chunk_hits, counts + chunk_counts
        for c, view in corrupted_views(rows, data.modalities, severities, cfg.seed, scale, number):
            hit = correct_count(model, to_tensors(view, device), labels, size, device)
            correct[c.name] = correct.get(c.name, 0) + hit
    total = max(len(part), 1)
    return int(hits.sum()) / total, {name: n / total for name, n in correct.items()}, balanced_accuracy(hits, counts)


@dataclass
class TrialSetup:
    """What a trial is built from: the data, a fresh student, both models' taps, the pairs the
    Gram term aligns and the embeddings the cross-modal term reads (``teacher``: the loaded
    teacher, when it had to be loaded to know its taps)."""

    data: MultiModalData
    student: nn.Module
    student_taps: list[Tap]
    teacher_taps: list[Tap]
    teacher: TeacherHandle | None
    pairs: list[TapPair]
    student_embeds: dict[str, Tap]
    teacher_embeds: dict[str, Tap]

    def objective(self, distill: DistillConfig) -> Objective:
        """The objective of ``distill`` on these taps (the one place that builds it)."""
        from autogram.distill import Objective

        return Objective(distill, self.pairs, self.student_embeds, self.teacher_embeds)

    def term_setup(self, pairs: list[TapPair] | None = None) -> TermSetup:
        """What the loss terms may align here (``pairs``: other candidates than this trial's)."""
        from autogram.distill.terms import TermSetup

        return TermSetup(list(self.pairs if pairs is None else pairs), self.student_embeds, self.teacher_embeds)


def prepare(cfg: TrialConfig, device: Any, data: Any = None, teacher: Any = None, student: Any = None) -> TrialSetup:
    """Load data, build the student and resolve taps and pairs (fails fast on a bad tap name).

    ``teacher`` (a :class:`~autogram.teacher.TeacherHandle`) gives the teacher's taps when
    the caller has resolved it; otherwise a built-in teacher's taps come from an untrained
    instance (so a wrong tap name fails before minutes of training) and a user's teacher is
    loaded here (returned as ``TrialSetup.teacher``). ``student``: a student the caller built
    (in autogram's calling convention), instead of a fresh one from the config's source.
    """
    from autogram.data import load_data
    from autogram.models import build_teacher, embedding_taps, make_student, model_taps, resolve_pairs
    from autogram.models.sources import model_source

    data = data if data is not None else load_data(cfg.data)
    # Seeded, so each trial starts from the same fresh weights; the tap search runs one
    # forward pass in eval mode, which changes neither weights nor running statistics.
    student = student if student is not None else make_student(cfg.student, data, cfg.seed)
    student_taps = model_taps(student, cfg.student, data, "student")
    if teacher is not None:
        teacher_taps = teacher.taps
    elif model_source(cfg.teacher, "teacher").trained_here:
        from autogram.teacher import architecture_for

        teacher_taps = model_taps(build_teacher(data, architecture_for(cfg.teacher)), cfg.teacher, data, "teacher")
    else:
        from autogram.teacher import ensure_teacher

        teacher = ensure_teacher(cfg.teacher, data, device)
        teacher_taps = teacher.taps
    pairs = resolve_pairs(cfg.distill.pairs, student_taps, teacher_taps)
    return TrialSetup(
        data=data,
        student=student.to(device),
        student_taps=student_taps,
        teacher_taps=teacher_taps,
        teacher=teacher,
        pairs=pairs,
        student_embeds=embedding_taps(student_taps),
        teacher_embeds=embedding_taps(teacher_taps),
    )


def teacher_signals(
    config: TrialConfig, parts: TrialSetup, objective: Any, device: Any, cache_dir: Any = None
) -> tuple[Any, dict[str, Any]]:
    """What the loop reads from the teacher (``None`` when no term does) and the teacher's
    description: its cache when ``teacher.cache`` is on (``cache_dir``, or found/built here,
    a too-big one refused before the teacher trains), else the live model."""
    from autogram.teacher import ensure_teacher
    from autogram.teacher.signals import LiveTeacher

    if not objective.needs_teacher:
        return None, {}
    data, teacher = parts.data, parts.teacher
    if config.teacher.cache and cache_dir is None:
        _check_cache_size(config, parts)
    handle = teacher if teacher is not None else ensure_teacher(config.teacher, data, device)
    info = {**handle.info(), "params": handle.params, "model": handle.source, "source": "live"}
    if not config.teacher.cache:
        if handle.model is None:
            raise RuntimeError("a live teacher was asked for, but only the teacher's cache metadata was given")
        handle.model.to(device)
        return LiveTeacher(handle.model, objective.teacher_taps, device), info
    from autogram.teacher.reader import CachedTeacher

    if cache_dir is None:
        cache_dir = trial_cache(config, parts, handle, device)
    signals = CachedTeacher(cache_dir, objective.teacher_taps, device, uses=objective.teacher_uses)
    return signals, {**info, "source": "cache", "cache": str(cache_dir)}


def _check_cache_size(config: TrialConfig, parts: TrialSetup) -> None:
    """Refuse a cache over ``teacher.cache_max_gb`` before the teacher is trained or loaded."""
    from autogram.distill.cache_plan import layout_for, trial_uses
    from autogram.teacher.cache import check_cache_size

    layout = layout_for(config, parts.teacher_taps, trial_uses(config, parts))
    if all(t.shape for t in layout.taps):
        data = parts.data
        check_cache_size(layout, len(data.splits["train"]), data.num_classes, config.teacher.cache_max_gb)


def trial_layout(config: TrialConfig, parts: TrialSetup) -> Any:
    """The :class:`~autogram.teacher.cache.CacheLayout` this trial reads (the taps and forms
    its terms use)."""
    from autogram.distill.cache_plan import layout_for, trial_uses

    return layout_for(config, parts.teacher_taps, trial_uses(config, parts))


def trial_cache(config: TrialConfig, parts: TrialSetup, handle: TeacherHandle, device: Any, layout: Any = None) -> Path:
    """The folder of the teacher cache this trial reads (``layout``, by default
    :func:`trial_layout`'s), found, or built with ``handle``'s model."""
    from autogram.teacher.cache import ensure_cache

    layout = trial_layout(config, parts) if layout is None else layout
    root = config.teacher.cache_dir / "signals"
    return ensure_cache(handle.model, handle.identity, parts.data, layout, device, root, config.teacher.cache_max_gb)


def run_trial(
    config: TrialConfig,
    report: Any = None,
    data: Any = None,
    teacher: Any = None,
    cache_dir: Any = None,
    eval_split: str = "val",
) -> TrialResult:
    """Train the student for the configured short budget against the frozen teacher and score it.

    ``report(epoch, metrics)`` is called after each epoch. ``data`` and ``teacher`` (a
    :class:`~autogram.teacher.TeacherHandle`) may be passed in when the caller already has
    them (a search resolves them once); otherwise they are loaded, and a built-in teacher
    trained if no checkpoint matches. With ``teacher.cache`` on (the default) the teacher's
    signals are read from a cache computed once (``cache_dir``, or found/built here) instead
    of running the teacher every step; a handle without a model then suffices. Returns a
    :class:`TrialResult`; a non-finite loss ends the trial early with ``status="diverged"``.
    Scores are on the validation split (``eval_split="test"`` for ``autogram confirm``).
    """
    import torch

    from autogram.distill import train_student
    from autogram.tensors.runtime import pick_device

    device = pick_device(config.device)
    parts = prepare(config, device, data, teacher)
    data, teacher = parts.data, parts.teacher
    objective = parts.objective(config.distill).to(device)
    signals, teacher_info = teacher_signals(config, parts, objective, device, cache_dir)
    torch.manual_seed(config.seed)
    outcome = train_student(parts.student, objective, signals, data, config.train, config.seed, device, report)
    eval_started = time.perf_counter()
    scores = evaluate_robustness(parts.student, data, config, device, eval_split)
    eval_seconds = time.perf_counter() - eval_started
    result = _result(config, parts, objective, outcome, signals, teacher_info, scores, device)
    result.eval_seconds = eval_seconds
    log.info(
        "trial %s: accuracy %.4f  robustness %.4f  cost %.4g (%s)",
        result.status,
        result.accuracy,
        result.robustness,
        result.cost,
        config.cost,
    )
    return result


def _result(
    config: TrialConfig,
    parts: TrialSetup,
    objective: Any,
    outcome: Any,
    signals: Any,
    teacher_info: dict[str, Any],
    scores: tuple[float, dict[str, float], float],
    device: Any,
) -> TrialResult:
    """The trial's record from its training outcome and its (clean, per-corruption, balanced) scores."""
    from autogram.models import parameter_count

    clean, corruptions, balanced = scores
    flops_per_sample = outcome.flops_per_sample
    if teacher_info.get("source") == "cache":
        # The cost objective is the recipe's compute, wherever the teacher's forward ran:
        # add the forward the cache replaced, so cached and live trials score the same cost.
        flops_per_sample += signals.flops_per_sample
    gflops = flops_per_sample * outcome.samples / 1e9
    return TrialResult(
        accuracy=clean,
        robustness=mean_robustness(corruptions),
        balanced_accuracy=balanced,
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
        terms=list(objective.terms),
        hooked_taps={
            "student": [t.name for t in objective.student_taps],
            "teacher": [t.name for t in objective.teacher_taps],
        },
        teacher=teacher_info,
        student_params=parameter_count(parts.student),
        device=str(device),
        detail=robustness_detail(clean, corruptions, config.eval.noise_severities),
    )
