"""--resume continues a search as it started: another config is refused, the trial count kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autogram.config import ConfigError, validate
from autogram.study.resume import same_search
from tests.conftest import tiny_raw


def _raw(tmp_path: Path) -> dict:
    raw = tiny_raw(tmp_path / "teachers")
    raw["search"] = {"trials": 8, "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "w_gram": 0.0}}
    return raw


def _started(tmp_path: Path, raw: dict) -> Path:
    """search.json as the driver writes it when the search starts."""
    spec = tmp_path / "runs" / "s" / "search.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"name": "s", "config": validate(raw).model_dump(mode="json")}))
    return spec


def test_a_resume_may_change_how_trials_run_and_keeps_the_trial_count_it_started_with(tmp_path: Path) -> None:
    spec = _started(tmp_path, _raw(tmp_path))
    again = _raw(tmp_path)
    # The README's main job runs `--trials 8` on a config of 12: its resume hint names no
    # --trials, and Ray's restored run has 8 (12 asked would never finish).
    again["search"].update(trials=12, concurrency=4, max_failures=3, experiment="other")
    again["name"] = "renamed"
    cfg = same_search(validate(again), spec, "s")
    assert cfg.search.trials == 8
    assert cfg.search.concurrency == 4  # how trials run is the resume's own choice
    assert same_search(validate(_raw(tmp_path)), tmp_path / "none.json", "s").search.trials == 8  # nothing recorded


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        (("train", "epochs"), 3, "train.epochs 2 there, 3 here"),
        (("search", "sampler"), "random", "search.sampler 'tpe' there, 'random' here"),
        (("search", "space", "w_gram"), 1.0, "search.space.w_gram 0.0 there, 1.0 here"),
        (("data", "builtin", "n_train"), 900, "data.builtin.n_train 600 there, 900 here"),
    ],
)
def test_a_resume_with_another_config_is_refused_naming_the_field(
    tmp_path: Path, field: tuple[str, ...], value: object, shown: str
) -> None:
    spec = _started(tmp_path, _raw(tmp_path))
    again = _raw(tmp_path)
    node = again
    for key in field[:-1]:
        node = node.setdefault(key, {})
    node[field[-1]] = value
    with pytest.raises(ConfigError) as info:
        same_search(validate(again), spec, "s")
    assert str(info.value).startswith(f"--resume: search 's' was started with another config: {shown}")
    assert "--warm-start s" in str(info.value)


def test_the_device_counts_on_a_resume_only_when_the_cost_is_seconds(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    spec = _started(tmp_path, raw)
    moved = {**_raw(tmp_path), "device": "auto"}
    same_search(validate(moved), spec, "s")
    raw["cost"] = moved["cost"] = "train_seconds"
    spec.write_text(json.dumps({"name": "s", "config": validate(raw).model_dump(mode="json")}))
    with pytest.raises(ConfigError, match=r"device 'cpu' there, 'auto' here"):
        same_search(validate(moved), spec, "s")
