"""MkDocs hook: write the generated reference pages before the docs are collected."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_pre_build(config: Any) -> None:
    """Regenerate ``reference/cli.md`` and ``reference/config-fields.md`` from the code."""
    from autogram.docsgen import write_reference

    write_reference(Path(config["docs_dir"]))
