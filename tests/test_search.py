"""The search end to end: real local Ray, real Optuna RDB storage, the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autogram.report.pareto import pareto_front
from tests.conftest import ROOT, ray_trials, run_cli, start_cli, tiny_raw

pytestmark = pytest.mark.slow
OBJECTIVES = ["accuracy", "robustness", "cost"]
DIRECTIONS = ["maximize", "maximize", "minimize"]


def _config(tmp_path: Path, teacher_cache: Path, **search: object) -> Path:
    raw = tiny_raw(teacher_cache)
    raw["search"] = {"trials": 4, "concurrency": 2, **search}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _search(
    config: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "s" / "front.json").read_text())
    return proc, front


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'runs' / 's' / 'optuna.db'}")


def _check_front_flags(front: dict) -> None:
    """`pareto` is set on exactly the non-dominated ok trials, recomputed here."""
    ok = [t for t in front["trials"] if t["status"] == "ok"]
    rows = [[t["values"][n] for n in OBJECTIVES] for t in ok]
    expected = {ok[i]["number"] for i in pareto_front(rows, DIRECTIONS)}
    assert {t["number"] for t in front["trials"] if t["pareto"]} == expected
    assert all(t["status"] == "ok" for t in front["trials"] if t["pareto"])


def test_search_writes_front_and_a_loadable_study(tmp_path: Path, teacher_cache: Path) -> None:
    config = _config(tmp_path, teacher_cache, trials=5)
    # The search's own temporary files go to a folder of this test's (Ray keeps /tmp: its
    # socket paths must stay short), so what it leaves behind there can be checked.
    scratch = Path(tempfile.mkdtemp(prefix="ag-", dir="/tmp"))
    try:
        proc, front = _search(config, tmp_path, env={"TMPDIR": str(scratch), "RAY_TMPDIR": "/tmp"})
        # The MLflow artifacts staged for upload are removed (torch keeps its compile cache).
        left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor")]
        assert not left, left
    finally:
        shutil.rmtree(scratch)
    assert "Pareto front of s" in proc.stdout and "done 5/5" in proc.stderr
    assert front["name"] == "s"
    assert front["objectives"] == [{"name": n, "direction": d} for n, d in zip(OBJECTIVES, DIRECTIONS, strict=True)]
    assert len(front["trials"]) == 5 and len(front["reference_point"]) == 3
    assert front["hypervolume"] > 0
    assert all(set(t) >= {"number", "status", "params", "values", "pareto"} for t in front["trials"])
    _check_front_flags(front)

    # The log a user reads: trials named by Optuna's number (as in the front and MLflow), the
    # best values with the trial they come from, no traceback and no warning needing no action.
    log = proc.stderr
    assert "is illegal" not in log and "Traceback" not in log, log
    assert not list((tmp_path / "runs" / "s" / "tune").rglob("events.out.tfevents*"))  # no TensorBoard logger
    assert not [line for line in log.splitlines() if " WARNING " in line], log
    assert log.count("token authentication is on") <= 1 and "Token authentication is enabled" not in log
    progress = [line for line in log.splitlines() if re.match(r"\[autogram\] trial \d+ ok ", line)]
    assert sorted(int(line.split()[2]) for line in progress) == [t["number"] for t in front["trials"]]
    best = re.findall(r"(accuracy|robustness|cost) [\d.e+-]+ \(trial (\d+)\)", progress[-1])
    by_objective = {name: int(number) for name, number in best}
    values = {t["number"]: t["values"] for t in front["trials"]}
    assert values[by_objective["accuracy"]]["accuracy"] == max(v["accuracy"] for v in values.values())
    assert values[by_objective["cost"]]["cost"] == min(v["cost"] for v in values.values())

    study = _study(tmp_path)
    assert len(ray_trials(study)) == 5
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    candidates = json.loads((tmp_path / "runs" / "s" / "search.json").read_text())["candidates"]
    assert len(candidates) == 6
    for trial in study.trials:
        pair_params = {k: v for k, v in trial.params.items() if k.startswith("pair:")}
        if trial.params.get("use_w_gram"):
            assert sorted(pair_params) == sorted(f"pair:{c}" for c in candidates)
            assert set(pair_params.values()) <= {0, 1}
    # The same search directory is not silently reused.
    again = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", cwd=tmp_path)
    assert again.returncode == 2 and "use --resume or another --name" in again.stderr


def test_early_stopped_trials_are_pruned_and_never_on_the_front(tmp_path: Path, teacher_cache: Path) -> None:
    config = _config(
        tmp_path,
        teacher_cache,
        trials=8,
        early_stopping={"metric": "loss", "mode": "min", "grace_period": 1, "reduction_factor": 3},
    )
    raw = yaml.safe_load(config.read_text())
    raw["train"]["epochs"] = 4
    config.write_text(yaml.safe_dump(raw))
    _, front = _search(config, tmp_path)
    pruned = [t for t in front["trials"] if t["status"] == "pruned"]
    assert pruned, "ASHA stopped no trial: the test proves nothing"
    assert not any(t["pareto"] for t in pruned)
    study = _study(tmp_path)
    states = {t.number: t.state for t in study.trials}
    assert all(states[t["number"]] == TrialState.PRUNED for t in pruned)
    best = {t.number for t in study.best_trials}
    assert not best & {t["number"] for t in pruned}
    _check_front_flags(front)


def test_diverged_trials_are_recorded_and_kept_off_the_front(tmp_path: Path, teacher_cache: Path) -> None:
    # A Gram weight of 1e42 overflows float32: every trial that switches the Gram term on diverges.
    space = {"w_gram": {"low": 1e42, "high": 1e43, "log": True, "optional": True}}
    config = _config(tmp_path, teacher_cache, trials=6, space=space)
    proc, front = _search(config, tmp_path)
    diverged = [t for t in front["trials"] if t["status"] == "diverged"]
    assert diverged and "non-finite loss" in diverged[0]["reason"]
    assert all(t["params"]["use_w_gram"] for t in diverged)
    assert any(t["status"] == "ok" for t in front["trials"])
    assert not any(t["pareto"] for t in diverged)
    study = _study(tmp_path)
    for trial in study.trials:
        if trial.number in {t["number"] for t in diverged}:
            assert trial.user_attrs["status"] == "diverged" and trial.constraints["valid"] > 0
    assert not {t.number for t in study.best_trials} & {t["number"] for t in diverged}
    _check_front_flags(front)


def test_constraint_keeps_infeasible_trials_off_the_front(tmp_path: Path, teacher_cache: Path) -> None:
    limit = 3.4  # GFLOP: between the cheapest and the dearest tiny trials
    config = _config(tmp_path, teacher_cache, trials=6, constraints=[f"cost <= {limit}"])
    _, front = _search(config, tmp_path)
    trained = [t for t in front["trials"] if t["values"] and t["status"] in ("ok", "infeasible")]
    over = [t for t in trained if t["values"]["cost"] > limit]
    under = [t for t in trained if t["values"]["cost"] <= limit]
    assert over and under, "the limit must split the trials for the test to mean anything"
    assert all(t["status"] == "infeasible" and not t["pareto"] for t in over)
    assert any(t["pareto"] for t in under)
    study = _study(tmp_path)
    assert all(t.values[2] <= limit for t in study.best_trials)
    _check_front_flags(front)


def test_a_layer_subset_out_of_bounds_is_drawn_again_not_given_a_trial(tmp_path: Path, teacher_cache: Path) -> None:
    # The Gram term always on and at most one of the candidate pairs: most random subsets break
    # the bound. Each Ray trial still trains; the broken draws are in the study only.
    # (A fixed modality dropout, no parameter of any trial, is in front.json's `fixed` and so
    # in the headline's words for the best trials.)
    space = {"w_gram": 100.0, "max_pairs": 1, "modality_dropout": 0.2}
    config = _config(tmp_path, teacher_cache, trials=3, baselines=[], sampler="random", space=space)
    proc, front = _search(config, tmp_path)
    assert front["fixed"]["modality_dropout"] == 0.2 and "1 pair, modality dropout 0.20)" in proc.stdout
    assert [t["status"] for t in front["trials"]] == ["ok"] * 3
    assert all(t["pairs_aligned"] == 1 for t in front["trials"])
    study = _study(tmp_path)
    redrawn = [t for t in study.trials if t.user_attrs.get("redrawn")]
    assert len(redrawn) == front["redrawn"] > 0 and len(study.trials) == 3 + len(redrawn)
    assert all(t.user_attrs["status"] == "infeasible" and t.constraints["valid"] == 1.0 for t in redrawn)
    assert f"; {len(redrawn)} draw" in proc.stdout and "drawn again, untrained" in proc.stdout
    assert "done 3/3" in proc.stderr and "failed 0" in proc.stderr
    # MLflow holds one run per trial that ran, as front.json lists them.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autogram").experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.metrics["draws_redrawn"] == len(redrawn) and parent.data.metrics["trials_ok"] == 3
    # `autogram front` reads the same back from MLflow.
    readback = run_cli("front", "s", "--json", cwd=tmp_path)
    assert readback.returncode == 0, readback.stderr
    assert json.loads(readback.stdout)["redrawn"] == len(redrawn)


def _events(directory: Path) -> list[dict]:
    path = directory / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_resume_after_sigkill_finishes_without_rerunning_finished_trials(tmp_path: Path, teacher_cache: Path) -> None:
    config = _config(tmp_path, teacher_cache, trials=6)
    directory = tmp_path / "runs" / "s"
    driver = start_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and sum(e["event"] == "complete" for e in _events(directory)) < 2:
        time.sleep(0.2)
    time.sleep(0.5)  # let the controller save its state after that completion
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _events(directory)
    finished_before = {e["trial"] for e in before if e["event"] == "complete"}
    assert len(finished_before) >= 2 and not (directory / "front.json").exists()
    assert len(finished_before) < 6, "the driver finished before it was killed: nothing to resume"

    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = _events(directory)
    completes = [e["trial"] for e in events if e["event"] == "complete"]
    assert len(completes) == len(set(completes)) == 6, completes
    after = events[len(before) :]
    assert not {e["trial"] for e in after if e["event"] == "start"} & finished_before, "a finished trial ran again"
    study = _study(tmp_path)
    complete = [t for t in ray_trials(study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({t.user_attrs["ray_trial_id"] for t in complete}) == 6
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    front = json.loads((directory / "front.json").read_text())
    # Every completed trial trained (a sampled subset may be infeasible), and each baseline
    # enqueued before the kill is one trial across the two drivers, never two.
    finished = [t for t in front["trials"] if t["status"] in ("ok", "infeasible")]
    assert len(finished) == 6, [(t["number"], t["status"], t["reason"]) for t in front["trials"]]
    baselines = [t["baseline"] for t in front["trials"] if t.get("baseline")]
    assert baselines == ["ce", "kd", "kd_gram_all", "kd_xmodal"]
    # MLflow after the resume: one parent, one child per trial, nothing left RUNNING.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autogram").experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 1 + len(children)
    assert sorted(r.data.tags["ray_trial_id"] for r in children) == sorted(set(completes))
    assert not [r for r in runs if r.info.status == "RUNNING"]


def _kill_mid_trial(tmp_path: Path, teacher_cache: Path) -> tuple[Path, Path, list[dict], str]:
    """A 3-trial search (one at a time, trials of several seconds) SIGKILLed while its second
    trial trains; returns (config, search folder, events so far, the cut trial's Ray id). Three
    trials are enough: one finished before the kill, one cut by it, one never started."""
    config = _config(tmp_path, teacher_cache, trials=3, concurrency=1)
    raw = yaml.safe_load(config.read_text())
    raw["train"]["epochs"] = 40
    config.write_text(yaml.safe_dump(raw))
    directory = tmp_path / "runs" / "s"
    driver = start_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", cwd=tmp_path)
    deadline = time.time() + 300
    running: set[str] = set()
    done: set[str] = set()
    while time.time() < deadline and not (running and done):  # one finished, the next training
        events = _events(directory)
        done = {e["trial"] for e in events if e["event"] == "complete"}
        running = {e["trial"] for e in events if e["event"] == "start"} - done
        time.sleep(0.2)
    time.sleep(1.0)  # the trial is training, and Ray has saved it as running
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _events(directory)
    started = {e["trial"] for e in before if e["event"] == "start"}
    cut = started - {e["trial"] for e in before if e["event"] == "complete"}
    assert len(cut) == 1, before
    return config, directory, before, cut.pop()


def _resume(config: Path, tmp_path: Path) -> None:
    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_trial_told_before_the_kill_but_not_saved_by_ray_is_not_trained_or_told_again(
    tmp_path: Path, teacher_cache: Path
) -> None:
    """One race behind a flaky resume: a trial's result reached Optuna, then the driver died
    before Ray saved the trial as finished, so the resumed Ray restarts it. Reproduced on
    purpose: kill the driver mid-trial, tell that trial's result to the study by hand, resume."""
    config, directory, before, ray_id = _kill_mid_trial(tmp_path, teacher_cache)
    study = _study(tmp_path)
    (told,) = [t for t in study.trials if t.user_attrs.get("ray_trial_id") == ray_id]
    assert told.state == TrialState.RUNNING
    trial = optuna.Trial(study, told._trial_id)
    trial.set_user_attr("status", "ok")
    trial.set_constraint("valid", 0.0)
    study.tell(trial, [0.123, 0.0456, 7.89])

    _resume(config, tmp_path)
    after = _events(directory)[len(before) :]
    assert ray_id not in {e["trial"] for e in after}, "the told trial was started (or reported) again"
    study = _study(tmp_path)
    complete = [t for t in ray_trials(study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len({t.user_attrs["ray_trial_id"] for t in complete}) == 3
    assert study.trials[told.number].values == [0.123, 0.0456, 7.89]  # the told result stands
    front = json.loads((directory / "front.json").read_text())
    entry = next(t for t in front["trials"] if t["number"] == told.number)
    assert entry["status"] == "ok" and entry["values"]["accuracy"] == 0.123


def test_a_trial_started_but_never_saved_by_ray_is_run_again_as_the_same_point(
    tmp_path: Path, teacher_cache: Path
) -> None:
    """The other race: the driver started a trial (Optuna asked it, MLflow opened its run) and
    died before Ray saved it. Reproduced by taking the cut trial out of Ray's saved state. The
    resume runs the same point again, the front and MLflow list it once, and a baseline keeps
    its verdict."""
    import pickle

    from mlflow.tracking import MlflowClient
    from ray import cloudpickle

    from autogram.study import tune_state

    config, directory, before, ray_id = _kill_mid_trial(tmp_path, teacher_cache)
    # Make Ray's three saved files what a save taken just before that trial was created holds
    # (Ray saves them together, so after the real race all three lack the trial). Their format
    # is Ray 2.60's own: if it changes, these asserts fail loudly rather than test nothing.
    tune = directory / "tune"
    tune_state.repair(tune)  # the kill may have cut a file mid-write: then the save before it
    state = tune_state.newest_state(tune)
    assert state is not None
    saved = json.loads(state.read_text())
    kept = [e for e in saved["trial_data"] if json.loads(e[0] if isinstance(e, list) else e)["trial_id"] != ray_id]
    generator_file = sorted(tune.glob("search_gen_state-*.json"))[-1]
    generator = pickle.loads(generator_file.read_bytes())
    limiter = generator["name:ConcurrencyLimiter"]
    searcher_file = sorted(tune.glob("searcher-state-*.pkl"))[-1]
    searcher = pickle.loads(searcher_file.read_bytes())
    if len(kept) < len(saved["trial_data"]):  # else the save the repair went back to lacks it already
        assert len(kept) == len(saved["trial_data"]) - 1
        state.write_text(json.dumps({**saved, "trial_data": kept}))
        assert ray_id in limiter["live_trials"]
        limiter["live_trials"].discard(ray_id)
        limiter["num_unfinished_live_trials"] -= 1
        generator["counter"] -= 1
        generator_file.write_bytes(cloudpickle.dumps(generator))  # it holds a lambda, as Ray saved it
        del searcher["_ot_trials"][ray_id]
        searcher_file.write_bytes(cloudpickle.dumps(searcher))
    assert ray_id not in limiter["live_trials"] and ray_id not in searcher["_ot_trials"]
    (lost,) = [t for t in _study(tmp_path).trials if t.user_attrs.get("ray_trial_id") == ray_id]

    _resume(config, tmp_path)
    study = _study(tmp_path)
    complete = [t for t in ray_trials(study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len({t.user_attrs["ray_trial_id"] for t in complete}) == 3
    (rerun,) = [t for t in complete if t.user_attrs.get("replaces") == lost.number]
    assert rerun.params == lost.params and rerun.user_attrs.get("baseline") == lost.user_attrs.get("baseline")
    front = json.loads((directory / "front.json").read_text())
    assert lost.number not in {t["number"] for t in front["trials"]}
    assert sorted(t["number"] for t in front["trials"]) == sorted(t.number for t in complete)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autogram").experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["ray_trial_id"] for r in children) == sorted(
        t.user_attrs["ray_trial_id"] for t in complete
    )
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_kill_that_cuts_rays_saved_state_mid_write_resumes_from_the_save_before(
    tmp_path: Path, teacher_cache: Path
) -> None:
    """Ray writes its experiment state in place and copies it to the search folder file by
    file: a kill mid-write left an empty ``experiment_state-*.json`` (seen in CI), which Ray
    cannot restore. The resume goes back to the save before it, kept whole by autogram, and
    the search still ends with each point trained and told once."""
    config, directory, _, _ = _kill_mid_trial(tmp_path, teacher_cache)
    tune = directory / "tune"
    state = sorted(tune.glob("experiment_state-*.json"))[-1]
    state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])  # cut mid-write
    searcher = sorted(tune.glob("searcher-state-*.pkl"))[-1]
    searcher.write_bytes(b"")  # and the copy of the next file not begun
    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from the save before it" in proc.stderr
    study = _study(tmp_path)
    complete = [t for t in ray_trials(study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len({t.user_attrs["ray_trial_id"] for t in complete}) == 3
    front = json.loads((directory / "front.json").read_text())
    assert sorted(t["number"] for t in front["trials"] if t["status"] in ("ok", "infeasible")) == sorted(
        t.number for t in complete
    )
    assert [t["baseline"] for t in front["trials"] if t.get("baseline")] == ["ce", "kd", "kd_gram_all"]


@pytest.mark.parametrize("target", ["driver", "group"])
def test_sigint_mid_search_exits_130_and_the_resume_keeps_every_result_once(
    target: str, tmp_path: Path, teacher_cache: Path
) -> None:
    """Ctrl-C (to the driver alone, or to its whole process group as a terminal sends it) stops
    the search with exit 130 and our resume hint; trials cut by it are rerun by ``--resume``
    and told to Optuna once, so the study, front.json and MLflow agree."""
    from mlflow.tracking import MlflowClient

    config = _config(tmp_path, teacher_cache, trials=5)
    directory = tmp_path / "runs" / "s"
    args = ("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s")
    driver = start_cli(*args, cwd=tmp_path, capture=True)
    deadline = time.time() + 300
    while time.time() < deadline and sum(e["event"] == "complete" for e in _events(directory)) < 1:
        time.sleep(0.1)
    if target == "driver":
        os.kill(driver.pid, signal.SIGINT)
    else:
        os.killpg(driver.pid, signal.SIGINT)
    out, err = driver.communicate(timeout=300)
    done_before = sum(e["event"] == "complete" for e in _events(directory))
    assert done_before < 5, "the search finished before the interrupt: nothing to test"
    assert driver.returncode == 130, err[-3000:]
    assert "--resume" in err and "Tuner.restore" not in err, err[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("autogram").experiment_id
    parents = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["KILLED"]

    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--name", "s", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path)
    complete = [t for t in ray_trials(study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and len({t.user_attrs["ray_trial_id"] for t in complete}) == 5
    front = json.loads((directory / "front.json").read_text())
    statuses = {t["number"]: t["status"] for t in front["trials"]}
    assert sorted(n for n, st in statuses.items() if st in ("ok", "infeasible")) == sorted(t.number for t in complete)
    assert [t["baseline"] for t in front["trials"] if t.get("baseline")] == ["ce", "kd", "kd_gram_all", "kd_xmodal"]
    assert all(t["status"] in ("ok", "infeasible") for t in front["trials"] if t.get("baseline")), statuses
    runs = client.search_runs([experiment], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("search.space.w_kd={low: 5, high: 1}", "search.space.w_kd: low (5) > high (1)"),
        ("search.sampler=cmaes", "search.sampler"),
        ("search.space.min_pairs=7", "search.space.min_pairs: 7 exceeds the 6 candidate pairs"),
        ("search.space.pairs=[image.block1:image.layer9]", "search.space.pairs: unknown teacher tap 'image.layer9'"),
        ("search.objectives=[{name: speed, direction: maximize}]", "search.objectives.0.name"),
        ("search.constraints=[latency <= 3]", "search.constraints"),
    ],
)
def test_bad_search_spaces_exit_2_before_ray_starts(
    override: str, expected: str, tmp_path: Path, teacher_cache: Path
) -> None:
    config = _config(tmp_path, teacher_cache)
    started = time.perf_counter()
    proc = run_cli("search", str(config), "--out", str(tmp_path / "runs"), "--set", override, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("autogram: error:") and expected in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written for a bad space"
    assert time.perf_counter() - started < 30


def test_resume_of_an_unknown_search_is_an_error(tmp_path: Path, teacher_cache: Path) -> None:
    proc = run_cli(
        "search",
        str(_config(tmp_path, teacher_cache)),
        "--out",
        str(tmp_path / "runs"),
        "--name",
        "nothing",
        "--resume",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "no search to resume" in proc.stderr


def test_quickstart_space_is_valid() -> None:
    proc = run_cli("layers", str(ROOT / "search_spaces" / "quickstart.yaml"))
    assert proc.returncode == 0
