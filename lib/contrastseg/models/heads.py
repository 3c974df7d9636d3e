"""Decode heads: map a feature map to class logits (at that map's resolution).

Each head returns ``(logits, decoder_features)``: the logits (B, K, h, w) and the features just before the
classifier (B, C, h, w), which the contrastive methods project into their embedding space. Two class attributes
tell the ``Segmentor`` how to call a head:

* ``multi_level``: False, the head decodes the backbone's last level; True, it decodes all four levels,
  concatenated at the finest level's resolution (``concat_levels``, the HRNetV2 representation);
* ``aux_branch``: True when the head has its own auxiliary classifier (OCR's soft object regions) and returns
  ``(logits, decoder_features, aux_logits)``.

A third, ``reference_options``, holds the constructor arguments that give the pixel-contrast reference code's form
of a head (``build_segmentor(..., reference_heads=True)``); it is empty for the heads that have one form only.

``ocr.OCRHead`` is the other multi-level head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastseg.models.backbones import conv_bn_relu


class FCNHead(nn.Module):
    """Fully convolutional head: 3x3 conv-BN-ReLU, dropout, 1x1 classifier.

    Also the auxiliary head of DeepLabV3 (``channels=256`` on ResNet-101's third stage, as in the reference code).

    Args:
        in_channels: C_in.
        num_classes: K.
        dropout: Dropout2d probability before the classifier.
        channels: width of the conv-BN-ReLU; None = ``max(C_in // 4, 16)``.

    Shape:
        features: (B, C_in, h, w) -> logits (B, K, h, w), decoder features (B, channels, h, w).
    """

    multi_level = False
    aux_branch = False
    reference_options: dict = {}

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1, channels: int | None = None):
        super().__init__()
        self.channels = max(in_channels // 4, 16) if channels is None else channels
        self.block = conv_bn_relu(in_channels, self.channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(self.channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.block(features)
        return self.classifier(self.dropout(decoded)), decoded


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): a 1x1 branch, three dilated 3x3 branches, image pooling.

    Shape:
        features: (B, C_in, h, w) -> (B, channels, h, w).
    """

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True))]
            + [conv_bn_relu(in_channels, channels, dilation=rate) for rate in rates]
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1, bias=False), nn.ReLU(True)
        )
        self.project = nn.Sequential(
            nn.Conv2d(channels * (len(rates) + 2), channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(features).expand(-1, -1, *features.shape[-2:])
        return self.project(torch.cat([branch(features) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3Head(nn.Module):
    """DeepLabV3 head: ASPP, 3x3 conv-BN-ReLU, 1x1 classifier. Rates (12, 24, 36) at output stride 8, halved at 16.

    The image-pooling branch has no BatchNorm, so batches of one image train without error.

    Shape:
        features: (B, C_in, h, w) -> logits (B, K, h, w), decoder features (B, channels, h, w).
    """

    multi_level = False
    aux_branch = False
    reference_options: dict = {}

    def __init__(self, in_channels: int, num_classes: int, output_stride: int = 8, channels: int = 256):
        super().__init__()
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        self.channels = channels
        self.aspp = ASPP(in_channels, channels, rates)
        self.block = conv_bn_relu(channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.block(self.aspp(features))
        return self.classifier(decoded), decoded


class HRNetHead(nn.Module):
    """HRNetV2's head on the concatenated branches: 1x1 conv-BN-ReLU (same width), dropout, 1x1 classifier.

    The HRNet authors' head has a 1x1 convolution and no dropout (the defaults); the pixel-contrast reference code
    uses a 3x3 convolution and Dropout2d 0.1 (``kernel_size=3, dropout=0.1``: ``reference_options``).

    Shape:
        features: (B, C_in, h, w), the ``concat_levels`` map (720 channels for W48)
        -> logits (B, K, h, w), decoder features (B, C_in, h, w).
    """

    multi_level = True
    aux_branch = False
    reference_options = {"kernel_size": 3, "dropout": 0.1}

    def __init__(self, in_channels: int, num_classes: int, kernel_size: int = 1, dropout: float = 0.0):
        super().__init__()
        self.channels = in_channels
        self.block = conv_bn_relu(in_channels, in_channels, kernel_size=kernel_size)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.block(features)
        return self.classifier(self.dropout(decoded)), decoded


def concat_levels(levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """All levels resized to the first (finest) one's size and concatenated along channels, finest first.

    Bilinear with ``align_corners=True``, as in the HRNet and OCR reference code.

    Shape:
        levels: maps (B, C_l, h_l, w_l) -> (B, sum of C_l, h_1, w_1).
    """
    size = levels[0].shape[-2:]
    resized = [level if level.shape[-2:] == size else
               F.interpolate(level, size=size, mode="bilinear", align_corners=True) for level in levels]
    return torch.cat(resized, dim=1)


def upsample_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of (B, K, h, w) to (B, K, *size)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
