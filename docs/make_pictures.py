"""Make the docs' pictures from a real run: the quick start's search, its confirm, and the MLflow
UI in headless Chromium.

    python docs/make_pictures.py            # about 6 minutes on 2 cores; writes docs/images/

Needs the dev install, Chromium and ChromeDriver (Debian: chromium, chromium-driver). Everything
runs in a temporary folder; only the PNGs are written here. The MLflow server this starts is
stopped by its PID.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> None:
    print("$ autogram", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "autogram", *args, "-q"], cwd=cwd, check=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _browser(profile: Path) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def _click(browser: object, label: str) -> None:
    """Click the button labelled ``label`` if the page has one (MLflow's layout varies by version)."""
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.CSS_SELECTOR, f'button[aria-label="{label}"]'):
        if button.is_displayed():
            button.click()
            time.sleep(1)
            return


def _screenshots(uri: str, work: Path, images: Path, name: str = "quickstart") -> None:
    """The experiment's landing page (its runs table, the search's trials unfolded) and the
    search's parent run page scrolled to its description (what the search found, in words)."""
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.support.ui import WebDriverWait

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    parent = next(
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("autogram.kind") == "search"
    )
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--port", str(port)],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    browser = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        browser = _browser(work / "profile")
        wait = WebDriverWait(browser, 90)
        from autogram.report.tracking import experiment_link

        base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
        browser.get(experiment_link(f"http://127.0.0.1:{port}", experiment.experiment_id))
        wait.until(lambda b: "matching runs" in b.page_source)
        time.sleep(2)
        _click(browser, "Close")  # MLflow 3's assistant panel would take a third of the picture
        from selenium.webdriver.common.by import By

        link = f"//a[contains(@href,'/runs/')][normalize-space(.)='{parent.info.run_name}']"
        for row in browser.find_elements(By.XPATH, f"{link}/preceding::button[1]"):
            row.click()  # unfold the search's child runs (its trials)
            time.sleep(2)
        browser.save_screenshot(str(images / "mlflow_runs.png"))
        browser.get(f"{base}/runs/{parent.info.run_id}?workflowType=machine_learning")
        wait.until(lambda b: "In short" in b.page_source)
        time.sleep(2)
        _click(browser, "Close")
        _click(browser, "Expand description")
        heading = browser.find_element(By.XPATH, "//h4[contains(text(),'Description')]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
        time.sleep(1)
        browser.save_screenshot(str(images / "mlflow_parent_run.png"))
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    """Run the quick start, confirm its knee, copy the plots and take the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autogram-pictures-") as folder:
        work = Path(folder)
        config = str(ROOT / "search_spaces" / "quickstart.yaml")
        _run("search", config, "--trials", "8", "--concurrency", "2", cwd=work)
        _run("confirm", "quickstart", "--seeds", "2", "--points", "knee", cwd=work)
        for name in ("front_2d.png", "parallel_coordinates.png"):
            found = sorted(work.glob(f"mlartifacts/*/artifacts/plots/{name}"))
            shutil.copy(found[-1], args.images / name)
        # confirm by name publishes on the search's MLflow parent run (its artifacts, here sqlite's folder).
        shutil.copy(sorted(work.glob("mlartifacts/*/artifacts/confirm/confirm.png"))[-1], args.images / "confirm.png")
        _screenshots(f"sqlite:///{work / 'mlflow.db'}", work, args.images)
    print(f"pictures -> {args.images}")


if __name__ == "__main__":
    main()
