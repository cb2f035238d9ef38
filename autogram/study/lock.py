"""One search per folder: a lock file held for the driver's life.

Two drivers on one search folder (the same ``--name`` and ``--out`` started together, or a
``--resume`` while the search still runs) would share one study and write over each other's
Ray state and front. The first to start holds ``NAME/.lock`` (its PID and host) until it
exits, however it exits; the second stops with one line. A lock left by a driver that was
SIGKILLed on this host (its PID is gone) is taken over with a log line; one from another
host cannot be checked, and the message says how to clear it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
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


@contextmanager
def search_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` for the block; ConfigError if another live driver holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    if not _take(path):
        try:
            holder = json.loads(path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = -1, ""  # cut while being written: its writer died at once
        stale = pid < 0 or (host == socket.gethostname() and not _alive(pid))
        if stale:
            log.info("search folder %s: taking over the lock of driver PID %s, which is gone", directory, pid)
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
        path.unlink(missing_ok=True)
