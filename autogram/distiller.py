"""The searched recipe in your own training loop.

:class:`Distiller` carries an exported point (loss terms, weights, temperature, layer pairs,
the pinned teacher) into any PyTorch loop::

    distiller = autogram.Distiller.from_export("best.yaml", student=my_student)
    optimizer = torch.optim.AdamW(distiller.trainable_parameters(), lr=3e-3)
    for inputs, labels in loader:
        out = distiller(inputs, labels)       # out.logits, out.loss, out.terms
        optimizer.zero_grad(); out.loss.backward(); optimizer.step()

It is built by the same functions as a trial and ``autogram train`` (``trial.prepare``,
``trial.teacher_signals``, :class:`~autogram.distill.Objective`) and turns a batch into loss
terms through the same :func:`~autogram.distill.forward_terms`: one code path, not a copy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from autogram.config import TrialConfig
    from autogram.data.base import MultiModalData
    from autogram.distill import Objective
    from autogram.teacher import TeacherHandle

log = logging.getLogger("autogram")


@dataclass
class DistillOutput:
    """One batch through the recipe: the student's ``logits``, the weighted ``loss`` to
    backpropagate and the unweighted value of each named term (``ce``, ``kd``, ``gram``, ...)."""

    logits: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def recipe_path(config_path: str | Path) -> Path:
    """Where ``autogram export -o best.yaml`` writes the recipe: ``best.recipe.json``."""
    path = Path(config_path)
    return path.with_name(f"{path.stem}.recipe.json")


class Distiller(nn.Module):
    """The student, the frozen teacher's signals and the recipe's loss terms in one module.

    Build it with :meth:`from_export`. Calling it returns a :class:`DistillOutput`; only the
    student and the recipe's learned projections train (:meth:`trainable_parameters`); the
    teacher is frozen and not a submodule (``distiller.parameters()`` never holds it).
    """

    def __init__(
        self,
        student: nn.Module,
        objective: Objective,
        signals: Any,
        config: TrialConfig,
        data: MultiModalData,
        teacher: TeacherHandle | None,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.student = student
        self.objective = objective
        # Labels below 0 mark rows without one (a transfer set, as train.labelled_samples
        # makes): the CE term leaves them out, the teacher's terms learn from them.
        objective.partial_labels = True
        self.config = config
        self.device = device
        self.modalities = [m.name for m in data.modalities]
        # Not submodules: the teacher never trains, and moves with no .to() of the distiller.
        self._signals = signals
        self.data = data
        # What a batch's ``indices`` may name (checked every step: counted once here).
        self._train_rows = len(data.splits["train"]) if "train" in data.splits else 0
        self._teacher = teacher
        self._live: Any = None
        self._generator: torch.Generator | None = None
        self._noise: torch.Generator | None = None
        # The last batch augment() changed: passed back without clean=, the live teacher would
        # read the augmented batch (forward refuses that).
        self._augmented: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_export(
        cls,
        path: str | Path,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        data: Any = None,
        device: str | torch.device | None = None,
    ) -> Distiller:
        """The recipe of an exported point (``autogram export -o PATH``).

        Without ``student``/``teacher`` both are built through the export's own sources (a fresh
        student, seeded as ``autogram train`` seeds it; the teacher pinned by its checkpoint or
        key). With them, the user's modules are hooked at the exported module paths: a teacher
        whose weights differ from the pinned one, or a student without a path the recipe aligns,
        is refused with a ``ValueError`` naming it. ``student`` may be wrapped in
        ``DistributedDataParallel``. ``data``: the export's data (loaded from its source when
        omitted), or ``{"train": ds, "val": ds, "test": ds}`` as in :func:`autogram.search`.
        """
        from autogram.config import load_config
        from autogram.data import load_data
        from autogram.data.base import MultiModalData
        from autogram.models.source import use_python_path
        from autogram.tensors.runtime import pick_device
        from autogram.trial import prepare, teacher_signals

        path = Path(path)
        cfg = load_config(path)
        use_python_path(cfg.python_path)
        target = pick_device(cfg.device) if device is None else torch.device(device)
        loaded = data if isinstance(data, MultiModalData) else load_data(cfg.data, data)
        recipe = _read_recipe(path)
        handle = _teacher_handle(cfg, teacher, loaded, target, path, recipe) if teacher is not None else None
        forward_student, tap_student = (None, None) if student is None else _adapt(cfg, student, loaded, recipe, path)
        parts = prepare(cfg, target, loaded, handle, tap_student)
        objective = parts.objective(cfg.distill).to(target)
        signals, info = teacher_signals(cfg, parts, objective, target)
        if signals is not None:
            log.info("distiller: teacher signals from the %s (%s)", info.get("source"), info.get("cache", "model"))
        return cls(
            forward_student if forward_student is not None else parts.student,
            objective,
            signals,
            cfg,
            loaded,
            parts.teacher,
            target,
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's parameters, then the recipe's learned projections (channel Gram): give
        these to the optimiser."""
        return list(self.student.parameters()) + list(self.objective.parameters())

    @property
    def terms(self) -> dict[str, float]:
        """The recipe's active terms and their weights, in summation order."""
        return dict(self.objective.weights)

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        indices: torch.Tensor | None = None,
        clean: dict[str, torch.Tensor] | None = None,
    ) -> DistillOutput:
        """Run the student (and the teacher) on one batch and return logits, loss and terms.

        ``indices``: the batch's rows in the export's train split; with them a teacher cache
        serves the teacher's signals (as in ``autogram train``), without them the teacher runs
        live. ``clean``: what the teacher sees when ``inputs`` were augmented for the student
        (modalities dropped, noise): the recipe's teacher always reads clean inputs.
        """
        from autogram.distill import forward_terms
        from autogram.teacher.signals import LiveTeacher
        from autogram.tensors.batch_check import check_batch

        check_batch(inputs, labels, indices, clean, self.data.modalities, self.data.num_classes, self._train_rows)
        augmented_alone = clean is None and inputs is self._augmented
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in self.modalities}
        clean = inputs if clean is None else {k: v.to(self.device) for k, v in clean.items() if k in self.modalities}
        labels = labels.to(self.device)
        teacher = self._teacher_for(indices) if self.objective.needs_teacher else None
        if augmented_alone and isinstance(teacher, LiveTeacher):
            raise ValueError(
                "Distiller: inputs come from augment() and no clean= was given, so the teacher would read the "
                "augmented batch; pass clean=<the batch before augment()>: the recipe's teacher reads clean inputs"
            )
        idx = indices if indices is not None else torch.empty(0, dtype=torch.long)
        logits, terms = forward_terms(self.student, self.objective, teacher, self.device, idx, clean, inputs, labels)
        return DistillOutput(logits, self.objective.total(terms), terms)

    def augment(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The recipe's augmentations of the student's inputs, as ``autogram train`` applies them:
        each modality blanked with probability ``train.modality_dropout`` (never all of a
        sample's), then Gaussian noise up to ``train.input_noise``. Pass the result as ``inputs``
        and the original as ``clean``: the teacher reads clean inputs. ``generator``: a CPU
        generator for the draws (default: one seeded with the recipe's seed)."""
        from autogram.tensors.runtime import add_noise, drop_modalities

        train = self.config.train
        if generator is None:
            if self._generator is None:
                self._generator = torch.Generator().manual_seed(self.config.seed)
            generator = self._generator
        out = drop_modalities(inputs, self.data.modalities, train.modality_dropout, generator)
        if train.input_noise > 0:
            device = next(iter(out.values())).device
            if self._noise is None or self._noise.device != device:
                self._noise = torch.Generator(device=device).manual_seed(self.config.seed)
            out = add_noise(out, self.data.modalities, train.input_noise, self.data.noise_scale, self._noise)
        self._augmented = out if out is not inputs else None
        return out

    def average_objective_gradients(self) -> None:
        """Under ``torch.distributed``: average the learned projections' gradients across
        processes (DDP averages the student's; the projections live outside it). Call after
        ``backward()``; a no-op without projections or outside a process group."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size()
        for param in self.objective.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= world

    def _teacher_for(self, indices: torch.Tensor | None) -> Any:
        """The cache when it serves this batch (indices given), else the live teacher."""
        from autogram.teacher.signals import LiveTeacher

        if indices is not None or isinstance(self._signals, LiveTeacher):
            return self._signals
        if self._live is None:
            from autogram.teacher import ensure_teacher

            handle = self._teacher
            if handle is None or handle.model is None:
                handle = self._teacher = ensure_teacher(self.config.teacher, self.data, self.device)
            assert handle.model is not None
            self._live = LiveTeacher(handle.model.to(self.device), self.objective.teacher_taps, self.device)
        return self._live


def _read_recipe(path: Path) -> dict[str, Any] | None:
    """The recipe JSON beside an export, if it was written (exports before it have none)."""
    from autogram.config.base import read_json

    recipe = recipe_path(path)
    return read_json(recipe, "recipe") if recipe.is_file() else None


def _check_paths(model: nn.Module, paths: list[tuple[str, str]], role: str, source: Path) -> None:
    """Every (tap, module path) the recipe aligns must exist in the user's ``model``."""
    names = {name for name, _ in model.named_modules()}
    for tap, module_path in paths:
        if module_path not in names:
            raise ValueError(
                f"{role}: the passed {type(model).__name__} has no module {module_path!r} (tap {tap} of the recipe "
                f"{source}); pass the {role} the search used, or one with the same module paths"
            )


def _recipe_paths(recipe: dict[str, Any] | None, role: str) -> list[tuple[str, str]]:
    if not recipe:
        return []
    return [(p[role], p[f"{role}_module"]) for p in recipe.get("pairs", []) if p.get(f"{role}_module")]


def _adapt(
    cfg: TrialConfig, student: nn.Module, data: MultiModalData, recipe: dict[str, Any] | None, path: Path
) -> tuple[nn.Module, nn.Module]:
    """The user's student as (the module the loop calls, the one its taps are found on): both in
    autogram's calling convention; the first keeps a DDP wrapper, the second is unwrapped."""
    from autogram.models.source import Adapted, user_module
    from autogram.models.sources import model_source

    inner = user_module(student)
    _check_paths(inner, _recipe_paths(recipe, "student"), "student", recipe_path(path))
    if model_source(cfg.student, "student").trained_here:  # a built-in student: already the convention
        return student, inner
    modalities = data.spec().modalities
    return Adapted(student, cfg.student, modalities, "student"), Adapted(inner, cfg.student, modalities, "student")


def _teacher_handle(
    cfg: TrialConfig,
    teacher: nn.Module,
    data: MultiModalData,
    device: torch.device,
    path: Path,
    recipe: dict[str, Any] | None,
) -> TeacherHandle:
    """The passed teacher, frozen, with its taps, refused unless it is the one the export pins."""
    from autogram.models import model_taps
    from autogram.models.source import Adapted, user_module
    from autogram.models.sources import model_source, user_teacher_key
    from autogram.teacher import frozen_handle, read_metadata

    inner = user_module(teacher)
    _check_paths(inner, _recipe_paths(recipe, "teacher"), "teacher", recipe_path(path))
    source = model_source(cfg.teacher, "teacher")
    if source.trained_here:
        pinned = cfg.teacher.checkpoint
        if pinned is None or not pinned.is_file():
            raise ValueError(f"{path}: teacher.checkpoint names no file ({pinned}): cannot check the passed teacher")
        key = read_metadata(pinned)["key"]
        _same_weights(inner, pinned, path)
        model: nn.Module = inner
    else:
        model = Adapted(inner, cfg.teacher, data.spec().modalities, "teacher")
        key = user_teacher_key(cfg.teacher, model)
        expected = cfg.teacher.checkpoint_key
        if expected is not None and key != expected:
            raise ValueError(
                f"{path}: teacher.checkpoint_key is {expected[:16]}, the passed teacher's key is {key[:16]} (its "
                "weights or settings differ from the teacher this recipe was searched with)"
            )
    handle = frozen_handle(model, device, cfg.teacher.checkpoint, key)
    handle.source = source.describe(cfg.teacher)
    handle.taps = model_taps(model, cfg.teacher, data, "teacher")
    return handle


def _same_weights(model: nn.Module, checkpoint: Path, path: Path) -> None:
    """A built-in teacher passed in must hold the pinned checkpoint's weights."""
    from safetensors.torch import load_file

    pinned = load_file(str(checkpoint))
    state = model.state_dict()
    for name, value in pinned.items():
        if name not in state or state[name].shape != value.shape or not torch.equal(state[name].cpu(), value):
            raise ValueError(
                f"{path}: the passed teacher's weights differ from the pinned teacher.checkpoint {checkpoint} "
                f"(first at {name}); pass the teacher the search used"
            )


def recipe_document(raw: dict[str, Any], taps: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The plain-data recipe of an exported config ``raw``: terms and weights, temperature, layer
    pairs by tap name and module path (``taps``: the search's ``{"student": {name: tap}, ...}``;
    module paths are null for a search that did not record them), the teacher's key."""
    from autogram.config import DistillConfig
    from autogram.distill.terms import TERMS, term_weight

    distill = DistillConfig.model_validate(raw.get("distill", {}))
    weights = {name: term_weight(distill, name) for name in TERMS}
    if distill.pairs == []:  # a pair-aligning term (Gram, CKA) with no pair runs nowhere: not in the recipe
        weights = {name: 0.0 if TERMS[name].reads_pairs else weight for name, weight in weights.items()}
    # Pairs are part of the recipe only when a term aligns them (Gram, CKA).
    aligned = any(TERMS[name].reads_pairs for name, weight in weights.items() if weight > 0)
    pairs: list[dict[str, Any]] = []
    for item in distill.pairs if aligned and isinstance(distill.pairs, list) else []:
        student, teacher = item.split(":")
        s_tap = (taps or {}).get("student", {}).get(student, {})
        t_tap = (taps or {}).get("teacher", {}).get(teacher, {})
        pairs.append(
            {
                "student": student,
                "teacher": teacher,
                "student_module": s_tap.get("module_path"),
                "teacher_module": t_tap.get("module_path"),
            }
        )
    teacher = raw.get("teacher", {})
    train = raw.get("train", {})
    return {
        "format": "autogram-recipe/1",
        "terms": {name: weight for name, weight in weights.items() if weight > 0},
        "temperature": distill.temperature,
        "gram_kind": distill.gram_kind,
        # "auto": the default pairing, resolved on the models (see `autogram layers`).
        "pairs": pairs if pairs or not aligned else distill.pairs,
        "teacher": {
            "key": teacher.get("checkpoint_key"),
            "checkpoint": teacher.get("checkpoint"),
            "factory": teacher.get("factory"),
        },
        # Distiller.augment applies these to the student's inputs.
        "augment": {k: train.get(k) for k in ("modality_dropout", "input_noise") if k in train},
        "train": {k: train.get(k) for k in ("epochs", "batch_size", "lr", "weight_decay") if k in train},
        "provenance": raw.get("provenance", {}),
    }


def write_recipe(out: Path, document: dict[str, Any]) -> Path:
    """Write a :func:`recipe_document` beside the exported config ``out``, atomically."""
    from autogram.config.base import atomic_write

    target = recipe_path(out)
    text = json.dumps(document, indent=2, default=str) + "\n"
    atomic_write(target, lambda tmp: tmp.write_text(text))
    return target
