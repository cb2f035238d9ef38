"""A user's package for the tests: tiny models and datasets named by import path, plus the
broken factories a new user might write. Nothing here imports autogram."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _branch(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()),
    )


class TinyTeacher(nn.Module):
    """Two conv branches, late fusion; called with a dict, returns a dict with ``logits``."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.image_net = _branch(width)
        self.audio_net = _branch(width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = [self.image_net(batch["image"]).mean((2, 3)), self.audio_net(batch["audio"]).mean((2, 3))]
        return {"logits": self.head(torch.cat(pooled, 1))}


class TinyStudent(nn.Module):
    """The student: same shape of model, narrower; returns logits as a tensor."""

    def __init__(self, names: list[str], num_classes: int, width: int) -> None:
        super().__init__()
        self.names = names
        self.nets = nn.ModuleDict({n: _branch(width) for n in names})
        self.head = nn.Linear(len(names) * width, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.nets[n](batch[n]).mean((2, 3)) for n in self.names], 1))


def make_teacher(weights: str | None = None, seed: int = 0) -> TinyTeacher:
    torch.manual_seed(seed)
    model = TinyTeacher()
    if weights:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(weights))
    return model.eval()


def make_student(data, width: int = 4) -> TinyStudent:  # noqa: ANN001
    return TinyStudent([m.name for m in data.modalities], data.num_classes, width)


class NoLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _branch(4)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"features": self.net(batch["image"])}


def no_logits_teacher() -> NoLogits:
    return NoLogits()


def raising_factory() -> nn.Module:
    raise ValueError("weights file teacher.bin is corrupt")


def not_a_module() -> dict:
    return {"weights": [1, 2, 3]}


def arrays(n: int, seed: int = 0, classes: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class templates plus noise, two 8x8 grids per sample."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(99).normal(0, 1, (2, classes, 8, 8)).astype(np.float32)
    labels = np.arange(n) % classes
    image = templates[0][labels] + rng.normal(0, 0.7, (n, 8, 8)).astype(np.float32)
    audio = templates[1][labels] + rng.normal(0, 0.7, (n, 8, 8)).astype(np.float32)
    return image[:, None], audio[:, None], labels.astype(np.int64)


class PairDataset(torch.utils.data.Dataset):
    """A map-style dataset yielding ``({"image": tensor, "audio": tensor}, label)``."""

    def __init__(self, n: int, seed: int) -> None:
        self.image, self.audio, self.labels = (torch.from_numpy(a) for a in arrays(n, seed))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        return {"image": self.image[i], "audio": self.audio[i]}, int(self.labels[i])


def make_datasets(n_train: int = 240) -> dict[str, PairDataset]:
    """The data factory: train, val and test datasets."""
    return {"train": PairDataset(n_train, 0), "val": PairDataset(80, 1), "test": PairDataset(80, 2)}


def make_student_checked(data, width: int = 4) -> TinyStudent:  # noqa: ANN001
    """A student factory that needs a setting shipped to Ray workers (``BYO_MARK``); the driver,
    which builds one student to plan the search before Ray starts, needs none."""
    import os

    import ray

    if ray.is_initialized() and os.environ.get("BYO_MARK") != "shipped":
        raise RuntimeError(f"BYO_MARK is {os.environ.get('BYO_MARK')!r} in this process")
    return make_student(data, width)


class HFStudent(nn.Module):
    """A student of two Hugging Face ViT encoders built from a config (nothing downloaded), late fusion."""

    def __init__(self, names: list[str], num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        config = ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=1,
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
        )
        self.names = names
        self.encoders = nn.ModuleDict({n: ViTModel(config, add_pooling_layer=False) for n in names})
        self.head = nn.Linear(len(names) * hidden, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = [self.encoders[n](pixel_values=batch[n]).last_hidden_state[:, 0] for n in self.names]
        return self.head(torch.cat(pooled, 1))


def make_hf_student(data, hidden: int = 16) -> HFStudent:  # noqa: ANN001
    return HFStudent([m.name for m in data.modalities], data.num_classes, hidden)
