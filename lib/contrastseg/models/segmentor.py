"""Segmentor = backbone + decode head (+ an auxiliary head, + projection heads for the contrastive methods)."""

from __future__ import annotations

import torch
from torch import nn

from contrastseg.models.heads import concat_levels, upsample_to

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUX_LEVEL = 2  # the auxiliary head reads the third level (ResNet stage 3)


def check_images(images: torch.Tensor) -> None:
    """Raise a ValueError unless ``images`` is a (B, 3, H, W) batch (checked before the normalisation, which would
    broadcast a one-channel batch to three channels)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")


class Segmentor(nn.Module):
    """A semantic segmentation network that returns a dict of named outputs.

    Images come in as floats in [0, 1]; the segmentor normalises them with the ImageNet statistics itself, so data
    code and plots never need to undo a normalisation.

    The head decodes the backbone's last level, or, for a multi-level head (``head.multi_level``: HRNet, OCR), the
    concatenation of all four levels at the finest level's resolution (``concat_levels``). An optional auxiliary
    FCN head reads the backbone's third level (``AUX_LEVEL``; stride 8 and 1024 channels on a dilated ResNet-101, as
    in DeepLabV3's reference code); a head with its own auxiliary branch (OCR's soft object regions) supplies the
    auxiliary logits itself.

    Projection heads, when there are any, see L feature maps, one head per map: for L = 1 (pixel contrast) the
    head's input, i.e. the backbone's last level (2048 channels for DeepLabV3 on ResNet-101, where the reference
    attaches its head) or, for a multi-level head, the concatenated levels (720 channels on HRNetV2-W48, before
    OCR for OCRNet, as in the reference); for L > 1 (Contextrast: L = 4) the backbone's last L levels. Projections
    and auxiliary logits are computed only while training, or when ``with_embedding`` / ``with_aux`` is True, so
    inference costs nothing extra (OCR computes its soft regions always: its head needs them).

    Shape:
        images: (B, 3, H, W) float in [0, 1].
        returns:
            "logits": (B, K, H, W), upsampled to the input size;
            "coarse_logits": (B, K, h, w), at the head's resolution (the last level's size, or the finest level's for
                a multi-level head);
            "levels": tuple of the backbone's four maps (B, C_l, h_l, w_l), finest first;
            "decoder": (B, C, h, w), the head's features before its classifier;
            "aux_logits": (B, K, H, W), the auxiliary logits upsampled to the input size, with an auxiliary head or
                branch, while training (or when asked);
            "level_embeddings": tuple of (B, D, h_l, w_l) unit-norm maps of the projected inputs, finest first;
            "embedding": the last of them; both only with projection heads, while training (or when asked).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, projections: nn.ModuleList | None = None,
                 aux_head: nn.Module | None = None):
        super().__init__()
        if aux_head is not None and head.aux_branch:
            raise ValueError(f"{type(head).__name__} has its own auxiliary branch; it takes no aux_head")
        self.backbone = backbone
        self.head = head
        self.projections = projections
        self.aux_head = aux_head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, with_embedding: bool | None = None,
                with_aux: bool | None = None) -> dict:
        check_images(images)
        return self.forward_normalised((images - self.mean) / self.std, with_embedding, with_aux)

    def forward_normalised(self, images: torch.Tensor, with_embedding: bool | None = None,
                           with_aux: bool | None = None) -> dict:
        """``forward`` of images already normalised with ``self.mean`` and ``self.std`` (the deployed form's input,
        ``contrastseg.export``)."""
        check_images(images)
        levels = self.backbone(images)
        features = concat_levels(levels) if self.head.multi_level else levels[-1]
        aux_logits = None
        if self.head.aux_branch:
            coarse_logits, decoded, aux_logits = self.head(features)
        else:
            coarse_logits, decoded = self.head(features)
        outputs = {"logits": upsample_to(coarse_logits, images.shape[-2:]), "coarse_logits": coarse_logits,
                   "levels": levels, "decoder": decoded}
        if with_aux is None:
            with_aux = self.training
        if with_aux and self.aux_head is not None:
            aux_logits, _ = self.aux_head(levels[AUX_LEVEL])
        if with_aux and aux_logits is not None:
            outputs["aux_logits"] = upsample_to(aux_logits, images.shape[-2:])
        if with_embedding is None:
            with_embedding = self.training
        if with_embedding and self.projections is not None:
            projected = (features,) if len(self.projections) == 1 else levels[len(levels) - len(self.projections):]
            outputs["level_embeddings"] = tuple(head(level) for head, level in zip(self.projections, projected))
            outputs["embedding"] = outputs["level_embeddings"][-1]
        return outputs
