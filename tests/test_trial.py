"""One scored trial: determinism, skipped Gram terms, divergence, the CLI's JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autogram.config import TrialConfig, validate
from autogram.trial import run_trial
from tests.conftest import AVMNIST, ROOT, run_cli, tiny_raw

KEYS = {"accuracy", "robustness", "cost", "train_seconds", "train_gflops", "status", "corruptions"}


def _with(cfg: TrialConfig, **distill: object) -> TrialConfig:
    raw = cfg.model_dump(mode="json")
    raw["distill"].update(distill)
    return validate(raw)


def test_same_seed_gives_identical_scores(tiny_config: TrialConfig) -> None:
    reports: list[tuple[int, dict]] = []
    first = run_trial(tiny_config, report=lambda epoch, metrics: reports.append((epoch, metrics)))
    second = run_trial(tiny_config)
    assert first.status == "ok"
    assert (first.accuracy, first.robustness) == (second.accuracy, second.robustness)
    assert first.corruptions == second.corruptions
    assert first.train_gflops == second.train_gflops == first.cost
    assert [e for e, _ in reports] == [1, 2]
    assert all({"loss", "ce", "kd", "gram", "xmodal", "accuracy"} <= m.keys() for _, m in reports)
    assert len(first.corruptions) == 10
    assert first.robustness == pytest.approx(sum(first.corruptions.values()) / 10)
    assert 0.0 <= first.accuracy <= 1.0 and first.train_gflops > 0 and first.train_seconds > 0


def test_other_seed_gives_other_scores(tiny_config: TrialConfig) -> None:
    raw = tiny_config.model_dump(mode="json")
    base = run_trial(tiny_config)
    raw["seed"] = 1
    other = run_trial(validate(raw))
    assert (base.accuracy, base.robustness, base.corruptions) != (other.accuracy, other.robustness, other.corruptions)


class _HookLog:
    """Records the class of every module a forward hook is registered on while training runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import autogram.distill as distill
        import autogram.trial as trial_module

        self.training = False
        self.classes: list[str] = []
        original_register = torch.nn.Module.register_forward_hook
        original_train = distill.train_student

        def register(module: torch.nn.Module, *args: object, **kwargs: object) -> object:
            if self.training:
                self.classes.append(type(module).__name__)
            return original_register(module, *args, **kwargs)

        def train(*args: object, **kwargs: object) -> object:
            self.training = True
            try:
                return original_train(*args, **kwargs)
            finally:
                self.training = False

        monkeypatch.setattr(torch.nn.Module, "register_forward_hook", register)
        monkeypatch.setattr(distill, "train_student", train)
        monkeypatch.setattr(trial_module, "train_student", train, raising=False)


