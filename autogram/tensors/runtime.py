"""Small torch helpers shared by teacher and student training: device, batches, evaluation."""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

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


# The share of its GPU this process may use (``resources.gpu`` of a packed trial), set once
# per worker process by :func:`limit_gpu_memory`.
_GPU_FRACTION = 1.0


def limit_gpu_memory(device: torch.device, fraction: float) -> None:
    """Cap this process's GPU memory at ``fraction`` of the device, so trials packed on one GPU
    (``resources.gpu`` < 1) cannot take each other's memory; an allocation beyond it fails in
    this trial alone."""
    global _GPU_FRACTION
    if device.type == "cuda" and 0 < fraction < 1:
        # torch takes no index-less "cuda" here (unlike its other memory calls): name the device
        # this process uses, the first one Ray left visible to it.
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        _GPU_FRACTION = fraction


def memory_budget(device: torch.device) -> int:
    """Bytes of GPU memory this process may allocate (its share of the device)."""
    return int(torch.cuda.get_device_properties(device).total_memory * _GPU_FRACTION)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU, where fp32 keeps trials bit-for-bit repeatable."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_tensors(inputs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a split's arrays to ``device`` once, so batches are cheap index views."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a small host tensor goes to a GPU through pinned memory without
    blocking, so the training loop never waits for the GPU to drain its queue."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


# Splits already moved to a device, kept for the next trial of the same worker process: a
# search's trials share one data set, so each worker copies it to its GPU once, not per trial.
# Keyed by data fingerprint, split and device; a few entries at most (bounded memory).
_RESIDENT: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
RESIDENT_ENTRIES = 6


def resident(key: tuple[str, str, str], build: Callable[[], Any]) -> Any:
    """The value kept under ``key`` in this process, built by ``build()`` on first use."""
    if key in _RESIDENT:
        _RESIDENT.move_to_end(key)
        return _RESIDENT[key]
    value = build()
    _RESIDENT[key] = value
    while len(_RESIDENT) > RESIDENT_ENTRIES:
        _RESIDENT.popitem(last=False)
    return value


def drop_resident(kind: str) -> int:
    """Forget every value kept under a key of this ``kind`` (its second part); returns how many."""
    keys = [key for key in _RESIDENT if key[1] == kind]
    for key in keys:
        del _RESIDENT[key]
    return len(keys)


def is_resident(key: tuple[str, str, str]) -> bool:
    """Whether this process already keeps a value under ``key``."""
    return key in _RESIDENT


def split_key(data: Any, name: str, device: torch.device) -> tuple[str, str, str]:
    """The key :func:`device_split` keeps ``data.splits[name]`` under on ``device``."""
    return (data.fingerprint, name, str(device))


def device_split(data: Any, name: str, device: torch.device) -> DeviceSplit:
    """``data.splits[name]`` as a :class:`DeviceSplit`, reused across trials in one process."""
    return resident(split_key(data, name, device), lambda: DeviceSplit(data.splits[name], device))


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

    def batch(self, idx: torch.Tensor, host_idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The inputs of samples ``idx`` (on the device; ``host_idx``: the same on the host, which
        spares a lazy split a device-to-host copy) on the device."""
        if self.full is not None:
            return {k: v[idx] for k, v in self.full.items()}
        rows = (host_idx if host_idx is not None else idx.cpu()).numpy()
        return to_tensors(self.split.rows(rows), self.device)  # type: ignore[attr-defined]

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


def batch_indices(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | None = None,
    pool: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A seeded shuffle of ``range(n)`` cut into batches (the last may be smaller, never < 2),
    each as ``(host indices, the same on device)``: the epoch's order moves to the device
    in one copy, not one per step. ``pool`` < n: the epoch is still n samples, drawn from
    ``range(pool)`` in back-to-back shuffles (each row once before any row twice)."""
    if pool is None or pool >= n:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.cat([torch.randperm(pool, generator=generator) for _ in range(math.ceil(n / pool))])[:n]
    on_device = to_device(order, device) if device is not None else order
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if chunk.numel() >= 2:  # BatchNorm and B x B Grams need two samples
            yield chunk, on_device[start : start + batch_size]


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
    drop = to_device(drop, next(iter(inputs.values())).device)  # one copy per batch
    out = {}
    for j, modality in enumerate(modalities):
        x = inputs[modality.name]
        mask = drop[:, j].view(-1, *([1] * (x.dim() - 1)))
        blank = torch.full_like(x, MASK_TOKEN) if modality.kind == "tokens" else torch.zeros_like(x)
        out[modality.name] = torch.where(mask, blank, x)
    return out


def add_noise(
    inputs: dict[str, torch.Tensor],
    modalities: list[Modality],
    level: float,
    scale: dict[str, float],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Add N(0, (s * scale)^2) to each float modality, s ~ U(0, level) per sample (tokens kept)."""
    if level <= 0:
        return inputs
    out = dict(inputs)
    for modality in modalities:
        x = inputs[modality.name]
        if modality.kind == "tokens" or not x.is_floating_point():
            continue
        shape = (x.shape[0], *([1] * (x.dim() - 1)))
        sigma = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
        sigma = sigma * (level * scale.get(modality.name, 1.0))
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        out[modality.name] = x + sigma * noise
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
    # Counted on the device and read once: no host-device sync per batch.
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, labels.shape[0], batch_size):
        batch = {k: v[start : start + batch_size] for k, v in inputs.items()}
        with autocast(device):
            logits = model(batch)
        correct += (logits.argmax(dim=1) == labels[start : start + batch_size]).sum()
    model.train(was_training)
    return int(correct)


@torch.no_grad()
def class_hits(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, total) per class, two (K,) int64 tensors on the host: what accuracy and
    balanced accuracy are both read from, in one pass of the model."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.long, device=labels.device)
    for start in range(0, labels.shape[0], batch_size):
        batch = {k: v[start : start + batch_size] for k, v in inputs.items()}
        truth = labels[start : start + batch_size]
        with autocast(device):
            logits = model(batch)
        # scatter_add, not a boolean mask: no host-device sync per batch on a GPU.
        correct.scatter_add_(0, truth, (logits.argmax(dim=1) == truth).long())
    model.train(was_training)
    return correct.cpu(), torch.bincount(labels, minlength=num_classes)[:num_classes].cpu()


def balanced_accuracy(correct: torch.Tensor, total: torch.Tensor) -> float:
    """Mean per-class recall over the classes present (``total`` > 0): an imbalanced split is
    not judged by its majority class, and a class absent from the split does not count as 0."""
    present = total > 0
    if not bool(present.any()):
        return 0.0
    return float((correct[present].double() / total[present].double()).mean())


def accuracy(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> float:
    """Top-1 accuracy of ``model`` in eval mode, restoring its train/eval mode afterwards."""
    return correct_count(model, inputs, labels, batch_size, device) / labels.shape[0]
