"""Built-in data, the .npz loader and the corruption suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autogram.config import BuiltinDataConfig, ConfigError, DataConfig
from autogram.data import MASK_TOKEN, load_data
from autogram.data.builtin import generate
from autogram.data.corruptions import apply, suite
from tests.conftest import AVMNIST


@pytest.mark.parametrize(("vocab", "keywords"), [(64, 3), (256, 24)])
def test_builtin_tokens_show_three_of_their_groups_keywords(vocab: int, keywords: int) -> None:
    arrays = generate(BuiltinDataConfig(n_train=2000, n_val=50, n_test=50, vocab_size=vocab, keywords=keywords))
    tokens, labels = arrays["train_tokens"], arrays["train_label"]
    base = vocab - 2 - 5 * keywords  # filler ids below, two marker ids on top
    group = ((labels + 1) % 10) // 2
    is_keyword = (tokens >= base) & (tokens < vocab - 2)
    own = is_keyword & ((tokens - base) // keywords == group[:, None])
    assert (own.sum(axis=1) == 3).all()  # a distractor comes from another group
    assert ((is_keyword & ~own).sum(axis=1) <= 1).all()  # at most one distractor
    assert ((tokens >= vocab - 2).sum(axis=1) == 1).all()  # one in-pair marker
    # Every keyword of the range occurs, so more keywords means fewer rows per keyword.
    assert len(np.unique(tokens[is_keyword])) == 5 * keywords


def test_builtin_is_seeded_and_shaped() -> None:
    cfg = BuiltinDataConfig(n_train=200, n_val=100, n_test=100)
    first, second = generate(cfg), generate(cfg)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    other = generate(BuiltinDataConfig(n_train=200, n_val=100, n_test=100, seed=1))
    assert not np.array_equal(first["train_image"], other["train_image"])
    data = load_data(DataConfig(builtin=cfg))
    assert [m.name for m in data.modalities] == ["image", "tokens"]
    assert data.num_classes == 10
    assert data.splits["train"].inputs["image"].shape == (200, 1, 16, 16)
    assert data.splits["val"].inputs["tokens"].shape == (100, 24)
    assert np.bincount(data.splits["train"].labels).tolist() == [20] * 10
    assert (data.splits["train"].inputs["tokens"] != MASK_TOKEN).all()  # 0 is reserved for masking


def _write_npz(path: Path, with_val: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 120), ("test", 30)) + ((("val", 20),) if with_val else ()):
        arrays[f"{split}_label"] = rng.integers(0, 3, n)
        arrays[f"{split}_pic"] = rng.integers(0, 255, (n, 8, 8)).astype(np.uint8)
        arrays[f"{split}_words"] = rng.integers(1, 50, (n, 12))
        arrays[f"{split}_speaker"] = rng.integers(0, 4, n)  # a 1-D per-sample id: not a modality
    np.savez(path, **arrays)


def test_npz_loader_names_modalities_from_the_file_and_carves_validation(tmp_path: Path) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=False)
    data = load_data(DataConfig(path=path, val_fraction=0.25))
    kinds = {m.name: m.kind for m in data.modalities}
    assert kinds == {"pic": "image", "words": "tokens"}
    assert (len(data.splits["train"]), len(data.splits["val"]), len(data.splits["test"])) == (90, 30, 30)
    assert data.num_classes == 3
    again = load_data(DataConfig(path=path, val_fraction=0.25))
    assert np.array_equal(again.splits["val"].labels, data.splits["val"].labels)
    assert again.fingerprint == data.fingerprint
    # Standardised with train statistics.
    assert abs(float(data.splits["train"].inputs["pic"].mean())) < 1e-4
    _write_npz(path, with_val=True)
    assert len(load_data(DataConfig(path=path)).splits["val"]) == 20


def test_npz_loader_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    with pytest.raises(ConfigError, match="no array train_audio"):
        load_data(DataConfig(path=path, modalities=["audio"]))
    with pytest.raises(ConfigError, match="modality_kinds.pic: tokens need"):
        load_data(DataConfig(path=path, modality_kinds={"pic": "tokens"}))
    with pytest.raises(ConfigError, match="modality_kinds.words: image needs"):
        load_data(DataConfig(path=path, modality_kinds={"words": "image"}))
    with pytest.raises(ConfigError, match="modality_kinds.sound: unknown modality"):
        load_data(DataConfig(path=path, modality_kinds={"sound": "spectrogram"}))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not an .npz archive"):
        load_data(DataConfig(path=garbage))


def test_negative_token_ids_are_named_not_an_index_error_in_a_forward_pass(tmp_path: Path) -> None:
    # A -1 used as padding: the embedding lookup would fail deep inside a trial (or on a GPU, worse).
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    arrays = dict(np.load(path))
    arrays["test_words"][5, 3] = -1
    np.savez(path, **arrays)
    with pytest.raises(
        ConfigError, match=r"test_words has negative token ids in 1 sample\(s\) \(first: sample 5, id -1\)"
    ):
        load_data(DataConfig(path=path))
    # The same check for datasets read row by row (Hugging Face, a factory, the Python API).
    from autogram.data.datasets import from_datasets

    words = torch.randint(1, 50, (40, 12))
    words[33, 0] = -2
    train = [({"words": words[i]}, i % 3) for i in range(40)]
    with pytest.raises(
        ConfigError, match=r"modality 'words', has negative token ids in 1 sample\(s\) \(first: sample 33"
    ):
        from_datasets({"train": train}, DataConfig(), "python data")


def test_a_split_whose_samples_differ_from_train_is_named_not_reshaped_into_train(tmp_path: Path) -> None:
    # Same size, other shape: a reshape would pour val's 4x16 pictures into 8x8 ones, silently.
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    arrays = dict(np.load(path))
    arrays["val_pic"] = arrays["val_pic"].reshape(20, 4, 16)
    np.savez(path, **arrays)
    shape = r"val_pic has samples of shape \(4, 16\), train_pic \(8, 8\); every split's samples"
    with pytest.raises(ConfigError, match=shape):
        load_data(DataConfig(path=path))
    # Before the pooling of data.split_by, which would fail in numpy's concatenate.
    with pytest.raises(ConfigError, match=shape):
        load_data(DataConfig(path=path, split_by={"by": "speaker", "test": [1]}))
    # Shorter token rows in test: the models read them as another sequence length.
    arrays = dict(np.load(path))
    arrays["val_pic"] = arrays["val_pic"].reshape(20, 8, 8)
    arrays["test_words"] = arrays["test_words"][:, :10]
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=r"test_words has samples of shape \(10,\), train_words \(12,\)"):
        load_data(DataConfig(path=path))


def test_fractional_token_ids_are_refused_and_whole_float_ids_read_as_ids(tmp_path: Path) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    arrays = dict(np.load(path))
    ids = arrays["val_words"].copy()
    arrays["val_words"] = ids.astype(np.float64)  # whole numbers, as a pandas column with a gap gives
    np.savez(path, **arrays)
    data = load_data(DataConfig(path=path))
    assert np.array_equal(data.splits["val"].inputs["words"], ids)
    arrays["val_words"][7, 2] += 0.5  # would have been truncated into another token
    np.savez(path, **arrays)
    with pytest.raises(
        ConfigError, match=r"val_words has fractional token ids \(float64\) in 1 sample\(s\) \(first: sample 7\)"
    ):
        load_data(DataConfig(path=path))


def test_a_class_no_training_sample_holds_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    with caplog.at_level("WARNING", logger="autogram"):
        load_data(DataConfig(path=path))
    assert "no training sample" not in caplog.text
    arrays = dict(np.load(path))
    arrays["train_label"] = np.where(arrays["train_label"] == 2, 1, arrays["train_label"])  # 2 only in val/test
    np.savez(path, **arrays)
    with caplog.at_level("WARNING", logger="autogram"):
        data = load_data(DataConfig(path=path))
    assert data.num_classes == 3
    assert "1 class(es) have no training sample, only val/test ones (2)" in caplog.text
    # The same for rows read one by one (a Hugging Face set, a factory, the Python API).
    from autogram.data.datasets import from_datasets

    caplog.clear()
    rows = {
        split: [({"words": torch.randint(1, 50, (12,))}, label) for label in labels]
        for split, labels in (("train", [0, 1] * 10), ("val", [0, 1, 2, 3] * 3), ("test", [0, 1] * 5))
    }
    with caplog.at_level("WARNING", logger="autogram"):
        from_datasets(rows, DataConfig(), "python data")
    assert "python data: 2 class(es) have no training sample, only val/test ones (2, 3)" in caplog.text


def test_labels_in_a_column_or_as_whole_floats_are_class_ids_and_one_hot_or_fractions_are_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    expected = load_data(DataConfig(path=path))
    arrays = dict(np.load(path))
    column = {**arrays, **{f"{s}_label": arrays[f"{s}_label"].reshape(-1, 1) for s in ("train", "val", "test")}}
    column["val_label"] = column["val_label"].astype(np.float32)  # a pandas column, floats
    np.savez(path, **column)
    data = load_data(DataConfig(path=path))
    for split in ("train", "val", "test"):  # the same data, not a loss that fails in a trial
        assert np.array_equal(data.splits[split].labels, expected.splits[split].labels)
    assert data.fingerprint == expected.fingerprint
    np.savez(path, **{**arrays, "train_label": np.eye(3, dtype=np.int64)[arrays["train_label"]]})
    with pytest.raises(ConfigError, match=r"train_label: labels have shape \(120, 3\), .*one-hot\? store argmax"):
        load_data(DataConfig(path=path))
    fraction = arrays["test_label"].astype(np.float64)
    fraction[4] = 1.5
    np.savez(path, **{**arrays, "test_label": fraction})
    with pytest.raises(ConfigError, match=r"test_label: labels must be class ids 0..K-1; sample 4 has 1.5"):
        load_data(DataConfig(path=path))
    # Rows read one by one (the Python API, a factory): a float 1.7 was truncated into class 1.
    from autogram.data.datasets import from_datasets

    def rows(labels: list) -> dict:
        return {"train": [({"words": torch.randint(1, 50, (12,))}, y) for y in labels]}

    whole = from_datasets(rows([torch.tensor(float(i % 3)) for i in range(40)]), DataConfig(), "python data")
    assert whole.num_classes == 3
    with pytest.raises(ConfigError, match=r"labels must be class ids 0..K-1; sample 1 has 1.7"):
        from_datasets(rows([0, 1.7] * 20), DataConfig(), "python data")
    with pytest.raises(ConfigError, match=r"item 0's label has shape \(3,\), expected one class id"):
        from_datasets(rows([torch.tensor([1, 0, 0])] * 40), DataConfig(), "python data")


def test_values_float32_cannot_hold_and_ids_no_embedding_can_index_are_named(tmp_path: Path) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    arrays = dict(np.load(path))
    # float64 values cast to inf in the models' float32; float32 ones whose squares overflow
    # left std inf and every standardised value 0: both trained without a word.
    huge = arrays["val_pic"].astype(np.float64)
    huge[2, 0, 0] = 1e300
    np.savez(path, **{**arrays, "val_pic": huge})
    with pytest.raises(ConfigError, match=r"val_pic has values beyond float32's range \(largest \|x\| 1e\+300\) in 1 "):
        load_data(DataConfig(path=path))
    np.savez(path, **{**arrays, "train_pic": arrays["train_pic"].astype(np.float32) * 1e30})
    with pytest.raises(ConfigError, match=r"train_pic: values too large to standardise in float32"):
        load_data(DataConfig(path=path))
    # An id of 10**9 asked for a billion-row embedding.
    ids = arrays["test_words"].copy()
    ids[6, 1] = 10**9
    np.savez(path, **{**arrays, "test_words": ids})
    with pytest.raises(ConfigError, match=r"test_words has token ids up to 1000000000 \(first: sample 6\)"):
        load_data(DataConfig(path=path))


@pytest.mark.skipif(not AVMNIST.is_file(), reason="shared AV-MNIST file not present")
def test_avmnist_file_loads_with_image_and_audio() -> None:
    data = load_data(DataConfig(path=AVMNIST, modality_kinds={"audio": "spectrogram"}))
    assert {m.name: (m.kind, m.shape) for m in data.modalities} == {
        "audio": ("spectrogram", (1, 32, 32)),
        "image": ("image", (1, 28, 28)),
    }
    assert (len(data.splits["train"]), len(data.splits["val"]), len(data.splits["test"])) == (2430, 270, 300)


def test_split_by_holds_out_whole_groups(tmp_path: Path) -> None:
    path = tmp_path / "mm.npz"
    _write_npz(path, with_val=True)
    stored = np.load(path)
    np.savez(path, **stored, speaker_names=np.array(["ann", "bob", "cy", "dee"]))
    data = load_data(
        DataConfig(path=path, split_by={"by": "speaker", "test": ["bob"], "val": ["dee"]}, val_fraction=0.25)
    )
    speakers = np.concatenate([stored[f"{s}_speaker"] for s in ("train", "val", "test")])
    sizes = {s: len(data.splits[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": int((speakers % 2 == 0).sum()), "val": int((speakers == 3).sum()),
                     "test": int((speakers == 1).sum())}  # fmt: skip
    # The test split is exactly the pooled rows of speaker "bob", in file order.
    words = np.concatenate([stored[f"{s}_words"] for s in ("train", "val", "test")])
    assert np.array_equal(data.splits["test"].inputs["words"], words[speakers == 1])
    # val: random carves validation from the training groups' samples at random.
    carved = load_data(
        DataConfig(path=path, split_by={"by": "speaker", "test": ["bob"], "val": "random"}, val_fraction=0.25)
    )
    assert len(carved.splits["test"]) == sizes["test"]
    assert len(carved.splits["train"]) + len(carved.splits["val"]) == int((speakers != 1).sum())
    with pytest.raises(ConfigError, match=r"data.split_by.test: unknown speaker 'zed' \(have: ann, bob"):
        load_data(DataConfig(path=path, split_by={"by": "speaker", "test": ["zed"]}))
    with pytest.raises(ConfigError, match="data.split_by.by: no 1-D integer array train_accent"):
        load_data(DataConfig(path=path, split_by={"by": "accent", "test": [0]}))
    with pytest.raises(ValueError, match="group.s. bob in both test and val"):
        DataConfig(path=path, split_by={"by": "speaker", "test": ["bob"], "val": ["bob"]})


def test_split_by_without_val_groups_validates_on_whole_unseen_groups(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No validation sample shares a group with training: the search is scored on unseen
    speakers, as confirm's test split is."""
    rng = np.random.default_rng(0)
    n, speakers = 400, rng.integers(0, 10, 400)
    # The label is the speaker here, so each split's labels tell which speakers it holds.
    arrays = {"train_image": rng.normal(size=(n, 1, 4, 4)).astype(np.float32), "train_label": speakers}
    arrays["train_speaker"] = speakers
    arrays["speaker_names"] = np.array([f"s{i}" for i in range(10)])
    path = tmp_path / "groups.npz"
    np.savez(path, **arrays)

    def split_speakers(seed: int) -> dict[str, set[int]]:
        cfg = DataConfig(path=path, split_by={"by": "speaker", "test": ["s0"]}, val_fraction=0.2, split_seed=seed)
        data = load_data(cfg)
        return {split: set(data.splits[split].labels.tolist()) for split in ("train", "val", "test")}

    with caplog.at_level("INFO", logger="autogram"):
        groups = split_speakers(0)
    assert groups["test"] == {0} and groups["val"] and not groups["val"] & groups["train"]
    assert groups["train"] | groups["val"] == set(range(1, 10))
    assert "validation: whole speaker group(s) s" in caplog.text
    assert split_speakers(1)["val"] != groups["val"] or split_speakers(2)["val"] != groups["val"]  # chosen by seed
    two = {**arrays, "train_speaker": np.where(speakers < 5, 0, 1)}
    np.savez(path, **two)
    with pytest.raises(ConfigError, match="one speaker is left for training and validation"):
        load_data(DataConfig(path=path, split_by={"by": "speaker", "test": ["s0"]}))


