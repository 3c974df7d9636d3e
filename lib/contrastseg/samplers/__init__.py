"""Samplers that several methods share, separate from the loss math: they return indices or masks, under
``no_grad``.

* ``hard_anchor``: which pixels of an embedding map are anchors (pixel contrast's segmentation-aware hard anchors,
  or uniform ones), and Contextrast's class-balanced pixel sample, on one per-(image, class) sampling;
* ``distance``: exact batched Euclidean distance transform (Contextrast's BANE sampler);
* ``region_matching``: regions of mask-classification models: ground-truth and teacher regions, Hungarian matching
  of predicted regions to them (the supervised set loss and RC²L).

A sampler that only one method uses lives in that method's folder (``contrastseg.methods``).
"""

from contrastseg.samplers.distance import DISTANCE_BUDGET, distance_transform
from contrastseg.samplers.hard_anchor import (AnchorSample, class_balanced_sampling, downsample_labels, gather_pixels,
                                              hard_anchor_sampling, random_anchor_sampling, random_permutation,
                                              sample_within_groups)
from contrastseg.samplers.region_matching import (hungarian_match, label_regions, matching_cost, semantic_targets,
                                                  teacher_regions)

__all__ = [
    "AnchorSample",
    "DISTANCE_BUDGET",
    "class_balanced_sampling",
    "distance_transform",
    "downsample_labels",
    "gather_pixels",
    "hard_anchor_sampling",
    "hungarian_match",
    "label_regions",
    "matching_cost",
    "random_anchor_sampling",
    "random_permutation",
    "sample_within_groups",
    "semantic_targets",
    "teacher_regions",
]
