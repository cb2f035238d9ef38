"""The one Ray Tune callback of a search, forwarding trial events to live driver objects.

Ray pickles the Tuner's callbacks into its experiment state and a restored Tuner uses
those copies. This callback therefore holds only a key; the listeners (progress output,
MLflow tracker) are registered afresh by each driver process, so a resumed search
reports through the new objects, not stale copies.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

_LISTENERS: dict[str, list[Any]] = {}
_FINISHED: dict[str, frozenset[str]] = {}


def register(key: str, listeners: list[Any], finished: frozenset[str] = frozenset()) -> None:
    """Make ``listeners`` receive the events of the search keyed ``key`` in this process, except
    those of the ``finished`` trials (Ray trial ids whose result a killed driver already told)."""
    _LISTENERS[key] = list(listeners)
    _FINISHED[key] = finished


def unregister(key: str) -> None:
    """Stop forwarding events for ``key``."""
    _LISTENERS.pop(key, None)
    _FINISHED.pop(key, None)


class DriverCallback(Callback):
    """Calls ``trial_started``, ``trial_result`` and ``trial_finished`` on each listener."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _each(self, method: str, trial_id: str, *args: Any) -> None:
        if trial_id in _FINISHED.get(self.key, frozenset()):
            return  # its start, curve and result were recorded before the driver stopped
        for listener in _LISTENERS.get(self.key, []):
            getattr(listener, method)(trial_id, *args)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial (re)started."""
        self._each("trial_started", trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """A trial reported (per epoch, and once at the end)."""
        self._each("trial_result", trial.trial_id, dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial ended normally (or was stopped by the scheduler)."""
        self._each("trial_finished", trial.trial_id, dict(trial.last_result or {}), False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial crashed for the last time."""
        self._each("trial_finished", trial.trial_id, dict(trial.last_result or {}), True)
