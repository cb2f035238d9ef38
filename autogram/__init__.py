"""autogram: search how to distill a large multi-modal model into a small, robust one.

The public API is small and cheap to import; heavy parts (torch, transformers) load
only when a function that needs them is called.
"""

from __future__ import annotations

from typing import Any

from autogram.config import ConfigError, TrialConfig, load_config
from autogram.version import __version__

__all__ = [
    "ConfigError",
    "Distiller",
    "TrialConfig",
    "__version__",
    "load_config",
    "load_weights",
    "run_trial",
    "search",
    "train",
]


def __getattr__(name: str) -> Any:
    """``autogram.Distiller``, imported (with torch) only when first used."""
    if name == "Distiller":
        from autogram.distiller import Distiller

        return Distiller
    raise AttributeError(f"module 'autogram' has no attribute {name!r}")


def run_trial(config: TrialConfig, report: Any = None) -> Any:
    """Run one distillation trial; see :func:`autogram.trial.run_trial`."""
    from autogram.trial import run_trial as _run_trial

    return _run_trial(config, report)


def search(config: Any, teacher: Any = None, student: Any = None, data: Any = None, **options: Any) -> Any:
    """Run a search, optionally on in-memory models and data; see :func:`autogram.api.search`."""
    from autogram.api import search as _search

    return _search(config, teacher=teacher, student=student, data=data, **options)


def train(
    config: Any,
    teacher: Any = None,
    student: Any = None,
    data: Any = None,
    config_path: str = "train.yaml",
    **options: Any,
) -> Any:
    """Full training from ``config``; see :func:`autogram.api.train`. Files go beside ``config_path``."""
    from autogram.api import train as _train

    return _train(config, teacher=teacher, student=student, data=data, config_path=config_path, **options)


def load_weights(model: Any, path: Any) -> None:
    """Load safetensors or a ``torch.save``d state dict into ``model`` (refuses pickled code)."""
    from pathlib import Path

    from autogram.models.source import load_weights as _load

    _load(model, Path(path))
