"""Models: backbones, decode heads and the Segmentor that joins them; flat registries by name.

The papers' three models:

* DeepLabV3 on a dilated ResNet-101 at output stride 8 with an auxiliary FCN head:
  ``build_segmentor("resnet101s", "deeplabv3", K, output_stride=8, aux_head=True)`` (``resnet101s`` is the
  reference's deep-stem ResNet-101; ``resnet101`` the plain one);
* HRNetV2-W48: ``build_segmentor("hrnet_w48", "hrnet", K)``;
* OCRNet on HRNetV2-W48: ``build_segmentor("hrnet_w48", "ocr", K)`` (its soft object regions are the auxiliary
  output, with or without ``aux_head``).

Every backbone has four levels, so every dense head goes with every backbone: the multi-level heads ("hrnet",
"ocr") decode the four levels concatenated at the finest one's resolution (HRNet: 720 channels at stride 4; a
ResNet: 3840 channels at stride 4, valid but costly).
"""

from __future__ import annotations

from torch import nn

from contrastseg.models.backbones import TIMM_BACKBONES, TimmBackbone, TinyBackbone
from contrastseg.models.heads import DeepLabV3Head, FCNHead, HRNetHead, concat_levels
from contrastseg.models.hrnet import HRNET_BACKBONES, HRNetBackbone
from contrastseg.models.mask_classification import MaskClassificationSegmentor
from contrastseg.models.ocr import OCRHead, spatial_gather
from contrastseg.models.projection import ProjectionHead
from contrastseg.models.segmentor import AUX_LEVEL, Segmentor
from contrastseg.registry import lookup

BACKBONES = {"tiny": TinyBackbone, **{name: TimmBackbone for name in TIMM_BACKBONES},
             **{name: HRNetBackbone for name in HRNET_BACKBONES}}
HEADS = {"fcn": FCNHead, "deeplabv3": DeepLabV3Head, "hrnet": HRNetHead, "ocr": OCRHead,
         "mask_classification": MaskClassificationSegmentor}
MASK_CLASSIFICATION_HEADS = ("mask_classification",)  # heads that predict (class, mask) pairs, not class maps
AUX_CHANNELS = 256  # width of the auxiliary FCN head (DeepLabV3's reference code)


def build_backbone(name: str, output_stride: int = 8, pretrained: str = "") -> nn.Module:
    """Build a backbone by name: ``"tiny"``, one of ``TIMM_BACKBONES`` or one of ``hrnet.HRNET_BACKBONES``.

    HRNets ignore ``output_stride`` (their branches are always at strides 4, 8, 16 and 32; see ``HRNetBackbone``).
    """
    backbone_class = lookup(BACKBONES, name, "backbone")
    if name == "tiny":
        if pretrained:
            raise ValueError("the tiny backbone has no pretrained weights; use pretrained=''")
        return TinyBackbone(output_stride=output_stride)
    return backbone_class(name, output_stride=output_stride, pretrained=pretrained)


def model_fields(head: str) -> tuple[str, ...]:
    """The ExperimentConfig fields that shape a model with this head (part of its run key)."""
    common = ("backbone", "head", "output_stride", "pretrained", "aux_weight")
    if head in MASK_CLASSIFICATION_HEADS:
        return (*common, "num_queries", "mask_dim", "decoder_layers")
    if HEADS[head].reference_options:
        return (*common, "reference_heads")
    return common


def build_head(name: str, in_channels: int, num_classes: int, output_stride: int = 8, reference: bool = False):
    """A dense head by name; ``in_channels`` is what it decodes (for the multi-level heads: the sum over levels).

    ``reference`` builds the reference code's form of the head (its class's ``reference_options``)."""
    head_class = lookup(HEADS, name, "head")
    if head_class is DeepLabV3Head:
        return DeepLabV3Head(in_channels, num_classes, output_stride=output_stride)
    return head_class(in_channels, num_classes, **(head_class.reference_options if reference else {}))


def build_segmentor(backbone: str, head: str, num_classes: int, output_stride: int = 8,
                    pretrained: str = "", proj_dim: int = 0, proj_levels: int = 1, num_queries: int = 100,
                    mask_dim: int = 256, decoder_layers: int = 6, aux_head: bool = False,
                    reference_heads: bool = False) -> Segmentor | MaskClassificationSegmentor:
    """Build a segmentor from names; unknown names raise an error listing the valid ones.

    ``proj_dim > 0`` adds projection heads to ``proj_dim`` dimensions (for the contrastive methods): with
    ``proj_levels`` 1 on the head's input (the last level, or the concatenated levels for a multi-level head),
    otherwise on the backbone's last ``proj_levels`` levels. ``aux_head`` adds an auxiliary FCN head
    (``AUX_CHANNELS`` wide) on the backbone's third level, except for a head with its own auxiliary branch (OCR),
    which gives the auxiliary logits anyway. The head ``"mask_classification"`` gives a
    ``MaskClassificationSegmentor`` of ``num_queries`` queries, ``mask_dim`` channels and ``decoder_layers``
    transformer decoder layers instead (no auxiliary head). ``reference_heads`` gives the HRNet and OCR heads the
    pixel-contrast reference code's forms (``HRNetHead`` 3x3 conv + BN + ReLU + Dropout2d(0.1); ``OCRHead``'s
    auxiliary branch a 3x3 conv); the other heads have one form and ignore it.
    """
    if not 1 <= proj_levels <= 4:
        raise ValueError(f"proj_levels must be between 1 and 4, got {proj_levels}")
    head_class = lookup(HEADS, head, "head")
    if aux_head and head in MASK_CLASSIFICATION_HEADS:
        raise ValueError(f"aux_head applies to the dense heads, not to {head!r}")
    body = build_backbone(backbone, output_stride=output_stride, pretrained=pretrained)
    if head in MASK_CLASSIFICATION_HEADS:
        return MaskClassificationSegmentor(body, num_classes, num_queries=num_queries, hidden_dim=mask_dim,
                                           decoder_layers=decoder_layers)
    head_channels = sum(body.channels) if head_class.multi_level else body.channels[-1]
    projected = (head_channels,) if proj_levels == 1 else body.channels[-proj_levels:]
    projections = nn.ModuleList(ProjectionHead(channels, proj_dim) for channels in projected) if proj_dim else None
    decode_head = build_head(head, head_channels, num_classes, output_stride, reference=reference_heads)
    auxiliary = FCNHead(body.channels[AUX_LEVEL], num_classes, channels=AUX_CHANNELS) \
        if aux_head and not head_class.aux_branch else None
    return Segmentor(body, decode_head, projections, aux_head=auxiliary)


__all__ = ["AUX_CHANNELS", "BACKBONES", "HEADS", "MASK_CLASSIFICATION_HEADS", "DeepLabV3Head", "FCNHead",
           "HRNetBackbone", "HRNetHead", "MaskClassificationSegmentor", "OCRHead", "ProjectionHead", "Segmentor",
           "TimmBackbone", "TinyBackbone", "build_backbone", "build_head", "build_segmentor", "concat_levels",
           "model_fields", "spatial_gather"]
