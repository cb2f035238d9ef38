"""The user's teacher and student. autogram calls ``load_teacher`` and ``make_student`` by
import path (see ``../config.yaml``) and never edits either model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


class AVTeacher(nn.Module):
    """ViT (image) + AST (spectrogram) encoders from ``transformers``, their CLS tokens fused by
    a Transformer encoder layer, then a linear head. Called the Hugging Face way:
    ``model(pixel_values=..., input_values=...)``; returns an object with ``.logits``."""

    def __init__(
        self,
        image_size: int = 28,
        image_patch: int = 7,
        spec_bins: int = 32,
        spec_frames: int = 32,
        spec_patch: int = 8,
        hidden: int = 64,
        layers: int = 3,
        heads: int = 4,
        num_classes: int = 10,
    ) -> None:
        from transformers import ASTConfig, ASTModel, ViTConfig, ViTModel

        super().__init__()
        common = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.image = ViTModel(
            ViTConfig(image_size=image_size, patch_size=image_patch, num_channels=1, **common), add_pooling_layer=False
        )
        self.audio = ASTModel(
            ASTConfig(
                num_mel_bins=spec_bins,
                max_length=spec_frames,
                patch_size=spec_patch,
                frequency_stride=spec_patch,
                time_stride=spec_patch,
                **common,
            )
        )
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.modality_embedding = nn.Parameter(torch.zeros(2, hidden))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, pixel_values: torch.Tensor, input_values: torch.Tensor):  # noqa: ANN201
        """``pixel_values`` (B, 1, H, W); ``input_values`` (B, 1, F, T) as stored (AST takes (B, T, F))."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        image = self.image(pixel_values=pixel_values).last_hidden_state[:, 0]
        audio = self.audio(input_values=input_values.squeeze(1).transpose(1, 2)).last_hidden_state[:, 0]
        fused = self.fusion(torch.stack([image, audio], dim=1) + self.modality_embedding)
        return SequenceClassifierOutput(logits=self.head(fused.mean(dim=1)))


def save_teacher(model: AVTeacher, folder: str | Path, arch: dict) -> None:
    """Weights as safetensors plus the architecture as JSON (no pickle anywhere)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(arch, indent=1))


def load_teacher(folder: str) -> AVTeacher:
    """The trained teacher saved by ``train_teacher.py``: the factory autogram calls."""
    from safetensors.torch import load_file

    folder_path = Path(folder)
    if not (folder_path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained teacher in {folder}: run examples/byo/train_teacher.py first")
    model = AVTeacher(**json.loads((folder_path / "config.json").read_text()))
    model.load_state_dict(load_file(str(folder_path / "model.safetensors")))
    return model.eval()


class AVStudent(nn.Module):
    """One small CNN per grid modality (three stages: Conv-BN-ReLU, a strided Conv-BN-ReLU with
    squeeze-and-excitation, a strided Conv-BN-ReLU), average-pooled, concatenated, classified.
    Called as ``model({"image": ..., "audio": ...})``; returns logits."""

    def __init__(self, channels: dict[str, int], num_classes: int, width: int = 16) -> None:
        from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

        super().__init__()
        self.branches = nn.ModuleDict(
            {
                name: nn.Sequential(
                    Conv2dNormActivation(c, width, kernel_size=3),
                    nn.Sequential(
                        Conv2dNormActivation(width, 2 * width, kernel_size=3, stride=2),
                        SqueezeExcitation(2 * width, max(4, width // 2)),
                    ),
                    Conv2dNormActivation(2 * width, 4 * width, kernel_size=3, stride=2),
                )
                for name, c in channels.items()
            }
        )
        self.head = nn.Sequential(nn.Linear(4 * width * len(channels), 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits from ``{modality: (B, C, H, W)}``."""
        pooled = [branch(batch[name]).mean(dim=(2, 3)) for name, branch in self.branches.items()]
        return self.head(torch.cat(pooled, dim=1))


def make_student(data, width: int = 16) -> AVStudent:  # noqa: ANN001
    """The student factory: autogram passes a description of the data (modality names, kinds,
    per-sample shapes, number of classes) and the config's kwargs, once per trial."""
    channels = {m.name: m.shape[0] for m in data.modalities}
    return AVStudent(channels, data.num_classes, width)
