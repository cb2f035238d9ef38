"""One registry shape for every extension point: loss terms, model sources, data sources.

A registry maps a name to a class, is filled by a class decorator, and answers an unknown
name with a one-line :class:`ConfigError` naming the config field and what is registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from autogram.config.base import ConfigError

T = TypeVar("T")


class Registry(dict[str, type[T]], Generic[T]):
    """Name -> class, in registration order; ``what`` names one entry in messages."""

    def __init__(self, what: str, identifiers: bool = False) -> None:
        super().__init__()
        self.what = what
        # Whether a name must be a Python identifier (a term's name becomes a parameter name).
        self.identifiers = identifiers

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name`` (a name is registered once)."""
        name: Any = getattr(cls, "name", "")
        if self.identifiers and not (name and name.isidentifier()):
            raise ValueError(f"{self.what} {cls.__name__}: name {name!r} must be a Python identifier")
        if not name:
            raise ValueError(f"{cls.__name__} has no name")
        if name in self and self[name] is not cls:
            raise ValueError(f"{self.what} {name!r} is already registered ({self[name].__name__})")
        self[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy one clean up with this)."""
        self.pop(name, None)

    def check(self, names: Iterable[str], field: str) -> None:
        """A one-line error for the first of ``names`` (sorted) that is not registered."""
        unknown = sorted(set(names) - set(self))
        if unknown:
            raise ConfigError(f"{field}: unknown {self.what} {unknown[0]!r} (registered: {', '.join(self)})")

    def get_class(self, name: str, field: str) -> type[T]:
        """The class registered as ``name``, or the one-line error of :meth:`check`."""
        self.check([name], field)
        return self[name]
