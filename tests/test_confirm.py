"""`autogram confirm`: chosen points and every baseline, N seeds, scored on the test split."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import mlflow
import pytest

from autogram.config import validate
from autogram.confirm import judge
from autogram.confirm_runs import trial_threads
from autogram.export import trial_training_config
from autogram.trial import run_trial
from tests.conftest import run_cli, start_cli, tiny_search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, teacher_cache: Path) -> Path:
    """A finished tiny search with its 4 baselines and one sampled trial."""
    tmp_path = tmp_path_factory.mktemp("confirm")
    tiny_search(tmp_path, teacher_cache, "c", 5, 1, "--out", "runs")
    return tmp_path


def test_confirm_writes_the_table_with_n_seeds_on_the_test_split_and_logs_it(searched: Path) -> None:
    front = json.loads((searched / "runs" / "c" / "front.json").read_text())
    sampled = [t["number"] for t in front["trials"] if not t.get("baseline") and t["status"] == "ok"]
    points = ",".join(["knee", *map(str, sampled)])
    proc = run_cli("confirm", "runs/c", "--seeds", "2", "--points", points, cwd=searched)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Confirmed on the test split, 2 seeds" in proc.stdout and "| ce (trial 0) |" in proc.stdout
    # The search's teacher is read and verified once for the whole confirm, not per retraining.
    assert proc.stderr.count("teacher: reusing") == 1, proc.stderr[-3000:]
    result = json.loads((searched / "runs" / "c" / "confirm" / "confirm.json").read_text())
    assert result["split"] == "test" and result["seeds"] == 2
    labels = [r["label"] for r in result["rows"]]
    assert labels[-4:] == ["ce (trial 0)", "kd (trial 1)", "kd_gram_all (trial 2)", "kd_xmodal (trial 3)"]
    assert all(f"trial {n}" in labels for n in sampled)
    for row in result["rows"]:
        assert len(row["runs"]) == 2
        assert {"accuracy", "robustness", "cost", "missing:image", "missing:tokens"} <= set(row["summary"])
    # Each point (a sampled trial, or a baseline the knee picked) is judged against every
    # baseline but itself.
    points = [r for r in result["rows"] if not r["baseline"] or r["chosen"]]
    assert len(result["verdict"]) == sum(4 - bool(r["baseline"]) for r in points)
    # What the teacher adds: ce (and a sampled trial with every teacher term off) against the rest.
    flags = {r["label"]: r["reads_teacher"] for r in result["rows"]}
    assert flags["ce (trial 0)"] is False and flags["kd (trial 1)"] is flags["kd_xmodal (trial 3)"] is True
    adds = result["teacher_adds"]
    assert {"accuracy", "robustness", "missing:image", "missing:tokens"} <= set(adds)
    for metric, item in adds.items():
        assert flags[item["with"]] is True and flags[item["without"]] is False
        best = max(r["summary"][metric]["mean"] for r in result["rows"] if r["reads_teacher"])
        assert item["delta"] == pytest.approx(
            best - max(r["summary"][metric]["mean"] for r in result["rows"] if not r["reads_teacher"])
        )
    assert "What the teacher adds" in proc.stdout

    # The rows are the trials' own configs, scored on the test split: redo one seed here.
    spec = json.loads((searched / "runs" / "c" / "search.json").read_text())
    ce = next(t for t in front["trials"] if t.get("baseline") == "ce")
    raw = {**trial_training_config(spec, ce), "seed": 1}
    scores = {}
    for split in ("test", "val"):
        with trial_threads(1):  # the search's trials ran with 1 CPU thread each, and so does confirm
            again = run_trial(validate(raw), eval_split=split)
        scores[split] = {
            "accuracy": again.accuracy,
            "balanced_accuracy": again.balanced_accuracy,
            "robustness": again.robustness,
            "cost": again.cost,
        }
        scores[split].update(again.detail)  # missing:<modality> and auc:<modality>
    assert scores["test"] != scores["val"]  # the check below can tell the two splits apart
    assert result["rows"][-4]["runs"][1] == pytest.approx(scores["test"], abs=1e-9)

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{searched / 'mlflow.db'}")
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("c").experiment_id])
        if r.data.tags.get("autogram.kind") == "search"
    )
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "confirm")}
    assert logged == {"confirm/confirm.json", "confirm/confirm.md", "confirm/confirm.png"}


def test_confirm_by_name_judges_chosen_baselines_and_leaves_no_staging_folder(searched: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="ag-", dir="/tmp"))
    try:
        proc = run_cli("confirm", "c", "--seeds", "1", "--points", "0,1", cwd=searched, env={"TMPDIR": str(scratch)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        # The downloaded search spec and the files staged for MLflow are removed (torch keeps
        # its compile cache there by design).
        left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor")]
        assert not left, left
    finally:
        shutil.rmtree(scratch)
    assert "confirm: logged under confirm/ on MLflow run" in proc.stderr
    # Both points are baselines (CE and KD): the pair is judged once (not "kd beats ce" and then
    # "ce does not beat kd"), and no row against itself.
    judged = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("- ") and (" beats " in line or " does not beat " in line)
    ]
    pair = [line for line in judged if "kd (trial 1)" in line and "ce (trial 0)" in line]
    assert len(pair) == 1, proc.stdout
    assert not any(line.count("ce (trial 0)") > 1 or line.count("kd (trial 1)") > 1 for line in judged)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["runs/c", "--seeds", "0"], "--seeds 0: needs at least 1 seed"),
        (["runs/c", "--seeds", "two"], "--seeds 'two'"),
        (["runs/c", "--points", "knee,99"], "--points '99': expected knee, front or a trial number of 'c'"),
        (["no-such-search"], "no-such-search"),
    ],
)
def test_bad_confirm_input_is_one_line_and_writes_nothing(searched: Path, args: list[str], expected: str) -> None:
    before = sorted(p.name for p in (searched / "runs" / "c").iterdir())
    proc = run_cli("confirm", *args, cwd=searched)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert sorted(p.name for p in (searched / "runs" / "c").iterdir()) == before


def test_a_teacher_checkpoint_that_is_gone_is_one_line_before_ray_starts(searched: Path, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    shutil.copytree(searched / "runs" / "c", folder, ignore=shutil.ignore_patterns("confirm*"))
    spec = json.loads((folder / "search.json").read_text())
    gone = tmp_path / "moved" / Path(spec["teacher"]).name
    (folder / "search.json").write_text(json.dumps({**spec, "teacher": str(gone)}))
    for concurrency in ("1", "2"):
        proc = run_cli("confirm", str(folder), "--concurrency", concurrency, cwd=searched)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()  # on Ray, Ray's token-auth line came first
        assert lines == [
            f"autogram: error: {gone}: the search's teacher checkpoint (search.json's teacher) is not "
            "there: moved, deleted, or a relative path from another working directory?"
        ], proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (searched / "runs" / "c").iterdir() if not p.name.startswith("confirm")
    )


def test_a_confirm_on_other_data_than_the_search_ran_on_is_refused(searched: Path, tmp_path: Path) -> None:
    """The search records its data's fingerprint; a confirm whose data differs (a file rewritten
    since) would retrain the points on other data: one line, before any retraining or Ray task."""
    from autogram.data import load_data

    spec = json.loads((searched / "runs" / "c" / "search.json").read_text())
    data = load_data(validate(spec["config"]).data)
    assert (spec["data_fingerprint"], spec["data_source"]) == (data.fingerprint, data.source)
    folder = tmp_path / "c"
    shutil.copytree(searched / "runs" / "c", folder, ignore=shutil.ignore_patterns("confirm*"))
    then = "0123456789abcdef" * 4  # as if the search had read other data
    (folder / "search.json").write_text(json.dumps({**spec, "data_fingerprint": then}))
    for concurrency in ("1", "2"):
        proc = run_cli("confirm", str(folder), "--seeds", "1", "--concurrency", concurrency, cwd=searched)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"not the data search 'c' ran on (fingerprint {then[:16]} there, " in proc.stderr
        assert "confirm: " not in proc.stderr  # no retraining started
        assert proc.stderr.strip().splitlines()[-1].startswith("autogram: error: builtin: not the data search")
    assert not (folder / "confirm").exists() and not (folder / "confirm-runs.jsonl").exists()


def test_seeds_past_the_largest_seed_are_one_line_naming_seeds(searched: Path, tmp_path: Path) -> None:
    """A search seeded near 2**32: ``--seeds 3`` retrains with seed + 1 and seed + 2. That was
    ``<config>: seed: Input should be less than 4294967296 (got 4294967296)``, a value the user
    never wrote; now the option is named with how many seeds fit, before Ray or a retraining."""
    folder = tmp_path / "c"
    shutil.copytree(searched / "runs" / "c", folder, ignore=shutil.ignore_patterns("confirm*"))
    spec = json.loads((folder / "search.json").read_text())
    spec["config"]["seed"] = 2**32 - 2
    (folder / "search.json").write_text(json.dumps(spec))
    expected = (
        "autogram: error: --seeds 3: the search's seed 4294967294 plus 2 passes the largest seed, "
        "4294967295; use --seeds 2 or fewer"
    )
    for args in (["--concurrency", "1"], ["--concurrency", "2"], ["--ablate", "knee"]):
        proc = run_cli("confirm", str(folder), "--seeds", "3", *args, cwd=searched)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines() == [expected], proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (searched / "runs" / "c").iterdir() if not p.name.startswith("confirm")
    )


def test_a_resume_with_every_retraining_kept_needs_no_teacher(searched: Path, tmp_path: Path) -> None:
    # The early check of the teacher's checkpoint must not refuse a resume that has nothing to run.
    from autogram.confirm import _rows_and_jobs, choose_points

    folder = tmp_path / "c"
    shutil.copytree(searched / "runs" / "c", folder, ignore=shutil.ignore_patterns("confirm*"))
    spec = json.loads((folder / "search.json").read_text())
    teacher = tmp_path / Path(spec["teacher"]).name
    shutil.copy(spec["teacher"], teacher)
    spec = {**spec, "teacher": str(teacher)}
    (folder / "search.json").write_text(json.dumps(spec))
    args = ["confirm", str(folder), "--seeds", "1", "--points", "knee", "--json"]
    first = run_cli(*args, cwd=searched)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    document = json.loads((folder / "front.json").read_text())
    _, jobs = _rows_and_jobs(document, spec, choose_points(document, "knee"), 1)
    scores = {row["trial"]: row["runs"][0] for row in result["rows"]}
    lines = [{"key": job.key, "fingerprint": job.fingerprint, "scores": scores[job.trial]} for job in jobs]
    ledger = folder / "confirm-runs.jsonl"
    teacher.unlink()
    # One retraining left: it needs the teacher, which is one line before it starts; nothing kept is lost.
    ledger.write_text("".join(json.dumps(line) + "\n" for line in lines[:-1]))
    short = run_cli(*args, "--resume", cwd=searched)
    assert short.returncode == 2 and "teacher checkpoint" in short.stderr, short.stderr[-3000:]
    assert len(short.stderr.strip().splitlines()) == 1, short.stderr
    assert len(ledger.read_text().splitlines()) == len(lines) - 1
    ledger.write_text("".join(json.dumps(line) + "\n" for line in lines))
    again = run_cli(*args, "--resume", cwd=searched)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["rows"] == result["rows"]


def test_a_trial_number_no_trial_has_is_refused_with_the_numbers_there_are() -> None:
    # Draws out of the pair bounds take numbers of their own and are never trained: 3 and 5
    # here. The message lists the numbers that exist, not a range that includes those two.
    from autogram.config import ConfigError
    from autogram.confirm import choose_points

    trials = [{"number": n, "status": "ok", "pareto": n == 4} for n in (0, 1, 2, 4, 6, 7)]
    document = {"name": "s", "trials": trials}
    assert [t["number"] for t in choose_points(document, "front,6")] == [4, 6]
    with pytest.raises(ConfigError) as refused:
        choose_points(document, "5")
    assert str(refused.value) == "--points '5': expected knee, front or a trial number of 's' (0-2, 4, 6-7)"
    with pytest.raises(ConfigError, match=r"^--ablate '5': expected knee"):  # the option the user typed
        choose_points(document, "5", "--ablate")


def test_a_point_beats_a_baseline_only_beyond_the_seed_spread() -> None:
    def row(label: str, baseline: str | None, acc: tuple[float, float], rob: tuple[float, float]) -> dict:
        summary = {
            "accuracy": {"mean": acc[0], "std": acc[1]},
            "robustness": {"mean": rob[0], "std": rob[1]},
            "cost": {"mean": 10.0, "std": 0.0},
        }
        return {"label": label, "baseline": baseline, "summary": summary}

    rows = [
        row("trial 7", None, (0.95, 0.01), (0.60, 0.01)),
        row("ce (trial 0)", "ce", (0.94, 0.01), (0.50, 0.01)),  # robustness +0.10 > 0.02 spread
        row("kd (trial 1)", "kd", (0.94, 0.02), (0.59, 0.02)),  # +0.01 / +0.01: within spread
        row("kd_xmodal (trial 3)", "kd_xmodal", (0.97, 0.01), (0.50, 0.01)),  # worse accuracy: no
    ]
    verdicts = {v["baseline"]: v for v in judge(rows)}
    assert verdicts["ce (trial 0)"]["beats"] and verdicts["ce (trial 0)"]["deltas"]["robustness"]["beyond_spread"]
    assert not verdicts["kd (trial 1)"]["beats"]
    assert not verdicts["kd_xmodal (trial 3)"]["beats"]

    # Two baselines chosen as front points are judged once, in the direction that says who wins;
    # the printed verdict marks only the differences beyond the spread.
    chosen = [
        row("kd (trial 1)", "kd", (0.80, 0.01), (0.60, 0.01)),
        row("ce (trial 0)", "ce", (0.50, 0.01), (0.55, 0.1)),
    ]
    for r in chosen:
        r["chosen"] = True
    once = judge(chosen)
    assert [(v["point"], v["baseline"], v["beats"]) for v in once] == [("kd (trial 1)", "ce (trial 0)", True)]
    from autogram.confirm import format_table

    text = format_table({"rows": chosen, "seeds": 3, "verdict": once})
    assert "- kd (trial 1) beats ce (trial 0): accuracy +0.300*, robustness +0.050; cost +0" in text
    assert text.count(" beats ") + text.count(" does not beat ") == 1


def test_ablation_switches_each_active_part_off_in_turn(searched: Path) -> None:
    """kd_xmodal (trial 3): KD + the cross-modal term, with the config's modality dropout."""
    proc = run_cli("confirm", "runs/c", "--ablate", "3", "--seeds", "1", "--json", cwd=searched)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    labels = [row["label"] for row in result["rows"]]
    assert labels == ["full", "without kd", "without xmodal", "without modality_dropout"]
    assert proc.stderr.count("teacher: reusing") == 1  # resolved once for the four variants
    assert {"accuracy", "robustness", "missing:image", "missing:tokens"} <= set(result["carriers"])
    for metric, carrier in result["carriers"].items():  # the part named is the largest drop, if any
        drops = {
            row["label"].removeprefix("without "): result["rows"][0]["summary"][metric]["mean"]
            - row["summary"][metric]["mean"]
            for row in result["rows"][1:]
        }
        if carrier["part"] is None:
            assert max(drops.values()) <= 0
        else:
            assert drops[carrier["part"]] == pytest.approx(max(drops.values())) == pytest.approx(carrier["drop"])
    table = (searched / "runs" / "c" / "confirm" / "ablation_3.md").read_text()
    assert table.startswith("Ablation of trial 3")
    assert "| row | accuracy | balanced_accuracy | robustness | cost | missing:image | missing:tokens |" in table
    assert all(f"| {label} | " in table for label in labels)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{searched / 'mlflow.db'}")
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("c").experiment_id])
        if r.data.tags.get("autogram.kind") == "search"
    )
    assert "confirm/ablation_3.json" in [a.path for a in client.list_artifacts(parent.info.run_id, "confirm")]
    bad = run_cli("confirm", "runs/c", "--ablate", "1,2", cwd=searched)
    assert bad.returncode == 2 and "--ablate '1,2': one point" in bad.stderr


