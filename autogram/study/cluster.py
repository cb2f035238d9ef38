"""Joining a Ray cluster (``--address``) and checking that its nodes see the search's folders.

Both happen while the search is planned, before anything is written: a cluster that does
not answer, or a node that cannot read ``--out`` or the teacher cache, is a one-line error.
"""

from __future__ import annotations

import logging
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

from autogram.config.base import ConfigError, first_line

log = logging.getLogger("autogram")
PROBE_PREFIX = ".autogram-probe-"


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a plain ``host:port`` address; ``None`` for ``auto`` and ``ray://``."""
    if address == "auto" or "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected host:port, auto, or ray://host:port")
    return host, int(port)


def join(address: str, runtime_env: dict[str, Any] | None) -> None:
    """Connect this process to the Ray cluster at ``address`` or raise a one-line ConfigError."""
    from autogram.study.ray_setup import init_ray

    target = _host_port(address)
    if target is not None:  # fail in seconds, not after Ray's minute of retries
        try:
            socket.create_connection(target, timeout=5).close()
        except OSError as exc:
            raise ConfigError(
                f"--address {address}: no Ray cluster answers there ({exc.strerror or type(exc).__name__})"
            ) from None
    try:
        init_ray(address, runtime_env)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, auth errors, ...
        raise ConfigError(f"--address {address}: cannot join the Ray cluster ({first_line(exc)})") from None


def _read_probe(path: str) -> str | None:
    probe = Path(path)
    return probe.read_text() if probe.is_file() else None


def check_shared(folders: dict[str, Path]) -> None:
    """Each alive node reads a probe file the driver wrote in each folder (``{field: folder}``);
    a folder some node cannot see is a one-line error naming it, the node and what to share.
    Probes (and folders made only for them) are removed afterwards."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    written: list[tuple[str, Path, Path | None]] = []
    try:
        for field, folder in folders.items():
            folder = folder.resolve()
            made = None if folder.exists() else _outermost_missing(folder)
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f"{PROBE_PREFIX}{token}"
            probe.write_text(token)
            written.append((field, probe, made))
        reader = ray.remote(num_cpus=0)(_read_probe)
        for node in (n for n in ray.nodes() if n.get("Alive")):
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            for field, probe, _ in written:
                seen = ray.get(reader.options(scheduling_strategy=strategy).remote(str(probe)), timeout=120)
                if seen != token:
                    raise ConfigError(
                        f"{field} {probe.parent}: not visible from Ray node {node.get('NodeManagerAddress', '?')} "
                        f"({node['NodeID'][:12]}); put it on storage every node mounts at the same path "
                        "(NFS, a shared volume; see the README's Clusters section)"
                    )
    finally:
        for _, probe, made in written:
            probe.unlink(missing_ok=True)
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)


def _outermost_missing(folder: Path) -> Path:
    """The highest folder on the way to ``folder`` that does not exist yet."""
    missing = folder
    while not missing.parent.exists():
        missing = missing.parent
    return missing


def check_execution(cfg: Any, out: Path, address: str | None) -> Any:
    """Devices, GPU shares, the study's storage and the cluster, checked before anything is
    written; returns ``cfg`` with the storage URL's password moved into the environment."""
    from autogram.config.base import check_writable

    check_writable(out, "--out")
    if cfg.teacher.cache or cfg.teacher.checkpoint is None:  # where the teacher and its cache are written
        check_writable(cfg.teacher.cache_dir, "teacher.cache_dir")
    resources = cfg.search.resources
    if cfg.device == "cuda" and resources.gpu == 0:
        raise ConfigError(
            "search.resources.gpu: 0, but device is cuda: give each trial a share of a GPU "
            "(e.g. 0.25 packs four trials on one GPU)"
        )
    if address is None and resources.gpu > 0:
        import torch

        if not torch.cuda.is_available():  # a local Ray would wait forever for a GPU
            raise ConfigError(
                f"search.resources.gpu: {resources.gpu:g}, but this machine has no CUDA device "
                "(set it to 0, or join a cluster with GPUs with --address)"
            )
    if cfg.search.storage:
        from autogram.config.credentials import storage_url

        search = cfg.search.model_copy(update={"storage": storage_url(cfg.search.storage)})
        cfg = cfg.model_copy(update={"search": search})
    if address is not None:
        from autogram.study.ray_setup import ray_runtime_env

        join(address, ray_runtime_env(cfg, address))
        folders = {"--out": out, **({"teacher.cache_dir": cfg.teacher.cache_dir} if cfg.teacher.cache else {})}
        check_shared(folders)
    return cfg
