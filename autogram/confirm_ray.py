"""Ray's start and stop around a confirm on Ray (``--concurrency N``, ``--address ADDR``):
started while the driver prepares, each slot's worker warmed, and shut down in the background
while the table is written (:func:`ray_stopped` waits for it), and a helper to run the
driver's own preparation beside them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def ray_started(parallel: dict[str, Any] | None) -> Iterator[None]:
    """Ray for a confirm on Ray (``parallel``; nothing for one in this process), started (or
    joined, with an ``address``) on entering, so that the caller prepares its retrainings
    while it starts, and shut down on leaving if started here. Each of the ``concurrency``
    slots first gets a warm-up task: a worker's first imports and first optimiser step (about
    3 s on a CPU) then overlap this process's own start instead of delaying the first results."""
    if parallel is None:
        yield
        return
    import ray

    ray_stopped()  # a Ray this module started before is gone before one starts again
    started = not ray.is_initialized()
    if started:
        _start_ray(parallel)
    try:
        resources = parallel.get("resources") or {}
        warm = ray.remote(_warm_worker).options(num_cpus=float(resources.get("cpu", 1.0)), max_retries=0)
        # Not waited on: the retrainings queue behind them, and one that fails costs nothing
        # (the retraining on that worker reports the fault itself).
        for _ in range(max(1, int(parallel.get("concurrency", 1)))):
            warm.remote()
        yield
    except BaseException:
        if started and ray.is_initialized():
            ray.shutdown()
        raise
    if started and ray.is_initialized():
        # Ray's shutdown mostly waits (about 1.4 s locally) for its processes to exit after
        # SIGTERM: the table and its upload go on meanwhile, and ray_stopped() waits for it.
        stopping = threading.Thread(target=ray.shutdown, name="confirm-ray-shutdown")
        stopping.start()
        _STOPPING.append(stopping)


_STOPPING: list[threading.Thread] = []


def ray_stopped() -> None:
    """Wait for the shutdown of a Ray that :func:`ray_started` left stopping in the background
    (a process that exits first waits for it anyway: the thread is not a daemon)."""
    while _STOPPING:
        _STOPPING.pop().join()


def _start_ray(parallel: dict[str, Any]) -> None:
    """A local Ray, or the cluster at ``parallel["address"]`` joined as a search joins it: one
    that does not answer is a one-line error in seconds, not Ray's endless retries."""
    from autogram.study.cluster import join
    from autogram.study.ray_setup import init_ray

    if parallel.get("address") is None:
        init_ray(None, parallel.get("runtime_env"))
    else:
        join(parallel["address"], parallel.get("runtime_env"))


def _warm_worker() -> None:
    """A Ray task: what a retraining first pays on a new worker, paid early: its modules, and
    the ``torch._dynamo`` import of an optimiser's first step."""
    import numpy.ma  # noqa: F401  (np.unique, in the data's checks, imports it)
    import torch
    import torch.utils.flop_counter  # noqa: F401  (each retraining counts its FLOPs)

    import autogram.data
    import autogram.distill
    import autogram.teacher.reader
    import autogram.trial  # noqa: F401

    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()


def in_background(work: Callable[[], Any], name: str) -> Callable[[], Any]:
    """Start ``work`` in a daemon thread (a Ctrl-C meanwhile does not wait for it); the returned
    function waits for its value, or raises what it raised."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return wait
