"""Capture intermediate features with forward hooks on module paths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch

from autogram.models.taps import Tap, canonical


@contextmanager
def capture(model: torch.nn.Module, taps: list[Tap], raw: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Hook every tap's module for the duration of the block; yields ``{tap name: feature}``.

    Features are canonicalised to (B, C, P) / (B, C) unless ``raw``; an embedding tap on a
    sequence or grid is averaged over its positions to (B, C). Module paths are those of the
    user's own model (``model.tap_root()`` when autogram wrapped it). Hooks are removed on
    exit even if the forward pass raises. With no taps, nothing is registered at all.
    """
    features: dict[str, torch.Tensor] = {}
    handles = []
    root = tap_root(model)
    try:
        for tap in taps:
            module = root.get_submodule(tap.module_path)

            def hook(_module: torch.nn.Module, _inputs: object, output: object, tap: Tap = tap) -> None:
                value = canonical(output, "vector" if raw else tap.layout)
                if not raw and tap.role == "embedding" and value.dim() > 2:
                    value = value.mean(dim=-1)
                features[tap.name] = value

            handles.append(module.register_forward_hook(hook))
        yield features
    finally:
        for handle in handles:
            handle.remove()


def tap_root(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose paths taps name (see :func:`autogram.models.source.user_module`)."""
    from autogram.models.source import user_module

    return user_module(model)


def hook_count(model: torch.nn.Module) -> int:
    """How many forward hooks are registered anywhere in ``model`` (for tests and checks)."""
    return sum(len(m._forward_hooks) for m in model.modules())


def with_shapes(model: torch.nn.Module, taps: list[Tap], example: dict[str, torch.Tensor]) -> list[Tap]:
    """Fill each tap's per-sample output shape by one forward pass on ``example``."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), capture(model, taps, raw=True) as feats:
        model(example)
    model.train(was_training)
    return [replace(t, shape=tuple(feats[t.name].shape[1:])) for t in taps]
