"""The two towers of a dual encoder: CLIP (transformers), the rinna layout and a small convolutional vision tower."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from linkage_pipeline.multimodal.tokenizer import SPECIAL_TOKENS

#: Model kinds a :class:`MultimodalEncoder` can hold.
MODEL_KINDS: tuple[str, ...] = ("clip", "rinna")


# ------------------------------------------------------------------------------------------- dual encoders
class ClipDualEncoder(nn.Module):
    """A ``transformers.CLIPModel`` seen as two towers with projections (no logits, no loss)."""

    kind = "clip"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Project the pooled (CLS, post-layernorm) vision output: (n, 3, S, S) float -> (n, d), not normalised."""
        out = self.model.vision_model(pixel_values=pixel_values)
        return self.model.visual_projection(out.pooler_output)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Project the pooled (end-of-text token) text output: (n, L) int64 -> (n, d), not normalised."""
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.model.text_projection(out.pooler_output)


class RinnaDualEncoder(nn.Module):
    """The rinna japanese-clip layout: BERT text tower, ViT vision tower, bias-free projections of CLS tokens.

    Parameter names match rinna's ``CLIPModel`` (``text_model.*``, ``vision_model.*``, ``text_projection``,
    ``visual_projection``, ``logit_scale``), so its safetensors state dict loads strictly.
    """

    kind = "rinna"

    def __init__(
        self, text_config: Any, vision_config: Any, projection_dim: int, logit_scale_init_value: float = 2.6592
    ) -> None:
        super().__init__()
        from transformers import BertModel, ViTModel

        self.text_model = BertModel(text_config, add_pooling_layer=False)
        self.vision_model = ViTModel(vision_config, add_pooling_layer=False)
        self.text_projection = nn.Linear(text_config.hidden_size, projection_dim, bias=False)
        self.visual_projection = nn.Linear(vision_config.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init_value)))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Project the ViT's CLS token: (n, 3, S, S) float -> (n, d), not normalised."""
        out = self.vision_model(pixel_values=pixel_values)
        return self.visual_projection(out.last_hidden_state[:, 0, :])

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Project BERT's CLS token: (n, L) int64 -> (n, d), not normalised."""
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self.text_projection(out.last_hidden_state[:, 0, :])


class ConvVisionTower(nn.Module):
    """A small CNN vision tower with the interface of CLIP's vision model (``pooler_output``).

    3x3 convolutions with batch norm and ReLU; the first, second, third and last layers have stride 2, the
    others stride 1; then global average pooling over positions (a bag of glyph features, which suits names
    whose legal-form words move from front to back) and a layer norm. Input: (n, C, S, S); the channels are
    averaged (grey scans come as 3 equal channels for checkpoint compatibility).
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        last = len(widths) - 1
        for i, width in enumerate(widths):
            stride = 2 if i in (0, 1, 2, last) else 1
            layers += [nn.Conv2d(c_in, int(width), 3, stride, 1, bias=False), nn.BatchNorm2d(int(width)), nn.ReLU()]
            c_in = int(width)
        self.features = nn.Sequential(*layers)
        self.post_layernorm = nn.LayerNorm(c_in)

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        x = self.features(pixel_values.mean(dim=1, keepdim=True))
        pooled = self.post_layernorm(x.mean(dim=(2, 3)))
        return BaseModelOutputWithPooling(last_hidden_state=x.flatten(2).transpose(1, 2), pooler_output=pooled)


def build_clip_model(config: Any) -> Any:
    """``CLIPModel(config)``, with the vision model replaced by :class:`ConvVisionTower` for a ``cnn`` tower."""
    from transformers import CLIPModel

    model = CLIPModel(config)
    if getattr(config.vision_config, "tower", "vit") == "cnn":
        model.vision_model = ConvVisionTower(config.vision_config.cnn_widths)
    return model


# ------------------------------------------------------------------------------------------------- config
def small_clip_config(
    vocab_size: int,
    *,
    image_size: int = 80,
    patch_size: int = 8,
    vision_hidden: int = 128,
    vision_layers: int = 3,
    text_hidden: int = 128,
    text_layers: int = 2,
    heads: int = 4,
    projection_dim: int = 128,
    max_length: int = 48,
    vision_tower: str = "vit",
    cnn_widths: Sequence[int] = (32, 48, 96, 96, 192),
) -> Any:
    """A small CLIP for firm-name crops (grey scans, 3 channels for checkpoint compatibility).

    Args:
        vocab_size: Tokenizer vocabulary size.
        image_size: Side of the square input, pixels; a multiple of ``patch_size``, 32..224.
        patch_size: ViT patch side, pixels.
        vision_hidden: Vision width; ``vision_layers`` transformer layers, MLP 2x the width.
        text_hidden: Text width; ``text_layers`` layers, MLP 2x the width.
        heads: Attention heads of both towers (divides both widths).
        projection_dim: Dimension ``d`` of the joint embedding.
        max_length: Longest token sequence.
        vision_tower: ``vit`` (CLIP's ViT) or ``cnn`` (:class:`ConvVisionTower`, a small strided CNN with
            global average pooling; learns from a few thousand synthetic crops in CPU minutes where the ViT
            learns nothing). Stored in the vision config, so :meth:`MultimodalEncoder.load` rebuilds it.
        cnn_widths: Channels of the CNN's 3x3 conv layers (``cnn`` only); its last width is the vision width.

    Returns:
        A ``transformers.CLIPConfig`` (no dropout, so training on CPU is deterministic by seed).

    Raises:
        ValueError: If the sizes do not fit together.
    """
    from transformers import CLIPConfig

    if vision_tower not in ("vit", "cnn"):
        raise ValueError(f"vision_tower must be 'vit' or 'cnn', got {vision_tower!r}")
    if vision_tower == "cnn":
        if not cnn_widths or min(cnn_widths) < 1:
            raise ValueError(f"cnn_widths must be positive channel counts, got {cnn_widths}")
        vision_hidden = int(cnn_widths[-1])
    if image_size % patch_size or not 32 <= image_size <= 224:
        raise ValueError(f"image_size must be a multiple of patch_size in [32, 224], got {image_size}/{patch_size}")
    if (vision_tower == "vit" and vision_hidden % heads) or text_hidden % heads:
        raise ValueError(f"heads={heads} must divide vision_hidden={vision_hidden} and text_hidden={text_hidden}")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    text = {
        "vocab_size": vocab_size,
        "hidden_size": text_hidden,
        "intermediate_size": 2 * text_hidden,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "max_position_embeddings": max_length,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "projection_dim": projection_dim,
        "attention_dropout": 0.0,
    }
    vision = {
        "image_size": image_size,
        "patch_size": patch_size,
        "num_channels": 3,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": heads if vision_hidden % heads == 0 else 1,
        "projection_dim": projection_dim,
        "attention_dropout": 0.0,
    }
    if vision_tower == "cnn":
        # The ViT part of the config is not built (no layers); the CNN replaces it (see build_clip_model).
        vision.update(tower="cnn", cnn_widths=[int(w) for w in cnn_widths], num_hidden_layers=0)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
