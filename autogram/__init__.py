"""autogram: search how to distill a large multi-modal model into a small, robust one.

The public API is small and cheap to import; heavy parts (torch, transformers) load
only when a function that needs them is called.
"""

from __future__ import annotations

from typing import Any

from autogram.config import ConfigError, TrialConfig, load_config

__version__ = "0.1.0"
__all__ = ["ConfigError", "TrialConfig", "__version__", "load_config", "run_trial", "train"]


def run_trial(config: TrialConfig, report: Any = None) -> Any:
    """Run one distillation trial; see :func:`autogram.trial.run_trial`."""
    from autogram.trial import run_trial as _run_trial

    return _run_trial(config, report)


def train(config: TrialConfig, config_path: str = "train.yaml", resume: bool = False) -> Any:
    """Full training from ``config``; see :func:`autogram.training.train`. Files go beside ``config_path``."""
    from autogram.training import train as _train

    return _train(config, config_path, resume=resume)
