"""The generated part of the docs: the CLI's ``--help`` and every config field, from the code.

``mkdocs build`` calls :func:`write_reference` (``docs/hooks.py``) so the reference cannot drift
from the commands and config types it documents. A field's meaning is the comment block written
above it in its class (the code's own documentation), else its class's docstring.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any

_FIELD = re.compile(r"^    ([a-z_][a-z0-9_]*)\s*:")


def cli_reference() -> str:
    """Markdown: every command of ``autogram``, its help text and options, as ``--help`` prints them."""
    import click

    from autogram.cli import main

    out = ["# Command line", "", "Generated from `autogram COMMAND --help`.", ""]
    group = click.Context(main, info_name="autogram")
    for name in sorted(main.commands):
        command = main.commands[name]
        ctx = click.Context(command, info_name=name, parent=group)
        out += [f"## autogram {name}", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


def cli_options() -> dict[str, list[str]]:
    """Every option string of every command (for the test that the reference lists them all)."""
    import click

    from autogram.cli import main

    return {
        name: [opt for param in command.params if isinstance(param, click.Option) for opt in param.opts]
        for name, command in main.commands.items()
    }


def _comments(cls: type) -> dict[str, str]:
    """``{field: the comment lines right above it}`` from the class's source."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    block: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and (block or "  # " in line):
            found[match.group(1)] = " ".join(block) if block else line.split("  # ", 1)[1].strip()
        block = []
    return found


def _models(annotation: Any) -> list[type]:
    """The pydantic models inside a field's type (``X | None``, ``list[X]``, ``dict[str, X]``)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    return re.sub(r"autogram\.config\.[a-z_.]*\.", "", text)


def config_fields(cls: type | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted field, type, default, meaning) of every field of the config, nested models expanded."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from autogram.config import Range, TrialConfig

    cls = cls or TrialConfig
    comments: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a field's comment may sit in the base class that declares it
        if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
            comments.update(_comments(base))
    rows: list[tuple[str, str, str, str]] = []
    for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
        path = f"{prefix}{name}"
        default = info.default
        if default is PydanticUndefined:
            shown = "(required)" if info.default_factory is None else repr(info.default_factory())
        elif hasattr(default, "model_dump"):
            shown = "(section)" if not isinstance(default, Range) else repr(default.model_dump())
        else:
            shown = repr(default)
        # A Range is a value (documented once), not a section; a section is described by its class.
        sections = [m for m in _models(info.annotation) if m is not cls and m is not Range]
        meaning = comments.get(name, "") or (_doc(sections[0]) if sections else "")
        rows.append((path, _type_name(info.annotation), shown, meaning))
        for model in sections:
            rows += config_fields(model, f"{path}.")
    return rows


def _doc(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())


def config_reference() -> str:
    """Markdown: one table row per config field."""
    out = [
        "# Config fields",
        "",
        "Generated from the config types (`autogram/config/`): every field, its type, its default and "
        "the comment the code gives it. Sections that hold models (e.g. `search.space.w_kd`) accept a "
        "number or a range `{low, high, log, optional}`.",
        "",
        "| field | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for path, kind, default, meaning in config_fields():
        cells = [f"`{path}`", f"`{kind}`", f"`{default}`", meaning]
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(out) + "\n"


def write_reference(docs: Path) -> list[Path]:
    """Write the generated pages under ``docs/reference/`` (only when their text changed)."""
    pages = {
        docs / "reference" / "cli.md": cli_reference(),
        docs / "reference" / "config-fields.md": config_reference(),
    }
    written = []
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written
