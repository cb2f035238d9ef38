"""Small torch helpers shared by teacher and student training: device, batches, evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from autogram.data.base import MASK_TOKEN, Modality


def pick_device(name: str) -> torch.device:
    """``auto`` means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from autogram.config import ConfigError

        raise ConfigError("device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU, where fp32 keeps trials bit-for-bit repeatable."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_tensors(inputs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a split's arrays to ``device`` once, so batches are cheap index views."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}


class DeviceSplit:
    """A split as a training loop reads it: in-memory arrays move to ``device`` once and a
    batch is an index view; a lazy split (Arrow table, user dataset) is read batch by batch."""

    def __init__(self, split: object, device: torch.device) -> None:
        self.split = split
        self.device = device
        self.labels = torch.from_numpy(split.labels).to(device)  # type: ignore[attr-defined]
        self.full = to_tensors(split.inputs, device) if split.in_memory else None  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inputs of samples ``idx`` on the device."""
        if self.full is not None:
            return {k: v[idx] for k, v in self.full.items()}
        return to_tensors(self.split.rows(idx.cpu().numpy()), self.device)  # type: ignore[attr-defined]

    def chunks(self, batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Consecutive ``(inputs, labels)`` chunks, in order."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)), device=self.device)
            yield self.batch(idx), self.labels[idx]


def split_accuracy(model: torch.nn.Module, split: DeviceSplit, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy over a whole :class:`DeviceSplit`."""
    if split.full is not None:
        return accuracy(model, split.full, split.labels, batch_size, device)
    correct = sum(
        correct_count(model, inputs, labels, batch_size, device) for inputs, labels in split.chunks(batch_size)
    )
    return correct / max(len(split), 1)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """A seeded shuffle of ``range(n)`` cut into batches (the last may be smaller, never < 2)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if chunk.numel() >= 2:  # BatchNorm and B x B Grams need two samples
            yield chunk


def drop_modalities(
    inputs: dict[str, torch.Tensor], modalities: list[Modality], rate: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Blank each modality of each sample with probability ``rate``, never all of a sample's."""
    if rate <= 0 or len(modalities) < 2:
        return inputs
    n = next(iter(inputs.values())).shape[0]
    drop = torch.rand(n, len(modalities), generator=generator) < rate
    keep_one = torch.randint(len(modalities), (n,), generator=generator)
    all_dropped = drop.all(dim=1)
    drop[all_dropped, keep_one[all_dropped]] = False
    out = {}
    for j, modality in enumerate(modalities):
        x = inputs[modality.name]
        mask = drop[:, j].to(x.device).view(-1, *([1] * (x.dim() - 1)))
        blank = torch.full_like(x, MASK_TOKEN) if modality.kind == "tokens" else torch.zeros_like(x)
        out[modality.name] = torch.where(mask, blank, x)
    return out


@torch.no_grad()
def correct_count(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> int:
    """How many of ``labels`` ``model`` gets right (top-1, eval mode; its train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, labels.shape[0], batch_size):
        batch = {k: v[start : start + batch_size] for k, v in inputs.items()}
        with autocast(device):
            logits = model(batch)
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct


def accuracy(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> float:
    """Top-1 accuracy of ``model`` in eval mode, restoring its train/eval mode afterwards."""
    return correct_count(model, inputs, labels, batch_size, device) / labels.shape[0]
