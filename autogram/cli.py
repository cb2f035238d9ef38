"""The ``autogram`` command line: the only place that wires the pieces together.

Heavy libraries (torch, transformers) are imported inside commands, so ``--help`` and
config errors stay fast. Every user error ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from autogram.config import ConfigError, TrialConfig, load_config
from autogram.console import (
    UserErrorsGroup,
    describe_taps,
    freeze_at_exit,
    setup_logging,
    stdout_for_json,
    taps_document,
    user_errors,
)
from autogram.version import __version__

log = logging.getLogger("autogram")


# When this process started: `search` reports the whole command's time, not only the trials'.
STARTED = time.monotonic()


def _quiet_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--quiet`` / ``-q``: every command takes it."""
    return click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")(fn)


def _config_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Shared CONFIG argument, ``--set`` overrides and ``--quiet`` for commands taking a config."""
    fn = _quiet_option(fn)
    fn = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config field, e.g. --set train.epochs=2 (value parsed as YAML; repeatable).",
    )(fn)
    return click.argument("config", type=click.Path(dir_okay=False))(fn)


def _load(config: str, overrides: tuple[str, ...], quiet: bool) -> TrialConfig:
    setup_logging(quiet)
    cfg = load_config(config, list(overrides))
    if cfg.python_path:
        from autogram.models.source import use_python_path

        use_python_path(cfg.python_path)
    return cfg


@click.group(cls=UserErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autogram")
def main() -> None:
    """Search how to distill a multi-modal teacher into a small, robust student."""
    freeze_at_exit()


@main.command()
@_config_command
@click.option("--json", "as_json", is_flag=True, help="Print the taps and pairs (or the ranking) as JSON.")
@click.option("--rank", is_flag=True, help="Rank each student tap's teacher taps by the layer-mapping prior.")
@user_errors
def layers(config: str, overrides: tuple[str, ...], quiet: bool, as_json: bool, rank: bool) -> None:
    """List the teacher's and student's feature taps and their default pairing (``--rank``:
    score every compatible pair by the prior that ``search.space.pairs: all`` uses)."""
    cfg = _load(config, overrides, quiet)
    if rank:
        from autogram.study.prior import rank_config

        ranking = rank_config(cfg)
        click.echo(json.dumps(ranking.to_json(), indent=2) if as_json else ranking.describe())
        return
    from autogram.models import default_pairs
    from autogram.tensors.runtime import pick_device
    from autogram.trial import prepare

    parts = prepare(cfg, pick_device("cpu"))
    auto = default_pairs(parts.student_taps, parts.teacher_taps)
    if as_json:
        click.echo(json.dumps(taps_document(parts, auto), indent=2))
    else:
        click.echo(describe_taps(parts, auto, configured=cfg.distill.pairs != "auto"))


@main.command()
@_config_command
@click.option("--retrain", is_flag=True, help="Train a new teacher even if a matching checkpoint exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoint's details as JSON.")
@user_errors
def teacher(config: str, overrides: tuple[str, ...], quiet: bool, retrain: bool, as_json: bool) -> None:
    """Train the teacher (or reuse the checkpoint matching this config and data)."""
    cfg = _load(config, overrides, quiet)
    from autogram.data import load_data
    from autogram.models import parameter_count
    from autogram.models.sources import model_source
    from autogram.teacher import ensure_teacher
    from autogram.tensors.runtime import pick_device

    data = load_data(cfg.data)
    handle = ensure_teacher(cfg.teacher, data, pick_device(cfg.device), retrain=retrain)
    info = {
        "path": str(handle.path or ""),
        "key": handle.key,
        "reused": handle.reused,
        "val_accuracy": handle.val_accuracy,
        "params": parameter_count(handle.model),
        "source": handle.source,
        "taps": len(handle.taps),
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    if model_source(cfg.teacher, "teacher").trained_here:
        where = f"{'reused' if handle.reused else 'trained'}: {handle.path}"
    else:  # a user's teacher is used as its factory returns it: never trained here
        where = f"from {cfg.teacher.factory or cfg.teacher.python or cfg.teacher.kind} (used as given)"
    click.echo(
        f"teacher {where}  val accuracy {handle.val_accuracy:.4f}  params {info['params']:,}  key {handle.key[:16]}"
    )


@main.command()
@_config_command
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
@user_errors
def trial(config: str, overrides: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Run one short distillation trial and score accuracy, robustness and cost."""
    cfg = _load(config, overrides, quiet)
    from autogram.trial import run_trial

    result = run_trial(cfg)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"status      {result.status}{'  (' + result.reason + ')' if result.reason else ''}")
    click.echo(f"accuracy    {result.accuracy:.4f}   (validation, clean)")
    click.echo(f"balanced    {result.balanced_accuracy:.4f}   (validation, clean, mean per-class recall)")
    click.echo(f"robustness  {result.robustness:.4f}   (mean over {len(result.corruptions)} corruptions)")
    click.echo(f"cost        {result.cost:.4g}   ({cfg.cost})")
    click.echo(f"train time  {result.train_seconds:.1f}s, {result.train_gflops:.1f} GFLOP, {result.steps} steps")
    for name, acc in result.corruptions.items():
        click.echo(f"  {name:<22} {acc:.4f}")
    details = "  ".join(f"{name} {value:.4f}" for name, value in result.detail.items())
    click.echo(f"per modality: {details}   (missing: blanked; auc: area under accuracy vs noise severity)")


