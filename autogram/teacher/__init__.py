"""Train, save, find and load the teacher checkpoint (safetensors, never pickle).

A checkpoint is keyed by a sha256 of the teacher's architecture, its training settings
and the data's fingerprint. ``ensure_teacher`` reuses a checkpoint whose key matches,
and says what it does otherwise: trains a new one, or (for an explicitly named
``teacher.checkpoint``) loads it anyway with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autogram.config import ConfigError, TeacherConfig
from autogram.config.base import atomic_write
from autogram.data.base import Modality, MultiModalData
from autogram.models.source import weights_digest
from autogram.models.taps import Tap

log = logging.getLogger("autogram")
FORMAT = "autogram-teacher/1"


@dataclass
class TeacherHandle:
    """A resolved teacher: the frozen model (``None`` where a trial reads only its cache), its
    taps with shapes, its key and where it came from. Driver, cache, trials and export take this."""

    model: torch.nn.Module | None
    path: Path | None
    key: str
    val_accuracy: float
    reused: bool
    taps: list[Tap] = field(default_factory=list)
    params: int = 0
    source: dict[str, Any] = field(default_factory=lambda: {"source": "builtin"})
    # sha256 of a built-in teacher's weights (a user's key already covers its weights).
    weights: str = ""

    @property
    def identity(self) -> str:
        """What the teacher cache is keyed by: the key, and the weights' fingerprint when the key
        does not cover them (a built-in teacher retrained under the same config gets a new cache)."""
        return f"{self.key}+{self.weights}" if self.weights else self.key

    def info(self) -> dict[str, Any]:
        """Provenance for results and MLflow."""
        return {"path": str(self.path) if self.path else "", "key": self.key, "val_accuracy": self.val_accuracy}


def teacher_key(cfg: TeacherConfig, data: MultiModalData) -> str:
    """sha256 over architecture, training settings and data fingerprint."""
    payload = {
        "format": FORMAT,
        "arch": cfg.architecture(),
        "train": {
            k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "modality_dropout", "seed")
        },
        "data": data.fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def checkpoint_path(cfg: TeacherConfig, key: str) -> Path:
    """The explicit ``teacher.checkpoint``, else ``cache_dir/teacher-<key prefix>.safetensors``."""
    if cfg.checkpoint is not None:
        return cfg.checkpoint
    return cfg.cache_dir / f"teacher-{key[:16]}.safetensors"


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata of a checkpoint (raises ConfigError if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise ConfigError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an autogram teacher checkpoint (format {meta.get('format')!r})")
    return meta


def architecture_for(cfg: TeacherConfig) -> dict[str, int]:
    """The teacher's architecture: from an existing explicit checkpoint, else from the config."""
    if cfg.checkpoint is not None and cfg.checkpoint.is_file():
        return json.loads(read_metadata(cfg.checkpoint)["arch"])
    return cfg.architecture()


def _modalities_json(modalities: list[Modality]) -> str:
    return json.dumps([[m.name, m.kind, list(m.shape), m.vocab_size] for m in modalities])


def save_teacher(model: torch.nn.Module, path: Path, key: str, data: MultiModalData, val_accuracy: float) -> None:
    """Write the checkpoint atomically (temp file + rename): never a half-written file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "key": key,
        "arch": json.dumps(model.arch),
        "modalities": _modalities_json(model.modalities),
        "num_classes": str(model.classifier.out_features),
        "data_fingerprint": data.fingerprint,
        "val_accuracy": repr(val_accuracy),
        # Checked at every load: flipped bytes in the tensors are refused, never trained against.
        "weights_sha256": weights_digest(model),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # A per-process temporary name: two processes training the same teacher do not collide.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    atomic_write(path, lambda target: save_file(state, str(target), metadata=meta), tmp)


def load_teacher(path: Path, data: MultiModalData) -> tuple[torch.nn.Module, dict[str, str]]:
    """Rebuild the teacher from a checkpoint's metadata and load its weights (no pickle)."""
    from safetensors.torch import load_file

    from autogram.models import build_teacher

    meta = read_metadata(path)
    if meta["modalities"] != _modalities_json(data.modalities) or int(meta["num_classes"]) != data.num_classes:
        raise ConfigError(
            f"{path}: teacher checkpoint was built for other inputs ({meta['modalities']}, "
            f"{meta['num_classes']} classes) than the data ({_modalities_json(data.modalities)})"
        )
    model = build_teacher(data, json.loads(meta["arch"]))
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:
        raise ConfigError(f"{path}: teacher weights do not load ({exc})") from None
    _check_weights(model, meta, path)
    return model, meta


