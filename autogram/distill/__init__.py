"""One training loop: the student against a frozen teacher's signals -> named loss terms.

:class:`Objective` owns the loss terms (and the learned channel projections of the
channel Gram); :func:`train_student` only sums ``weight * term`` and steps. A zero weight
removes the term: its taps are not hooked and its computation never runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from autogram.config import DistillConfig, TrainConfig
from autogram.data.base import MultiModalData
from autogram.models.features import capture
from autogram.models.taps import Tap, TapPair
from autogram.teacher.signals import TeacherOutput, TeacherSignals
from autogram.tensors.runtime import add_noise, autocast, batch_indices, device_split, drop_modalities, split_accuracy

if TYPE_CHECKING:
    from autogram.distill.terms import LossTerm

log = logging.getLogger("autogram")
Report = Callable[[int, dict[str, float]], None]


class Objective(nn.Module):
    """The weighted loss terms of one trial: every registered term (:mod:`autogram.distill.terms`) whose
    weight is above 0 and that applies here (the Gram term needs tap pairs, the cross-modal term
    two modalities), summed in registry order."""

    def __init__(
        self, cfg: DistillConfig, pairs: list[TapPair], student_embeds: dict[str, Tap], teacher_embeds: dict[str, Tap]
    ) -> None:
        super().__init__()
        from autogram.distill.terms import TERMS, TermSetup, active_terms

        TERMS.check(cfg.weights, "distill.weights")
        active = active_terms(cfg, TermSetup(list(pairs), dict(student_embeds), dict(teacher_embeds)))
        self.terms: dict[str, LossTerm] = {name: term for name, (term, _) in active.items()}
        self.weights = {name: weight for name, (_, weight) in active.items()}
        for term in self.terms.values():
            for attr, module in term.modules().items():
                self.add_module(attr, module)
        # The pairs that are aligned (none when no pair-reading term, Gram or CKA, is on).
        self.pairs = pairs if any(term.reads_pairs for term in self.terms.values()) else []

    @property
    def student_taps(self) -> list[Tap]:
        """Student taps that must be hooked (none when their terms are off)."""
        return _unique([tap for term in self.terms.values() for tap in term.student_taps()])

    @property
    def teacher_taps(self) -> list[Tap]:
        """Teacher taps that must be hooked (none when their terms are off)."""
        return _unique([tap for term in self.terms.values() for tap in term.teacher_taps()])

    # Set by the loop when only some training rows keep their labels (train.labelled_samples).
    partial_labels = False

    @property
    def needs_teacher(self) -> bool:
        """Whether any active term reads the teacher at all."""
        return any(term.reads_teacher for term in self.terms.values())

    def forward(
        self, logits: torch.Tensor, feats: dict[str, torch.Tensor], labels: torch.Tensor, teacher: TeacherOutput | None
    ) -> dict[str, torch.Tensor]:
        """The unweighted value of each active term for one batch (terms reading the teacher are
        skipped without one)."""
        from autogram.distill.terms import Batch

        batch = Batch(logits.float(), feats, labels, teacher, self.partial_labels)
        return {
            name: term.compute(batch)
            for name, term in self.terms.items()
            if teacher is not None or not term.reads_teacher
        }

    @property
    def teacher_uses(self) -> dict[str, set[str]]:
        """What each hooked teacher tap is read for: ``sample``/``channel`` Gram, ``xmodal``."""
        from autogram.distill.terms import teacher_uses

        return teacher_uses(list(self.terms.values()))

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum(weight * term)``."""
        return sum(self.weights[k] * v for k, v in terms.items())  # type: ignore[return-value]


def _unique(taps: list[Tap]) -> list[Tap]:
    seen: dict[str, Tap] = {}
    for tap in taps:
        seen.setdefault(tap.name, tap)
    return list(seen.values())


@dataclass
class TrainOutcome:
    """What the training loop did: status, budget spent and per-epoch history."""

    status: str = "ok"
    reason: str = ""
    epochs: int = 0
    steps: int = 0
    samples: int = 0
    flops_per_sample: float = 0.0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    # The loss of the first steps, as computed (a user's loop driving a Distiller is compared
    # against it step by step).
    first_losses: list[float] = field(default_factory=list)


# How many first-step losses a run keeps.
FIRST_LOSSES = 100