@pytest.mark.skipif(not AVMNIST.is_file(), reason="shared AV-MNIST file not present")
def test_avmnist_example_holds_out_speaker_jackson() -> None:
    from autogram.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "examples" / "avmnist.yaml", [f"data.path={AVMNIST}"])
    data = load_data(cfg.data)
    # jackson's 500 recordings (50 per digit) are the test split; 2,500 rows remain.
    assert len(data.splits["test"]) == 500
    assert np.bincount(data.splits["test"].labels).tolist() == [50] * 10
    assert len(data.splits["train"]) + len(data.splits["val"]) == 2500


def test_corruption_suite_covers_each_modality_and_is_deterministic() -> None:
    data = load_data(DataConfig(builtin=BuiltinDataConfig(n_train=100, n_val=60, n_test=60)))
    corruptions = suite(data.modalities, [0.5, 1.0, 2.0])
    names = [c.name for c in corruptions]
    assert names == [
        "image:missing",
        "image:noise@0.5",
        "image:noise@1",
        "image:noise@2",
        "image:occlusion",
        "tokens:missing",
        "tokens:noise@0.5",
        "tokens:noise@1",
        "tokens:noise@2",
        "tokens:dropout",
    ]
    val = data.splits["val"].inputs
    for corruption in corruptions:
        out = apply(val, data.modalities, corruption, seed=0)
        again = apply(val, data.modalities, corruption, seed=0)
        other = next(m for m in out if m != corruption.modality)
        assert np.array_equal(out[other], val[other]), "only the named modality changes"
        assert np.array_equal(out[corruption.modality], again[corruption.modality])
        assert not np.array_equal(out[corruption.modality], val[corruption.modality])
    assert (apply(val, data.modalities, corruptions[5], 0)["tokens"] == MASK_TOKEN).all()
    assert not apply(val, data.modalities, corruptions[0], 0)["image"].any()
    # Higher severity, more damage.
    changed = [float((apply(val, data.modalities, c, 0)["tokens"] != val["tokens"]).mean()) for c in corruptions[6:9]]
    assert changed == sorted(changed) and changed[0] > 0


