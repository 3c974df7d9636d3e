"""Models: backbones, decode heads and the Segmentor that joins them; flat registries by name."""

from __future__ import annotations

from torch import nn

from contrastseg.models.backbones import TIMM_BACKBONES, TimmBackbone, TinyBackbone, build_backbone
from contrastseg.models.heads import DeepLabV3Head, FCNHead
from contrastseg.models.mask_classification import MaskClassificationSegmentor
from contrastseg.models.projection import ProjectionHead
from contrastseg.models.segmentor import Segmentor
from contrastseg.registry import lookup

BACKBONES = {"tiny": TinyBackbone, **{name: TimmBackbone for name in TIMM_BACKBONES}}
HEADS = {"fcn": FCNHead, "deeplabv3": DeepLabV3Head, "mask_classification": MaskClassificationSegmentor}
MASK_CLASSIFICATION_HEADS = ("mask_classification",)  # heads that predict (class, mask) pairs, not class maps


def build_head(name: str, in_channels: int, num_classes: int, output_stride: int = 8):
    head_class = lookup(HEADS, name, "head")
    if head_class is DeepLabV3Head:
        return DeepLabV3Head(in_channels, num_classes, output_stride=output_stride)
    return head_class(in_channels, num_classes)


def build_segmentor(backbone: str, head: str, num_classes: int, output_stride: int = 8,
                    pretrained: str = "", proj_dim: int = 0, proj_levels: int = 1, num_queries: int = 100,
                    mask_dim: int = 256, decoder_layers: int = 6) -> Segmentor | MaskClassificationSegmentor:
    """Build a segmentor from names; unknown names raise an error listing the valid ones.

    ``proj_dim > 0`` adds projection heads to ``proj_dim`` dimensions on the backbone's last ``proj_levels`` levels
    (for the contrastive methods). The head ``"mask_classification"`` gives a ``MaskClassificationSegmentor`` of
    ``num_queries`` queries, ``mask_dim`` channels and ``decoder_layers`` transformer decoder layers instead.
    """
    if not 1 <= proj_levels <= 4:
        raise ValueError(f"proj_levels must be between 1 and 4, got {proj_levels}")
    lookup(HEADS, head, "head")
    body = build_backbone(backbone, output_stride=output_stride, pretrained=pretrained)
    if head in MASK_CLASSIFICATION_HEADS:
        return MaskClassificationSegmentor(body, num_classes, num_queries=num_queries, hidden_dim=mask_dim,
                                           decoder_layers=decoder_layers)
    projections = nn.ModuleList(ProjectionHead(channels, proj_dim) for channels in body.channels[-proj_levels:]) \
        if proj_dim else None
    return Segmentor(body, build_head(head, body.channels[-1], num_classes, output_stride), projections)


__all__ = ["BACKBONES", "HEADS", "MASK_CLASSIFICATION_HEADS", "MaskClassificationSegmentor", "Segmentor", "ProjectionHead", "TinyBackbone", "TimmBackbone", "FCNHead", "DeepLabV3Head",
           "build_backbone", "build_head", "build_segmentor"]
