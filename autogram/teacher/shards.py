"""A search's teacher cache, built by Ray tasks over shards of the train split.

One process running the teacher over a big train split leaves the cluster idle; here each
shard (a run of whole batches) is a Ray task with the search's per-trial resources, GPUs
included. A task writes its rows as a small cache of its own (arrays, then its manifest last)
into ``.<key>.shards/shard-NNNN`` beside the cache folder, which on a cluster is shared storage
like ``--out``. The driver then assembles the shards into the same files, manifest and checks
:func:`autogram.teacher.cache.build_cache` writes, and removes the staging folder.

Shard boundaries are multiples of the batch size, so every batch the teacher sees is the batch
the single-process build sees, and every shard sketches on the exact basis the split's first
batch fixes (:func:`sketch_bases`, run here before the tasks): with the
same torch thread count the two caches are equal byte for byte. A build cut
by a crash or a kill keeps its finished shards (a shard counts once its manifest is written and
its files match it), and the next build of the same key runs only the missing ones.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("autogram")
PLAN_FILE = "plan.json"


def shard_bounds(samples: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """(start, stop) of each shard: whole batches, as even as the batch count allows."""
    batches = max(1, math.ceil(samples / batch_size))
    per = math.ceil(batches / max(1, min(shards, batches)))
    step = per * batch_size
    return [(lo, min(samples, lo + step)) for lo in range(0, samples, step)]


def staging_folder(directory: Path) -> Path:
    """Where the shards of the cache ``directory`` are written before assembly."""
    return directory.with_name(f".{directory.name}.shards")


def _prepare_staging(staging: Path, key: str, bounds: list[tuple[int, int]]) -> None:
    """Keep a staging folder of the same key and bounds (a resumed build), else start it afresh."""
    plan = {"key": key, "bounds": [list(b) for b in bounds]}
    path = staging / PLAN_FILE
    if path.is_file():
        try:
            if json.loads(path.read_text()) == plan:
                return
        except (OSError, json.JSONDecodeError):
            pass
        log.info("teacher cache: %s was staged for another layout or split; starting it afresh", staging)
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f".{PLAN_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, path)


def shard_done(folder: Path, key: str, rows: int) -> bool:
    """Whether ``folder`` holds a finished shard of ``rows`` samples for ``key`` (files checked)."""
    from autogram.teacher.cache import CacheInvalid, open_cache, read_manifest

    try:
        arrays = open_cache(folder, verify=True)
        return read_manifest(folder).get("key") == key and all(len(a) == rows for a in arrays.values())
    except CacheInvalid:
        return False


def _build_shard(
    model: Any,
    split: Any,
    layout: Any,
    device_type: str,
    rows: tuple[int, int],
    folder: str,
    key: str,
    batch: int,
    threads: int,
    bases: dict[str, Any],
) -> dict[str, Any]:
    """One shard, on a Ray worker: the teacher over ``rows``, written to ``folder`` atomically."""
    import socket

    import torch

    from autogram.teacher.cache import _write_arrays

    device = torch.device("cuda" if device_type == "cuda" else "cpu")
    torch.set_num_threads(threads)  # the task's CPUs, as trials size theirs
    target = Path(folder)
    tmp = target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        _write_arrays(model.to(device), split, layout, device, tmp, key, batch, rows=rows, bases=bases)
        if target.exists():  # another build of the same key finished this shard first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    import ray

    node = ray.get_runtime_context().get_node_id()
    return {"rows": list(rows), "seconds": time.perf_counter() - started, "host": socket.gethostname(), "node": node}


def search_builder(cfg: Any, device: Any, address: str | None = None) -> Any:
    """A search's cache builder: Ray tasks over shards of the train split, each with a trial's
    resources; None for the driver's own build: with ``teacher.cache_shards: 1``, on a GPU
    driver whose trials get no GPU, or, unless ``cache_shards`` asks for shards, on a local Ray
    (no ``address``) with at most one device to spread over."""
    from functools import partial

    search = cfg.search
    if cfg.teacher.cache_shards == 1:
        return None
    if device.type == "cuda" and search.resources.gpu == 0:
        log.info("teacher cache: built here on the GPU (trials get none: search.resources.gpu is 0)")
        return None
    if cfg.teacher.cache_shards is None and address is None and _devices_here(device) < 2:
        # One process already keeps this machine's cores (or its one GPU) busy: shards would add
        # only each Ray worker's start and the teacher's hand-over (7.7 s against 2.2 s for
        # the quick start's cache on 2 cores).
        log.info(
            "teacher cache: built in this process (a local Ray, one %s; teacher.cache_shards: N shards it)", device.type
        )
        return None
    shards = cfg.teacher.cache_shards or 4 * search.concurrency
    gpus = search.resources.gpu if device.type == "cuda" else 0
    return partial(build_sharded, shards=shards, resources={"cpu": search.resources.cpu, "gpu": gpus})


def _devices_here(device: Any) -> int:
    """How many devices of ``device``'s kind a local Ray's shards could spread over (CPU: one,
    whatever its cores: torch in one process uses them all)."""
    if device.type != "cuda":
        return 1
    import torch

    return torch.cuda.device_count()


def build_sharded(
    model: Any,
    split: Any,
    layout: Any,
    device: Any,
    directory: Path,
    key: str,
    shards: int,
    resources: dict[str, float],
    batch_size: int = 256,
) -> None:
    """:func:`~autogram.teacher.cache.build_cache`, with the teacher's forward spread over
    ``shards`` Ray tasks (Ray must be running); finished shards of a cut build are kept."""
    bounds = shard_bounds(len(split), batch_size, shards)
    staging = staging_folder(directory)
    _prepare_staging(staging, key, bounds)
    folders = [staging / f"shard-{i:04d}" for i in range(len(bounds))]
    todo = [i for i, (lo, hi) in enumerate(bounds) if not shard_done(folders[i], key, hi - lo)]
    started = time.perf_counter()
    log.info(
        "teacher cache: %d samples in %d shards as Ray tasks (%s each)%s",
        len(split),
        len(bounds),
        ", ".join(f"{v:g} {k}" for k, v in resources.items()),
        f"; {len(bounds) - len(todo)} finished by an earlier build are kept" if len(todo) < len(bounds) else "",
    )
    if todo:
        _run_shards(model, split, layout, device, (bounds, folders, todo), key, resources, batch_size)
    _assemble(folders, directory, key, layout, started)
    shutil.rmtree(staging, ignore_errors=True)


def _run_shards(
    model: Any,
    split: Any,
    layout: Any,
    device: Any,
    plan: tuple[list[tuple[int, int]], list[Path], list[int]],
    key: str,
    resources: dict[str, float],
    batch_size: int,
) -> None:
    """The teacher's forward over the shards still to do (``plan``: every shard's rows and
    folder, and which are left) as Ray tasks, logging each one as it finishes."""
    import ray

    bounds, folders, todo = plan
    # One basis per sketched tap for every shard, fixed by the split's first batch as in
    # a single build; the tasks' own first batches would each fix another.
    bases = sketch_bases(model, split, layout, device, batch_size)
    home = next(model.parameters()).device if any(True for _ in model.parameters()) else None
    model_ref = ray.put(model.cpu())  # workers move it to their own device
    if home is not None:
        model.to(home)
    split_ref = ray.put(split)
    threads = max(1, int(resources.get("cpu", 1)))
    task = ray.remote(_build_shard).options(num_cpus=resources.get("cpu", 1), num_gpus=resources.get("gpu", 0))
    pending = {
        task.remote(
            model_ref, split_ref, layout, device.type, bounds[i], str(folders[i]), key, batch_size, threads, bases
        ): i
        for i in todo
    }
    finished = len(bounds) - len(todo)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        pending.pop(done[0])
        report = _result(done[0])  # a task's error surfaces here, its finished siblings kept
        finished += 1
        log.info(
            "teacher cache: shard %d/%d done (rows %d-%d, %.1fs on %s, node %s)",
            finished,
            len(bounds),
            *report["rows"],
            report["seconds"],
            report["host"],
            report["node"][:12],
        )


def sketch_bases(model: Any, split: Any, layout: Any, device: Any, batch_size: int) -> dict[str, Any]:
    """Each sketched tap's exact basis, from the split's first batch: a build over shards must
    give every shard the one basis a single build would use (a sketch's inner products between
    samples are only right when both were projected on the same basis)."""
    import torch

    from autogram.models.features import capture
    from autogram.teacher.cache import SKETCH, tap_dims
    from autogram.teacher.sketch import EXACT_DIMS, Sketcher
    from autogram.tensors.runtime import autocast

    sketched = [(tap, tap_dims(tap)) for _, tap, form in layout.arrays() if form == SKETCH]
    if not sketched:
        return {}
    chunk = split.rows(np.arange(0, min(batch_size, len(split))))
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in chunk.items()}
    model.eval()
    with torch.no_grad(), autocast(device), capture(model, list(layout.taps)) as feats:
        model(batch)
        bases = {}
        for tap, (channels, positions) in sketched:
            sketcher = Sketcher(tap.name, channels * positions, layout.sketch, layout.seed, device, EXACT_DIMS)
            sketcher(feats[tap.name].float())
            if sketcher.basis is not None:
                bases[tap.name] = sketcher.basis.cpu()
    return bases


def _result(ref: Any) -> dict[str, Any]:
    """A shard task's report; a user error it raised (a ConfigError: e.g. a tap beyond float16)
    comes back as itself, the one-line message it would be in one process."""
    import ray

    from autogram.config import ConfigError

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ConfigError):
            raise exc.cause from None
        raise


def _assemble(folders: list[Path], directory: Path, key: str, layout: Any, started: float) -> None:
    """The shards' rows, concatenated into one cache written and renamed like build_cache's."""
    from autogram.teacher.cache import _file_name, read_manifest, write_folder, write_manifest

    manifests = [read_manifest(f) for f in folders]
    total = sum(m["samples"] for m in manifests)

    def write(tmp: Path) -> dict[str, Any]:
        outputs: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for name, entry in manifests[0]["arrays"].items():
            parts = [np.load(folder / entry["file"], mmap_mode="r") for folder in folders]
            out = np.lib.format.open_memmap(
                tmp / _file_name(name), mode="w+", dtype=parts[0].dtype, shape=(total, *parts[0].shape[1:])
            )
            row = 0
            for part in parts:
                out[row : row + len(part)] = part
                row += len(part)
            outputs[name], dtypes[name] = out, entry["dtype"]
        flops = float(manifests[0].get("teacher_flops_per_sample", 0.0))
        return write_manifest(outputs, dtypes, tmp, key, layout, flops, started)

    manifest = write_folder(directory, write)
    log.info(
        "teacher cache: assembled %s from %d shards (%d samples, %.1f MB, %.1fs)",
        directory,
        len(folders),
        total,
        manifest["bytes_per_sample"] * total / 1e6,
        manifest["build_seconds"],
    )