def _check_weights(model: torch.nn.Module, meta: dict[str, str], path: Path) -> None:
    """Refuse weights that differ from the fingerprint saved with them (a checkpoint from before
    fingerprints is fingerprinted now)."""
    digest = weights_digest(model)
    saved = meta.setdefault("weights_sha256", digest)
    if saved != digest:
        raise ConfigError(
            f"{path}: the teacher's weights do not match the fingerprint saved with them (corrupt file: "
            f"sha256 {digest[:16]}, saved {saved[:16]})"
        )


def teacher_from_bytes(blob: bytes, data: MultiModalData, device: torch.device, taps: list[Tap]) -> TeacherHandle:
    """Load a built-in checkpoint's bytes (shipped to a remote worker) into a frozen teacher."""
    from safetensors.torch import load as load_tensors

    from autogram.models import build_teacher

    header_size = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8 : 8 + header_size])["__metadata__"]
    model = build_teacher(data, json.loads(meta["arch"]))
    model.load_state_dict(load_tensors(blob))
    _check_weights(model, meta, Path("<teacher bytes>"))
    handle = _frozen(model, device, Path("<bytes>"), meta["key"], float(meta["val_accuracy"]), True)
    handle.weights = meta["weights_sha256"]
    handle.taps = list(taps)
    return handle


