"""A planted layer-mapping answer: a teacher of 8 layers per modality in which only layer
``PLANTED`` (0-based) carries the class structure; the other layers depend on the input but
not on the label. Nothing here imports autogram.

Each modality's input has two channels: channel 0 holds a class template plus noise,
channel 1 stronger label-free noise. Layer ``PLANTED`` matches channel 0 against the
class templates (its output is the modality's share of the logits); every other layer is a
fixed random linear convolution of channel 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

LAYERS = 8
PLANTED = 5
CLASSES = 4
SIDE = 8
MODALITIES = ("image", "audio")


def _templates() -> np.ndarray:
    """(modalities, classes, SIDE, SIDE) unit-norm class templates, fixed."""
    t = np.random.default_rng(7).normal(0, 1, (len(MODALITIES), CLASSES, SIDE, SIDE)).astype(np.float32)
    return t / np.linalg.norm(t.reshape(len(MODALITIES), CLASSES, -1), axis=-1)[..., None, None]


def arrays(n: int, seed: int, label_noise: float = 0.0) -> dict[str, np.ndarray]:
    """``{"image", "audio": (n, 2, SIDE, SIDE), "label": (n,)}``: class signal in channel 0
    (template x 3 + unit noise), label-free noise of scale 2 in channel 1; a ``label_noise``
    share of the labels replaced by random ones (the inputs keep their true class)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    given = np.where(rng.random(n) < label_noise, rng.integers(0, CLASSES, n), labels)
    out: dict[str, np.ndarray] = {"label": given.astype(np.int64)}
    for m, name in enumerate(MODALITIES):
        signal = 3.0 * _templates()[m][labels] + rng.normal(0, 1, (n, SIDE, SIDE))
        nuisance = 2.0 * rng.normal(0, 1, (n, SIDE, SIDE))
        out[name] = np.stack([signal, nuisance], axis=1).astype(np.float32)
    return out


class Channel(nn.Module):
    """One teacher layer: a convolution of one input channel (optionally then a ReLU)."""

    def __init__(self, channel: int, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        self.channel = channel
        self.conv = conv
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x[:, self.channel : self.channel + 1])
        return torch.relu(out) if self.relu else out


def _layers(modality: int, generator: torch.Generator) -> nn.ModuleList:
    layers = []
    for i in range(LAYERS):
        if i == PLANTED:
            conv = nn.Conv2d(1, CLASSES, SIDE, bias=False)  # template matching: (B, CLASSES, 1, 1)
            conv.weight.data = torch.from_numpy(_templates()[modality][:, None]).clone()
            layers.append(Channel(0, conv, relu=False))
        else:
            # Linear, so that no layer is degenerate (a ReLU layer can be nearly constant, and
            # aligning to a constant teaches nothing): each is a full view of the noise.
            conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            conv.weight.data = torch.randn(conv.weight.shape, generator=generator)
            layers.append(Channel(1, conv, relu=False))
    return nn.ModuleList(layers)


class PlantedTeacher(nn.Module):
    """Eight layers per modality, run side by side; the logits come from layer PLANTED of each."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.image_layers = _layers(0, generator)
        self.audio_layers = _layers(1, generator)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = 0
        for layers, name in ((self.image_layers, "image"), (self.audio_layers, "audio")):
            outputs = [layer(batch[name]) for layer in layers]
            logits = logits + 2.0 * outputs[PLANTED].flatten(1)
        return logits


def make_teacher() -> PlantedTeacher:
    """The teacher factory (no training needed: its weights are set by construction)."""
    return PlantedTeacher().eval()


def _branch(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()),
    )


class PlantedStudent(nn.Module):
    """Three conv stages per modality, late fusion."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({n: _branch(width) for n in MODALITIES})
        self.head = nn.Linear(len(MODALITIES) * width, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.nets[n](batch[n]).mean((2, 3)) for n in MODALITIES], 1))


def make_student(data, width: int = 8) -> PlantedStudent:  # noqa: ANN001
    """The student factory."""
    return PlantedStudent(data.num_classes, width)


class PlantedDataset(torch.utils.data.Dataset):
    """``({"image": tensor, "audio": tensor}, label)`` samples of :func:`arrays`."""

    def __init__(self, n: int, seed: int, label_noise: float = 0.0) -> None:
        self.arrays = arrays(n, seed, label_noise)

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        return {m: torch.from_numpy(self.arrays[m][i]) for m in MODALITIES}, int(self.arrays["label"][i])


def make_datasets(n_train: int = 480, label_noise: float = 0.0) -> dict[str, PlantedDataset]:
    """The data factory: train (``label_noise``: the share of its labels replaced by random
    ones, which the teacher's planted layer can correct), val and test (clean labels)."""
    return {
        "train": PlantedDataset(n_train, 0, label_noise),
        "val": PlantedDataset(160, 1),
        "test": PlantedDataset(160, 2),
    }