@main.command()
@_config_command
@click.option("--trials", type=click.IntRange(min=1), help="Number of trials (default: search.trials).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Trials at once (default: search.concurrency).")
@click.option("--name", help="Search name, the folder under --out (default: the config's name).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="autogram-runs",
    show_default=True,
    help="Folder holding searches.",
)
@click.option("--resume", is_flag=True, help="Continue the search NAME after a crash or Ctrl-C.")
@click.option(
    "--warm-start", metavar="EARLIER", help="Seed the sampler with search EARLIER's finished trials that fit."
)
@click.option("--address", help="Address of an existing Ray cluster ('auto' finds a local one).")
@click.option(
    "--storage",
    help="Optuna RDB URL for the study, e.g. postgresql+psycopg://user@host/db (default: search.storage, "
    "else sqlite in the search folder). Keep the password in PGPASSWORD.",
)
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--experiment", help="MLflow experiment (default: search.experiment, else the config's name).")
@user_errors
def search(
    config: str,
    overrides: tuple[str, ...],
    quiet: bool,
    trials: int | None,
    concurrency: int | None,
    name: str | None,
    out: str,
    resume: bool,
    warm_start: str | None,
    address: str | None,
    storage: str | None,
    tracking_uri: str | None,
    experiment: str | None,
) -> None:
    """Search loss weights, temperature and tap pairs; write the Pareto front to NAME/front.json."""
    from pathlib import Path

    extra = [f"search.trials={trials}"] if trials else []
    extra += [f"search.concurrency={concurrency}"] if concurrency else []
    extra += [f"search.storage={storage}"] if storage else []
    cfg = _load(config, (*overrides, *extra), quiet)
    from autogram.report.front import format_front
    from autogram.study import plan_search, run_search
    from autogram.study.resume import SearchInterrupted

    plan = plan_search(cfg, name, Path(out), resume, tracking_uri, experiment, address=address, warm_start=warm_start)
    try:
        document = run_search(plan, resume=resume, address=address)
    except SearchInterrupted as exc:
        click.echo(f"autogram: {exc}", err=True)
        sys.exit(130)  # the shell's code for a command ended by SIGINT
    click.echo(format_front(document))
    click.echo(f"search {plan.name} done in {time.monotonic() - STARTED:.0f}s (the whole command)")


@main.command()
@click.argument("name")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON (front.json's shape).")
@_quiet_option
@user_errors
def front(name: str, tracking_uri: str | None, as_json: bool, quiet: bool) -> None:
    """Print the Pareto front of search NAME (or of the newest search in experiment NAME), read
    from MLflow, or of the search folder NAME (its front.json)."""
    setup_logging(quiet)
    from autogram.export import read_front_source
    from autogram.report.front import format_front

    document = read_front_source(name, tracking_uri)
    click.echo(json.dumps(document, indent=2) if as_json else format_front(document))


def _weights(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(x) for x in value.split(",")]
    except ValueError:
        raise ConfigError(f"--weights {value!r}: expected numbers separated by commas, e.g. 0.5,0.3,0.2") from None


@main.command()
@click.argument("source")
@click.option("--pick", default="knee", show_default=True, help="accuracy, robustness, cost (best in one) or knee.")
@click.option("--weights", help="Weights per objective, e.g. 0.5,0.3,0.2 (overrides --pick).")
@click.option("--where", multiple=True, help='Filter, e.g. "cost<=2.5e3" (repeatable, or comma-separated).')
@click.option(
    "--trial", type=click.IntRange(min=0), help="This trial, by its number in the front table (overrides --pick)."
)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="YAML file to write.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs of the full run (default: the trial's budget).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file (and its recipe JSON).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@_quiet_option
@user_errors
def export(
    source: str,
    pick: str,
    weights: str | None,
    where: tuple[str, ...],
    trial: int | None,
    output: str,
    epochs: int | None,
    force: bool,
    tracking_uri: str | None,
    quiet: bool,
) -> None:
    """Write a training config for one point of a search's front (SOURCE: search, experiment or folder)."""
    from pathlib import Path

    setup_logging(quiet)
    from autogram.export import export as run_export

    raw = run_export(source, Path(output), pick, _weights(weights), list(where), epochs, tracking_uri, force, trial)
    prov = raw["provenance"]
    scores = ", ".join(f"{k} {v:.4g}" for k, v in prov["objectives"].items())
    click.echo(f"exported trial {prov['trial']} of {prov['search']} ({scores}) -> {output}")


@main.command(name="train")
@_config_command
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of this config.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--experiment", help="MLflow experiment (default: the source search's, else the config's name).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@user_errors
def train_command(
    config: str,
    overrides: tuple[str, ...],
    quiet: bool,
    epochs: int | None,
    resume: bool,
    tracking_uri: str | None,
    experiment: str | None,
    as_json: bool,
) -> None:
    """Full training from a config (e.g. an export): checkpoints, test-split scores, MLflow model."""
    extra = [f"train.epochs={epochs}"] if epochs else []
    cfg = _load(config, (*overrides, *extra), quiet)
    from autogram.training import train

    result = train(cfg, config, resume=resume, tracking_uri=tracking_uri, experiment=experiment)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"status {result.status}, {result.epochs} epochs")
    click.echo(
        f"validation: accuracy {result.accuracy:.4f}, balanced {result.balanced_accuracy:.4f}, "
        f"robustness {result.robustness:.4f}"
    )
    click.echo(
        f"test:       accuracy {result.test_accuracy:.4f}, balanced {result.test_balanced_accuracy:.4f}, "
        f"robustness {result.test_robustness:.4f}"
    )
    click.echo(f"student: {result.student_path}  MLflow run: {result.mlflow_run_id}")


@main.command()
@click.argument("source")
@click.option("--seeds", default="3", show_default=True, help="Seeds per row (each a full retraining).")
@click.option("--points", default="knee", show_default=True, help="knee, front, or trial numbers (comma-separated).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--ablate", metavar="POINT", help="Instead: retrain trial POINT with each active part switched off.")
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Retrainings at once, as Ray tasks with the search's per-trial resources (above 1).",
)
@click.option("--address", help="Run the retrainings on this Ray cluster (e.g. auto).")
@click.option("--resume", is_flag=True, help="Keep the retrainings an interrupted confirm finished; run the rest.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as one JSON object.")
@_quiet_option
@user_errors
def confirm(
    source: str,
    seeds: str,
    points: str,
    ablate: str | None,
    tracking_uri: str | None,
    concurrency: int,
    address: str | None,
    resume: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Retrain front points of search SOURCE (a name, experiment or folder) and every baseline
    with several seeds, score them on the test split, and compare them (``--ablate``: which
    loss term or augmentation of one point carries its gain)."""
    setup_logging(quiet)
    from autogram.confirm import confirm as run_confirm
    from autogram.confirm import format_table

    if not seeds.isdigit():
        raise ConfigError(f"--seeds {seeds!r}: expected a whole number of seeds, at least 1")
    if ablate is not None:
        from autogram.ablation import ablate as run_ablation
        from autogram.ablation import format_ablation

        ablation = run_ablation(source, ablate, int(seeds), tracking_uri)
        click.echo(json.dumps(ablation) if as_json else format_ablation(ablation))
        return
    try:
        with stdout_for_json(as_json):
            result = run_confirm(source, int(seeds), points, tracking_uri, concurrency, address, resume)
    except KeyboardInterrupt:
        click.echo(
            "autogram: confirm interrupted; every finished retraining is kept: rerun the same command with --resume",
            err=True,
        )
        sys.exit(130)  # the shell's code for a command ended by SIGINT
    click.echo(json.dumps(result) if as_json else format_table(result))


BENCH_CONFIG = "search_spaces/quickstart.yaml"  # a path in the checkout, which the README runs from


@main.command()
@click.argument("config", type=click.Path(dir_okay=False), default=BENCH_CONFIG)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("--quick", is_flag=True, help="Smaller searches (fewer trials and epochs): a rough look in less time.")
@click.option("--json", "as_json", is_flag=True, help="Print all figures as one JSON object.")
@click.option("--gpu-only", is_flag=True, help="Only the GPU figures (trials packed 1, 4 and 8 to a GPU).")
@_quiet_option
@user_errors
def bench(config: str, overrides: tuple[str, ...], quick: bool, as_json: bool, gpu_only: bool, quiet: bool) -> None:
    """Measure, side by side: teacher cache speed-up, loss-term step costs, Gram GFLOP/s,
    search orchestration overhead, search efficiency (sampler vs random) and, on a GPU, the
    throughput of trials packed on it."""
    from pathlib import Path

    if config == BENCH_CONFIG and not Path(config).is_file():
        raise ConfigError(
            f"{config}: config file not found (bench's default, a path in the autogram checkout: run it from "
            "there, or name a config)"
        )
    cfg = _load(config, overrides, quiet)
    from autogram.bench import run_bench

    with stdout_for_json(as_json):
        result = run_bench(cfg, quick=quick, gpu_only=gpu_only)
    if as_json:
        click.echo(json.dumps(result))
        return
    from autogram.bench.report import format_bench, format_gpu_bench

    click.echo(format_gpu_bench(result) if gpu_only else format_bench(result) + "\n" + format_gpu_bench(result))


if __name__ == "__main__":
    main()