def train_teacher(cfg: TeacherConfig, data: MultiModalData, device: torch.device) -> tuple[torch.nn.Module, float]:
    """Train the teacher on the train split (CE, AdamW, cosine schedule, modality dropout)."""
    from autogram.models import build_teacher
    from autogram.tensors.runtime import DeviceSplit, autocast, batch_indices, drop_modalities, split_accuracy

    torch.manual_seed(cfg.seed)
    model = build_teacher(data, cfg.architecture()).to(device)
    train = DeviceSplit(data.splits["train"], device)
    labels = train.labels
    val = DeviceSplit(data.splits["val"], device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    val_acc = 0.0
    for epoch in range(cfg.epochs):
        start, losses = time.perf_counter(), []
        model.train()
        for host_idx, idx in batch_indices(len(labels), cfg.batch_size, generator, device):
            batch = drop_modalities(train.batch(idx, host_idx), data.modalities, cfg.modality_dropout, generator)
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(model(batch).float(), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())  # read once per epoch: no host-device sync per step
        val_acc = split_accuracy(model, val, 500, device)
        log.info(
            "teacher epoch %d/%d  loss %.4f  val acc %.4f  (%.1fs)",
            epoch + 1,
            cfg.epochs,
            float(torch.stack(losses).mean()),
            val_acc,
            time.perf_counter() - start,
        )
    return model.eval(), val_acc


def ensure_teacher(
    cfg: TeacherConfig, data: MultiModalData, device: torch.device, retrain: bool = False
) -> TeacherHandle:
    """The frozen teacher with its taps: the user's (factory or in-memory object, used as
    given) or the built-in one (its checkpoint reused, or trained and saved)."""
    from autogram.models.sources import model_source

    if not model_source(cfg, "teacher").trained_here:
        return user_teacher(cfg, data, device)
    handle = _ensure_builtin(cfg, data, device, retrain)
    from autogram.models import model_taps

    handle.taps = model_taps(handle.model, cfg, data, "teacher")
    return handle


def user_teacher(cfg: TeacherConfig, data: MultiModalData, device: torch.device) -> TeacherHandle:
    """Build the user's trained teacher, identify it by source and weights, find its taps."""
    from autogram.models import model_taps
    from autogram.models.sources import model_source, user_teacher_key
    from autogram.tensors.runtime import DeviceSplit, split_accuracy

    source = model_source(cfg, "teacher")
    model = source.teacher(cfg, cfg.checkpoint, data)
    key = user_teacher_key(cfg, model)
    if cfg.checkpoint_key is not None and key != cfg.checkpoint_key:
        raise ConfigError(
            f"teacher.checkpoint_key: the teacher from {cfg.factory or cfg.python} has key {key[:16]}, the config "
            f"expects {cfg.checkpoint_key[:16]} (its weights or settings changed since this config was exported)"
        )
    handle = _frozen(model, device, cfg.checkpoint, key, float("nan"), True)
    handle.source = {**source.describe(cfg), "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None}
    handle.taps = model_taps(model, cfg, data, "teacher")
    # The teacher's accuracy on this data's validation split: a wrong preprocessing shows here.
    handle.val_accuracy = split_accuracy(model, DeviceSplit(data.splits["val"], device), 256, device)
    log.info("teacher: %s (key %s), val accuracy %.4f", cfg.factory or cfg.python, key[:16], handle.val_accuracy)
    return handle


def _ensure_builtin(cfg: TeacherConfig, data: MultiModalData, device: torch.device, retrain: bool) -> TeacherHandle:
    key = teacher_key(cfg, data)
    path = checkpoint_path(cfg, key)
    if path.is_file() and not retrain:
        if cfg.checkpoint is None:
            try:
                model, meta = load_teacher(path, data)
            except ConfigError as exc:
                log.warning("teacher: %s; training a new one", exc)
            else:
                if meta["key"] == key:
                    log.info("teacher: reusing %s (key %s)", path, key[:16])
                    return _with_weights(_frozen(model, device, path, key, float(meta["val_accuracy"]), True), meta)
                log.warning("teacher: %s has key %s, expected %s; retraining", path, meta["key"][:16], key[:16])
        else:
            model, meta = load_teacher(path, data)
            if cfg.checkpoint_key is not None and meta["key"] != cfg.checkpoint_key:
                raise ConfigError(
                    f"teacher.checkpoint_key: {path} has key {meta['key'][:16]}, the config expects "
                    f"{cfg.checkpoint_key[:16]} (the teacher changed since this config was exported)"
                )
            if meta["key"] != key:
                log.warning(
                    "teacher: %s was trained for another config or data (key %s, this config gives %s); "
                    "using it because teacher.checkpoint names it explicitly",
                    path,
                    meta["key"][:16],
                    key[:16],
                )
            else:
                log.info("teacher: reusing %s (key %s)", path, key[:16])
            return _with_weights(_frozen(model, device, path, meta["key"], float(meta["val_accuracy"]), True), meta)
    elif cfg.checkpoint is not None and cfg.checkpoint_key is not None and not retrain:
        # An exported config pins this teacher: training another one in its place would
        # silently change the recipe's teacher.
        raise ConfigError(
            f"teacher.checkpoint: {path} not found, and this config pins that teacher (checkpoint_key "
            f"{cfg.checkpoint_key[:16]}); restore the file, or remove checkpoint and checkpoint_key to train a new one"
        )
    else:
        others = sorted(cfg.cache_dir.glob("teacher-*.safetensors")) if cfg.checkpoint is None else []
        reason = "--retrain given" if retrain else f"no checkpoint for this config and data (key {key[:16]})"
        hint = f"; {len(others)} checkpoint(s) for other configs or data in {cfg.cache_dir}" if others else ""
        log.info("teacher: %s%s; training one (%d epochs) -> %s", reason, hint, cfg.epochs, path)
    model, val_acc = train_teacher(cfg, data, device)
    save_teacher(model, path, key, data, val_acc)
    log.info("teacher: saved %s (val acc %.4f)", path, val_acc)
    return _with_weights(_frozen(model, device, path, key, val_acc, False), {"weights_sha256": weights_digest(model)})


def _with_weights(handle: TeacherHandle, meta: dict[str, str]) -> TeacherHandle:
    handle.weights = meta.get("weights_sha256", "")
    return handle


def frozen_handle(model: torch.nn.Module, device: torch.device, path: Path | None, key: str) -> TeacherHandle:
    """A teacher module the caller already holds, frozen (eval, no gradients) on ``device``."""
    return _frozen(model, device, path, key, float("nan"), True)


def _frozen(
    model: torch.nn.Module, device: torch.device, path: Path | None, key: str, acc: float, reused: bool
) -> TeacherHandle:
    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())
    return TeacherHandle(model=model, path=path, key=key, val_accuracy=acc, reused=reused, params=params)