@dataclass
class LoopState:
    """Everything besides the weights that a resumed run needs to continue exactly."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    outcome: TrainOutcome


class TrainHooks(Protocol):
    """Callbacks of a full training run (checkpointing); trials use none."""

    def restore(self, state: LoopState) -> int:
        """Load saved state into ``state``; return the last finished epoch (0 to start fresh)."""
        ...

    def epoch_end(self, epoch: int, state: LoopState) -> None:
        """Called after each finished epoch."""
        ...


def _count_flops(fn: Callable[..., dict[str, torch.Tensor]], *args: object) -> tuple[float, dict[str, torch.Tensor]]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn(*args)
    return float(counter.get_total_flops()), result


def forward_terms(
    student: nn.Module,
    objective: Objective,
    teacher: TeacherSignals | None,
    device: torch.device,
    idx: torch.Tensor,
    clean: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The student's logits and the unweighted value of each active term for one batch.

    The one place a batch becomes loss terms: the training loop (trials, ``autogram train``)
    and :class:`autogram.distiller.Distiller` (the user's own loop) both call it. The teacher
    reads the clean inputs ``clean`` (rows ``idx`` of the train split, for a cache); the
    student reads ``inputs``, which may have modalities dropped or noised.
    """
    signals = teacher(idx, clean) if teacher is not None else None
    with autocast(device), capture(student, objective.student_taps) as feats:
        logits = student(inputs)
    # The terms run in float32 even inside a caller's torch.autocast (a user's mixed-precision
    # loop): Gram matrices and softmaxes of bf16 features lose the differences they compare.
    with torch.autocast(device.type, enabled=False):
        return logits, objective(logits, feats, labels, signals)


