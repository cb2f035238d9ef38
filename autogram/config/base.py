"""The base of every config type: strict pydantic models and the one user-facing error type."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# A seed: numpy's generators refuse a negative one, Optuna's samplers (a RandomState) one of
# 2**32 or more; a traceback from inside a trial is not how a user should learn it.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


def once_each(values: list[Any], what: str) -> None:
    """Refuse a list that names an item twice (a pair counted twice weighs double in the mean;
    a modality listed twice is read once): a ValueError pydantic reports on the field."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)


def bound_number(text: str) -> float | None:
    """A comparison's bound (a constraint's, ``--where``'s) as a float; None when ``text`` is not
    a number or is NaN, which parses and then no value ever passes or every value breaks."""
    try:
        bound = float(text)
    except ValueError:
        return None
    return None if math.isnan(bound) else bound


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line naming the field or file."""


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file autogram wrote, or a one-line :class:`ConfigError` naming it (missing, not
    UTF-8, or cut: a run still writing it, or a disk that filled)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc.msg}, line {exc.lineno}): cut or edited?") from None


def first_line(exc: BaseException) -> str:
    """The first non-blank line of a foreign exception's message (its type name if it has none),
    for a one-line :class:`ConfigError` or warning that quotes it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class Strict(BaseModel):
    """A config section where unknown keys are errors: a typo must never be silently ignored."""

    # NaN or inf in a weight, a range or a severity trains into NaN scores (or none at all)
    # without a word: refused like any other bad value.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def check_writable(path: Path, field: str) -> None:
    """A folder autogram will write into (created if missing) must be writable: probed in its
    nearest existing ancestor with a temporary file that is removed at once, so a read-only or
    missing file system is a one-line error before any work, and nothing is left behind."""
    import os
    import tempfile

    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{field}: {path}: {folder} is a file, not a folder")
    try:
        handle, name = tempfile.mkstemp(prefix=".autogram-probe-", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot write into {folder} ({exc.strerror or type(exc).__name__})") from None
    os.close(handle)
    os.unlink(name)


def atomic_write(path: Path, write: Callable[[Path], None], tmp: Path | None = None) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then swap it in: readers never
    see half a file, and a failure (a full disk) leaves the old file whole and no temporary
    file behind; an OSError then names ``path``, not the temporary file."""
    import os

    tmp = tmp or path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp), tmp):
            exc.filename = str(path)
        raise
