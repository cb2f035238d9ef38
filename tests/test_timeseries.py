"""The ``timeseries`` modality kind (channels x time steps), balanced accuracy, and people kept
whole by ``split_by``: a toy set that trains in seconds, and the real phone + watch set when
``../shared`` has it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autogram.config import ConfigError, DataConfig, GroupSplit
from tests.conftest import ROOT, run_cli

PHONEWATCH = ROOT.parent / "shared" / "data" / "phonewatch" / "phonewatch.npz"
CPU = torch.device("cpu")
CHANNELS, STEPS, CLASSES, PEOPLE = 3, 16, 3, 6


def toy_arrays(per_person: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Two paired sensors: the class is a sine's frequency seen by both, on channels of very
    different scales (as an accelerometer beside a gyroscope), with a skewed class balance."""
    rng = np.random.default_rng(seed)
    n = per_person * PEOPLE
    label = rng.choice(CLASSES, size=n, p=[0.6, 0.25, 0.15])
    t = np.linspace(0, 1, STEPS)
    phase = rng.uniform(0, 2 * np.pi, n)
    wave = np.sin(2 * np.pi * (label[:, None] + 1) * t[None, :] + phase[:, None])
    scales = np.array([10.0, 1.0, 0.1])[None, :, None]
    phone = (wave[:, None, :] + 0.3 * rng.normal(size=(n, CHANNELS, STEPS))) * scales
    watch = (wave[:, None, :] + 0.3 * rng.normal(size=(n, CHANNELS, STEPS))) * scales
    person = np.repeat(np.arange(PEOPLE), per_person).astype(np.int8)
    return {
        "train_phone": phone.astype(np.float32),
        "train_watch": watch.astype(np.float32),
        "train_label": label.astype(np.int64),
        "train_person": person,
        "person_names": np.array([f"p{i}" for i in range(PEOPLE)]),
    }


def toy_file(folder: Path) -> Path:
    """The toy set as an .npz a config can name."""
    path = folder / "toy.npz"
    np.savez(path, **toy_arrays())
    return path


def toy_raw(folder: Path) -> dict:
    """A tiny trial config on the toy set: people p5 test, p4 validation."""
    return {
        "seed": 0,
        "device": "cpu",
        "data": {
            "path": str(toy_file(folder)),
            "modality_kinds": {"phone": "timeseries", "watch": "timeseries"},
            "split_by": {"by": "person", "test": ["p5"], "val": ["p4"]},
        },
        "teacher": {
            "cache_dir": str(folder / "teachers"),
            "hidden_size": 16,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 32,
            "embed_dim": 16,
            "patch_size": 4,
            "epochs": 3,
        },
        "student": {"width": 8, "embed_dim": 8},
        "train": {"epochs": 3, "batch_size": 32, "modality_dropout": 0.2},
        "distill": {"w_kd": 1.0, "w_gram": 100.0, "w_xmodal": 1.0},
        "eval": {"noise_severities": [0.5, 2.0]},
    }


def _load(arrays: dict[str, np.ndarray], folder: Path, **fields: object) -> object:
    from autogram.data.arrays import from_arrays

    np.savez(folder / "toy.npz", **arrays)  # the config names a file that exists
    cfg = DataConfig(path=folder / "toy.npz", modality_kinds={"phone": "timeseries", "watch": "timeseries"}, **fields)
    return from_arrays(arrays, cfg, "toy.npz")


