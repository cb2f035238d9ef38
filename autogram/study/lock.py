"""One search per folder: a lock file held for the driver's life.

Two drivers on one search folder (the same ``--name`` and ``--out`` started together, or a
``--resume`` while the search still runs) would share one study and write over each other's
Ray state and front. The first to start holds ``NAME/.lock`` (its PID and host) until it
exits, however it exits; the second stops with one line. A lock left by a driver that was
SIGKILLed on this host (its PID is gone) is taken over with a log line; one from another
host cannot be checked, and the message says how to clear it.

The lock also lists the processes the driver started (its local Ray: GCS, raylet, agents,
workers), by PID and start time, refreshed while it runs. A SIGKILLed driver cannot stop them,
and two of Ray's agents outlive it; whoever takes the stale lock over (a ``--resume``) stops
those still running, by PID, and says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autogram.config import ConfigError

log = logging.getLogger("autogram")
LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _take(path: Path) -> bool:
    """Create the lock file with this process's PID and host; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
    return True


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (/proc), or None if it is gone (or a
    zombie: dead, waiting for a parent that may never reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 3 (state) and 22 (start time) of stat, counted after the ")" that ends the command name.
    return None if fields[0] in ("Z", "X") else int(fields[19])


def descendants(pid: int) -> list[tuple[int, int]]:
    """(PID, start time) of every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = _start_time(child)
        if started is not None:
            out.append((child, started))
        todo.extend(children.get(child, []))
    return sorted(out)


def record_processes(directory: Path) -> None:
    """Write this driver's descendants into its lock (nothing if the lock is not this driver's)."""
    path = directory / LOCK_FILE
    with _RECORDING:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if holder.get("pid") != os.getpid():
            return
        holder["processes"] = descendants(os.getpid())
        tmp = path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(holder))
        os.replace(tmp, path)


@contextmanager
def recording_processes(
    directory: Path, delays: tuple[float, ...] = (2.0, 10.0, 30.0), every: float = 120.0
) -> Iterator[None]:
    """For the block: refresh the lock's list of this driver's processes after each of ``delays``
    seconds (Ray starts its agents and workers over the first seconds), then ``every`` seconds."""
    stop = threading.Event()
    waits = [b - a for a, b in zip((0.0, *delays), delays, strict=False)]

    def run() -> None:
        for wait in waits:
            if stop.wait(wait):
                return
            record_processes(directory)
        while not stop.wait(every):
            record_processes(directory)

    thread = threading.Thread(target=run, name="autogram-processes", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def _stop_orphans(processes: list[list[int]], directory: Path) -> None:
    """SIGKILL the recorded processes of a dead driver that still run (same PID and start time:
    a PID reused by another program is left alone). Ray's agents ignore SIGTERM."""
    import signal

    stopped = []
    for pid, started in processes:
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            stopped.append(pid)
    if stopped:
        log.info(
            "search folder %s: stopped %d process(es) the killed driver left running (PIDs %s)",
            directory,
            len(stopped),
            ", ".join(map(str, stopped)),
        )


# Held while the lock file is rewritten, and by the release, so no rewrite recreates a released lock.
_RECORDING = threading.Lock()


@contextmanager
def search_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` for the block; ConfigError if another live driver holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    if not _take(path):
        try:
            holder = json.loads(path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
            orphans = [list(p) for p in holder.get("processes", [])]
        except (OSError, ValueError, KeyError, TypeError):
            pid, host, orphans = -1, "", []  # cut while being written: its writer died at once
        stale = pid < 0 or (host == socket.gethostname() and not _alive(pid))
        if stale:
            log.info("search folder %s: taking over the lock of driver PID %s, which is gone", directory, pid)
            _stop_orphans(orphans, directory)
            path.unlink(missing_ok=True)
            if not _take(path):
                raise ConfigError(f"search folder {directory} was locked again by another driver meanwhile")
        else:
            raise ConfigError(
                f"search folder {directory} is in use by a search driver (PID {pid} on {host}); wait for it, or "
                f"if no search runs there, delete {path}"
            )
    try:
        yield
    finally:
        with _RECORDING:
            path.unlink(missing_ok=True)


def discard_unstarted(directory: Path, tune_dir: str) -> bool:
    """Empty the folder of a *new* search that failed before Ray Tune started (no ``tune_dir``
    in it): nothing there can be resumed, and a leftover ``search.json`` or ``optuna.db`` would
    make the name unusable (a rerun: "already holds a search"; ``--resume``: "no search").
    Everything in it is this driver's: a new search starts in an empty folder, under its lock.
    Returns whether the search had not started (its folder emptied, or never made)."""
    import shutil

    if (directory / tune_dir).exists():
        return False
    if not directory.is_dir():
        return True
    for entry in directory.iterdir():
        if entry.name == LOCK_FILE:
            continue  # released, and removed, by search_lock itself
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return True
