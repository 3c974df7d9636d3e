"""OCRNet's head (Yuan et al., ECCV 2020): object-contextual representations on HRNetV2's concatenated branches.

Steps, on the ``concat_levels`` map X (720 channels at stride 4 for HRNetV2-W48):

1. soft object regions: an auxiliary classifier on X gives K region logits per pixel (the "aux" output, supervised
   with CE at weight 0.4 in the paper);
2. pixel representations: a 3x3 conv-BN-ReLU of X to 512 channels;
3. object-region representations: per class, the average of the pixel representations weighted by the softmax of
   that class's region logits over all pixels (``spatial_gather``);
4. object context: each pixel attends to the K region representations (query: its pixel representation, key and
   value: the regions', all through 256-channel transforms; scaled dot product, softmax over the K regions);
5. augmented representation: [context, pixel representation] -> 1x1 conv-BN-ReLU to 512, dropout, 1x1 classifier.

Widths follow the reference code (512 / 256, dropout 0.05). Convolutions followed by BatchNorm have no bias.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastseg.models.backbones import conv_bn_relu


def conv1x1_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


def spatial_gather(features: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
    """Object-region representations: per region k, the softmax-over-pixels(region_logits[:, k])-weighted mean of the
    pixel features.

    Shape:
        features: (B, C, h, w); region_logits: (B, K, h, w) -> (B, K, C).
    """
    weights = region_logits.flatten(2).softmax(dim=2)  # (B, K, hw), each row sums to 1
    return weights @ features.flatten(2).transpose(1, 2)


class ObjectContext(nn.Module):
    """Object-contextual representations: every pixel attends to the K object-region representations.

    Query = two 1x1 conv-BN-ReLU of the pixel features; key = the same on the regions; value = one 1x1 conv-BN-ReLU
    of the regions; the attended values go back to ``channels`` through a 1x1 conv-BN-ReLU. Attention weights are
    softmax over the K regions of query . key / sqrt(key_channels).

    Shape:
        features: (B, C, h, w); regions: (B, K, C) -> (B, C, h, w).
    """

    def __init__(self, channels: int = 512, key_channels: int = 256):
        super().__init__()
        self.key_channels = key_channels
        self.query = nn.Sequential(conv1x1_bn_relu(channels, key_channels), conv1x1_bn_relu(key_channels, key_channels))
        self.key = nn.Sequential(conv1x1_bn_relu(channels, key_channels), conv1x1_bn_relu(key_channels, key_channels))
        self.value = conv1x1_bn_relu(channels, key_channels)
        self.out = conv1x1_bn_relu(key_channels, channels)

    def forward(self, features: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = features.shape
        region_map = regions.transpose(1, 2).unsqueeze(-1)  # (B, C, K, 1): 1x1 convolutions act per region
        query = self.query(features).flatten(2).transpose(1, 2)  # (B, hw, D)
        key = self.key(region_map).flatten(2)  # (B, D, K)
        value = self.value(region_map).flatten(2).transpose(1, 2)  # (B, K, D)
        attention = (query @ key * self.key_channels ** -0.5).softmax(dim=-1)  # (B, hw, K)
        context = (attention @ value).transpose(1, 2).reshape(batch, self.key_channels, height, width)
        return self.out(context)


class OCRHead(nn.Module):
    """OCRNet's head (see the module docstring); decodes the concatenated HRNet branches.

    Args:
        in_channels: C_in, the channels of the ``concat_levels`` map.
        num_classes: K.
        channels: width of the pixel and augmented representations (512).
        key_channels: width of the attention's query, key and value (256).
        dropout: Dropout2d probability before the classifier (0.05).
        aux_kernel_size: kernel of the soft-region branch's conv-BN-ReLU (C_in wide): 1 as in the OCR authors'
            HRNet code, 3 as in the pixel-contrast reference code (``reference_options``).

    Shape:
        features: (B, C_in, h, w) -> logits (B, K, h, w), decoder features (B, channels, h, w) (the augmented
        representation), aux logits (B, K, h, w) (the soft object regions).
    """

    multi_level = True
    aux_branch = True
    reference_options = {"aux_kernel_size": 3}

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512, key_channels: int = 256,
                 dropout: float = 0.05, aux_kernel_size: int = 1):
        super().__init__()
        self.channels = channels
        self.aux = nn.Sequential(conv_bn_relu(in_channels, in_channels, kernel_size=aux_kernel_size),
                                 nn.Conv2d(in_channels, num_classes, 1))
        self.pixels = conv_bn_relu(in_channels, channels)
        self.context = ObjectContext(channels, key_channels)
        self.fuse = conv1x1_bn_relu(2 * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        aux_logits = self.aux(features)
        pixels = self.pixels(features)
        context = self.context(pixels, spatial_gather(pixels, aux_logits))
        decoded = self.fuse(torch.cat([context, pixels], dim=1))
        return self.classifier(self.dropout(decoded)), decoded, aux_logits
