"""Class anchors for Contextrast (Sung et al., CVPR 2024): per-level class means, mixed with the last level's.

Contextrast's pixel-to-anchor loss at level i is an InfoNCE with the mixed anchor of class n as the query, the
level's pixels of class n as positives and pixels of other classes as negatives, averaged over positives and then
over the classes present. That is ``functional.pixel_contrast(anchors, anchor_classes, pixels, pixel_labels,
temperature, base_temperature=temperature, contrast_mask=...)`` with these anchors: the per-positive denominator
(that positive plus the negatives) is the paper's. This module only builds the anchors.

Choices where the paper is silent (all of Contextrast's: ``docs/methods.md#contextrast``):

* anchors are the plain class means over every valid pixel of the batch at that level; they keep their gradient
  (the paper's supplement differentiates the loss with respect to them); ``detach=True`` is the ablation;
* mixing ``w_low * A_i + w_high * A_last`` (default 0.5 / 0.5), then L2 normalisation, so every anchor is a unit
  vector like the pixels it is compared with; the last level's anchors are normalised means;
* a class present at level i but absent from the last level (a thin class can vanish at a coarser stride) keeps its
  level-i mean alone, normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastseg.losses.functional import class_sums_per_image


def class_anchors(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255,
                  detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding of every class present in the batch (not normalised).

    Shape:
        embeddings: (B, D, h, w); labels: (B, h, w) int64 at the same resolution (``ignore_index`` left out).
        returns: anchors (C, D) for the C classes present, in increasing class order; classes (C,) int64.
    """
    sums, counts = class_sums_per_image(embeddings, labels, num_classes, ignore_index)
    sums, counts = sums.sum(0), counts.sum(0)
    classes = counts.nonzero().squeeze(1)
    anchors = sums[classes] / counts[classes, None].to(sums.dtype)
    return (anchors.detach() if detach else anchors), classes


def mix_anchors(level_anchors: torch.Tensor, level_classes: torch.Tensor, last_anchors: torch.Tensor,
                last_classes: torch.Tensor, low_weight: float = 0.5, high_weight: float = 0.5) -> torch.Tensor:
    """Contextrast's anchor update for a lower level: ``normalize(low_weight * A_i + high_weight * A_last)``.

    Classes of level i that the last level lacks keep ``normalize(A_i)``.

    Shape:
        level_anchors: (C_i, D), level_classes: (C_i,); last_anchors: (C_last, D), last_classes: (C_last,).
        returns: (C_i, D) unit vectors, in the order of ``level_classes``.
    """
    matches = level_classes[:, None] == last_classes[None, :]  # (C_i, C_last), at most one True per row
    global_part = matches.to(last_anchors.dtype) @ last_anchors  # the last level's anchor of that class, or zeros
    has_global = matches.any(dim=1, keepdim=True)
    mixed = torch.where(has_global, low_weight * level_anchors + high_weight * global_part, level_anchors)
    return F.normalize(mixed, dim=1)
