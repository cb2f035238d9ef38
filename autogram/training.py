"""Full training from a config (usually one exported from a Pareto point).

The same loop as a trial (so a trial's budget reproduces the trial's scores), plus a
checkpoint after every epoch (safetensors + JSON, no pickle), ``resume``, evaluation
on the **test** split at the end, an MLflow run and the student saved as safetensors
and logged with ``mlflow.pytorch.log_model``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from autogram.checkpoint import STATE, Checkpointer, check_finished, check_resumable, config_fingerprint
from autogram.config import ConfigError, TrialConfig
from autogram.config.base import atomic_write, read_json

log = logging.getLogger("autogram")


@dataclass
class TrainResult:
    """Scores of a full run: validation (as the search saw it) and test (never seen before)."""

    accuracy: float
    robustness: float
    test_accuracy: float
    test_robustness: float
    status: str
    epochs: int
    corruptions: dict[str, float]
    test_corruptions: dict[str, float]
    student_path: str
    mlflow_run_id: str
    resumed_from_epoch: int = 0
    model_uri: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    # The loss of the first steps of this run (up to 100; none before a resumed epoch).
    first_losses: list[float] = field(default_factory=list)
    # Mean per-class recall, validation and test.
    balanced_accuracy: float = 0.0
    test_balanced_accuracy: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


def _mlflow_run(cfg: TrialConfig, uri: str, experiment: str, run_id: str, config_path: Path) -> str:
    from mlflow.entities import Param

    from autogram.report.tracking import client_for, ensure_experiment

    client = client_for(uri)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    provenance = cfg.provenance or {}
    tags = {"autogram.kind": "train", "autogram.config": str(config_path)}
    if provenance.get("mlflow_run_id"):
        tags["autogram.source_run"] = str(provenance["mlflow_run_id"])
    if provenance.get("search"):
        tags["autogram.source_search"] = str(provenance["search"])
        tags["autogram.source_trial"] = str(provenance.get("trial", ""))
    run = client.create_run(ensure_experiment(uri, experiment), run_name=f"train-{config_path.stem}", tags=tags)
    params = _flat("", cfg.model_dump(mode="json", exclude={"search", "provenance"}), {})
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id


def _origin(config: TrialConfig, config_path: Path) -> str:
    """How a checkpoint names the config it belongs to, for a message about another one."""
    provenance = config.provenance or {}
    if provenance.get("search"):
        return f"{config_path.name} (search {provenance['search']!r}, trial {provenance.get('trial')})"
    return config_path.name


def _check_start(config: TrialConfig, ckpt_dir: Path, resume: bool) -> None:
    """Refuse, before anything loads, a run that would overwrite or cannot continue another."""
    from autogram.models.source import PYTHON_OBJECTS
    from autogram.models.sources import model_source

    if (ckpt_dir / STATE).is_file():
        saved = read_json(ckpt_dir / STATE, "checkpoint state")
        if saved.get("config_sha256", config_fingerprint(config)) != config_fingerprint(config):
            origin = saved.get("origin") or "another config"
            raise ConfigError(
                f"{ckpt_dir} holds the checkpoint of {origin}, not of this config (its fingerprint differs); "
                "train this config under another file name, or delete that folder"
            )
        if not resume:
            check_finished(ckpt_dir, saved)  # a finished run says so rather than point at --resume
            raise ConfigError(
                f"{ckpt_dir} holds a checkpoint of an earlier run of this config: pass --resume, or delete it to "
                "start over"
            )
    if resume:  # a finished or re-budgeted run is refused before anything loads
        check_resumable(ckpt_dir, config.train.epochs)
    for role, source in (("teacher", config.teacher), ("student", config.student)):
        if model_source(source, role).in_memory and source.python not in PYTHON_OBJECTS:
            raise ConfigError(
                f"{role}.python: this config names an in-memory {role} ({source.python}); train it from Python with "
                f"autogram.train(config, {role}=...)"
            )


def train(
    config: TrialConfig,
    config_path: str | Path = "train.yaml",
    resume: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    data: Any = None,
) -> TrainResult:
    """Train the student of ``config`` for ``config.train.epochs``; see the module docstring.

    Files go beside ``config_path``: ``<stem>.student.safetensors`` and ``<stem>.checkpoints/``.
    Teacher, student and data are rebuilt from the config's sources (the same factories).
    """
    from autogram.report.tracking import log_metrics
    from autogram.tensors.runtime import pick_device
    from autogram.trial import prepare, teacher_signals

    config_path = Path(config_path)
    ckpt_dir = config_path.with_name(f"{config_path.stem}.checkpoints")
    _check_start(config, ckpt_dir, resume)
    device = pick_device(config.device)
    parts = prepare(config, device, data)
    objective = parts.objective(config.distill).to(device)
    # The same teacher signals as the trial this config came from (its cache, sketched as the
    # search's was), so a trial's budget reproduces the trial's scores.
    signals, _ = teacher_signals(config, parts, objective, device)
    checkpointer = Checkpointer(
        ckpt_dir, {"student": parts.student, "objective": objective}, resume, "", config.train.epochs
    )
    uri, client, run_id = _open_run(config, config_path, checkpointer, resume, tracking_uri, experiment)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        log_metrics(client, run_id, {f"curve/{k}": v for k, v in metrics.items()}, epoch)

    outcome, val, test = _train_and_score(
        config, parts, objective, signals, device, report, checkpointer, client, run_id
    )
    student_path = config_path.with_name(f"{config_path.stem}.student.safetensors")
    _save_student(parts.student, student_path, config)
    result = _result(outcome, val, test, str(student_path), run_id, checkpointer.resumed_from)
    result.model_uri = _close_run(client, uri, result, parts.student, parts.data, config)
    log.info(
        "test accuracy %.4f, test robustness %.4f; student -> %s; MLflow run %s",
        result.test_accuracy,
        result.test_robustness,
        student_path,
        run_id,
    )
    return result


def _result(
    outcome: Any,
    val: tuple[float, dict[str, float], float],
    test: tuple[float, dict[str, float], float],
    student_path: str,
    run_id: str,
    resumed_from: int,
) -> TrainResult:
    """A full run's result from its training outcome and its (accuracy, corruptions, balanced
    accuracy) on validation and test."""
    from autogram.trial import mean_robustness

    (val_acc, val_corr, val_balanced), (test_acc, test_corr, test_balanced) = val, test
    return TrainResult(
        accuracy=val_acc,
        robustness=mean_robustness(val_corr),
        test_accuracy=test_acc,
        test_robustness=mean_robustness(test_corr),
        status=outcome.status,
        epochs=outcome.epochs,
        corruptions=val_corr,
        test_corruptions=test_corr,
        student_path=student_path,
        mlflow_run_id=run_id,
        resumed_from_epoch=resumed_from,
        history=outcome.history,
        first_losses=outcome.first_losses,
        balanced_accuracy=val_balanced,
        test_balanced_accuracy=test_balanced,
    )


def _open_run(
    config: TrialConfig,
    config_path: Path,
    checkpointer: Checkpointer,
    resume: bool,
    tracking_uri: str | None,
    experiment: str | None,
) -> tuple[str, Any, str]:
    """The run's MLflow run (a resume continues the checkpoint's); returns (uri, client, run id).
    The checkpointer learns the run, the config's fingerprint and where it came from."""
    from autogram.config.credentials import check_tracking
    from autogram.report.tracking import client_for
    from autogram.report.tracking import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    check_tracking(uri)  # an unreachable server: one line in seconds, not a traceback after minutes
    experiment = experiment or (config.provenance or {}).get("experiment") or config.name
    run_id = _mlflow_run(config, uri, experiment, checkpointer.saved_run_id() if resume else "", config_path)
    checkpointer.run_id = run_id
    checkpointer.fingerprint, checkpointer.origin = config_fingerprint(config), _origin(config, config_path)
    return uri, client_for(uri), run_id


