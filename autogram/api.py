"""The Python API for in-memory models and data: a teacher module, a student builder and
torch datasets passed as objects instead of being named by import path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autogram.config import TrialConfig, load_config, validate


def with_objects(config: str | Path | TrialConfig, teacher: Any = None, student: Any = None) -> TrialConfig:
    """The config with ``teacher.python`` / ``student.python`` naming the given objects, which
    are registered for this process (and shipped to workers by the search)."""
    from autogram.models.source import PYTHON_OBJECTS, use_python_path

    cfg = config if isinstance(config, TrialConfig) else load_config(config)
    use_python_path(cfg.python_path)
    raw = cfg.model_dump(mode="json")
    if teacher is not None:
        name = f"teacher:{type(teacher).__qualname__}"
        PYTHON_OBJECTS[name] = teacher
        raw["teacher"].update(python=name, factory=None)
    if student is not None:
        name = f"student:{getattr(student, '__qualname__', type(student).__qualname__)}"
        PYTHON_OBJECTS[name] = student
        raw["student"].update(python=name, factory=None)
    return validate(raw, str(config) if not isinstance(config, TrialConfig) else "<config>")


def _objects(cfg: TrialConfig) -> dict[str, Any]:
    from autogram.models.source import PYTHON_OBJECTS

    names = [n for n in (cfg.teacher.python, cfg.student.python) if n]
    return {n: PYTHON_OBJECTS[n] for n in names}


def search(
    config: str | Path | TrialConfig,
    teacher: Any = None,
    student: Any = None,
    data: dict[str, Any] | None = None,
    name: str | None = None,
    out: str | Path = "autogram-runs",
    resume: bool = False,
    address: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    warm_start: str | None = None,
) -> dict[str, Any]:
    """Run a search (as ``autogram search``) and return its front document.

    ``teacher``: a trained ``nn.Module``; ``student``: a function ``(data_spec, **kwargs) ->
    nn.Module`` called once per trial; ``data``: ``{"train": ds, "val": ds, "test": ds}`` of
    map-style datasets yielding ``(dict[modality -> tensor], label)``. Each replaces the source
    the config names; they reach Ray workers through the object store.
    """
    from autogram.data import load_data
    from autogram.study import plan_search, run_search

    cfg = with_objects(config, teacher, student)
    loaded = load_data(cfg.data, data) if data is not None else None
    plan = plan_search(
        cfg, name, Path(out), resume, tracking_uri, experiment, data=loaded, address=address, warm_start=warm_start
    )
    plan.python_objects = _objects(cfg)
    plan.code_targets = list((data or {}).values())
    return run_search(plan, resume=resume, address=address)


def train(
    config: str | Path | TrialConfig,
    teacher: Any = None,
    student: Any = None,
    data: dict[str, Any] | None = None,
    config_path: str | Path = "train.yaml",
    resume: bool = False,
    tracking_uri: str | None = None,
) -> Any:
    """Full training from a config (e.g. an export), with in-memory objects as in :func:`search`."""
    from autogram.data import load_data
    from autogram.training import train as _train

    cfg = with_objects(config, teacher, student)
    loaded = load_data(cfg.data, data) if data is not None else None
    return _train(cfg, config_path, resume=resume, tracking_uri=tracking_uri, data=loaded)
