"""Models: backbones, decode heads and the Segmentor that joins them; flat registries by name."""

from __future__ import annotations

from contrastseg.models.backbones import TIMM_BACKBONES, TimmBackbone, TinyBackbone, build_backbone
from contrastseg.models.heads import DeepLabV3Head, FCNHead
from contrastseg.models.segmentor import Segmentor
from contrastseg.registry import lookup

BACKBONES = {"tiny": TinyBackbone, **{name: TimmBackbone for name in TIMM_BACKBONES}}
HEADS = {"fcn": FCNHead, "deeplabv3": DeepLabV3Head}


def build_head(name: str, in_channels: int, num_classes: int, output_stride: int = 8):
    head_class = lookup(HEADS, name, "head")
    if head_class is DeepLabV3Head:
        return DeepLabV3Head(in_channels, num_classes, output_stride=output_stride)
    return head_class(in_channels, num_classes)


def build_segmentor(backbone: str, head: str, num_classes: int, output_stride: int = 8,
                    pretrained: str = "") -> Segmentor:
    """Build a Segmentor from names; unknown names raise an error listing the valid ones."""
    body = build_backbone(backbone, output_stride=output_stride, pretrained=pretrained)
    return Segmentor(body, build_head(head, body.channels[-1], num_classes, output_stride))


__all__ = ["BACKBONES", "HEADS", "Segmentor", "TinyBackbone", "TimmBackbone", "FCNHead", "DeepLabV3Head",
           "build_backbone", "build_head", "build_segmentor"]
