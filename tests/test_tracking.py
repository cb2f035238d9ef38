"""MLflow tracking of a search: real sqlite store, real `mlflow server`, real headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from autogram.config import load_config
from autogram.report.pareto import pareto_front
from tests.conftest import run_cli, tiny_raw

pytestmark = pytest.mark.slow
OBJECTIVES = ["accuracy", "robustness", "cost"]
DIRECTIONS = ["maximize", "maximize", "minimize"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _config(tmp_path: Path, teacher_cache: Path, trials: int) -> Path:
    raw = tiny_raw(teacher_cache)
    raw["name"] = "tracked"
    raw["search"] = {"trials": trials, "concurrency": 2}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _runs(client: MlflowClient, experiment_id: str) -> list:
    return client.search_runs([experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def sqlite_search(tmp_path_factory: pytest.TempPathFactory, teacher_cache: Path) -> dict:
    tmp_path = tmp_path_factory.mktemp("tracked")
    proc = run_cli(
        "search", str(_config(tmp_path, teacher_cache, trials=5)), "--out", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    front = json.loads((tmp_path / "runs" / "tracked" / "front.json").read_text())
    return {"tmp": tmp_path, "uri": uri, "front": front, "client": MlflowClient(tracking_uri=uri)}


def test_one_parent_and_one_finished_child_per_trial(sqlite_search: dict) -> None:
    client, front = sqlite_search["client"], sqlite_search["front"]
    experiment = client.get_experiment_by_name("tracked")
    runs = _runs(client, experiment.experiment_id)
    parents = [r for r in runs if r.data.tags.get("autogram.kind") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(runs) == 1 + len(children)
    parent = parents[0]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert len(children) == len(front["trials"]) == 5
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(5))
    assert not [r for r in runs if r.info.status == "RUNNING"]

    assert {
        "sampler",
        "seed",
        "trials",
        "autogram_version",
        "space.w_kd",
        "candidate_pairs",
    } <= parent.data.params.keys()
    assert parent.data.tags["autogram.search"] == "tracked"
    assert parent.data.tags["optuna_storage"].startswith("sqlite:///")
    metrics = parent.data.metrics
    assert metrics["hypervolume"] == pytest.approx(front["hypervolume"])
    assert metrics["front_size"] == sum(t["pareto"] for t in front["trials"])
    assert metrics["trials_ok"] == sum(t["status"] == "ok" for t in front["trials"])
    assert [metrics[f"reference/{n}"] for n in OBJECTIVES] == pytest.approx(front["reference_point"])
    history = client.get_metric_history(parent.info.run_id, "hypervolume_history")
    assert [m.step for m in history] == list(range(1, 6))
    assert history[-1].value == pytest.approx(front["hypervolume"])

    for run in children:
        tags, child_metrics = run.data.tags, run.data.metrics
        assert tags["status"] in {"ok", "pruned", "diverged", "failed", "infeasible"}
        assert tags["pareto"] in {"true", "false"} and tags["host"]
        if tags["status"] == "ok":
            assert {"accuracy", "robustness", "cost", "train_seconds", "train_gflops"} <= child_metrics.keys()
            assert len([k for k in child_metrics if k.startswith("corruption/")]) == 10
            curve = client.get_metric_history(run.info.run_id, "curve/accuracy")
            assert [m.step for m in curve] == [1, 2]
        if "use_w_kd" in run.data.params:
            assert run.data.params["use_w_kd"] in {"True", "False"}


def test_a_new_search_in_a_reused_folder_gets_its_own_parent_run(tmp_path: Path) -> None:
    from autogram.report.tracking import SearchTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "runs" / "again"
    first = SearchTracker(uri, "again", "again", folder)
    first.start_parent({}, {})
    first.trial_started("t0", {"trial_number": 0})
    # The folder was deleted and a new search started in it: a run of its own, no old trials.
    second = SearchTracker(uri, "again", "again", folder)
    assert second.start_parent({}, {}) != first.parent_id and second.children == {}
    # A resume reopens the newest parent run of the folder, with its children.
    second.trial_started("t1", {"trial_number": 1})
    resumed = SearchTracker(uri, "again", "again", folder)
    assert resumed.start_parent({}, {}, resume=True) == second.parent_id
    assert set(resumed.children) == {"t1"}


def test_pareto_tags_match_the_front_recomputed_from_child_metrics(sqlite_search: dict) -> None:
    client = sqlite_search["client"]
    experiment = client.get_experiment_by_name("tracked")
    children = [r for r in _runs(client, experiment.experiment_id) if "mlflow.parentRunId" in r.data.tags]
    ok = [r for r in children if r.data.tags["status"] == "ok"]
    rows = [[r.data.metrics[n] for n in OBJECTIVES] for r in ok]
    expected = {ok[i].info.run_id for i in pareto_front(rows, DIRECTIONS)}
    assert expected
    assert {r.info.run_id for r in children if r.data.tags["pareto"] == "true"} == expected


def test_parent_artifacts_front_plots_and_ready_to_train_configs(sqlite_search: dict, tmp_path: Path) -> None:
    client, front = sqlite_search["client"], sqlite_search["front"]
    experiment = client.get_experiment_by_name("tracked")
    parent = next(r for r in _runs(client, experiment.experiment_id) if r.data.tags.get("autogram.kind") == "search")
    local = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path)))
    assert json.loads((local / "pareto_front.json").read_text())["trials"] == front["trials"]
    assert (local / "pareto_front.csv").read_text().splitlines()[0].startswith("number,status,pareto,baseline,accuracy")
    stems = ["front_3d", "front_2d", "parallel_coordinates", "pair_selection", "importances", "hypervolume_history"]
    for stem in stems:
        html = (local / "plots" / f"{stem}.html").read_text()
        assert "Plotly.newPlot" in html and "plotly-graph-div" in html
        with Image.open(local / "plots" / f"{stem}.png") as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100
    pareto = [t["number"] for t in front["trials"] if t["pareto"]]
    for number in pareto:
        path = local / "configs" / f"trial_{number}.yaml"
        config = load_config(path)  # ready to train: validates as a trial config
        assert config.teacher.checkpoint is not None and config.teacher.checkpoint.is_file()
    assert len(list((local / "configs").glob("*.yaml"))) == len(pareto)


def test_front_command_agrees_with_front_json(sqlite_search: dict) -> None:
    tmp_path, front = sqlite_search["tmp"], sqlite_search["front"]
    proc = run_cli("front", "tracked", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no MLflow download bar, no log lines: only the JSON, on stdout
    from_mlflow = json.loads(proc.stdout)
    assert from_mlflow["hypervolume"] == pytest.approx(front["hypervolume"])
    assert from_mlflow["reference_point"] == pytest.approx(front["reference_point"])
    assert len(from_mlflow["trials"]) == len(front["trials"]) and from_mlflow["redrawn"] == front["redrawn"]
    for mine, theirs in zip(from_mlflow["trials"], front["trials"], strict=True):
        assert (mine["number"], mine["status"], mine["pareto"]) == (
            theirs["number"],
            theirs["status"],
            theirs["pareto"],
        )
        assert mine["values"] == theirs["values"]
        assert {k: mine["params"][k] for k in theirs["params"]} == pytest.approx(theirs["params"])
    table = run_cli("front", "tracked", cwd=tmp_path)
    assert table.returncode == 0 and "Pareto front of tracked" in table.stdout
    missing = run_cli("front", "no-such-search", cwd=tmp_path)
    assert missing.returncode == 2 and "no search or experiment named 'no-such-search'" in missing.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not start")
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def server_search(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory, teacher_cache: Path) -> dict:
    tmp_path = tmp_path_factory.mktemp("server-search")
    proc = run_cli(
        "search",
        str(_config(tmp_path, teacher_cache, trials=4)),
        "--out",
        str(tmp_path / "runs"),
        "--tracking-uri",
        mlflow_server,
        "--experiment",
        "served",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists(), "the server, not a local file, must hold the runs"
    return {"front": json.loads((tmp_path / "runs" / "tracked" / "front.json").read_text()), "tmp": tmp_path}


def test_concurrent_search_against_an_mlflow_server(mlflow_server: str, server_search: dict) -> None:
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("served")
    runs = _runs(client, experiment.experiment_id)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 1 + len(children)
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(4)), "lost or duplicated runs"
    assert len({r.data.tags["ray_trial_id"] for r in children}) == 4
    assert not [r for r in runs if r.info.status == "RUNNING"]


def _browser(tmp_path: Path) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-quic",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium and ChromeDriver are not installed (.ci/run installs Debian's packages)",
)
def test_mlflow_ui_shows_the_runs_and_the_front_plot(mlflow_server: str, server_search: dict, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("served")
    parent = next(r for r in _runs(client, experiment.experiment_id) if r.data.tags.get("autogram.kind") == "search")
    screenshots = Path(__file__).resolve().parents[1] / "test-artifacts"
    screenshots.mkdir(exist_ok=True)
    base = f"{mlflow_server}/#/experiments/{experiment.experiment_id}"
    browser = _browser(tmp_path)
    try:
        wait = WebDriverWait(browser, 90)
        # The link the search prints lands on the experiment's runs table, not on MLflow 3's
        # GenAI overview of traces (where a bare experiment link lands).
        from autogram.report.tracking import experiment_link

        browser.get(experiment_link(mlflow_server, experiment.experiment_id))
        wait.until(lambda b: "matching runs" in b.page_source or "/overview" in b.current_url)
        assert "/overview" not in browser.current_url and "matching runs" in browser.page_source
        browser.save_screenshot(str(screenshots / "mlflow_experiment_landing.png"))
        browser.get(f"{base}/runs")
        wait.until(ec.presence_of_element_located((By.XPATH, "//a[normalize-space(.)='tracked']")))
        browser.save_screenshot(str(screenshots / "mlflow_runs.png"))
        assert "served" in browser.page_source and "matching runs" in browser.page_source

        browser.get(f"{base}/runs/{parent.info.run_id}/artifacts/plots/front_2d.html")
        frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe.mlflow-html-iframe")))
        browser.switch_to.frame(frame)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".plotly-graph-div .scatterlayer .point")))
        points = browser.find_elements(By.CSS_SELECTOR, ".scatterlayer .point")
        title = browser.find_element(By.CSS_SELECTOR, ".gtitle").text
        browser.switch_to.default_content()
        browser.save_screenshot(str(screenshots / "mlflow_front_2d.png"))
    finally:
        browser.quit()
    ok = [t for t in server_search["front"]["trials"] if t["status"] == "ok"]
    assert len(points) == 3 * len(ok)  # every ok trial drawn in each of the three projections
    assert title == "tracked: 2-D projections"
    for name in ("mlflow_runs.png", "mlflow_front_2d.png"):
        with Image.open(screenshots / name) as image:
            image.verify()