def test_spectrogram_masking_blanks_a_band_in_each_axis() -> None:
    from autogram.data.base import Modality
    from autogram.data.corruptions import Corruption

    modality = Modality("audio", "spectrogram", (1, 8, 8))
    x = np.ones((3, 1, 8, 8), dtype=np.float32)
    out = apply({"audio": x}, [modality], Corruption("audio", "specmask"), seed=0)["audio"]
    for sample in out[:, 0]:
        assert (sample == 0).all(axis=1).sum() == 2  # a 2-bin frequency band
        assert (sample == 0).all(axis=0).sum() == 2  # a 2-frame time band


def test_every_float_modality_kind_gets_missing_and_noise() -> None:
    from autogram.data.base import Modality

    rng = np.random.default_rng(0)
    modalities = [
        Modality("feats", "vector", (12,)),
        Modality("wave", "waveform", (200,)),
        Modality("clip", "video", (3, 1, 6, 6)),
        Modality("words", "tokens", (10,), vocab_size=30),
    ]
    inputs = {
        "feats": rng.normal(size=(8, 12)).astype(np.float32),
        "wave": rng.normal(size=(8, 200)).astype(np.float32),
        "clip": rng.normal(size=(8, 3, 1, 6, 6)).astype(np.float32),
        "words": rng.integers(1, 30, size=(8, 10)),
    }
    names = [c.name for c in suite(modalities, [0.5, 2.0])]
    for name in ("feats", "wave", "clip"):
        assert [n for n in names if n.startswith(f"{name}:")] == [
            f"{name}:missing",
            f"{name}:noise@0.5",
            f"{name}:noise@2",
        ]
    assert "words:dropout" in names
    for corruption in suite(modalities, [0.5, 2.0]):
        out = apply(inputs, modalities, corruption, seed=0, scale={"wave": 3.0})
        changed = out[corruption.modality]
        assert changed.shape == inputs[corruption.modality].shape
        assert not np.array_equal(changed, inputs[corruption.modality])
        assert all(np.array_equal(out[k], v) for k, v in inputs.items() if k != corruption.modality)
    # Noise is in units of the modality's scale: 3x the spread for a scale of 3.
    wave = next(c for c in suite(modalities, [2.0]) if c.name == "wave:noise@2")
    delta = apply(inputs, modalities, wave, seed=0, scale={"wave": 3.0})["wave"] - inputs["wave"]
    assert abs(delta.std() - 6.0) < 0.3


