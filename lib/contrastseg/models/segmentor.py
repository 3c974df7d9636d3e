"""Segmentor = backbone + decode head (+ projection heads for the contrastive methods)."""

from __future__ import annotations

import torch
from torch import nn

from contrastseg.models.heads import upsample_to

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmentor(nn.Module):
    """A semantic segmentation network that returns a dict of named outputs.

    Images come in as floats in [0, 1]; the segmentor normalises them with the ImageNet statistics itself, so data
    code and plots never need to undo a normalisation. Projection heads, when there are any, see the backbone's last
    L levels, one head per level: L = 1 for pixel contrast (the last level, where the reference attaches its head for
    DeepLabV3), L = 4 for Contextrast. They run only while training, or when ``with_embedding=True`` is passed (for
    t-SNE plots of a trained model), so inference costs nothing extra.

    Shape:
        images: (B, 3, H, W) float in [0, 1].
        returns:
            "logits": (B, K, H, W), upsampled to the input size;
            "coarse_logits": (B, K, h, w), at the head's resolution (h, w = the last level's size);
            "levels": tuple of the backbone's four maps (B, C_l, h_l, w_l), finest first;
            "decoder": (B, C, h, w), the head's features before its classifier;
            "level_embeddings": tuple of (B, D, h_l, w_l) unit-norm maps of the projected levels, finest first;
            "embedding": the last of them; both only with projection heads, while training (or when asked).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, projections: nn.ModuleList | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.projections = projections
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, with_embedding: bool | None = None) -> dict:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        levels = self.backbone((images - self.mean) / self.std)
        coarse_logits, decoded = self.head(levels[-1])
        outputs = {"logits": upsample_to(coarse_logits, images.shape[-2:]), "coarse_logits": coarse_logits,
                   "levels": levels, "decoder": decoded}
        if with_embedding is None:
            with_embedding = self.training
        if with_embedding and self.projections is not None:
            projected = levels[len(levels) - len(self.projections):]
            outputs["level_embeddings"] = tuple(head(level) for head, level in zip(self.projections, projected))
            outputs["embedding"] = outputs["level_embeddings"][-1]
        return outputs
