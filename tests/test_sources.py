"""The user's own models and data: taps on unedited models, teacher identity, cache size,
FLOPs, and every kind of bad input answered with one line and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autogram.config import ModelSource, validate
from autogram.data import load_data
from autogram.data.base import Modality
from autogram.models.discover import find_taps
from autogram.models.features import hook_count
from autogram.models.source import Adapted, user_module
from autogram.teacher import ensure_teacher
from autogram.teacher.cache import cache_bytes, ensure_cache
from tests.conftest import ROOT, run_cli

FIXTURES = ROOT / "tests" / "fixtures_byo"
EXAMPLE = ROOT / "examples" / "byo"
CPU = torch.device("cpu")
sys.path[:0] = [str(FIXTURES), str(EXAMPLE)]  # the user's packages, as python_path would add them


def _user_config(tmp_path: Path, **teacher: object) -> dict:
    return {
        "name": "user",
        "device": "cpu",
        "python_path": [str(FIXTURES)],
        "data": {"factory": "byo_test_models:make_datasets"},
        "teacher": {"factory": "byo_test_models:make_teacher", "cache_dir": str(tmp_path / "teachers"), **teacher},
        "student": {"factory": "byo_test_models:make_student", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "batch_size": 32},
    }


def test_taps_found_on_a_hugging_face_vit_and_a_torchvision_resnet_without_editing_either() -> None:
    from torchvision.models import resnet18
    from transformers import ViTConfig, ViTForImageClassification

    vit = ViTForImageClassification(
        ViTConfig(
            image_size=16,
            patch_size=4,
            num_channels=1,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
        )
    )
    keys = set(vit.state_dict())
    source = ModelSource(call="kwargs", inputs={"image": "pixel_values"})
    model = Adapted(vit, source, [Modality("image", "image", (1, 16, 16))], "teacher").eval()
    taps = find_taps(model, source, {"image": torch.randn(4, 1, 16, 16)}, "teacher", ["image"])
    features = [t for t in taps if t.role == "feature"]
    paths = [t.module_path for t in features]
    assert len(features) == 3 and all(vit.get_submodule(p) is not None for p in paths)
    assert [p.rsplit(".", 1)[1] for p in paths] == ["0", "1", "2"]  # the encoder's three blocks, in order
    assert {t.shape for t in features} == {(17, 32)} and {t.layout for t in features} == {"tokens_last"}
    assert [round(t.depth, 2) for t in features] == [0.33, 0.67, 1.0] and {t.modality for t in taps} == {"image"}
    assert model({"image": torch.randn(2, 1, 16, 16)}).shape == (2, 3)  # logits from the ImageClassifierOutput
    assert set(vit.state_dict()) == keys and hook_count(vit) == 0  # unedited, no hook left behind

    resnet = resnet18(num_classes=3).eval()
    source = ModelSource(call="kwargs", inputs={"image": "x"})
    model = Adapted(resnet, source, [Modality("image", "image", (3, 32, 32))], "student")
    taps = find_taps(model, source, {"image": torch.randn(4, 3, 32, 32)}, "student", ["image"])
    features = [t for t in taps if t.role == "feature"]
    assert [t.module_path for t in features] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert features[0].shape == (64, 8, 8) and features[-1].shape == (512, 1, 1)
    assert {t.layout for t in features} == {"channels_first"} and hook_count(resnet) == 0
    embed = next(t for t in taps if t.role == "embedding")
    assert embed.module_path == "layer4.1" and embed.name == "image.embed"


def test_fused_layers_are_found_by_what_they_depend_on() -> None:
    from avmnist_byo.models import AVTeacher

    teacher = AVTeacher(hidden=32, layers=3, heads=2, num_classes=4).eval()
    source = ModelSource(call="kwargs", inputs={"image": "pixel_values", "audio": "input_values"})
    modalities = [Modality("image", "image", (1, 28, 28)), Modality("audio", "spectrogram", (1, 32, 32))]
    model = Adapted(teacher, source, modalities, "teacher")
    example = {"image": torch.randn(4, 1, 28, 28), "audio": torch.randn(4, 1, 32, 32)}
    taps = find_taps(model, source, example, "teacher", ["image", "audio"])
    by_modality = {
        m: [t.module_path for t in taps if t.modality == m and t.role == "feature"] for m in ("image", "audio")
    }
    assert len(by_modality["image"]) == 3 and all(p.startswith("image.") for p in by_modality["image"])
    assert len(by_modality["audio"]) == 3 and all(p.startswith("audio.") for p in by_modality["audio"])
    assert [t.module_path for t in taps if t.modality == "fused"] == ["fusion.layers.0"]
    # modality_of overrides what the dependency test says.
    forced = ModelSource(**{**source.model_dump(), "modality_of": {"fusion": "audio"}})
    taps = find_taps(model, forced, example, "teacher", ["image", "audio"])
    assert "fusion.layers.0" in [t.module_path for t in taps if t.modality == "audio"]


def test_flops_are_counted_for_a_hugging_face_teacher() -> None:
    from avmnist_byo.models import AVTeacher
    from torch.utils.flop_counter import FlopCounterMode

    teacher = AVTeacher(hidden=32, layers=3, heads=2, num_classes=4).eval()
    source = ModelSource(call="kwargs", inputs={"image": "pixel_values", "audio": "input_values"})
    modalities = [Modality("image", "image", (1, 28, 28)), Modality("audio", "spectrogram", (1, 32, 32))]
    model = Adapted(teacher, source, modalities, "teacher")

    def flops(batch: int) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model({"image": torch.randn(batch, 1, 28, 28), "audio": torch.randn(batch, 1, 32, 32)})
        return counter.get_total_flops()

    # The ViT and AST blocks alone are > 2 * params FLOPs per sample; twice the batch, twice the FLOPs.
    params = sum(p.numel() for p in teacher.parameters())
    assert flops(2) > 2 * 2 * params * 0.5 and flops(4) == 2 * flops(2)


def test_changed_teacher_weights_give_a_new_key_and_a_new_cache(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cfg = validate(_user_config(tmp_path))
    data = load_data(cfg.data)
    first = ensure_teacher(cfg.teacher, data, CPU)
    assert first.key == ensure_teacher(cfg.teacher, data, CPU).key  # same weights, same key
    root = tmp_path / "signals"
    cache = ensure_cache(first.model, first.key, data, first.taps, CPU, root)

    state = {k: v.clone() for k, v in user_module(first.model).state_dict().items()}
    state["head.bias"] += 0.1
    save_file(state, str(tmp_path / "changed.safetensors"))
    changed_cfg = validate(_user_config(tmp_path, kwargs={"weights": str(tmp_path / "changed.safetensors")}))
    changed = ensure_teacher(changed_cfg.teacher, data, CPU)
    assert changed.key != first.key
    assert ensure_cache(changed.model, changed.key, data, changed.taps, CPU, root) != cache
    # The same change loaded through teacher.checkpoint instead of by the factory: a new key too.
    by_checkpoint = validate(_user_config(tmp_path, checkpoint=str(tmp_path / "changed.safetensors")))
    assert ensure_teacher(by_checkpoint.teacher, data, CPU).key not in (first.key, changed.key)


def test_a_cache_for_one_candidate_pair_is_smaller_than_for_all(tmp_path: Path) -> None:
    cfg = validate(_user_config(tmp_path))
    data = load_data(cfg.data)
    teacher = ensure_teacher(cfg.teacher, data, CPU)
    features = [t for t in teacher.taps if t.role == "feature"]
    root = tmp_path / "signals"
    everything = ensure_cache(teacher.model, teacher.key, data, features, CPU, root)
    one = ensure_cache(teacher.model, teacher.key, data, features[:1], CPU, root)
    assert one != everything and 0 < cache_bytes(one) < cache_bytes(everything)


def test_hugging_face_rows_are_read_by_index_not_copied(tmp_path: Path) -> None:
    from avmnist_byo.data import save_dataset, synthetic_arrays

    save_dataset(synthetic_arrays(n_train=120, n_test=40), tmp_path / "hf")
    data = load_data(validate({"data": {"hf": str(tmp_path / "hf"), "modality_kinds": {"audio": "spectrogram"}}}).data)
    train = data.splits["train"]
    assert not train.in_memory and len(train) == 108 and len(data.splits["val"]) == 12  # val carved from train
    assert [m.kind for m in data.modalities] == ["image", "spectrogram"]
    rows = train.rows(np.array([5, 0]))
    assert rows["image"].shape == (2, 1, 28, 28) and rows["audio"].dtype == np.float32
    capped = load_data(validate({"data": {"hf": str(tmp_path / "hf"), "max_train": 50}}).data)
    assert len(capped.splits["train"]) == 50 and capped.fingerprint != data.fingerprint


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _write_npz(path: Path, n: int = 100, **changes: object) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train_image": rng.normal(size=(n, 8, 8)).astype(np.float32),
        "train_audio": rng.normal(size=(n, 8, 8)).astype(np.float32),
        "train_label": np.arange(n) % 4,
        "test_image": rng.normal(size=(40, 8, 8)).astype(np.float32),
        "test_audio": rng.normal(size=(40, 8, 8)).astype(np.float32),
        "test_label": np.arange(40) % 4,
    }
    arrays.update(changes)
    np.savez(path, **arrays)


def _bad_inputs(tmp_path: Path) -> list[tuple[str, dict, str]]:
    """(what, config, the message expected on the one stderr line)."""
    import datasets

    nan_image = np.random.default_rng(0).normal(size=(100, 8, 8)).astype(np.float32)
    nan_image[17, 3, 4] = np.nan
    _write_npz(tmp_path / "nan.npz", train_image=nan_image)
    _write_npz(tmp_path / "short.npz", train_audio=np.zeros((99, 8, 8), np.float32))
    (tmp_path / "notes.npz").write_text("image,label\n1,2\n")
    _write_npz(tmp_path / "crc.npz")
    blob = bytearray((tmp_path / "crc.npz").read_bytes())
    blob[len(blob) // 3] ^= 0xFF  # one flipped byte inside an array: its CRC no longer matches
    (tmp_path / "crc.npz").write_bytes(bytes(blob))
    _write_npz(
        tmp_path / "one.npz", test_image=np.zeros((1, 8, 8), np.float32), test_audio=np.zeros((1, 8, 8), np.float32)
    )
    arrays = dict(np.load(tmp_path / "one.npz"))
    np.savez(tmp_path / "one.npz", **{**arrays, "test_label": np.array([0])})
    torch.save(__import__("byo_test_models").TinyTeacher(), tmp_path / "teacher.pt")  # a whole pickled module
    table = {"image": np.zeros((20, 8, 8), np.float32).tolist(), "target": list(range(20))}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(table)}).save_to_disk(str(tmp_path / "nolabel"))
    npz = {k: v for k, v in _user_config(tmp_path).items() if k not in ("data", "teacher", "student")}
    return [
        (
            "unresolvable import",
            _user_config(tmp_path, factory="byo_test_models:nope"),
            "teacher.factory: cannot import",
        ),
        (
            "factory raises",
            _user_config(tmp_path, factory="byo_test_models:raising_factory"),
            "raised ValueError: weights file teacher.bin is corrupt",
        ),
        (
            "no nn.Module",
            _user_config(tmp_path, factory="byo_test_models:not_a_module"),
            "returned dict, not a torch.nn.Module",
        ),
        (
            "no logits",
            _user_config(tmp_path, factory="byo_test_models:no_logits_teacher"),
            "output has no logits (got dict with keys features)",
        ),
        (
            "tap path",
            _user_config(tmp_path, taps=[{"name": "deep", "module_path": "image_net.9", "modality": "image"}]),
            "teacher.taps[0].module_path: no module 'image_net.9' in TinyTeacher (closest: image_net.2",
        ),
        ("pickled checkpoint", _user_config(tmp_path, checkpoint=str(tmp_path / "teacher.pt")), "pickled checkpoint"),
        (
            "no label column",
            {**_user_config(tmp_path), "data": {"hf": str(tmp_path / "nolabel")}},
            "has no label column 'label' (columns: image, target)",
        ),
        (
            "NaN",
            {**npz, "data": {"path": str(tmp_path / "nan.npz")}},
            "NaN or inf values in 1 sample(s) (first: sample 17)",
        ),
        (
            "lengths",
            {**npz, "data": {"path": str(tmp_path / "short.npz")}},
            "train_audio has 99 rows but train_label has 100",
        ),
        ("not an archive", {**npz, "data": {"path": str(tmp_path / "notes.npz")}}, "not an .npz archive"),
        (
            "bad CRC",
            {**npz, "data": {"path": str(tmp_path / "crc.npz")}},
            "crc.npz: damaged archive (Bad CRC-32 for file",
        ),
        (
            "one-sample split",
            {**npz, "data": {"path": str(tmp_path / "one.npz")}},
            "one.npz: the test split has 1 sample; each split needs at least 2",
        ),
    ]


def test_bad_user_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    for what, raw, message in _bad_inputs(tmp_path):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
        before = _files(tmp_path)
        proc = run_cli("trial", "bad.yaml", "-q", cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (what, proc.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("autogram: error:"), (what, proc.stderr[-2000:])
        assert message in lines[0], (what, lines[0])
        assert _files(tmp_path) == before, (what, _files(tmp_path) - before)


@pytest.mark.parametrize("epochs", [2])
def test_resume_of_a_finished_run_says_so(tmp_path: Path, epochs: int) -> None:
    raw = _user_config(tmp_path)
    raw["train"]["epochs"] = epochs
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    first = run_cli("train", "run.yaml", "-q", "--tracking-uri", env["MLFLOW_TRACKING_URI"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # Run again without --resume: told that run finished, not sent to a --resume that refuses.
    plain = run_cli("train", "run.yaml", "--tracking-uri", env["MLFLOW_TRACKING_URI"], cwd=tmp_path)
    assert plain.returncode == 2 and f"already finished ({epochs}/{epochs} epochs)" in plain.stderr, plain.stderr
    assert "pass --resume" not in plain.stderr
    again = run_cli("train", "run.yaml", "--resume", "--tracking-uri", env["MLFLOW_TRACKING_URI"], cwd=tmp_path)
    assert again.returncode == 2 and f"already finished ({epochs}/{epochs} epochs)" in again.stderr
    longer = run_cli(
        "train", "run.yaml", "--resume", "--epochs", "5", "--tracking-uri", env["MLFLOW_TRACKING_URI"], cwd=tmp_path
    )
    assert longer.returncode == 2 and "already finished" in longer.stderr
