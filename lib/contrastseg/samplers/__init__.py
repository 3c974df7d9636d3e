"""Samplers, separate from the loss math: they return indices or masks, under ``no_grad``.

* ``hard_anchor``: which pixels of an embedding map are anchors (segmentation-aware hard anchors, or uniform), and
  Contextrast's class-balanced pixel sample.
* ``memory_selection``: which memory rows each anchor is contrasted with (all, random, hardest, semi-hard).
* ``distance``: exact batched Euclidean distance transform (BANE's boundary distances, Contextrast).
* ``bane``: boundary-aware negatives (Contextrast): mispredicted pixels nearest the rims of their error regions.
* ``region_matching``: regions of mask-classification models (RC²L): ground-truth and teacher regions, Hungarian
  matching of predicted regions to them.
"""

from contrastseg.samplers.bane import BaneSample, boundary_aware_negatives, negatives_mask
from contrastseg.samplers.distance import DISTANCE_BUDGET, distance_transform
from contrastseg.samplers.hard_anchor import (AnchorSample, class_balanced_sampling, downsample_labels, gather_pixels,
                                              hard_anchor_sampling, random_anchor_sampling, random_permutation,
                                              sample_within_groups)
from contrastseg.samplers.memory_selection import CONTRAST_MODES, select_contrast
from contrastseg.samplers.region_matching import (hungarian_match, label_regions, matching_cost, semantic_targets,
                                                  teacher_regions)

__all__ = [
    "AnchorSample",
    "BaneSample",
    "CONTRAST_MODES",
    "DISTANCE_BUDGET",
    "boundary_aware_negatives",
    "class_balanced_sampling",
    "distance_transform",
    "downsample_labels",
    "gather_pixels",
    "hard_anchor_sampling",
    "hungarian_match",
    "label_regions",
    "matching_cost",
    "negatives_mask",
    "random_anchor_sampling",
    "random_permutation",
    "sample_within_groups",
    "select_contrast",
    "semantic_targets",
    "teacher_regions",
]
