"""Calling the user's code that a config names (``package.module:function``), with one-line errors."""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from typing import Any

from autogram.config import ConfigError


def resolve_factory(path: str, field: str) -> Callable[..., Any]:
    """The callable ``path`` names (``package.module:function``), or a one-line ConfigError."""
    try:
        target = pkgutil.resolve_name(path)
    except Exception as exc:  # ImportError, AttributeError, ValueError: all mean "not found"
        raise ConfigError(f"{field}: cannot import {path!r} ({type(exc).__name__}: {exc})") from None
    if not callable(target):
        raise ConfigError(f"{field}: {path!r} is a {type(target).__name__}, not a function or class")
    return target


def call_factory(fn: Callable[..., Any], field: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call a user factory; whatever it raises becomes one line quoting its message."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split()) or "(no message)"
        raise ConfigError(f"{field} {name!r} raised {type(exc).__name__}: {message}") from None