def test_timeseries_is_channels_by_steps_standardised_per_channel(tmp_path: Path) -> None:
    data = _load(toy_arrays(), tmp_path, split_by=GroupSplit(by="person", test=["p5"], val=["p4"]))
    assert [(m.name, m.kind, m.shape) for m in data.modalities] == [
        ("phone", "timeseries", (CHANNELS, STEPS)),
        ("watch", "timeseries", (CHANNELS, STEPS)),
    ]
    train = data.splits["train"].inputs["phone"]
    # Channels 100x apart in scale all come out with mean 0 and std 1 over (samples, steps).
    np.testing.assert_allclose(train.mean(axis=(0, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=(0, 2)), 1.0, atol=1e-3)


def test_a_timeseries_that_is_not_two_dimensional_is_refused(tmp_path: Path) -> None:
    arrays = toy_arrays()
    arrays["train_phone"] = arrays["train_phone"][:, :, :, None]  # (N, C, T, 1)
    with pytest.raises(ConfigError, match=r"timeseries needs 2-D samples \(channels x time steps\)"):
        _load(arrays, tmp_path)


def test_split_by_person_keeps_every_window_of_a_person_on_one_side(tmp_path: Path) -> None:
    arrays = toy_arrays()
    # A third modality that is the person's number, so each split says whose windows it holds.
    arrays["train_tag"] = np.repeat(arrays["train_person"].astype(np.float32)[:, None, None], 2, axis=2)
    data = _load(arrays, tmp_path, split_by=GroupSplit(by="person", test=["p5", "p1"]), val_fraction=0.2)
    people = {s: set(np.round(part.inputs["tag"].reshape(len(part), -1)[:, 0], 4)) for s, part in data.splits.items()}
    assert len(people["test"]) == 2 and len(people["val"]) >= 1 and len(people["train"]) >= 1
    assert not (people["train"] & people["val"]) and not (people["train"] & people["test"])
    assert not (people["val"] & people["test"])
    assert sum(len(p) for p in data.splits.values()) == len(arrays["train_label"])  # every window somewhere


def _views(modalities: list, kind: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from autogram.data.corruptions import Corruption, apply

    rng = np.random.default_rng(1)
    inputs = {m.name: rng.normal(size=(20, *m.shape)).astype(np.float32) + 5.0 for m in modalities}
    out = apply(inputs, modalities, Corruption("phone", kind, 1.0 if kind == "noise" else None), seed=0)
    return inputs["phone"], out["phone"], {"before": inputs["watch"], "after": out["watch"]}


def test_timeseries_corruptions_change_only_what_they_name() -> None:
    from autogram.data.base import Modality
    from autogram.data.corruptions import suite

    modalities = [Modality("phone", "timeseries", (6, 40)), Modality("watch", "timeseries", (6, 40))]
    names = [c.name for c in suite(modalities, [1.0])]
    assert names[:4] == ["phone:missing", "phone:noise@1", "phone:timemask", "phone:chandrop"]

    before, after, watch = _views(modalities, "timemask")
    assert np.array_equal(watch["before"], watch["after"])  # the other modality is untouched
    for i in range(len(before)):
        zeroed = np.flatnonzero((after[i] == 0).all(axis=0))  # steps zeroed on every channel
        assert len(zeroed) == 10 and np.array_equal(zeroed, np.arange(zeroed[0], zeroed[0] + 10))  # one band
        kept = np.setdiff1d(np.arange(40), zeroed)
        assert np.array_equal(after[i][:, kept], before[i][:, kept])

    before, after, watch = _views(modalities, "chandrop")
    assert np.array_equal(watch["before"], watch["after"])
    dropped_sets = set()
    for i in range(len(before)):
        dropped = np.flatnonzero((after[i] == 0).all(axis=1))  # whole channels zeroed
        assert len(dropped) == 3
        kept = np.setdiff1d(np.arange(6), dropped)
        assert np.array_equal(after[i][kept], before[i][kept])
        dropped_sets.add(tuple(dropped))
    assert len(dropped_sets) > 1  # a random half per sample, not the same channels each time

    before, after, watch = _views(modalities, "noise")
    assert np.array_equal(watch["before"], watch["after"]) and not np.array_equal(before, after)


class _Fixed(torch.nn.Module):
    """A 'model' that answers the predictions it is handed: scores are then known by hand."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.one_hot(inputs["guess"][:, 0].long(), CLASSES).float()


def test_balanced_accuracy_against_a_hand_computation_on_a_skewed_split() -> None:
    from autogram.config import TrialConfig
    from autogram.data.arrays import from_arrays
    from autogram.trial import evaluate_robustness

    # Validation: 7 of class 0 (6 right), 2 of class 1 (1 right), 1 of class 2 (0 right).
    val_label = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 2])
    val_guess = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    train_label = np.array([0, 1, 2, 0, 1, 2])
    arrays = {
        "train_guess": np.stack([train_label, train_label], axis=1).astype(np.int64),
        "train_label": train_label,
        "val_guess": np.stack([val_guess, val_guess], axis=1).astype(np.int64),
        "val_label": val_label,
        "test_guess": np.stack([train_label, train_label], axis=1).astype(np.int64),
        "test_label": train_label,
    }
    data = from_arrays(arrays, DataConfig(), "skewed")
    cfg = TrialConfig.model_validate({"eval": {"noise_severities": [1.0], "batch_size": 3}})
    clean, _, balanced = evaluate_robustness(_Fixed(), data, cfg, CPU)
    assert clean == pytest.approx(7 / 10)  # the majority class carries plain accuracy
    assert balanced == pytest.approx((6 / 7 + 1 / 2 + 0 / 1) / 3, abs=1e-12)


def test_balanced_accuracy_skips_a_class_the_split_lacks() -> None:
    from autogram.tensors.runtime import balanced_accuracy

    correct, total = torch.tensor([3, 0, 1]), torch.tensor([4, 0, 2])
    assert balanced_accuracy(correct, total) == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_a_timeseries_trial_finds_taps_and_scores_every_corruption(tmp_path: Path) -> None:
    from autogram.config import validate
    from autogram.trial import run_trial

    result = run_trial(validate(toy_raw(tmp_path)))
    assert result.status == "ok"
    blocks = {f"{m}.block{i}" for m in ("phone", "watch") for i in (1, 2, 3)}
    assert blocks <= set(result.hooked_taps["student"])
    assert {f"{m}.layer{i}" for m in ("phone", "watch") for i in (1, 2)} <= set(result.hooked_taps["teacher"])
    assert result.pairs and all(p.split(":")[0].split(".")[0] == p.split(":")[1].split(".")[0] for p in result.pairs)
    assert {"phone:timemask", "phone:chandrop", "watch:missing", "watch:noise@2"} <= set(result.corruptions)
    assert 0.0 < result.balanced_accuracy <= 1.0 and result.accuracy > 1 / CLASSES


def test_layers_shows_timeseries_taps(tmp_path: Path) -> None:
    (tmp_path / "ts.yaml").write_text(yaml.safe_dump(toy_raw(tmp_path)))
    proc = run_cli("layers", "ts.yaml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    taps = json.loads(proc.stdout)
    student = {t["name"]: t["shape"] for t in taps["student"]}
    assert student["phone.block1"] == [8, STEPS] and student["watch.block3"] == [32, STEPS // 4]
    assert "watch.layer2" in {t["name"] for t in taps["teacher"]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"reshape": True}, "data.modality_kinds.phone: timeseries needs 2-D samples"),
        ({"split_by": {"by": "person", "test": ["p9"]}}, "data.split_by.test: unknown person 'p9'"),
    ],
)
def test_bad_timeseries_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, change: dict, expected: str
) -> None:
    raw = toy_raw(tmp_path)
    if change.pop("reshape", False):
        arrays = toy_arrays()
        arrays["train_phone"] = arrays["train_phone"].reshape(-1, CHANNELS, 4, STEPS // 4)
        np.savez(tmp_path / "toy.npz", **arrays)
    raw["data"].update(change)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli("search", "bad.yaml", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_a_two_trial_search_on_timeseries_reports_balanced_accuracy(tmp_path: Path) -> None:
    raw = {**toy_raw(tmp_path), "name": "ts"}
    raw["search"] = {
        "trials": 2,
        "concurrency": 2,
        "baselines": ["ce_moddrop", "kd"],
        "objectives": [
            {"name": "balanced_accuracy", "direction": "maximize"},
            {"name": "robustness", "direction": "maximize"},
        ],
    }
    (tmp_path / "ts.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("search", "ts.yaml", "--out", "runs", "--name", "ts", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((tmp_path / "runs" / "ts" / "front.json").read_text())
    trials = front["trials"]
    assert [t["status"] for t in trials] == ["ok", "ok"]
    assert {t["baseline"] for t in trials} == {"ce_moddrop", "kd"}
    for trial in trials:  # the objective and the reported metric are one number
        assert 0 < trial["values"]["balanced_accuracy"] == trial["balanced_accuracy"] <= 1
        assert set(trial["missing"]) == {"missing:phone", "missing:watch"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ts")
    runs = client.search_runs([experiment.experiment_id], "tags.`autogram.kind` = 'trial'")
    assert len(runs) == 2 and all("balanced_accuracy" in r.data.metrics for r in runs)
    assert {"corruption/phone:timemask", "corruption/watch:chandrop"} <= set(runs[0].data.metrics)


@pytest.mark.slow
@pytest.mark.skipif(not PHONEWATCH.is_file(), reason="shared phonewatch file not present")
def test_phonewatch_example_runs_a_trial(tmp_path: Path) -> None:
    proc = run_cli(
        "trial",
        str(ROOT / "examples" / "phonewatch.yaml"),
        "--json",
        "--set",
        f"data.path={PHONEWATCH}",
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
    assert {"phone:chandrop", "watch:timemask", "watch:missing"} <= set(result["corruptions"])
    # 5 classes, walking 56%: a 1-epoch student beats always answering "walking" (balanced 0.2).
    assert result["balanced_accuracy"] > 0.4


@pytest.mark.skipif(not PHONEWATCH.is_file(), reason="shared phonewatch file not present")
def test_phonewatch_split_by_subject_keeps_people_whole(tmp_path: Path) -> None:
    from autogram.config import load_config
    from autogram.data.arrays import from_arrays, read_npz

    arrays = read_npz(PHONEWATCH)
    for split in ("train", "test"):  # the person's number as a third modality, to read back
        arrays[f"{split}_tag"] = np.repeat(arrays[f"{split}_subject"].astype(np.float32)[:, None, None], 2, axis=2)
    cfg = load_config(ROOT / "examples" / "phonewatch.yaml", [f"data.path={PHONEWATCH}"]).data
    data = from_arrays(arrays, cfg.model_copy(update={"modalities": ["phone", "watch", "tag"]}), "phonewatch")
    names = list(arrays["subject_names"])
    tag = {s: part.inputs["tag"].reshape(len(part), -1)[:, 0] for s, part in data.splits.items()}
    # Standardising is monotone: as many distinct tags per split as people, and no tag in two splits.
    people = {s: set(np.round(v, 4)) for s, v in tag.items()}
    assert len(people["test"]) == 5 and not (people["train"] & people["val"]) and not (people["train"] & people["test"])
    held = [names.index(f"s{i}") for i in range(19, 24)]
    every = np.concatenate([arrays["train_subject"], arrays["test_subject"]])
    assert len(data.splits["test"]) == int(np.isin(every, held).sum())  # every window of s19-s23, no other