def _confirm_json(folder: Path) -> dict:
    return json.loads((folder / "runs" / "c" / "confirm" / "confirm.json").read_text())


def test_confirm_on_ray_gives_the_same_table_as_in_one_process(searched: Path) -> None:
    tables = {}
    for concurrency in ("1", "2"):
        args = ["confirm", "runs/c", "--seeds", "2", "--points", "knee", "--concurrency", concurrency]
        proc = run_cli(*args, cwd=searched)
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables[concurrency] = _confirm_json(searched)
    assert "as Ray tasks, 2 at a time" in proc.stderr
    # Same seeds, same thread count, the same retrainings: the same numbers, to the last bit.
    assert [r["runs"] for r in tables["2"]["rows"]] == [r["runs"] for r in tables["1"]["rows"]]
    assert tables["2"]["verdict"] == tables["1"]["verdict"]
    assert not (searched / "runs" / "c" / "confirm-runs.jsonl").exists()  # folded into confirm.json


def test_a_ray_started_for_a_confirm_stops_behind_its_table_and_is_gone_when_confirm_returns() -> None:
    """Ray's shutdown mostly waits for its processes to exit: after the last retraining it runs
    in the background while the table is written, and ``ray_stopped`` (the end of ``confirm``)
    waits for it. One that ends in an error stops Ray before the error leaves."""
    import ray

    from autogram import confirm_ray

    assert not ray.is_initialized()
    with confirm_ray.ray_started({"concurrency": 1}):
        assert ray.is_initialized()
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process
    assert [t.name for t in confirm_ray._STOPPING] == ["confirm-ray-shutdown"]
    confirm_ray.ray_stopped()
    assert not confirm_ray._STOPPING and not ray.is_initialized()
    assert raylet.poll() is not None  # its processes have exited, not just been told to

    with pytest.raises(KeyboardInterrupt), confirm_ray.ray_started({"concurrency": 1}):
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process
        raise KeyboardInterrupt
    assert not confirm_ray._STOPPING and not ray.is_initialized() and raylet.poll() is not None


