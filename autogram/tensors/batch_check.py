"""One batch handed to :class:`autogram.Distiller` by the user's loop, checked before it meets a
model: a wrong batch is a ``TypeError``/``ValueError`` naming the argument, the modality and
what was expected, not torch's message from deep inside (``stack expects each tensor to be
equal size``, ``index out of range in self``) or, on a GPU, a device-side assert that ends the
process.

Values (label classes, token ids, row indices) are checked only on CPU tensors, as a loader
yields them: on a GPU tensor the check would wait on the device every step.
"""

from __future__ import annotations

from typing import Any

import torch

from autogram.data.base import Modality


def _tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(value).__name__} (torch.as_tensor converts it)")
    return value


def _in_range(value: torch.Tensor, low: int, high: int, where: str, what: str) -> None:
    """Refuse values outside ``low..high-1`` of a CPU integer tensor, naming the first one."""
    if value.device.type != "cpu" or value.numel() == 0:
        return
    bad = (value < low) | (value >= high)
    if bool(bad.any()):
        first = int(bad.flatten().nonzero()[0])
        raise ValueError(
            f"{where}: {what} {int(value.flatten()[first])} at position {first} is outside {low}..{high - 1}"
        )


def _modality(value: Any, modality: Modality, where: str) -> torch.Tensor:
    tensor = _tensor(value, where)
    # The number of dimensions, not the sizes: a user's model may take other image sizes or
    # sequence lengths (padding per batch) than the export's data.
    if tensor.dim() != 1 + len(modality.shape):
        raise ValueError(
            f"{where}: a batch of shape {tuple(tensor.shape)}; the recipe's {modality.describe()} takes "
            f"{1 + len(modality.shape)} dimensions, (batch, {', '.join(map(str, modality.shape))})"
        )
    if modality.vocab_size is not None:
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError(f"{where}: token ids must be an integer tensor, got {tensor.dtype}")
        _in_range(tensor, 0, modality.vocab_size, where, "token id")
    elif tensor.dtype != torch.float32 and not (tensor.is_floating_point() and tensor.element_size() < 4):
        # float16/bfloat16 inputs are what autocast loops pass; float64 or integers meet the
        # student's float32 weights in torch's "expected scalar type" error.
        raise TypeError(f"{where}: expected a float32 tensor, got {tensor.dtype} (.float() converts it)")
    return tensor


def check_batch(
    inputs: dict[str, Any],
    labels: Any,
    indices: Any,
    clean: dict[str, Any] | None,
    modalities: list[Modality],
    num_classes: int,
    train_rows: int,
) -> int:
    """Check one batch against the recipe's data (see the module doc); returns its size.

    ``labels`` below 0 mark rows without a label (the CE term leaves them out)."""
    names = [m.name for m in modalities]
    missing = [m for m in names if m not in inputs]
    if missing:
        raise ValueError(
            f"inputs: missing modality {', '.join(map(repr, missing))} (the recipe's student reads "
            f"{', '.join(names)}; blank a missing modality with zeros instead of leaving it out)"
        )
    sizes = {m.name: len(_modality(inputs[m.name], m, f"inputs[{m.name!r}]")) for m in modalities}
    size = sizes[names[0]]
    if any(n != size for n in sizes.values()):
        raise ValueError(f"inputs: the modalities hold different batch sizes ({sizes})")
    labels = _tensor(labels, "labels")
    if labels.dim() != 1 or len(labels) != size or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels: expected {size} integer class ids (shape ({size},)), got {labels.dtype} of shape "
            f"{tuple(labels.shape)}"
        )
    if labels.device.type == "cpu" and len(labels) and int(labels.max()) >= num_classes:
        first = int((labels >= num_classes).nonzero()[0])
        raise ValueError(
            f"labels: class {int(labels[first])} at position {first}; the recipe has {num_classes} classes, "
            f"0..{num_classes - 1} (below 0 marks a row without a label)"
        )
    if indices is not None:
        indices = _tensor(indices, "indices")
        if indices.dim() != 1 or len(indices) != size or indices.is_floating_point():
            raise ValueError(
                f"indices: expected the batch's {size} row numbers in the train split (shape ({size},)), got "
                f"{indices.dtype} of shape {tuple(indices.shape)}"
            )
        _in_range(indices, 0, train_rows, "indices", "row")
    if clean is not None:
        for modality in modalities:
            where = f"clean[{modality.name!r}]"
            if modality.name not in clean:
                raise ValueError(f"{where}: missing; clean holds what the teacher reads, every modality of inputs")
            if len(_modality(clean[modality.name], modality, where)) != size:
                raise ValueError(f"{where}: {len(clean[modality.name])} rows, inputs {size}")
    return size
