"""Sketched and compact teacher caches: error bound, exact channel Grams, keys, size limit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autogram.config import ConfigError, TrialConfig, validate
from autogram.distill.cache_plan import layout_for
from autogram.models.features import capture
from autogram.teacher import ensure_teacher
from autogram.teacher.cache import CacheLayout, _stored, cache_key, ensure_cache, read_manifest
from autogram.teacher.reader import CachedTeacher
from autogram.teacher.sketch import (
    GRAM,
    SKETCH,
    Sketcher,
    forms_for,
    from_upper_triangle,
    sketch_error_bound,
    upper_triangle,
)
from autogram.tensors.losses import channel_gram, channel_gram_loss, gram_loss, sample_gram_losses
from autogram.trial import prepare
from tests.conftest import run_cli, tiny_raw
from tests.test_teacher_cache import first_step_terms

CPU = torch.device("cpu")


def _sqrt_loss_errors(student: torch.Tensor, teacher: torch.Tensor, k: int, draws: int, exact_dims: int) -> list:
    exact = math.sqrt(float(gram_loss(student, teacher, "sample")))
    errors = []
    for seed in range(draws):
        sketcher = Sketcher("tap", teacher[0].numel(), k, seed, CPU, exact_dims)
        sketched = float(sample_gram_losses([student], [sketcher(teacher)])[0])
        errors.append(math.sqrt(sketched) - exact)
    return errors, sketcher


def _real_features(cfg: TrialConfig) -> tuple[torch.Tensor, torch.Tensor]:
    parts = prepare(cfg, CPU)
    handle = ensure_teacher(cfg.teacher, parts.data, CPU)
    pair = parts.pairs[0]
    split = parts.data.splits["train"]
    inputs = {k: torch.from_numpy(v) for k, v in split.rows(np.arange(64)).items()}
    with torch.no_grad(), capture(handle.model, [pair.teacher]) as t_feats:
        handle.model(inputs)
    with torch.no_grad(), capture(parts.student, [pair.student]) as s_feats:
        parts.student(inputs)
    return s_feats[pair.student.name], t_feats[pair.teacher.name]


@pytest.mark.parametrize("source", ["random", "real"])
@pytest.mark.parametrize("exact_dims", [0, 16])
def test_sketched_sample_gram_loss_is_within_the_documented_bound(
    source: str, exact_dims: int, tiny_config: TrialConfig
) -> None:
    if source == "random":  # features with a shared component, as deep features have
        generator = torch.Generator().manual_seed(0)
        common = torch.randn(1, 32, 40, generator=generator)
        teacher = common + 0.5 * torch.randn(64, 32, 40, generator=generator)
        student = torch.randn(64, 16, 30, generator=generator)
    else:
        student, teacher = _real_features(tiny_config)
    k = 256
    errors, sketcher = _sqrt_loss_errors(student, teacher, k, draws=40, exact_dims=exact_dims)
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    bound = sketch_error_bound(teacher, k - exact_dims, sketcher.basis)
    assert 0 < rms <= bound
    # One draw within the 1 - delta bound (delta = 0.05) in at least 95% of the draws.
    assert sum(abs(e) <= bound / math.sqrt(0.05) for e in errors) >= 0.95 * len(errors)
    # And the error shrinks with k as the bound says (1/sqrt(k)): 16x the dimensions, 1/4 the error.
    wide, _ = _sqrt_loss_errors(student, teacher, 4096, draws=10, exact_dims=exact_dims)
    assert math.sqrt(sum(e * e for e in wide) / len(wide)) < 0.5 * rms


def test_exact_directions_shrink_the_sketch_error_on_shared_components() -> None:
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(1, 500, generator=generator) + 0.3 * torch.randn(64, 500, generator=generator)
    student = torch.randn(64, 200, generator=generator)
    plain, _ = _sqrt_loss_errors(student, teacher, 128, draws=20, exact_dims=0)
    kept, _ = _sqrt_loss_errors(student, teacher, 128, draws=20, exact_dims=16)
    assert sum(e * e for e in kept) < 0.25 * sum(e * e for e in plain)


def test_channel_gram_loss_through_small_matrices_equals_the_direct_one() -> None:
    generator = torch.Generator().manual_seed(0)
    for c_s, c_t, p_s, p_t in [(16, 128, 256, 17), (64, 128, 6, 17), (64, 64, 16, 17), (200, 64, 10, 9)]:
        student = torch.randn(4, c_s, p_s, generator=generator, dtype=torch.float64)
        teacher = torch.randn(4, c_t, p_t, generator=generator, dtype=torch.float64)
        projection = torch.nn.Conv1d(c_s, c_t, 1, bias=False).double() if c_s != c_t else None
        weight = projection.weight[:, :, 0] if projection is not None else None
        direct = float(gram_loss(student, teacher, "channel", projection))
        assert float(channel_gram_loss(student, teacher, weight)) == pytest.approx(direct, rel=1e-10)
        packed = upper_triangle(channel_gram(teacher))
        served = from_upper_triangle(packed, c_t)
        assert float(channel_gram_loss(student, served, weight, teacher_is_gram=True)) == pytest.approx(
            direct, rel=1e-10
        )


def test_each_use_reads_one_form_whatever_else_is_cached() -> None:
    assert forms_for({"sample"}, 128, 17, 512) == (SKETCH,)
    assert forms_for({"sample"}, 16, 24, 512) == ("feature",)  # the feature is already smaller
    assert forms_for({"channel"}, 32, 17, 512) == (GRAM,)  # 528 numbers < 544
    assert forms_for({"channel"}, 128, 17, 512) == ("feature",)
    assert forms_for({"sample", "channel"}, 32, 24, 256) == (GRAM, SKETCH)
    assert forms_for({"xmodal", "sample"}, 128, 1, 64) == ("feature", SKETCH)  # sample reads the sketch


def _cache_for(cfg: TrialConfig, root: Path, kind: str) -> tuple:
    raw = cfg.model_dump(mode="json")
    raw["distill"]["gram_kind"] = kind
    cfg = validate(raw)
    parts = prepare(cfg, CPU)
    handle = ensure_teacher(cfg.teacher, parts.data, CPU)
    objective = parts.objective(cfg.distill)
    directory = ensure_cache(
        handle.model, handle.key, parts.data, layout_for(cfg, handle.taps, objective.teacher_uses), CPU, root
    )
    return cfg, parts, handle, objective, directory


@pytest.mark.parametrize(
    ("kind", "sketch", "precision", "form", "tolerance"),
    [
        ("channel", 512, "float32", GRAM, 1e-5),  # the Gram's triangle: exact
        ("sample", 0, "float32", "feature", 1e-5),
        ("sample", 0, "bfloat16", "feature", 2e-2),
        ("sample", 256, "float16", SKETCH, 0.25),  # the documented approximation
    ],
)
def test_cached_terms_match_the_live_teacher(
    tiny_config: TrialConfig, tmp_path: Path, kind: str, sketch: int, precision: str, form: str, tolerance: float
) -> None:
    raw = tiny_config.model_dump(mode="json")
    raw["teacher"].update(cache_sketch=sketch, cache_precision=precision)
    cfg, parts, handle, objective, directory = _cache_for(validate(raw), tmp_path, kind)
    arrays = read_manifest(directory)["arrays"]
    assert all(f"{p.teacher.name}@{form}" in arrays or form == "feature" for p in objective.pairs)
    assert all(arrays[n]["dtype"] == precision for n in arrays if n != "logits")
    cached = CachedTeacher(directory, objective.teacher_taps, CPU, uses=objective.teacher_uses)
    terms = first_step_terms(cfg, parts, handle, objective, cached)
    for key, value in terms["live"].items():
        assert terms["cache"][key] == pytest.approx(value, rel=tolerance, abs=1e-7), key


def test_cache_key_changes_with_sketch_size_and_precision(tiny_config: TrialConfig) -> None:
    parts = prepare(tiny_config, CPU)
    taps = parts.teacher_taps
    uses = {p.teacher.name: {"sample"} for p in parts.pairs}
    keys = {
        cache_key("t", "d", CacheLayout.plan(taps, uses, k, precision), CPU)
        for k in (0, 256, 512)
        for precision in ("float32", "float16", "bfloat16")
    }
    assert len(keys) == 9


def test_a_trial_reads_the_cache_into_memory_once(tiny_config: TrialConfig, tmp_path: Path) -> None:
    *_, objective, directory = _cache_for(tiny_config, tmp_path, "sample")
    reader = CachedTeacher(directory, objective.teacher_taps, CPU, uses=objective.teacher_uses)
    indices = torch.tensor([1, 7, 30])
    before = reader(indices, {})
    for path in directory.glob("*.npy"):  # a memory map would now read zeros
        with path.open("r+b") as handle:
            handle.seek(128)
            handle.write(bytes(path.stat().st_size - 128))
    after = reader(indices, {})
    assert torch.equal(before.logits, after.logits) and before.logits.abs().sum() > 0
    again = CachedTeacher(directory, objective.teacher_taps, CPU, uses=objective.teacher_uses, verify=False)
    assert torch.equal(again(indices, {}).logits, before.logits)  # kept by this process, not re-read


def test_float16_overflow_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="tap image.layer1 reaches 1e\\+05.*bfloat16"):
        _stored(torch.tensor([[1.0, 1e5]]), "float16", "image.layer1")


@pytest.mark.parametrize("command", ["search", "trial"])
def test_cache_max_gb_refuses_before_writing_anything(tmp_path: Path, command: str) -> None:
    cache_dir = tmp_path / "teachers"
    raw = tiny_raw(cache_dir)
    raw["teacher"]["cache_max_gb"] = 0.0001
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    args = ["--out", str(tmp_path / "runs")] if command == "search" else []
    proc = run_cli(command, str(tmp_path / "tiny.yaml"), *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1 and "teacher.cache_max_gb" in message[0] and "GB" in message[0]
    assert "teacher.cache_sketch" in message[0] or "cache_precision" in message[0] or "pairs" in message[0]
    assert not cache_dir.exists() and not (tmp_path / "runs").exists()


def test_default_settings_keep_a_vit_sized_tap_under_2_kb_per_sample() -> None:
    from autogram.config import TeacherConfig
    from autogram.models.taps import Tap

    defaults = TeacherConfig()
    vit = Tap("vit.block", "image", 0.5, "blocks.5", "feature", "tokens_last", (197, 768))
    layout = CacheLayout.plan([vit], {vit.name: {"sample"}}, defaults.cache_sketch, defaults.cache_precision)
    assert layout.forms[vit.name] == (SKETCH,)
    assert layout.bytes_per_sample(0) <= 2048 < CacheLayout.plan([vit], {vit.name: {"sample"}}).bytes_per_sample(0)


def test_student_sketch_count_sketches_only_wide_student_features(tiny_config: TrialConfig) -> None:
    raw = tiny_config.model_dump(mode="json")
    raw["distill"]["student_sketch"] = 64
    cfg = validate(raw)
    parts = prepare(cfg, CPU)
    plain = parts.objective(tiny_config.distill)
    sketched = parts.objective(cfg.distill)
    wide = [i for i, p in enumerate(parts.pairs) if math.prod(p.student.shape) > 4 * 64]
    assert wide and sorted(int(i) for i in sketched.student_sketches) == wide
    assert set(sketched.state_dict()) == set(plain.state_dict())  # nothing new in checkpoints
    generator = torch.Generator().manual_seed(0)
    feats = {  # deep features share a common component
        p.student.name: torch.randn(1, *p.student.shape, generator=generator)
        + 0.5 * torch.randn(32, *p.student.shape, generator=generator)
        for p in parts.pairs
    }
    teacher_feats = {p.teacher.name: torch.randn(32, *p.teacher.shape, generator=generator) for p in parts.pairs}
    from autogram.distill.terms import Batch
    from autogram.teacher.signals import TeacherOutput

    batch = Batch(
        torch.zeros(32, 10), feats, torch.zeros(32, dtype=torch.long), TeacherOutput(torch.zeros(32, 10), teacher_feats)
    )
    exact, approx = float(plain.terms["gram"].compute(batch)), float(sketched.terms["gram"].compute(batch))
    assert approx != exact and approx == pytest.approx(exact, rel=0.2)
