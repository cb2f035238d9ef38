"""The frozen teacher's signals, computed once and read by sample index.

The teacher is the heavy model; in distillation tuning every trial would otherwise run
it forward on every batch. Its outputs over the training split never change while the
teacher, the data and the taps stay the same, so they are computed once, stored as
memory-mapped ``.npy`` files (logits, and every teacher tap in the canonical (N, C, P)
form the loss terms consume, so sample Grams, channel Grams and cross-modal terms are
all exact) and served through the same interface as the live teacher.

The teacher always sees the clean inputs (modality dropout only blanks the student's),
so a cached view matches what a live teacher would return for the same batch.

A cache lives in ``<teacher.cache_dir>/signals/<key>/`` with a ``manifest.json`` that
records each file's shape, dtype, size and sha256. A missing, partial or corrupt cache is
detected and rebuilt, never read; building writes into a temporary folder renamed at
the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autogram.models.taps import Tap
from autogram.signals import TeacherOutput

log = logging.getLogger("autogram")
FORMAT = "autogram-teacher-cache/1"
MANIFEST = "manifest.json"


class CacheInvalid(Exception):
    """The cache on disk is missing, partial or corrupt."""


def cache_key(teacher_key: str, data_fingerprint: str, taps: list[Tap], device: torch.device) -> str:
    """sha256 of everything the cached values depend on (bf16 autocast on CUDA changes them)."""
    payload = {
        "format": FORMAT,
        "teacher": teacher_key,
        "data": data_fingerprint,
        "taps": sorted((t.name, t.module_path, t.layout) for t in taps),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_name(name: str) -> str:
    return name.replace(":", "_") + ".npy"


def open_cache(directory: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Memory-map every array of the cache; raises CacheInvalid on any mismatch."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CacheInvalid(f"{directory}: no manifest (missing or partial cache)")
    manifest = json.loads(manifest_path.read_text())
    arrays = {}
    for name, entry in manifest["arrays"].items():
        path = directory / entry["file"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise CacheInvalid(f"{path}: missing or of the wrong size (truncated?)")
        if verify and _sha256(path) != entry["sha256"]:
            raise CacheInvalid(f"{path}: checksum mismatch (corrupt)")
        array = np.load(path, mmap_mode="r")
        if list(array.shape) != entry["shape"]:
            raise CacheInvalid(f"{path}: shape {array.shape}, manifest says {entry['shape']}")
        arrays[name] = array
    return arrays


def build_cache(
    model: torch.nn.Module,
    split: Any,
    taps: list[Tap],
    device: torch.device,
    directory: Path,
    key: str,
    batch_size: int = 256,
) -> None:
    """Run the frozen teacher over ``inputs`` once and write logits and tap features."""
    from autogram.features import capture
    from autogram.runtime import autocast

    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(split)
    outputs: dict[str, np.ndarray] = {}
    model.eval()
    started = time.perf_counter()
    flops_per_sample = 0.0
    for start in range(0, n, batch_size):
        rows = split.rows(np.arange(start, min(start + batch_size, n)))
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in rows.items()}
        with torch.no_grad(), autocast(device), capture(model, taps) as feats:
            if start == 0:  # the forward a live teacher would run per sample, for the cost objective
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    logits = model(batch)
                flops_per_sample = counter.get_total_flops() / len(logits)
            else:
                logits = model(batch)
        values = {"logits": logits, **feats}
        for name, value in values.items():
            value = value.float().cpu().numpy()
            if name not in outputs:
                outputs[name] = np.lib.format.open_memmap(
                    tmp / _file_name(name), mode="w+", dtype=np.float32, shape=(n, *value.shape[1:])
                )
            outputs[name][start : start + len(value)] = value
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "key": key,
        "samples": n,
        "arrays": {},
        "teacher_flops_per_sample": flops_per_sample,
    }
    for name, array in outputs.items():
        array.flush()
        path = tmp / _file_name(name)
        manifest["arrays"][name] = {
            "file": path.name,
            "shape": list(array.shape),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
    del outputs
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    size = sum(e["bytes"] for e in manifest["arrays"].values())
    log.info(
        "teacher cache: built %s (%d samples, logits + %d taps, %.1f MB = %.1f kB per sample, %.1fs)",
        directory,
        n,
        len(manifest["arrays"]) - 1,
        size / 1e6,
        size / max(n, 1) / 1e3,
        time.perf_counter() - started,
    )


def cache_bytes(directory: Path) -> int:
    """Bytes of every array of the cache in ``directory`` (from its manifest)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    return sum(e["bytes"] for e in manifest["arrays"].values())


