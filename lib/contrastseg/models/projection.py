"""Projection heads: map dense features to unit-norm embeddings for the contrastive losses (training only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """1x1 conv, BatchNorm, ReLU, 1x1 conv to ``proj_dim``, L2 normalisation over channels (Wang et al. 2021).

    The reference's head has BatchNorm between the convolutions (the paper's text mentions two 1x1 convolutions
    with a ReLU); we follow the reference code. It is only run while training, so it costs nothing at inference.

    Shape:
        features: (B, C, h, w) -> (B, proj_dim, h, w), unit norm along dim 1.
    """

    def __init__(self, in_channels: int, proj_dim: int = 256):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, proj_dim, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), dim=1)