def test_zero_gram_weights_register_no_hooks_and_cost_fewer_gflops(
    tiny_config: TrialConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = _HookLog(monkeypatch)
    off = run_trial(_with(tiny_config, w_gram=0.0, w_xmodal=0.0))
    assert hooks.classes == [] and off.hooked_taps == {"student": [], "teacher": []}
    on = run_trial(tiny_config)
    gram_modules = {"Conv2dNormActivation", "Sequential", "ViTLayer", "BertLayer"}
    assert gram_modules & set(hooks.classes), hooks.classes
    assert len(on.hooked_taps["student"]) == 8
    assert off.train_gflops < on.train_gflops
    only_gram_off = run_trial(_with(tiny_config, w_gram=0.0))
    assert set(only_gram_off.hooked_taps["student"]) == {"image.embed", "tokens.embed"}
    assert off.train_gflops < only_gram_off.train_gflops < on.train_gflops


def test_ce_only_trial_never_runs_the_teacher(tiny_config: TrialConfig) -> None:
    result = run_trial(_with(tiny_config, w_kd=0.0, w_gram=0.0, w_xmodal=0.0))
    assert result.status == "ok" and result.teacher == {}
    with_teacher = run_trial(_with(tiny_config, w_gram=0.0, w_xmodal=0.0))
    assert result.train_gflops < with_teacher.train_gflops / 2  # the teacher dominates the step


def test_channel_gram_and_listed_pairs(tiny_config: TrialConfig) -> None:
    result = run_trial(
        _with(
            tiny_config,
            gram_kind="channel",
            w_xmodal=0.0,
            pairs=["image.block3:image.layer2", "tokens.block1:tokens.layer1"],
        )
    )
    assert result.status == "ok"
    assert result.pairs == ["image.block3:image.layer2", "tokens.block1:tokens.layer1"]
    assert result.hooked_taps == {
        "student": ["image.block3", "tokens.block1"],
        "teacher": ["image.layer2", "tokens.layer1"],
    }


def test_labelled_samples_keep_ce_to_the_first_rows_and_kd_on_every_row(tiny_config: TrialConfig) -> None:
    from autogram.tensors.losses import ce_loss

    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, -1, 1, -1, -1])
    assert ce_loss(logits, labels, partial=True) == pytest.approx(float(ce_loss(logits[[0, 1, 3]], labels[[0, 1, 3]])))
    assert float(ce_loss(logits, torch.full((6,), -1), partial=True)) == 0.0  # no labels: 0, not NaN
    raw = tiny_config.model_dump(mode="json")
    raw["distill"].update(w_gram=0.0, w_xmodal=0.0)
    full = run_trial(validate(raw))
    raw["train"]["labelled_samples"] = 100
    part = run_trial(validate(raw))
    # Every row is still stepped through (600 at batch 50: 12 steps an epoch) ...
    assert part.steps == full.steps == 2 * 12 and part.status == "ok"
    # ... but CE learns from 100 labels only, so the scores differ.
    assert (part.accuracy, part.corruptions) != (full.accuracy, full.corruptions)


def test_ce_alone_with_labelled_samples_draws_every_batch_from_the_labelled_rows(tiny_config: TrialConfig) -> None:
    from autogram.data import load_data
    from autogram.data.base import MultiModalData, Split
    from autogram.tensors.runtime import batch_indices

    order = torch.cat([host for host, _ in batch_indices(10, 4, torch.Generator().manual_seed(0), pool=4)])
    assert len(order) == 10 and int(order.max()) < 4
    assert sorted(order[:4].tolist()) == [0, 1, 2, 3] and sorted(order[4:8].tolist()) == [0, 1, 2, 3]

    raw = tiny_config.model_dump(mode="json")
    raw["distill"].update(w_kd=0.0, w_gram=0.0, w_xmodal=0.0)
    raw["train"]["labelled_samples"] = 100
    cfg = validate(raw)
    data = load_data(cfg.data)
    first = run_trial(cfg, data=data)
    assert first.steps == 2 * 12 and first.status == "ok"  # epochs keep their length
    # Without a teacher nothing learns from the other 500 rows: scrambling them changes nothing.
    train = data.splits["train"]
    rng = np.random.default_rng(0)
    scrambled = {k: np.concatenate([v[:100], rng.permutation(v[100:])[::-1]]) for k, v in train.inputs.items()}
    labels = np.concatenate([train.labels[:100], (train.labels[100:] + 1) % data.num_classes])
    splits = {**data.splits, "train": Split(scrambled, labels)}
    other = MultiModalData(data.modalities, data.num_classes, splits, "scrambled", fingerprint=f"{data.fingerprint}-s")
    again = run_trial(cfg, data=other)
    assert (again.accuracy, again.corruptions) == (first.accuracy, first.corruptions)


