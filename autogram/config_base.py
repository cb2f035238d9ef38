"""The base of every config type: strict pydantic models and the one user-facing error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line naming the field or file."""


class Strict(BaseModel):
    """A config section where unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
