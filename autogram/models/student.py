"""The student: a lightweight CNN per modality, a shared embedding, late fusion, a classifier."""

from __future__ import annotations

import torch
from torch import nn

from autogram.config import StudentConfig
from autogram.data.base import Modality
from autogram.models.taps import Tap, encoder_taps


def _block1d(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


def _block2d(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # torchvision's Conv2dNormActivation, layer for layer (same module paths, same initial
    # weights): importing torchvision costs every fresh worker about 2 s (it loads torch._dynamo).
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class GridEncoder(nn.Module):
    """Conv-BN-ReLU blocks over a 1-channel image or spectrogram, widths doubling, stride 2 after
    the first, then the last map average-pooled to ``pool`` x ``pool`` cells (1: global)."""

    def __init__(self, cfg: StudentConfig, in_channels: int = 1) -> None:
        super().__init__()
        widths = [cfg.width * 2**i for i in range(cfg.num_blocks)]
        self.blocks = nn.Sequential(
            *[
                _block2d(c_in, c_out, 1 if i == 0 else 2)
                for i, (c_in, c_out) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True))
            ]
        )
        self.pool = cfg.pool
        self.out_channels = widths[-1] * cfg.pool * cfg.pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pooled features, (B, C * pool^2)."""
        features = self.blocks(x)
        if self.pool == 1:
            return features.mean(dim=(2, 3))
        return nn.functional.adaptive_avg_pool2d(features, self.pool).flatten(1)


class TokenEncoder(nn.Module):
    """Token embedding followed by 1-D Conv-BN-ReLU blocks over the sequence."""

    def __init__(self, modality: Modality, cfg: StudentConfig) -> None:
        super().__init__()
        widths = [cfg.width * 2**i for i in range(cfg.num_blocks)]
        self.embedding = nn.Embedding(modality.vocab_size or 2, cfg.token_embed_dim)
        self.blocks = nn.Sequential(
            *[
                _block1d(c_in, c_out, 1 if i == 0 else 2)
                for i, (c_in, c_out) in enumerate(zip([cfg.token_embed_dim, *widths[:-1]], widths, strict=True))
            ]
        )
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pooled features, (B, C): a keyword anywhere in the sequence counts."""
        return self.blocks(self.embedding(x).transpose(1, 2)).amax(dim=2)


class TimeSeriesEncoder(nn.Module):
    """1-D Conv-BN-ReLU blocks over time, the sensor channels as input channels, widths doubling
    and stride 2 after the first; the last map averaged over time."""

    def __init__(self, modality: Modality, cfg: StudentConfig) -> None:
        super().__init__()
        widths = [cfg.width * 2**i for i in range(cfg.num_blocks)]
        self.blocks = nn.Sequential(
            *[
                _block1d(c_in, c_out, 1 if i == 0 else 2)
                for i, (c_in, c_out) in enumerate(zip([modality.shape[0], *widths[:-1]], widths, strict=True))
            ]
        )
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Time-averaged features, (B, C), of a (B, channels, steps) batch."""
        return self.blocks(x).mean(dim=2)


def _encoder(modality: Modality, cfg: StudentConfig) -> nn.Module:
    if modality.kind == "tokens":
        return TokenEncoder(modality, cfg)
    if modality.kind == "timeseries":
        return TimeSeriesEncoder(modality, cfg)
    return GridEncoder(cfg, modality.shape[0])


class MultiModalCNN(nn.Module):
    """Per-modality CNN encoders -> projections to a shared embedding -> late fusion -> classifier."""

    def __init__(self, modalities: list[Modality], num_classes: int, cfg: StudentConfig) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.num_blocks = cfg.num_blocks
        self.encoders = nn.ModuleDict({m.name: _encoder(m, cfg) for m in modalities})
        self.projections = nn.ModuleDict(
            {m.name: nn.Linear(self.encoders[m.name].out_channels, cfg.embed_dim) for m in modalities}
        )
        self.fusion = nn.Sequential(nn.Linear(len(modalities) * cfg.embed_dim, cfg.embed_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(cfg.embed_dim, num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits for a batch given as ``{modality name: tensor}``."""
        embeds = [self.projections[m.name](self.encoders[m.name](inputs[m.name])) for m in self.modalities]
        return self.classifier(self.fusion(torch.cat(embeds, dim=1)))

    def taps(self) -> list[Tap]:
        """Every encoder block's output, then the shared embedding, for each modality."""
        return [
            tap
            for m in self.modalities
            for tap in encoder_taps(m.name, self.num_blocks, "block", f"encoders.{m.name}.blocks", "channels_first")
        ]
