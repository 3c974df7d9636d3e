"""Mask classification (MaskFormer, Cheng et al., NeurIPS 2021): the segmentor under RC²L (``docs/methods.md``).

The network predicts N (query) regions per image instead of one class per pixel. Each query has a class
distribution over K classes plus "no object" (index K) and a mask; a class-level semantic map comes from summing the
queries' masks weighted by their class probabilities (MaskFormer's semantic inference).

* ``PixelDecoder``: a small FPN over the backbone's four levels; gives the per-pixel features the masks are read
  from (at the finest level's resolution, stride 4 for the usual backbones) and the projected coarsest level, which
  the transformer decoder attends to.
* ``sine_positional_encoding``: DETR's fixed 2-D sine encoding of a feature map's positions.
* ``MaskClassificationSegmentor``: backbone, pixel decoder, transformer decoder over learned queries, class head and
  mask-embedding MLP.

Choices that differ from MaskFormer, all for a small, readable module built on ``torch.nn``:

* ``nn.TransformerDecoderLayer`` takes no positional embeddings, so positions are added once, before the decoder:
  the sine encoding to the memory (so it reaches the values as well as the keys) and nothing to the queries, whose
  learned embeddings serve as both their content and their position (a second learned embedding added to the
  target would be redundant with the first). MaskFormer adds both encodings to the keys and queries of every layer.
* No deep supervision: only the last decoder layer's output is returned (MaskFormer adds the loss of every layer).
* The feed-forward width defaults to ``8 * hidden_dim``, which is MaskFormer's 2048 at ``hidden_dim=256``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from contrastseg.losses.region import semantic_scores
from contrastseg.models.heads import upsample_to
from contrastseg.models.segmentor import IMAGENET_MEAN, IMAGENET_STD, check_images

_GROUP_NORM_GROUPS = 32
"""GroupNorm groups of the pixel decoder, as MaskFormer's (fewer when the width is not a multiple of 32)."""