def ensure_cache(
    model: torch.nn.Module | None, teacher_key: str, data: Any, taps: list[Tap], device: torch.device, root: Path
) -> Path:
    """The folder of a valid cache for this teacher, data and taps (only these taps are stored),
    built or rebuilt as needed."""
    key = cache_key(teacher_key, data.fingerprint, taps, device)
    directory = root / key[:16]
    try:
        open_cache(directory, verify=True)
        size = cache_bytes(directory)
        log.info("teacher cache: reusing %s (%.1f MB, %d taps)", directory, size / 1e6, len(taps))
    except CacheInvalid as exc:
        if directory.exists():
            log.warning("teacher cache: %s; rebuilding", exc)
        if model is None:
            raise CacheInvalid(f"{directory}: no valid cache, and no teacher model here to build it") from None
        build_cache(model, data.splits["train"], taps, device, directory, key)
    return directory


class CachedTeacher:
    """Serves the teacher's logits and tap features by training-sample index; no forward pass.

    On a GPU the arrays a trial reads are copied to the device once per process and kept
    there for the next trials of the same worker (when they fit in half of this process's
    share of the GPU), so a batch is an index on the device: no host read, no copy, no sync.
    Elsewhere they are read from the memory-mapped files.
    """

    def __init__(self, directory: Path, taps: list[Tap], device: torch.device, verify: bool = False) -> None:
        arrays = open_cache(directory, verify=verify)
        missing = [t.name for t in taps if t.name not in arrays]
        if missing:
            raise CacheInvalid(f"{directory}: no cached features for {', '.join(missing)}")
        self.taps = list(taps)
        self.device = device
        self.flops_per_sample = float(json.loads((directory / MANIFEST).read_text())["teacher_flops_per_sample"])
        self.arrays = {name: arrays[name] for name in ["logits", *(t.name for t in taps)]}
        self.on_device: dict[str, torch.Tensor] | None = None
        if device.type == "cuda" and self._fits(device):
            from autogram.runtime import resident

            kept = resident((str(directory.resolve()), "teacher-cache", str(device)), dict)
            for name, array in self.arrays.items():
                if name not in kept:  # one sequential read of the file, one copy to the GPU
                    kept[name] = torch.from_numpy(np.ascontiguousarray(array)).to(device)
            self.on_device = {name: kept[name] for name in self.arrays}

    def _fits(self, device: torch.device) -> bool:
        from autogram.runtime import memory_budget

        needed = sum(a.nbytes for a in self.arrays.values())
        return needed <= 0.5 * (memory_budget(device) - torch.cuda.memory_allocated(device))

    def __call__(self, indices: torch.Tensor, inputs: dict[str, torch.Tensor]) -> TeacherOutput:
        """Look up the batch's rows (``inputs`` are not needed: the cache holds their results)."""
        del inputs
        if self.on_device is not None:
            from autogram.runtime import to_device

            rows_on_device = to_device(indices, self.device)
            values = {k: v[rows_on_device] for k, v in self.on_device.items()}
        else:
            rows = indices.cpu().numpy()
            values = {
                k: torch.from_numpy(np.ascontiguousarray(v[rows])).to(self.device) for k, v in self.arrays.items()
            }
        logits = values.pop("logits")
        return TeacherOutput(logits, values)
