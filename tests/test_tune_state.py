"""Ray's saved state kept restorable: the bundle of the previous save, and its repair.

The end-to-end case (a real search killed, its state cut, resumed) is in test_search.py;
these check the file logic on the names Ray 2.60 uses, without starting Ray."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from autogram.study import tune_state

SESSION = "2026-12-02_03-00-00"


def _save(staging: Path, step: int) -> None:
    """One Ray save as Ray orders it: the experiment state, our hook, then the pickles."""
    (staging / f"experiment_state-{SESSION}.json").write_text(json.dumps({"trial_data": [], "step": step}))
    tune_state.keep_previous_save(str(staging), SESSION)
    (staging / f"searcher-state-{SESSION}.pkl").write_bytes(pickle.dumps({"step": step}))
    (staging / f"search_gen_state-{SESSION}.json").write_bytes(pickle.dumps({"counter": step}))


def _copy(staging: Path, storage: Path) -> None:
    for path in staging.iterdir():
        (storage / path.name).write_bytes(path.read_bytes())


@pytest.fixture
def folders(tmp_path: Path):
    staging, storage = tmp_path / "staging", tmp_path / "tune"
    staging.mkdir()
    storage.mkdir()
    tune_state.keep_in(storage)
    yield staging, storage
    tune_state.keep_in(None)


def test_the_bundle_holds_the_previous_save_whole_and_repair_puts_it_back(folders: tuple[Path, Path]) -> None:
    staging, storage = folders
    _save(staging, 1)
    assert not (storage / tune_state.BUNDLE).exists()  # nothing complete to keep yet
    _save(staging, 2)
    _copy(staging, storage)
    _save(staging, 3)  # the bundle now holds save 2: state, searcher and generator alike
    state = storage / f"experiment_state-{SESSION}.json"
    state.write_bytes(b'{"trial_da')  # the copy of save 3 cut by a kill
    assert tune_state.repair(storage)
    assert json.loads(state.read_text())["step"] == 2
    assert pickle.loads((storage / f"searcher-state-{SESSION}.pkl").read_bytes()) == {"step": 2}
    assert pickle.loads((storage / f"search_gen_state-{SESSION}.json").read_bytes()) == {"counter": 2}
    assert (storage / f"cut-experiment_state-{SESSION}.json").read_bytes() == b'{"trial_da'
    assert not tune_state.repair(storage)  # readable now: left as it is


def test_a_cut_pickle_is_repaired_too(folders: tuple[Path, Path]) -> None:
    staging, storage = folders
    for step in (1, 2, 3):
        _save(staging, step)
    _copy(staging, storage)
    (storage / f"search_gen_state-{SESSION}.json").write_bytes(b"")
    assert tune_state.repair(storage)
    assert pickle.loads((storage / f"search_gen_state-{SESSION}.json").read_bytes()) == {"counter": 2}


def test_a_readable_state_is_left_alone(folders: tuple[Path, Path]) -> None:
    staging, storage = folders
    for step in (1, 2):
        _save(staging, step)
    _copy(staging, storage)
    assert not tune_state.repair(storage)
    assert json.loads((storage / f"experiment_state-{SESSION}.json").read_text())["step"] == 2


def test_a_cut_state_without_a_bundle_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / f"experiment_state-{SESSION}.json").write_bytes(b"")
    with pytest.raises(tune_state.TuneStateError, match=f"experiment_state-{SESSION}.json: unreadable"):
        tune_state.repair(tmp_path)


def test_no_bundle_is_kept_outside_a_search(tmp_path: Path) -> None:
    tune_state.keep_in(None)
    (tmp_path / f"experiment_state-{SESSION}.json").write_text("{}")
    for _ in range(3):
        tune_state.keep_previous_save(str(tmp_path), SESSION)
    assert not list(tmp_path.rglob(tune_state.BUNDLE))
