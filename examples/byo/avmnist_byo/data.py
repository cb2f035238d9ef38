"""AV-MNIST as a Hugging Face ``DatasetDict`` on disk (or, without the file, a small
synthetic image + spectrogram set of the same shapes, so the example runs anywhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def avmnist_arrays(npz: str | Path, test_speaker: str = "jackson") -> dict[str, dict[str, np.ndarray]]:
    """Train/test arrays with one speaker held out as the test split (unseen-speaker numbers),
    scaled as the data set's README suggests."""
    d = np.load(npz, allow_pickle=False)
    names = [str(n) for n in d["speaker_names"]]
    image = np.concatenate([d["train_image"], d["test_image"]]).astype(np.float32) / 255.0
    audio = (np.concatenate([d["train_audio"], d["test_audio"]]).astype(np.float32) + 40.0) / 40.0
    label = np.concatenate([d["train_label"], d["test_label"]])
    test = np.concatenate([d["train_speaker"], d["test_speaker"]]) == names.index(test_speaker)
    return {
        split: {"image": image[mask], "audio": audio[mask], "label": label[mask]}
        for split, mask in (("train", ~test), ("test", test))
    }


def synthetic_arrays(n_train: int = 600, n_test: int = 200, classes: int = 4, seed: int = 0) -> dict:
    """Class templates plus noise, 28x28 images and 32x32 spectrograms: a stand-in for tests."""
    rng = np.random.default_rng(seed)
    image_templates = rng.normal(0, 1, (classes, 28, 28)).astype(np.float32)
    audio_templates = rng.normal(0, 1, (classes, 32, 32)).astype(np.float32)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        label = np.arange(n) % classes
        out[split] = {
            "image": image_templates[label] * 0.5 + rng.normal(0, 1, (n, 28, 28)).astype(np.float32),
            "audio": audio_templates[label] * 0.5 + rng.normal(0, 1, (n, 32, 32)).astype(np.float32),
            "label": label.astype(np.int64),
        }
    return out


def save_dataset(arrays: dict[str, dict[str, np.ndarray]], out: str | Path) -> Path:
    """Write the splits as a ``DatasetDict`` with ``save_to_disk``."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Array2D(shape=(28, 28), dtype="float32"),
            "audio": datasets.Array2D(shape=(32, 32), dtype="float32"),
            "label": datasets.Value("int64"),
        }
    )
    splits = {
        name: datasets.Dataset.from_dict({k: list(v) if v.ndim > 1 else v for k, v in cols.items()}, features=features)
        for name, cols in arrays.items()
    }
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return Path(out)
