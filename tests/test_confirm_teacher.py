"""`autogram confirm` resolves the search's teacher once, not once per retraining: its
retrainings read the teacher's cache through that one handle (on Ray, through its description
alone), with the same scores as a retraining that resolves its own teacher."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from autogram.config import validate
from autogram.confirm_runs import Job, _remote_score, load_for, score, shared_teacher
from tests.conftest import tiny_raw


def _jobs(teacher_cache: Path, cache: bool = True) -> list[Job]:
    base = tiny_raw(teacher_cache)
    base["teacher"]["cache"] = cache
    kd = {**base, "distill": {"w_kd": 1.0, "w_gram": 0.5, "w_xmodal": 0.0}}
    ce = {**base, "distill": {"w_kd": 0.0, "w_gram": 0.0, "w_xmodal": 0.0}}
    return [Job(1, 0, kd, "kd"), Job(1, 1, kd, "kd"), Job(0, 0, ce, "ce")]


def test_the_teacher_is_resolved_once_and_each_reading_row_gets_its_cache(teacher_cache: Path) -> None:
    jobs = _jobs(teacher_cache)
    shared = shared_teacher(jobs, load_for(validate(jobs[0].raw)))
    assert shared.handle.model is not None and shared.reads == {1: True, 0: False}
    assert set(shared.caches) == {1} and (shared.caches[1] / "manifest.json").is_file()

    handle, cache = shared.serial(jobs[0])
    assert handle is shared.handle and cache == shared.caches[1]
    # A Ray task gets the teacher's description, not its weights: the cache is all it reads.
    meta, where = shared.remote(jobs[1])
    assert meta.model is None and meta.identity == shared.handle.identity and meta.taps == shared.handle.taps
    assert where == str(shared.caches[1].resolve())
    meta, where = shared.remote(jobs[2])  # CE only: the teacher's taps, no cache
    assert meta.model is None and where is None


def test_rows_reading_the_same_cache_find_it_once(teacher_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Each find of a cache hashes every array of it (seconds per GB at scale): a front's rows,
    # which mostly share the search's one cache, must not each pay it, nor each log it.
    jobs = _jobs(teacher_cache)
    xmodal = {**jobs[0].raw, "distill": {"w_kd": 1.0, "w_gram": 0.0, "w_xmodal": 0.5}}
    jobs += [Job(2, 0, xmodal, "kd_xmodal"), Job(3, 0, {**jobs[0].raw}, "kd again")]
    data = load_for(validate(jobs[0].raw))
    shared_teacher(jobs, data)  # the cache built, if no test before built it
    with caplog.at_level(logging.INFO, logger="autogram"):
        shared = shared_teacher(jobs, data)
    assert shared.reads == {1: True, 2: True, 3: True, 0: False}
    assert shared.caches[1] == shared.caches[2] == shared.caches[3]
    assert caplog.text.count("teacher cache: reusing") == 1, caplog.text


def test_a_live_teacher_is_not_shipped_to_a_ray_task(teacher_cache: Path) -> None:
    jobs = _jobs(teacher_cache, cache=False)
    shared = shared_teacher(jobs, load_for(validate(jobs[0].raw)))
    assert shared.caches == {}
    assert shared.serial(jobs[0]) == (shared.handle, None)
    assert shared.remote(jobs[0]) == (None, None)  # the task loads the teacher itself


def test_shared_teacher_scores_equal_a_retraining_that_resolves_its_own(
    teacher_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = _jobs(teacher_cache)
    data = load_for(validate(jobs[0].raw))
    shared = shared_teacher(jobs, data)
    own = score(jobs[0].raw, jobs[0].seed, data, 1)
    assert score(jobs[0].raw, jobs[0].seed, data, 1, *shared.serial(jobs[0])) == own
    meta, where = shared.remote(jobs[0])
    assert _remote_score(jobs[0].raw, jobs[0].seed, 1, meta, where) == own
    # A cache folder this node cannot read (a cluster without shared storage): the task
    # resolves the teacher itself, with a warning, and scores the same.
    with caplog.at_level(logging.WARNING, logger="autogram"):
        again = _remote_score(jobs[0].raw, jobs[0].seed, 1, meta, str(teacher_cache / "elsewhere"))
    assert again == own
    assert "resolves its teacher itself" in caplog.text


WARMED = """
import json, pickle, sys
from autogram.confirm_ray import _warm_worker
from autogram.confirm_runs import _remote_score
_warm_worker()
before = set(sys.modules)
raw, seed, meta, where = pickle.loads(open(sys.argv[1], "rb").read())
_remote_score(raw, seed, 1, meta, where)
print(json.dumps(sorted(m for m in set(sys.modules) - before if not m.startswith("autogram"))))
"""


def test_after_a_workers_warm_up_its_first_retraining_imports_nothing_heavy(
    teacher_cache: Path, tmp_path: Path
) -> None:
    # On Ray each confirm slot's worker first runs _warm_worker while the driver prepares: it
    # must leave the retraining nothing of torch or numpy to import (about 3 s on a CPU), or the
    # first results wait for it again. A fresh process, as a new worker is.
    jobs = _jobs(teacher_cache)
    shared = shared_teacher(jobs, load_for(validate(jobs[0].raw)))
    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((jobs[0].raw, jobs[0].seed, *shared.remote(jobs[0]))))
    proc = subprocess.run([sys.executable, "-c", WARMED, str(job)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_same_data_refuses_a_rewritten_file_and_warns_for_data_the_python_api_gave(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    from autogram.config import ConfigError
    from autogram.confirm_runs import same_data

    spec = {"name": "s", "data_fingerprint": "a" * 64, "data_source": "mm.npz"}
    here = SimpleNamespace(source="mm.npz", fingerprint="a" * 64)
    assert same_data(here, spec) is here
    assert same_data(here, {"name": "older"}) is here  # a search.json from before the check: nothing to compare
    rewritten = SimpleNamespace(source="mm.npz", fingerprint="b" * 64)
    with pytest.raises(ConfigError, match=r"^mm\.npz: not the data search 's' ran on \(fingerprint a{16} there, b{16}"):
        same_data(rewritten, spec)
    given = {**spec, "data_source": "python data"}
    with caplog.at_level(logging.WARNING, logger="autogram"):
        assert same_data(rewritten, given) is rewritten
    assert "search s ran on python data (fingerprint aaaaaaaaaaaaaaaa); this confirm retrains on mm.npz" in caplog.text
