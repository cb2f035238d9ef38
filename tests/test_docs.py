"""The docs' generated reference lists every command option and config field, and the README
stays a README (the docs site holds the rest)."""

from __future__ import annotations

from autogram.docsgen import cli_options, cli_reference, config_fields, config_reference
from tests.conftest import ROOT


def test_every_cli_option_is_in_the_generated_reference() -> None:
    text = cli_reference()
    options = cli_options()
    assert {"search", "export", "train", "confirm", "layers"} <= set(options)
    for command, opts in options.items():
        section = text.split(f"## autogram {command}\n", 1)[1].split("\n## ", 1)[0]
        missing = [opt for opt in opts if opt not in section]
        assert not missing, (command, missing)


def test_every_config_field_is_in_the_generated_reference_with_a_meaning() -> None:
    from autogram.config import TrialConfig

    text = config_reference()
    rows = config_fields()
    paths = {path for path, _, _, _ in rows}
    # Every top-level field and every field of a nested section, however deep.
    assert set(TrialConfig.model_fields) <= paths
    assert {"teacher.cache_sketch", "search.space.pairs", "data.split_by.val", "distill.weights"} <= paths
    for path, _, default, meaning in rows:
        assert f"| `{path}` |" in text and f"`{default}`" in text
        assert meaning, f"{path}: no comment above the field in its config class"


def test_the_readme_is_short_and_its_doc_links_exist() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and all((ROOT / link).is_file() for link in links), [x for x in links if not (ROOT / x).is_file()]


def test_the_docs_never_export_two_searches_to_one_file() -> None:
    """Following the README and the docs in order must not overwrite one example's export (and
    its checkpoints) with another's."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    owners: dict[str, set[str]] = {}
    for page in pages:
        for source, out in re.findall(r"autogram export (\S+)[^\n`]*?-o (\S+\.yaml)", page.read_text()):
            owners.setdefault(out, set()).add(source.split("/")[-1])
    assert owners and all(len(sources) == 1 for sources in owners.values()), owners