def test_input_noise_perturbs_the_students_float_inputs_only() -> None:
    from autogram.data.base import Modality
    from autogram.tensors.runtime import add_noise

    modalities = [Modality("image", "image", (1, 8, 8)), Modality("tokens", "tokens", (6,), 20)]
    inputs = {"image": torch.zeros(400, 1, 8, 8), "tokens": torch.randint(1, 20, (400, 6))}
    assert add_noise(inputs, modalities, 0.0, {}, torch.Generator()) is inputs
    noisy = add_noise(inputs, modalities, 2.0, {"image": 3.0}, torch.Generator().manual_seed(0))
    assert noisy["tokens"] is inputs["tokens"]
    std = noisy["image"].flatten(1).std(dim=1)
    # Per sample s ~ U(0, 2) in units of 3: stds spread over (0, 6), averaging 3.
    assert float(std.max()) < 6.0 * 1.3 and float(std.min()) < 0.6
    assert float(std.mean()) == pytest.approx(3.0, rel=0.1)
    again = add_noise(inputs, modalities, 2.0, {"image": 3.0}, torch.Generator().manual_seed(0))
    assert torch.equal(again["image"], noisy["image"])


def test_a_trial_with_input_noise_is_seeded_and_differs_from_one_without(tiny_config: TrialConfig) -> None:
    raw = tiny_config.model_dump(mode="json")
    raw["train"]["input_noise"] = 1.0
    noisy, again = run_trial(validate(raw)), run_trial(validate(raw))
    assert (noisy.accuracy, noisy.corruptions) == (again.accuracy, again.corruptions)
    clean = run_trial(tiny_config)
    assert noisy.corruptions != clean.corruptions


def test_non_finite_loss_ends_the_trial_as_diverged(tiny_config: TrialConfig) -> None:
    result = run_trial(_with(tiny_config, w_kd=1e39))
    assert result.status == "diverged"
    assert "non-finite loss" in result.reason and "epoch 1 step 1" in result.reason
    assert result.epochs == 0 and result.steps == 0
    assert math.isfinite(result.accuracy) and math.isfinite(result.robustness)


def test_trial_command_prints_one_json_object(tmp_path: Path, teacher_cache: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(teacher_cache)))
    proc = run_cli("trial", str(config), "--json", "--set", "train.epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert KEYS <= result.keys()
    assert result["status"] == "ok" and result["epochs"] == 1
    assert "[autogram] epoch 1/1" in proc.stderr  # progress goes to stderr, JSON alone to stdout


@pytest.mark.slow
def test_quickstart_trial_json(tmp_path: Path, quickstart_teachers: Path) -> None:
    proc = run_cli(
        "trial",
        str(ROOT / "search_spaces" / "quickstart.yaml"),
        "--json",
        "--set",
        f"teacher.cache_dir={quickstart_teachers}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert KEYS <= result.keys() and result["status"] == "ok"
    assert result["accuracy"] > 0.8 and result["robustness"] < result["accuracy"]
    assert result["teacher"]["val_accuracy"] >= 0.9


@pytest.mark.slow
@pytest.mark.skipif(not AVMNIST.is_file(), reason="shared AV-MNIST file not present")
def test_avmnist_example_runs_a_trial(tmp_path: Path) -> None:
    proc = run_cli(
        "trial",
        str(ROOT / "examples" / "avmnist.yaml"),
        "--json",
        "--set",
        f"data.path={AVMNIST}",
        "--set",
        f"teacher.cache_dir={tmp_path}",
        "--set",
        "teacher.epochs=2",
        "--set",
        "train.epochs=1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ok"
    assert set(result["corruptions"]) >= {"audio:specmask", "image:occlusion", "audio:missing", "image:noise@2"}
    assert result["accuracy"] > 0.15  # chance is 0.10; a 1-epoch student on a 2-epoch teacher


def test_robustness_detail_per_modality() -> None:
    from autogram.trial import robustness_detail

    corruptions = {
        "image:missing": 0.3,
        "image:noise@0.5": 0.8,
        "image:noise@1": 0.6,
        "image:noise@2": 0.2,
        "tokens:missing": 0.5,
        "tokens:dropout": 0.7,
    }
    detail = robustness_detail(0.9, corruptions, [0.5, 1.0, 2.0])
    # Trapezoids from severity 0 (clean 0.9): 0.5*(0.9+0.8)/2 + 0.5*(0.8+0.6)/2 + 1*(0.6+0.2)/2 = 1.175, over 2.
    assert detail == pytest.approx({"missing:image": 0.3, "auc:image": 0.5875, "missing:tokens": 0.5})
