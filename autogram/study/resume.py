"""Stopping and resuming a search: Ctrl-C, Ray's saved state read back, trials it lost queued again.

Ray saves its trials, its search generator and the Optuna searcher together, at each
controller step; a driver killed between two saves leaves a study that knows more than
Ray does. These helpers bring the two back in line before a resume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("autogram")
TUNE_DIR = "tune"


class SearchInterrupted(Exception):
    """The search stopped on a signal (Ctrl-C) before its trials ended; it can be resumed."""

    def __init__(self, directory: Path, name: str) -> None:
        super().__init__(
            f"search {name} interrupted; its finished trials are kept. Resume it with: "
            f"autogram search CONFIG --name {name} --out {directory.parent} --resume"
        )


class _TuneInterruptNoise(logging.Filter):
    """Drops Tune's own interrupt lines (its ``Tuner.restore(...)`` hint would mislead: the
    search resumes with ``autogram search --resume``, which prints instead)."""

    _NOISE = ("Stop signal received", "Tuner.restore", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but those."""
        return not any(text in record.getMessage() for text in self._NOISE)


TUNE_NOISE = _TuneInterruptNoise()


def requeue_lost_trials(directory: Path, storage_url: str, name: str, tracker: Any) -> None:
    """Trials the killed driver started but Ray never saved: queue their points again."""
    from autogram.study.optuna_search import requeue_orphans
    from autogram.study.tune_state import saved_trial_ids

    saved = saved_trial_ids(directory / TUNE_DIR)
    if saved is None:
        log.warning("could not read Ray's saved trials: trials it lost are marked failed, not rerun")
        return
    orphans = requeue_orphans(storage_url, name, saved)
    if orphans:
        log.info("queued again %d trial(s) started before the stop but never saved by Ray", len(orphans))
        if tracker is not None:
            tracker.drop_children(orphans)


def interrupted(results: Any, trials: int) -> bool:
    """Whether Tune's run ended on a signal: a trial still unfinished, or fewer trials than asked."""
    return len(results) < trials or results.num_terminated + results.num_errors < len(results)


# What a resume may change: how its trials run, not what they measure (nor the search itself).
_EXECUTION = {"search.concurrency", "search.max_failures", "search.storage", "search.runtime_env"}
_EXECUTION |= {"search.experiment", "search.reference_point", "search.resources", "device", "search.trials"}


def same_search(cfg: Any, spec: Path, name: str) -> Any:
    """A resume runs the search as it started: refuse a config (``cfg``) that differs from the
    one recorded in ``spec`` outside how trials run, and return ``cfg`` with the recorded trial
    count (Ray's restored run has that many: another would never finish)."""
    from autogram.config import ConfigError
    from autogram.study.warm import NOT_MEASURED, config_differences, named, recorded

    if not spec.is_file():  # killed before it was written: nothing to compare with
        return cfg
    old = recorded(spec, "--resume")[1]
    skip = NOT_MEASURED | _EXECUTION
    if cfg.cost == "train_seconds":  # seconds depend on the device and the CPUs a trial gets
        skip = skip - {"device", "search.resources"}
    found = config_differences(old.model_dump(mode="json"), cfg.model_dump(mode="json"), skip)
    if found:
        raise ConfigError(
            f"--resume: search {name!r} was started with another config: {named(found)}; a resume continues "
            f"it as it started (to change it, start a new search: --warm-start {name} copies what still fits)"
        )
    if old.search.trials != cfg.search.trials:
        log.info(
            "--resume: search %s runs the %d trial(s) it started with (search.trials %d here; for more, start a new "
            "search with --warm-start %s)",
            name,
            old.search.trials,
            cfg.search.trials,
            name,
        )
        cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": old.search.trials})})
    return cfg
