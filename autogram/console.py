"""What every command shares on the console: autogram's log lines, and user errors turned
into one line on stderr and exit code 2 (a config mistake, the machine refusing a write);
and what ``autogram layers`` prints."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from autogram.config import ConfigError

log = logging.getLogger("autogram")


@functools.cache  # once per process
def freeze_at_exit() -> None:
    """As the process's last exit step, move every live object out of the garbage
    collector's reach, so that the interpreter's final collections skip them.

    After torch, transformers and mlflow are loaded those collections take 1-2 s on a 2-core
    machine, at the end of every command, and free nothing a process about to exit needs:
    objects still go by reference count, so files close and flush as before (and a command
    closes its files itself; Python never promised finalizers at exit for objects in cycles)."""
    # atexit runs last what it got first: register before torch, Ray or mlflow add theirs.
    atexit.register(gc.freeze)


@contextlib.contextmanager
def stdout_for_json(as_json: bool) -> Iterator[None]:
    """While a ``--json`` command works, whatever else writes to stdout goes to stderr, so that
    stdout holds the JSON alone: Ray's driver prints the cluster's error notices there (a node
    marked dead, say) whatever ``log_to_driver`` says."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def setup_logging(quiet: bool) -> None:
    """autogram's log lines on stderr (``quiet``: warnings and errors only)."""
    # MLflow's per-download progress bar says nothing a user needs (exports read one file).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Its database set-up lines ("Creating initial MLflow database tables") need no action.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[autogram] %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


# OSErrors that say the machine refused (space, quota, read-only, permissions), not a bug.
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ConfigError raised anywhere below into one stderr line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"autogram: error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            # The machine, not the code: a full disk, a read-only or vanished folder mid-run.
            if exc.errno not in _MACHINE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"autogram: error: {where}{exc.strerror}", err=True)
            sys.exit(2)
        except Exception as exc:
            if type(exc).__name__ != "StorageInternalError":  # optuna's, for a write the database refused
                raise
            click.echo(
                f"autogram: error: the study storage refused a write ({_first_line(exc)}): a full disk?", err=True
            )
            sys.exit(2)

    return wrapper


# click >= 8.2 raises it for a bare group (earlier ones print the help and exit 0 themselves).
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class UserErrorsGroup(click.Group):
    """The command group: a mistake on the command line (an unknown option, a value out of
    range, a missing argument) ends as one stderr line naming the option and exit code 2, as
    every other user error does, instead of click's four-line usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """click's ``main``; in standalone mode (the command line) with one-line errors."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS_IS_HELP as exc:  # a bare `autogram`: its help, as click gives it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "autogram"
            click.echo(f"autogram: error: {exc.format_message().rstrip('.')} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"autogram: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C or end of input at a prompt, as click reports it
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # A command returns None; click's own exits (--help, --version) return their code.
        sys.exit(code if isinstance(code, int) else 0)


def _first_line(exc: BaseException) -> str:
    from autogram.config.base import first_line

    return first_line(exc)[:200]


def taps_document(parts: Any, auto: list[Any]) -> dict[str, Any]:
    """``autogram layers --json``: both models' taps, the default and configured pairs, and
    the cross-modal term's taps of a prepared set-up ``parts``."""
    return {
        "teacher": [t.to_dict() for t in parts.teacher_taps],
        "student": [t.to_dict() for t in parts.student_taps],
        "default_pairs": [p.name for p in auto],
        "pairs": [p.name for p in parts.pairs],
        "cross_modal": {
            "student": [t.name for t in parts.student_embeds.values()],
            "teacher": [t.name for t in parts.teacher_embeds.values()],
        },
    }


def describe_taps(parts: Any, auto: list[Any], configured: bool) -> str:
    """``autogram layers``: the same as :func:`taps_document`, for a reader."""
    data = parts.data
    lines = [f"data: {data.source}  modalities: {', '.join(m.describe() for m in data.modalities)}"]
    for title, taps in (("teacher taps", parts.teacher_taps), ("student taps", parts.student_taps)):
        lines.append(f"\n{title} (name, modality, relative depth, output shape per sample, module path):")
        lines += [f"  {tap.describe()}" for tap in taps]
    lines.append("\ndefault pairing (same modality, nearest relative depth):")
    lines += [f"  {pair.student.name:<16} -> {pair.teacher.name}" for pair in auto]
    if configured:
        lines.append("\nconfigured pairs (distill.pairs):")
        lines += [f"  {pair.student.name:<16} -> {pair.teacher.name}" for pair in parts.pairs]
    lines.append(
        "\ncross-modal term taps (embeddings entering fusion): "
        f"student {', '.join(t.name for t in parts.student_embeds.values())}; "
        f"teacher {', '.join(t.name for t in parts.teacher_embeds.values())}"
    )
    return "\n".join(lines)
