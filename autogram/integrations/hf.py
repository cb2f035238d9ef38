"""A Hugging Face ``Trainer`` whose loss is a searched recipe (:class:`~autogram.distiller.Distiller`).

::

    distiller = Distiller.from_export("best.yaml", student=student, teacher=teacher)
    trainer = DistillationTrainer(distiller, args=TrainingArguments(..., remove_unused_columns=False),
                                  train_dataset=train)   # rows: {modality: tensor, ..., "labels": int}
    trainer.train()

The Trainer optimises the student (its ``model``) plus the recipe's learned projections; the
teacher stays frozen and out of the optimiser. In training, the student reads each batch with
the recipe's augmentations (:meth:`Distiller.augment`: modality dropout, input noise) and the
teacher reads it clean, as ``autogram train`` does; ``augment=False`` leaves them to you. Each
term's mean since the last log is logged beside the Trainer's ``loss`` (``distill/kd``,
``distill/gram``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer

if TYPE_CHECKING:
    from autogram.distiller import Distiller


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` with ``compute_loss`` from a :class:`Distiller`.

    Batches are dicts holding every modality the recipe reads, ``labels`` and, optionally,
    ``indices`` (rows of the export's train split: the teacher cache then serves the teacher).
    ``model`` defaults to the distiller's student. ``augment``: apply the recipe's modality
    dropout and input noise to the student's training batches (part of what was searched);
    False for your own augmentations, applied before the batch gets here.
    """

    def __init__(self, distiller: Distiller, *args: Any, augment: bool = True, **kwargs: Any) -> None:
        from autogram.models.source import user_module

        kwargs.setdefault("model", user_module(distiller.student))
        super().__init__(*args, **kwargs)
        self.distiller = distiller
        self.augment = augment
        self._term_sums: dict[str, float] = {}
        self._term_steps = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The recipe's weighted loss on the batch (the Trainer's ``model`` is the distiller's student)."""
        del model, num_items_in_batch  # the distiller calls the same student; the recipe's terms are batch means
        batch = dict(inputs)
        labels = batch.pop("labels")
        indices = batch.pop("indices", None)
        # The recipe's augmentations in training only (evaluation scores clean inputs); the
        # teacher reads the clean batch either way.
        seen = self.distiller.augment(batch) if self.augment and self.model.training else batch
        out = self.distiller(seen, labels, indices=indices, clean=batch if seen is not batch else None)
        if self.model.training:
            for name, value in out.terms.items():
                self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value.detach())
            self._term_steps += 1
        return (out.loss, {"logits": out.logits}) if return_outputs else out.loss

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The Trainer's optimiser over the student, plus the recipe's learned projections."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        extra = list(self.distiller.objective.parameters())
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        extra = [p for p in extra if id(p) not in known]
        if extra:
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        return optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log, plus each term's mean over the steps since the last one."""
        if self._term_steps and "loss" in logs:
            logs = {**logs, **{f"distill/{k}": v / self._term_steps for k, v in self._term_sums.items()}}
            self._term_sums, self._term_steps = {}, 0
        super().log(logs, start_time)
