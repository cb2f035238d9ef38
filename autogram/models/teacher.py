"""The teacher: a multi-modal Transformer built from ``transformers`` model classes.

One encoder per modality (ViT for images / spectrograms, BERT for token sequences, a ViT
whose patches are 1 x patch_size windows of time for timeseries: every sensor channel of a
stretch of time in one patch), a
linear projection of each into a shared embedding space, a small BERT encoder that
fuses the per-modality embeddings (its position embeddings act as modality embeddings),
and a linear classifier. Configs are built locally: nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from autogram.data.base import Modality
from autogram.models.taps import Tap, encoder_taps


def _layer_list(model: nn.Module, num_layers: int) -> str:
    """Path of the encoder's ModuleList of blocks (its name differs across transformers versions)."""
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return path
    raise RuntimeError(f"no list of {num_layers} layers found in {type(model).__name__}")


def _encoder(modality: Modality, arch: dict[str, int]) -> nn.Module:
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    common = dict(
        hidden_size=arch["hidden_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        intermediate_size=arch["intermediate_size"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if modality.kind == "tokens":
        config = BertConfig(
            vocab_size=modality.vocab_size, max_position_embeddings=modality.shape[0], type_vocab_size=1, **common
        )
        return BertModel(config, add_pooling_layer=False)
    if modality.kind == "timeseries":  # (C, T) read as a 1 x T image with C channels
        channels, steps = modality.shape
        patch = min(arch["patch_size"], steps)
        config = ViTConfig(image_size=(1, steps), patch_size=(1, patch), num_channels=channels, **common)
        return ViTModel(config, add_pooling_layer=False)
    channels, height, width = modality.shape
    patch = min(arch["patch_size"], height, width)
    config = ViTConfig(image_size=(height, width), patch_size=patch, num_channels=channels, **common)
    return ViTModel(config, add_pooling_layer=False)


class MultiModalTransformer(nn.Module):
    """Per-modality Transformer encoders -> shared embeddings -> Transformer fusion -> classifier."""

    def __init__(self, modalities: list[Modality], num_classes: int, arch: dict[str, int]) -> None:
        from transformers import BertConfig, BertModel

        super().__init__()
        self.modalities = list(modalities)
        self.arch = dict(arch)
        self.encoders = nn.ModuleDict({m.name: _encoder(m, arch) for m in modalities})
        self.projections = nn.ModuleDict(
            {m.name: nn.Linear(arch["hidden_size"], arch["embed_dim"]) for m in modalities}
        )
        fusion_config = BertConfig(
            vocab_size=1,
            hidden_size=arch["embed_dim"],
            num_hidden_layers=arch["fusion_layers"],
            num_attention_heads=arch["num_heads"],
            intermediate_size=2 * arch["embed_dim"],
            max_position_embeddings=len(modalities),
            type_vocab_size=1,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.fusion = BertModel(fusion_config, add_pooling_layer=False)
        self.classifier = nn.Linear(arch["embed_dim"], num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits for a batch given as ``{modality name: tensor}``."""
        embeds = []
        for modality in self.modalities:
            encoder = self.encoders[modality.name]
            x = inputs[modality.name]
            if modality.kind == "tokens":
                hidden = encoder(input_ids=x).last_hidden_state.mean(dim=1)
            elif modality.kind == "timeseries":
                hidden = encoder(pixel_values=x.unsqueeze(2)).last_hidden_state[:, 0]
            else:
                hidden = encoder(pixel_values=x).last_hidden_state[:, 0]  # the CLS token
            embeds.append(self.projections[modality.name](hidden))
        fused = self.fusion(inputs_embeds=torch.stack(embeds, dim=1)).last_hidden_state.mean(dim=1)
        return self.classifier(fused)

    def taps(self) -> list[Tap]:
        """Every encoder block's output, then the shared embedding, for each modality."""
        n = self.arch["num_layers"]
        taps = []
        for modality in self.modalities:
            layers = _layer_list(self.encoders[modality.name], n)
            taps += encoder_taps(modality.name, n, "layer", f"encoders.{modality.name}.{layers}", "tokens_last")
        return taps
