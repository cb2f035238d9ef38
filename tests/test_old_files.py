"""Files written before the loss-term registry and the package move still load and mean the same.

The fixtures were written by autogram at commit dfc9f52 (see their README): a search's
``search.json``, its trials' parameters, an exported point, and the training configs that
code built from them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from autogram.config import validate
from autogram.distill.terms import term_weight
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "before_registry"
LEGACY = {"ce": "w_ce", "kd": "w_kd", "gram": "w_gram", "xmodal": "w_xmodal"}


def _meaning(raw: dict[str, Any], old: bool) -> dict[str, Any]:
    """The config with its loss weights as one mapping per term: read from the old ``w_*``
    fields for the old code's configs, through today's ``term_weight`` for today's."""
    out = json.loads(json.dumps(raw))
    distill = out["distill"]
    if old:
        weights = {term: float(distill[field]) for term, field in LEGACY.items()}
    else:
        cfg = validate(raw)
        weights = {term: term_weight(cfg.distill, term) for term in LEGACY}
    for field in LEGACY.values():
        distill.pop(field, None)
    distill.pop("weights", None)
    distill["term_weights"] = weights
    space = out.get("search", {}).get("space", {})
    assert space.pop("weights", {}) == {}  # a space from before searches the old w_* keys only
    for key in ("top_k", "prior_steps", "prior_samples"):  # read only with pairs: all, which is new
        space.pop(key, None)
    # How a search builds the teacher cache (over Ray), new: it never changes what a trial computes.
    out["teacher"].pop("cache_shards", None)
    for section in ("data", "teacher", "student"):  # sources named by their fields, as before
        assert out[section].pop("kind", None) is None
    return out


def _expected() -> dict[str, Any]:
    return json.loads((FIXTURES / "expected.json").read_text())


def test_an_exported_yaml_from_before_validates_to_the_same_config() -> None:
    raw = yaml.safe_load((FIXTURES / "export.yaml").read_text())
    today = validate(raw).model_dump(mode="json")
    assert _meaning(today, old=False) == _meaning(_expected()["export"], old=True)
    assert today["distill"]["weights"] == {}  # the old keys carry the weights, as they did


@pytest.mark.parametrize("number", [0, 1, 2, 3])
def test_a_search_json_from_before_rebuilds_each_trial_config_as_it_did(number: int) -> None:
    from autogram.export import trial_training_config

    spec = json.loads((FIXTURES / "search.json").read_text())
    trial = next(t for t in json.loads((FIXTURES / "trials.json").read_text()) if t["number"] == number)
    today = validate(trial_training_config(spec, trial)).model_dump(mode="json")
    before = _expected()["trial_configs"][str(number)]
    assert _meaning(today, old=False) == _meaning(before, old=True)


def test_the_fixtures_cover_every_builtin_term_and_both_gram_kinds() -> None:
    """So the comparisons above can fail for each term: some trial weights it above 0."""
    configs = list(_expected()["trial_configs"].values())
    for field in LEGACY.values():
        assert any(c["distill"][field] > 0 for c in configs), field
    assert {c["distill"]["gram_kind"] for c in configs if c["distill"]["w_gram"] > 0} == {"sample", "channel"}
