"""Training checkpoints: the whole loop saved after every epoch (safetensors + JSON, no pickle),
restored by ``--resume``, and tied to the config it belongs to by a fingerprint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from autogram.config import ConfigError, TrialConfig
from autogram.config.base import atomic_write, read_json
from autogram.distill import LoopState

log = logging.getLogger("autogram")
CHECKPOINT, STATE = "last.safetensors", "last.json"


def atomic_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON through a temporary file: a crash leaves the old file whole."""
    text = json.dumps(payload)
    atomic_write(path, lambda tmp: tmp.write_text(text))


class Checkpointer:
    """Saves and restores the whole loop: weights, optimizer, schedule, RNG, history."""

    def __init__(
        self, directory: Path, modules: dict[str, torch.nn.Module], resume: bool, run_id: str, epochs: int
    ) -> None:
        self.directory = directory
        self.modules = modules
        self.resume = resume
        self.run_id = run_id
        self.epochs = epochs
        self.resumed_from = 0
        # Which config the checkpoint belongs to (set by train()).
        self.fingerprint = ""
        self.origin = ""

    def saved_run_id(self) -> str:
        """The MLflow run of the interrupted run, to continue logging into it."""
        path = self.directory / STATE
        return read_json(path, "checkpoint state").get("mlflow_run_id", "") if path.is_file() else ""

    def restore(self, state: LoopState) -> int:
        """Load the last checkpoint into the models and ``state``; return its epoch."""
        from safetensors.torch import load_file

        if not self.resume:
            return 0
        meta_path, weights_path = checkpoint_files(self.directory)
        meta = read_json(meta_path, "checkpoint state")
        tensors = load_file(str(weights_path))
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        opt_state = {int(i): {} for i in meta["optimizer_params"]}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, index, slot = key.split(".", 2)
                opt_state[int(index)][slot] = value
        state.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        state.schedule.load_state_dict(meta["schedule"])
        state.generator.set_state(tensors["rng.generator"])
        for key, value in meta["outcome"].items():
            setattr(state.outcome, key, value)
        self.resumed_from = int(meta["epoch"])
        log.info("resuming from the checkpoint of epoch %d in %s", self.resumed_from, self.directory)
        return self.resumed_from

    def epoch_end(self, epoch: int, state: LoopState) -> None:
        """Write the checkpoint atomically: a crash mid-write leaves the previous one intact."""
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{name}.{k}": v.detach().cpu().contiguous()
            for name, module in self.modules.items()
            for k, v in module.state_dict().items()
        }
        optimizer = state.optimizer.state_dict()
        for index, slots in optimizer["state"].items():
            for slot, value in slots.items():
                tensors[f"opt.{index}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tensors["rng.generator"] = state.generator.get_state()
        atomic_write(self.directory / CHECKPOINT, lambda tmp: save_file(tensors, str(tmp)))
        outcome = {k: getattr(state.outcome, k) for k in ("steps", "samples", "flops_per_sample", "seconds", "history")}
        atomic_json(
            self.directory / STATE,
            {
                "epoch": epoch,
                "epochs": self.epochs,
                "param_groups": optimizer["param_groups"],
                "optimizer_params": list(optimizer["state"]),
                "schedule": state.schedule.state_dict(),
                "outcome": outcome,
                "mlflow_run_id": self.run_id,
                "config_sha256": self.fingerprint,
                "origin": self.origin,
            },
        )


def config_fingerprint(config: TrialConfig) -> str:
    """sha256 of what a training run is (every field but its provenance and its epochs, which a
    resume checks on its own): a checkpoint belongs to the config with this fingerprint."""
    import hashlib

    raw = config.model_dump(mode="json", exclude={"provenance"})
    raw["train"].pop("epochs", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_files(directory: Path) -> tuple[Path, Path]:
    """The last checkpoint's state and weights files in ``directory``, both there, else a
    one-line ConfigError for the ``--resume`` that wants them."""
    state, weights = directory / STATE, directory / CHECKPOINT
    if not state.is_file() or not weights.is_file():
        raise ConfigError(f"--resume: no checkpoint in {directory}")
    return state, weights


def check_finished(directory: Path, meta: dict[str, Any], prefix: str = "") -> None:
    """A one-line ConfigError if the checkpoint state ``meta`` (of ``directory``) is of a run
    that trained every epoch it planned."""
    planned = meta.get("epochs")
    if planned is not None and int(meta["epoch"]) >= int(planned):
        raise ConfigError(
            f"{prefix}the run in {directory} already finished ({meta['epoch']}/{planned} epochs); "
            "delete that folder to train again"
        )


def check_resumable(directory: Path, epochs: int) -> None:
    """Refuse a --resume with no checkpoint to resume, of a finished run, or of one planned for
    another number of epochs (before the teacher and the data load: seconds to minutes)."""
    path, _ = checkpoint_files(directory)
    meta = read_json(path, "checkpoint state")
    check_finished(directory, meta, "--resume: ")
    planned = meta.get("epochs")
    if planned is not None and int(planned) != epochs:
        raise ConfigError(
            f"--resume: the run in {directory} was planned for {planned} epochs, this config says {epochs} "
            f"(its schedule depends on it); resume with train.epochs={planned}"
        )