def conv_gn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, relu: bool = True) -> nn.Sequential:
    """Conv (no bias), GroupNorm, optional ReLU. GroupNorm rather than BatchNorm: it trains with batches of one."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
              nn.GroupNorm(math.gcd(_GROUP_NORM_GROUPS, out_channels), out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PixelDecoder(nn.Module):
    """A small FPN: 1x1 lateral conv-GN per level, top-down sums, a 3x3 conv-GN-ReLU after each sum.

    The top of the pyramid is the projected last level, returned as is for the transformer decoder. Each finer level
    adds its lateral projection to the coarser map, resized to its own size by nearest interpolation (always, since
    dilated backbones give levels of equal size), then smooths the sum with a 3x3 conv-GN-ReLU. A final 1x1 conv (with
    bias, no norm or activation; MaskFormer's ``mask_features`` layer, 3x3 there) gives signed pixel features.

    Args:
        in_channels: channels of the backbone's levels, finest first.
        hidden_dim: channels of every pyramid map and of the pixel features.

    Shape:
        levels: tuple of (B, C_l, h_l, w_l), finest first.
        returns: pixel features (B, hidden_dim, h_0, w_0) and the coarsest map (B, hidden_dim, h_L, w_L).
    """

    def __init__(self, in_channels: tuple[int, ...], hidden_dim: int):
        super().__init__()
        self.laterals = nn.ModuleList(conv_gn_relu(channels, hidden_dim, kernel_size=1, relu=False)
                                      for channels in in_channels)
        self.smoothing = nn.ModuleList(conv_gn_relu(hidden_dim, hidden_dim) for _ in in_channels[:-1])
        self.mask_features = nn.Conv2d(hidden_dim, hidden_dim, 1)

    def forward(self, levels: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(levels) != len(self.laterals):
            raise ValueError(f"expected {len(self.laterals)} feature levels, got {len(levels)}")
        coarsest = self.laterals[-1](levels[-1])
        merged = coarsest
        for level in reversed(range(len(levels) - 1)):
            lateral = self.laterals[level](levels[level])
            top_down = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = self.smoothing[level](lateral + top_down)
        return self.mask_features(merged), coarsest


def sine_positional_encoding(features: torch.Tensor, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine positional encoding of a feature map's positions, flattened row-major.

    Coordinates are normalised to (0, 2π] (DETR's ``normalize=True``). The first C/2 channels encode the row, the
    last C/2 the column, each as interleaved sin/cos pairs of geometrically spaced frequencies. Only the map's shape,
    dtype and device are read; the result is the same for every image.

    Args:
        features: the map whose positions are encoded.
        temperature: base of the frequencies' geometric progression.

    Shape:
        features: (B, C, h, w), C a multiple of 4.
        returns: (B, h * w, C).
    """
    batch, channels, height, width = features.shape
    if channels % 4:
        raise ValueError(f"the sine positional encoding needs channels divisible by 4, got {channels}")
    per_axis = channels // 2
    kwargs = {"dtype": torch.float32, "device": features.device}
    rows = torch.arange(1, height + 1, **kwargs) / height * (2 * math.pi)
    cols = torch.arange(1, width + 1, **kwargs) / width * (2 * math.pi)
    frequencies = temperature ** (2 * (torch.arange(per_axis, **kwargs) // 2) / per_axis)

    def encode(coordinates: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, per_axis), sin on even, cos on odd channels
        phases = coordinates[:, None] / frequencies
        return torch.stack((phases[:, 0::2].sin(), phases[:, 1::2].cos()), dim=2).flatten(1)

    encoding = torch.cat((encode(rows)[:, None, :].expand(height, width, per_axis),
                          encode(cols)[None, :, :].expand(height, width, per_axis)), dim=2)
    return encoding.reshape(1, height * width, channels).expand(batch, -1, -1).to(features.dtype)


class MaskClassificationSegmentor(nn.Module):
    """MaskFormer-style segmentor: N learned queries, each predicting a class (or "no object") and a mask.

    Images come in as floats in [0, 1] and are normalised with the ImageNet statistics here, as in ``Segmentor``.
    The queries attend, through a post-norm ``nn.TransformerDecoder`` with a final LayerNorm, to the flattened
    coarsest pyramid map plus its sine positional encoding. A linear class head gives K + 1 logits per query
    (index K = "no object"); a 3-layer MLP gives mask embeddings, whose dot products with the pixel features are the
    mask logits. See the module docstring for the differences from MaskFormer.

    Args:
        backbone: maps images to four maps, finest first, and exposes ``channels``.
        num_classes: K, the number of real classes.
        num_queries: N.
        hidden_dim: width of the pixel decoder, the queries and the mask embeddings; a multiple of 4 and of
            ``num_heads``.
        decoder_layers: transformer decoder layers.
        num_heads: attention heads.
        dropout: dropout in the transformer decoder (MaskFormer uses 0.1).
        dim_feedforward: width of the decoder's feed-forward layers; ``8 * hidden_dim`` when None.

    Shape:
        images: (B, 3, H, W) float in [0, 1].
        returns, with (h, w) the backbone's finest level's size (stride 4 for the usual backbones):
            "levels": tuple of the backbone's four maps (B, C_l, h_l, w_l), finest first;
            "class_logits": (B, N, K + 1);
            "mask_logits": (B, N, h, w);
            "pixel_features": (B, hidden_dim, h, w), the per-pixel mask embeddings (the pixel decoder's output);
            "mask_embeddings": (B, N, hidden_dim);
            "semantic": (B, K, h, w), sum over queries of softmax(class_logits)[..., :K] * sigmoid(mask_logits),
                MaskFormer's semantic inference; a sum over queries, so each score lies in [0, N], not [0, 1];
            "logits": (B, K, H, W), "semantic" upsampled bilinearly to the input size. These are scores, not
                logits; the key is named for the evaluation code, which only reads their argmax (the semantic
                prediction).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, num_queries: int = 100, hidden_dim: int = 256,
                 decoder_layers: int = 6, num_heads: int = 8, dropout: float = 0.0, dim_feedforward: int | None = None):
        super().__init__()
        if hidden_dim % 4 or hidden_dim % num_heads:
            raise ValueError(f"hidden_dim must be a multiple of 4 and of num_heads={num_heads}, got {hidden_dim}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.pixel_decoder = PixelDecoder(tuple(backbone.channels), hidden_dim)
        self.query_embeddings = nn.Embedding(num_queries, hidden_dim)
        layer = nn.TransformerDecoderLayer(hidden_dim, num_heads, dim_feedforward=dim_feedforward or 8 * hidden_dim,
                                           dropout=dropout, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, decoder_layers, norm=nn.LayerNorm(hidden_dim))
        self.class_head = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embedding = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict:
        check_images(images)
        return self.forward_normalised((images - self.mean) / self.std)

    def forward_normalised(self, images: torch.Tensor) -> dict:
        """``forward`` of images already normalised with ``self.mean`` and ``self.std`` (the deployed form's input,
        ``contrastseg.export``)."""
        check_images(images)
        levels = self.backbone(images)
        pixel_features, coarsest = self.pixel_decoder(levels)
        memory = coarsest.flatten(2).transpose(1, 2) + sine_positional_encoding(coarsest)
        queries = self.query_embeddings.weight.unsqueeze(0).expand(images.shape[0], -1, -1)
        decoded = self.transformer_decoder(queries, memory)
        class_logits = self.class_head(decoded)
        mask_embeddings = self.mask_embedding(decoded)
        mask_logits = torch.einsum("bnc,bchw->bnhw", mask_embeddings, pixel_features)
        semantic = semantic_scores(class_logits, mask_logits)
        return {"levels": levels, "class_logits": class_logits, "mask_logits": mask_logits,
                "pixel_features": pixel_features,
                "mask_embeddings": mask_embeddings, "semantic": semantic,
                "logits": upsample_to(semantic, images.shape[-2:])}