def test_a_cluster_that_does_not_answer_is_one_line_in_seconds_and_writes_nothing(searched: Path) -> None:
    from tests.servers import free_port

    port = free_port()  # nothing listens there: Ray itself would retry for minutes
    before = sorted(searched.rglob("*"))
    proc = run_cli("confirm", "runs/c", "--seeds", "1", "--address", f"127.0.0.1:{port}", cwd=searched, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--address 127.0.0.1:{port}: no Ray cluster answers there" in lines[0], proc.stderr
    assert sorted(searched.rglob("*")) == before


def _started(stderr: str) -> set[tuple[str, int]]:
    """(row, seed) of every retraining a confirm's log says it started in this process."""
    return {(m[0], int(m[1])) for m in re.findall(r"confirm: (.+?), seed (\d+) \(", stderr)}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_confirm_resumes_without_redoing_a_finished_retraining(searched: Path, stop: int) -> None:
    """Ctrl-C (exit 130 with our hint) or SIGTERM (a scheduler's preemption, or ``kill`` of a
    confirm run in the background, which ignores Ctrl-C): no finished retraining is lost."""
    ledger = searched / "runs" / "c" / "confirm-runs.jsonl"
    args = ["confirm", "runs/c", "--seeds", "2", "--points", "knee"]
    driver = start_cli(*args, cwd=searched, capture=True)
    deadline = time.time() + 600
    while time.time() < deadline and (not ledger.exists() or len(ledger.read_text().splitlines()) < 2):
        time.sleep(0.2)
    os.killpg(driver.pid, stop)
    _, err = driver.communicate(timeout=300)
    if stop == signal.SIGINT:
        assert driver.returncode == 130, err[-3000:]
        assert "--resume" in err.strip().splitlines()[-1]
    else:
        assert driver.returncode == -signal.SIGTERM, err[-3000:]
    kept = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(kept) >= 2

    for more in ([], ["--concurrency", "2"]):  # without --resume: refused, nothing lost, in one line
        again = run_cli(*args, *more, cwd=searched)
        assert again.returncode == 2 and "pass --resume" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1, again.stderr
        assert [json.loads(line) for line in ledger.read_text().splitlines()] == kept

    proc = run_cli(*args, "--resume", cwd=searched)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(kept)} of" in proc.stderr and "kept from" in proc.stderr
    result = _confirm_json(searched)
    by_key = {}
    first = json.loads((searched / "runs" / "c" / "search.json").read_text())["config"].get("seed", 0)
    for row in result["rows"]:
        for i, run in enumerate(row["runs"]):
            by_key[f"{row['trial']}:{first + i}"] = (row["label"], first + i, run)
    rerun = _started(proc.stderr)
    for line in kept:  # each kept retraining is in the table as it was, and was not run again
        label, seed, run = by_key[line["key"]]
        assert run == line["scores"] and (label, seed) not in rerun
    assert len(rerun) == len(by_key) - len(kept)
    assert not ledger.exists()