def _npz_with(path: Path, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"{split}_label"] = np.arange(n) % 3
        arrays[f"{split}_pic"] = rng.integers(0, 255, (n, 8, 8)).astype(np.uint8)
    for key, value in extra.items():
        arrays[key] = value
    np.savez(path, **arrays)
    return path


def test_a_text_modality_stored_as_strings_is_refused_not_dropped(tmp_path: Path) -> None:
    text = {f"{s}_caption": np.array(["a cat"] * n) for s, n in (("train", 60), ("val", 20), ("test", 20))}
    path = _npz_with(tmp_path / "text.npz", **text)
    with pytest.raises(ConfigError, match="train_caption holds <U5 values: a modality must be numbers"):
        load_data(DataConfig(path=path))
    data = load_data(DataConfig(path=path, modalities=["pic"]))  # named out: fine
    assert [m.name for m in data.modalities] == ["pic"]


def test_a_stray_label_is_refused_not_a_hundred_classes(tmp_path: Path) -> None:
    path = _npz_with(tmp_path / "stray.npz")
    arrays = dict(np.load(path))
    arrays["train_label"][7] = 99
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match="4 distinct labels go up to 99 and no sample has label 3"):
        load_data(DataConfig(path=path))


def test_a_constant_modality_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flat = {f"{s}_blank": np.zeros((n, 4, 4), np.float32) for s, n in (("train", 60), ("val", 20), ("test", 20))}
    path = _npz_with(tmp_path / "flat.npz", **flat)
    with caplog.at_level("WARNING", logger="autogram"):
        data = load_data(DataConfig(path=path))
    assert {m.name for m in data.modalities} == {"blank", "pic"}
    warned = [r.getMessage() for r in caplog.records if "same value in every training sample" in r.getMessage()]
    assert len(warned) == 1 and "'blank'" in warned[0]