def _train_and_score(
    config: TrialConfig,
    parts: Any,
    objective: Any,
    signals: Any,
    device: torch.device,
    report: Any,
    checkpointer: Checkpointer,
    client: Any,
    run_id: str,
) -> tuple[Any, tuple[float, dict[str, float], float], tuple[float, dict[str, float], float]]:
    """Train with the exported trial's seed and threads, then score validation and test
    (accuracy, corruptions, balanced accuracy); a failure marks the MLflow run FAILED."""
    from autogram.distill import train_student
    from autogram.trial import evaluate_robustness

    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(_trial_threads(config, device, threads))
    try:
        outcome = train_student(
            parts.student, objective, signals, parts.data, config.train, config.seed, device, report, hooks=checkpointer
        )
        val = evaluate_robustness(parts.student, parts.data, config, device, "val")
        test = evaluate_robustness(parts.student, parts.data, config, device, "test")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    finally:
        torch.set_num_threads(threads)
    return outcome, val, test


def _trial_threads(config: TrialConfig, device: torch.device, current: int) -> int:
    """On a CPU, the threads the exported trial ran with (its sums, hence its scores, depend on
    them), unless OMP_NUM_THREADS says otherwise; else ``current``."""
    threads = (config.provenance or {}).get("threads")
    if device.type != "cpu" or not threads or os.environ.get("OMP_NUM_THREADS"):
        return current
    if int(threads) != current:
        log.info(
            "train: %d torch thread(s), as the trial this config was exported from (set OMP_NUM_THREADS to choose)",
            int(threads),
        )
    return int(threads)