def _step(
    student: nn.Module,
    objective: Objective,
    teacher: TeacherSignals | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    idx: torch.Tensor,
    clean: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One optimisation step; returns the terms and ``loss``, still on the device.

    Nothing here reads a value back to the host (that would stall a GPU every step): the
    loop checks the losses for non-finite values every few steps and ends a diverged trial.
    """
    _, terms = forward_terms(student, objective, teacher, device, idx, clean, inputs, labels)
    loss = objective.total(terms)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {**terms, "loss": loss}


# Steps whose losses stay on the device before the loop reads them (one sync per this many):
# a diverged trial is noticed at most this many steps late.
SYNC_EVERY = 32


def _drain(
    pending: list[tuple[int, dict[str, torch.Tensor]]], sums: dict[str, float], outcome: TrainOutcome, epoch: int
) -> bool:
    """Read the pending steps' terms in one transfer, add them to ``sums`` and ``outcome``;
    returns True (and marks ``outcome`` diverged) at the first non-finite loss."""
    if not pending:
        return False
    keys = list(pending[0][1])
    table = torch.stack([torch.stack([terms[k].detach().float() for k in keys]) for _, terms in pending]).tolist()
    pending_sizes = [size for size, _ in pending]
    pending.clear()
    loss_at = keys.index("loss")
    for size, row in zip(pending_sizes, table, strict=True):
        if not math.isfinite(row[loss_at]):
            bad = [k for k, v in zip(keys, row, strict=True) if k != "loss" and not math.isfinite(v)]
            outcome.status = "diverged"
            outcome.reason = f"non-finite loss ({row[loss_at]}) at epoch {epoch} step {outcome.steps + 1}" + (
                f"; non-finite terms: {', '.join(bad)}" if bad else "; every term finite, the weighted sum overflowed"
            )
            return True
        outcome.steps += 1
        outcome.samples += size
        if len(outcome.first_losses) < FIRST_LOSSES:
            outcome.first_losses.append(row[loss_at])
        for key, value in zip(keys, row, strict=True):
            sums[key] = sums.get(key, 0.0) + value
    return False


def _labels_and_pool(
    cfg: TrainConfig, objective: Objective, labels: torch.Tensor, rows: int
) -> tuple[torch.Tensor, int | None]:
    """``train.labelled_samples``: the labels the loop sees, and the rows batches are drawn
    from (None: all of them)."""
    if cfg.labelled_samples is None or cfg.labelled_samples >= rows:
        return labels, None
    # Rows are in the file's (shuffled) order, so the first N are a fair labelled subset.
    if objective.needs_teacher:
        # The rest are an unlabelled transfer set: only the teacher's terms learn from them.
        labels = labels.clone()
        labels[cfg.labelled_samples :] = -1
        objective.partial_labels = True
        return labels, None
    # Nothing learns from an unlabelled row without a teacher: every batch is drawn from the
    # labelled rows, epochs keep their length, so steps and compute match a recipe that reads
    # the teacher (a fair comparison at the same budget).
    return labels, cfg.labelled_samples


@dataclass
class _Loop:
    """What every epoch of one training run shares."""

    student: nn.Module
    objective: Objective
    teacher: TeacherSignals | None
    data: MultiModalData
    cfg: TrainConfig
    device: torch.device
    train: Any
    labels: torch.Tensor
    pool: int | None
    state: LoopState
    # Drawn on the device (no host copy per batch) and reseeded each epoch, so a run resumed
    # at an epoch boundary sees the same noise as one that never stopped.
    noise: torch.Generator | None


def _epoch(loop: _Loop, epoch: int) -> tuple[dict[str, float], bool]:
    """Train one epoch: (summed terms by name, whether the loss became non-finite)."""
    cfg, data, outcome, generator = loop.cfg, loop.data, loop.state.outcome, loop.state.generator
    sums: dict[str, float] = {}
    pending: list[tuple[int, dict[str, torch.Tensor]]] = []
    rows = len(loop.labels)
    for host_idx, idx in batch_indices(rows, cfg.batch_size, generator, loop.device, loop.pool):
        clean = loop.train.batch(idx, host_idx)
        # The teacher sees clean inputs; the student may see modalities blanked, so KD
        # and Gram terms teach it what the missing modality would have said.
        inputs = drop_modalities(clean, data.modalities, cfg.modality_dropout, generator)
        if loop.noise is not None:
            inputs = add_noise(inputs, data.modalities, cfg.input_noise, data.noise_scale, loop.noise)
        args = (
            loop.student,
            loop.objective,
            loop.teacher,
            loop.state.optimizer,
            loop.device,
            host_idx,
            clean,
            inputs,
            loop.labels[idx],
        )
        if outcome.steps == 0 and not pending:
            flops, step_terms = _count_flops(_step, *args)
            outcome.flops_per_sample = flops / len(host_idx)
        else:
            step_terms = _step(*args)
        loop.state.schedule.step()
        pending.append((len(host_idx), step_terms))
        if len(pending) >= SYNC_EVERY and _drain(pending, sums, outcome, epoch):
            return sums, True
    return sums, _drain(pending, sums, outcome, epoch)


def train_student(
    student: nn.Module,
    objective: Objective,
    teacher: TeacherSignals | None,
    data: MultiModalData,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    report: Report | None = None,
    hooks: TrainHooks | None = None,
) -> TrainOutcome:
    """Train ``student`` (and the objective's projections) for ``cfg.epochs``.

    Stops early with status ``diverged`` when the loss becomes non-finite; never raises
    for that. FLOPs are counted on the first step (forward of both models, loss, backward)
    and scaled by the number of samples trained. ``hooks`` let a caller restore the loop's
    state before the first epoch (a resume) and checkpoint it after each epoch.
    """
    # Kept on the device for the next trial of this process (a search worker runs many).
    train = device_split(data, "train", device)
    val = device_split(data, "val", device)
    rows = len(train.labels)
    labels, pool = _labels_and_pool(cfg, objective, train.labels, rows)
    optimizer, schedule = _optimiser(student, objective, cfg, rows)
    outcome = TrainOutcome()
    state = LoopState(optimizer, schedule, torch.Generator().manual_seed(seed), outcome)
    first_epoch = hooks.restore(state) + 1 if hooks is not None else 1
    noise = torch.Generator(device=device) if cfg.input_noise > 0 else None
    loop = _Loop(student, objective, teacher, data, cfg, device, train, labels, pool, state, noise)
    student.train()
    for epoch in range(first_epoch, cfg.epochs + 1):
        start = time.perf_counter()
        steps_before = outcome.steps
        if noise is not None:
            noise.manual_seed(seed * 100_003 + epoch)
        sums, diverged = _epoch(loop, epoch)
        batches = outcome.steps - steps_before
        outcome.seconds += time.perf_counter() - start
        if diverged:
            log.warning("trial diverged: %s", outcome.reason)
            break
        metrics = {k: v / max(batches, 1) for k, v in sums.items()}
        metrics.update(_epoch_metrics(student, val, device, teacher, outcome, start))
        outcome.epochs = epoch
        outcome.history.append({"epoch": epoch, **metrics})
        log.info("epoch %d/%d  %s", epoch, cfg.epochs, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if report is not None:
            report(epoch, metrics)
        if hooks is not None:
            hooks.epoch_end(epoch, state)
    student.eval()
    return outcome


def _optimiser(student: nn.Module, objective: Objective, cfg: TrainConfig, rows: int) -> tuple[Any, Any]:
    """AdamW over the student and the objective's projections, with a cosine schedule over
    every step of ``cfg.epochs`` (a resume restores both states)."""
    params = list(student.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * math.ceil(rows / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    )
    return optimizer, schedule


def _epoch_metrics(
    student: nn.Module, val: Any, device: torch.device, teacher: Any, outcome: TrainOutcome, start: float
) -> dict[str, float]:
    """Validation accuracy, the epoch's seconds and the cost so far, after an epoch."""
    metrics = {"accuracy": split_accuracy(student, val, 500, device), "epoch_seconds": time.perf_counter() - start}
    # The cost so far, as the trial's result will count it (a cached teacher's forward
    # included): early stopping by Pareto rank compares it at each rung.
    replaced = float(getattr(teacher, "flops_per_sample", 0.0))
    metrics["train_gflops"] = (outcome.flops_per_sample + replaced) * outcome.samples / 1e9
    metrics["train_seconds"] = outcome.seconds
    return metrics
