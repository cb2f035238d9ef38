"""The base of every config type: strict pydantic models and the one user-facing error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line naming the field or file."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of a foreign exception's message (its type name if it has none),
    for a one-line :class:`ConfigError` or warning that quotes it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class Strict(BaseModel):
    """A config section where unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