def _close_run(client: Any, uri: str, result: TrainResult, student: Any, data: Any, config: TrialConfig) -> str:
    """The run's final scores, status and model in MLflow; returns the model's URI."""
    from autogram.report.tracking import log_metrics

    run_id = result.mlflow_run_id
    final = {
        "val_accuracy": result.accuracy,
        "val_robustness": result.robustness,
        "test_accuracy": result.test_accuracy,
        "test_robustness": result.test_robustness,
        "val_balanced_accuracy": result.balanced_accuracy,
        "test_balanced_accuracy": result.test_balanced_accuracy,
    }
    final.update({f"test_corruption/{k}": v for k, v in result.test_corruptions.items()})
    log_metrics(client, run_id, final)
    client.set_tag(run_id, "status", result.status)
    model_uri = _log_model(student, data, uri, run_id, Path(result.student_path), config)
    client.set_terminated(run_id, "FINISHED")
    return model_uri


def _log_model(
    student: torch.nn.Module, data: Any, uri: str, run_id: str, student_path: Path, config: TrialConfig
) -> str:
    """``mlflow.pytorch.log_model`` with an input example and a signature, plus the safetensors file.

    The student takes a dict of tensors, which MLflow's default 'pt2' (torch.export) format
    cannot describe, so the model is stored in MLflow's 'pickle' format. The safetensors file
    beside the config is the pickle-free copy. A user's student is logged as the user's own
    module (called its own way), with the folder of its code as ``code_paths``.
    """
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from autogram.models.source import Adapted, code_packages

    student = student.cpu().eval()
    example = data.splits["val"].rows(np.arange(min(2, len(data.splits["val"]))))
    with torch.no_grad():
        output = student({k: torch.from_numpy(v) for k, v in example.items()}).float().numpy()
    code_paths = None
    if isinstance(student, Adapted):
        from autogram.models.source import PYTHON_OBJECTS

        source = config.student
        code_paths = code_packages(source.factory or PYTHON_OBJECTS.get(source.python or "")) or None
        # The logged module is the user's own: its input example names inputs its way.
        example = {student.arguments[k]: v for k, v in example.items()}
        student = student.tap_root()
    # MLflow warns that pyfunc serving takes no dict input; the PyTorch flavour loads fine.
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    # Its warning about the pickle format names no reason and no alternative: ours does.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    log.info(
        "mlflow: the student is logged in MLflow's pickle format (it takes a dict of tensors, which the "
        "pickle-free 'pt2' format cannot describe); the pickle-free copy is %s (also logged under student/)",
        student_path,
    )
    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, which child
    # processes would inherit; put the caller's environment back afterwards.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                student,
                name="student",
                input_example=example,
                signature=infer_signature(example, output),
                serialization_format="pickle",
                code_paths=code_paths,
            )
            mlflow.log_artifact(str(student_path), "student")
            mlflow.set_tag("autogram.model_uri", info.model_uri)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return info.model_uri


def _save_student(student: torch.nn.Module, path: Path, config: TrialConfig) -> None:
    from safetensors.torch import save_file

    from autogram.models.source import user_module

    # A user's student is saved under its own parameter names, loadable without autogram.
    state = {k: v.detach().cpu().contiguous() for k, v in user_module(student).state_dict().items()}
    meta = {
        "format": "autogram-student/1",
        "student": config.student.model_dump_json(),
        "data_source": str(config.data.path or config.data.hf or config.data.factory or "builtin"),
    }
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def load_student(path: str | Path, config: TrialConfig) -> torch.nn.Module:
    """Rebuild the student of ``config`` and load weights saved by :func:`train` (no pickle)."""
    from safetensors.torch import load_file

    from autogram.data import load_data
    from autogram.models import make_student
    from autogram.models.source import user_module

    model = make_student(config.student, load_data(config.data), config.seed)
    user_module(model).load_state_dict(load_file(str(path)))
    return model.eval()
