"""The shapes of the files a finished search folder holds (``front.json``, ``search.json``),
checked where ``front``, ``export`` and ``confirm`` read them back: a file cut, hand-edited or
written by another tool is a one-line error naming the file and the field, never a KeyError
deep inside a command. Fields beyond these are kept as they are (newer files add some)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autogram.config import ConfigError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Objective(_Open):
    name: str
    direction: Literal["maximize", "minimize"]


class _Trial(_Open):
    number: int
    status: str
    params: dict[str, Any]
    values: dict[str, float | None]
    pareto: bool


class _Front(_Open):
    name: str
    objectives: list[_Objective] = Field(min_length=1)
    trials: list[_Trial]


class _Search(_Open):
    space: dict[str, Any]


class _Config(_Open):
    search: _Search


class _Spec(_Open):
    name: str
    config: _Config
    candidates: list[str]


def _checked(document: Any, path: Path, model: type[BaseModel], what: str) -> Any:
    try:
        model.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the file"
        # pydantic names its model class for a value that is not an object: say it in JSON's words.
        message = "expected a JSON object" if error["type"] == "model_type" else error["msg"]
        raise ConfigError(
            f"{path}: does not read as a search's {what} ({where}: {message}): cut, edited or written by another tool?"
        ) from None
    return document


def checked_front(document: Any, path: Path) -> dict[str, Any]:
    """``document`` (read from ``path``) if it has a front's fields, else a one-line ConfigError."""
    return _checked(document, path, _Front, "front")


def checked_spec(document: Any, path: Path) -> dict[str, Any]:
    """``document`` (read from ``path``) if it has a search spec's fields, else a one-line ConfigError."""
    return _checked(document, path, _Spec, "spec")
