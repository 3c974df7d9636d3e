"""Decode heads: map the backbone's last feature map to class logits (at that map's resolution).

Each head returns ``(logits, decoder_features)``: the logits (B, K, h, w) and the features just before the
classifier (B, C, h, w), which the contrastive methods project into their embedding space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastseg.models.backbones import conv_bn_relu


class FCNHead(nn.Module):
    """Fully convolutional head: 3x3 conv-BN-ReLU, dropout, 1x1 classifier.

    Shape:
        features: (B, C_in, h, w) -> logits (B, K, h, w), decoder features (B, C_in // 4, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.channels = max(in_channels // 4, 16)
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


def upsample_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of (B, K, h, w) to (B, K, *size)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
