"""The teacher cache: same loss terms as the live teacher, invalidation, damage detection."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from autogram.config import TrialConfig, validate
from autogram.distill import Objective
from autogram.models import build_student, build_teacher, resolved_taps
from autogram.models.features import capture
from autogram.teacher import ensure_teacher
from autogram.teacher.cache import CacheInvalid, ensure_cache, open_cache
from autogram.teacher.reader import CachedTeacher
from autogram.teacher.signals import LiveTeacher
from autogram.trial import prepare
from tests.conftest import tiny_raw

CPU = torch.device("cpu")


def _setup(cfg: TrialConfig, root: Path) -> tuple:
    parts = prepare(cfg, CPU)
    handle = ensure_teacher(cfg.teacher, parts.data, CPU)
    taps = resolved_taps(build_teacher(parts.data, handle.model.arch), parts.data)
    directory = ensure_cache(handle.model, handle.key, parts.data, taps, CPU, root)
    return parts, handle, directory


def first_step_terms(cfg: TrialConfig, parts: Any, handle: Any, objective: Objective, cached: Any) -> dict:
    """The loss terms of one batch for a fresh student, with the live teacher and with ``cached``."""
    data = parts.data
    torch.manual_seed(0)
    student = build_student(data, cfg.student)
    indices = torch.tensor([5, 3, 17, 42, 8, 99, 0, 250])
    inputs = {k: torch.from_numpy(v[indices.numpy()]) for k, v in data.splits["train"].inputs.items()}
    labels = torch.from_numpy(data.splits["train"].labels[indices.numpy()])
    terms = {}
    for name, signals in (("live", LiveTeacher(handle.model, objective.teacher_taps, CPU)), ("cache", cached)):
        with capture(student, objective.student_taps) as feats:
            logits = student(inputs)
        terms[name] = {k: float(v) for k, v in objective(logits, feats, labels, signals(indices, inputs)).items()}
    return terms


@pytest.mark.parametrize("kind", ["sample", "channel"])
def test_first_step_terms_match_the_live_teacher(tiny_config: TrialConfig, tmp_path: Path, kind: str) -> None:
    raw = tiny_config.model_dump(mode="json")
    raw["distill"]["gram_kind"] = kind
    cfg = validate(raw)
    parts, handle, directory = _setup(cfg, tmp_path)
    torch.manual_seed(0)
    objective = parts.objective(cfg.distill)
    terms = first_step_terms(cfg, parts, handle, objective, CachedTeacher(directory, objective.teacher_taps, CPU))
    assert set(terms["live"]) == {"ce", "kd", "gram", "xmodal"}
    for key, value in terms["live"].items():
        assert terms["cache"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_cache_is_reused_and_rebuilt_when_teacher_or_data_change(
    teacher_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autogram")
    cfg = validate(tiny_raw(teacher_cache))
    _, _, first = _setup(cfg, tmp_path)
    caplog.clear()
    _, _, again = _setup(cfg, tmp_path)
    assert again == first and "reusing" in caplog.text and "built" not in caplog.text

    other_teacher = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"epochs": 1})})
    _, _, changed_teacher = _setup(other_teacher, tmp_path)
    raw = tiny_raw(teacher_cache)
    raw["data"]["builtin"]["seed"] = 3
    _, _, changed_data = _setup(validate(raw), tmp_path)
    assert len({first, changed_teacher, changed_data}) == 3
    assert all(open_cache(d) for d in (first, changed_teacher, changed_data))


def test_truncated_or_corrupt_cache_is_detected_and_rebuilt(
    teacher_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = validate(tiny_raw(teacher_cache))
    _, _, directory = _setup(cfg, tmp_path)
    victim = sorted(directory.glob("*.npy"))[0]
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    with pytest.raises(CacheInvalid, match="wrong size"):
        open_cache(directory)
    with pytest.raises(CacheInvalid):
        CachedTeacher(directory, [], CPU)  # a trial refuses to read it too
    caplog.set_level(logging.INFO, logger="autogram")
    _setup(cfg, tmp_path)
    assert "rebuilding" in caplog.text
    assert victim.read_bytes() == original  # deterministic rebuild

    flipped = bytearray(original)
    flipped[-1] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(flipped))
    with pytest.raises(CacheInvalid, match="checksum"):
        open_cache(directory)
    _setup(cfg, tmp_path)
    assert open_cache(directory)


def test_every_registered_term_reads_the_same_from_its_own_cache_as_from_the_live_teacher(
    tiny_config: TrialConfig, tmp_path: Path
) -> None:
    """Each registered term alone (the Gram term in both kinds), its cache laid out by the
    cache plan from what the term says it reads, at float32 and without sketches: the first
    step's value matches the live teacher's within the exact rows' tolerance (test_sketch.py
    holds the tolerances of float16 and sketched caches)."""
    from autogram.distill.cache_plan import layout_for, trial_uses
    from autogram.distill.terms import TERMS

    handle = None
    for name in TERMS:
        for kind in ("sample", "channel") if name == "gram" else ("sample",):
            raw = tiny_config.model_dump(mode="json")
            raw["distill"].update({"w_ce": 0.0, "w_kd": 0.0, "w_gram": 0.0, "w_xmodal": 0.0, "gram_kind": kind})
            raw["distill"]["weights"] = {name: 1.0}
            raw["teacher"].update(cache_precision="float32", cache_sketch=0)
            cfg = validate(raw)
            parts = prepare(cfg, CPU)
            handle = handle or ensure_teacher(cfg.teacher, parts.data, CPU)
            parts = prepare(cfg, CPU, parts.data, handle)
            torch.manual_seed(0)
            objective = parts.objective(cfg.distill)
            assert list(objective.terms) == [name]
            layout = layout_for(cfg, parts.teacher_taps, trial_uses(cfg, parts))
            directory = ensure_cache(handle.model, handle.key, parts.data, layout, CPU, tmp_path / name / kind)
            cached = CachedTeacher(directory, objective.teacher_taps, CPU, uses=objective.teacher_uses)
            terms = first_step_terms(cfg, parts, handle, objective, cached)
            assert terms["cache"][name] == pytest.approx(terms["live"][name], rel=1e-5, abs=1e-7), (name, kind)
