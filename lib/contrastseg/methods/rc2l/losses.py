"""RC²L's four losses as ``nn.Module`` shells around the functions of ``contrastseg.losses.region``.

Each module holds its scalar hyperparameters and calls one function; the shapes, the edge cases (an empty region set
gives a zero that carries a gradient) and the choices behind each form (the paper's losses are reconstructed) are
documented there.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastseg.losses.region import (region_feature_contrast, region_mask_contrast, semantic_mask_consistency,
                                       set_class_loss)


class RegionClassConsistencyLoss(nn.Module):
    """RCC: cross-entropy of every student query's class against its matched teacher region's class, unmatched
    queries towards "no object" with weight ``no_object_weight`` (``region.set_class_loss``; also the supervised
    class loss, with ground-truth regions).

    Shape:
        class_logits: (B, N, K + 1); target_classes: (B, N) int64 in [0, K] (K = no object) -> () float32.
    """

    def __init__(self, no_object_weight: float = 0.1):
        super().__init__()
        self.no_object_weight = no_object_weight

    def forward(self, class_logits: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
        return set_class_loss(class_logits, target_classes, self.no_object_weight)


class SemanticMaskConsistencyLoss(nn.Module):
    """SMC: BCE + dice between the student's semantic map and the teacher's class-level masks, over the
    (image, class) pairs the teacher kept (``region.semantic_mask_consistency``).

    Shape:
        scores: (B, K, h, w); teacher_semantic: (B, K, h, w) {0, 1}; present: (B, K) bool; valid: (B, h, w) bool or
        None -> () float32.
    """

    def forward(self, scores: torch.Tensor, teacher_semantic: torch.Tensor, present: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        return semantic_mask_consistency(scores, teacher_semantic, present, valid)


class RegionMaskContrastLoss(nn.Module):
    """RMC: InfoNCE over the dice similarity of each matched student mask with the teacher masks of its image, its
    own region the positive (``region.region_mask_contrast``).

    Shape:
        student_mask_logits: (T, P); teacher_masks: (T, P) {0, 1}; image_index: (T,) int64 -> () float32.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_mask_logits: torch.Tensor, teacher_masks: torch.Tensor,
                image_index: torch.Tensor) -> torch.Tensor:
        return region_mask_contrast(student_mask_logits, teacher_masks, image_index, self.temperature)


class RegionFeatureContrastLoss(nn.Module):
    """RFC: InfoNCE between matched student and teacher region embeddings, every teacher region of the batch a
    negative (same-class ones left out with ``exclude_same_class``) (``region.region_feature_contrast``).

    Shape:
        student_features, teacher_features: (T, D) unit rows; classes: (T,) int64 or None -> () float32.
    """

    def __init__(self, temperature: float = 0.1, exclude_same_class: bool = False):
        super().__init__()
        self.temperature, self.exclude_same_class = temperature, exclude_same_class

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor,
                classes: torch.Tensor | None = None) -> torch.Tensor:
        return region_feature_contrast(student_features, teacher_features, self.temperature, classes,
                                       self.exclude_same_class)
