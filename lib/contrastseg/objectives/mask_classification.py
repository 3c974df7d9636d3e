"""Mask classification's supervised objective: MaskFormer's set loss on the labeled images.

The supervised baseline (method ``"mask_classification"``) and the supervised part of RC²L: per image, the
ground-truth regions (one binary mask per class present) are matched one-to-one to the N queries (Hungarian
matching, ``samplers.region_matching``, which ``Regions.match`` also runs for teacher regions), then

* ``class``: cross-entropy of every query's class, unmatched queries towards "no object" (weight 0.1);
* ``mask_bce``, ``mask_dice``: binary cross-entropy and dice loss of each matched query's mask, at the labels'
  resolution (matched masks upsampled), so thin classes keep their pixels; matching compares masks at the mask
  logits' resolution (stride 4).

Total = 2 x class + 5 x mask_bce + 5 x mask_dice (Mask2Former's weights; they also weigh its matching cost).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastseg.losses.region import mask_losses, set_class_loss
from contrastseg.objectives.cross_entropy import CrossEntropyObjective
from contrastseg.samplers.hard_anchor import downsample_labels
from contrastseg.samplers.region_matching import hungarian_match, label_regions, matching_cost

SET_LOSS_WEIGHTS = {"class": 2.0, "mask_bce": 5.0, "mask_dice": 5.0}
"""Mask2Former's (Cheng et al., CVPR 2022) weights of the supervised set loss; also its matching cost's."""
NO_OBJECT_WEIGHT = 0.1
"""Class-loss weight of queries matched to nothing (MaskFormer)."""


class Regions:
    """Matched regions of a batch: which query of which image answers for which target region.

    Attributes:
        image_index: (R,) int64, the image of each matched region.
        query_index: (R,) int64, the query matched to it.
        classes: (R,) int64, the region's class.
        masks: (R, h, w) float {0, 1}, the region's mask.
        query_targets: (B, N) int64, every query's class target (``num_classes`` = no object when unmatched).
    """

    def __init__(self, image_index, query_index, classes, masks, query_targets):
        self.image_index, self.query_index = image_index, query_index
        self.classes, self.masks, self.query_targets = classes, masks, query_targets

    @classmethod
    def match(cls, class_logits: torch.Tensor, mask_logits: torch.Tensor, region_classes: list[torch.Tensor],
              region_masks: list[torch.Tensor], valid: torch.Tensor | None = None) -> "Regions":
        """Hungarian-match each image's queries to its regions.

        Shape:
            class_logits: (B, N, K + 1); mask_logits: (B, N, h, w); region_classes[b]: (T_b,) int64;
            region_masks[b]: (T_b, h, w) float; valid: (B, h, w) bool or None.
        """
        batch, num_queries, num_outputs = class_logits.shape
        query_targets = torch.full((batch, num_queries), num_outputs - 1, dtype=torch.long,
                                   device=class_logits.device)
        images, queries, classes, masks = [], [], [], []
        for image, (targets, target_masks) in enumerate(zip(region_classes, region_masks)):
            cost = matching_cost(class_logits[image].detach(), mask_logits[image].detach().flatten(1), targets,
                                 target_masks.flatten(1), None if valid is None else valid[image].flatten())
            query_index, target_index = hungarian_match(cost)
            query_targets[image, query_index] = targets[target_index]
            images.append(torch.full_like(query_index, image))
            queries.append(query_index)
            classes.append(targets[target_index])
            masks.append(target_masks[target_index])
        height, width = mask_logits.shape[-2:]
        empty = mask_logits.new_zeros(0, height, width)
        return cls(torch.cat(images), torch.cat(queries), torch.cat(classes),
                   torch.cat(masks) if masks else empty, query_targets)

    def __len__(self) -> int:
        return len(self.query_index)


class MaskClassificationObjective(CrossEntropyObjective):
    """MaskFormer's supervised set loss: Hungarian matching, then class CE + mask BCE + mask dice (named terms).

    Shape:
        outputs: a ``MaskClassificationSegmentor``'s dict ("class_logits" (B, N, K + 1), "mask_logits" (B, N, h, w));
        labels: (B, H, W) int64 in [0, K) or ``ignore_index``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        super().__init__(num_classes, ignore_index)

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "MaskClassificationObjective":
        return cls(num_classes, ignore_index)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int, unlabeled=None) -> dict[str, torch.Tensor]:
        return self.set_loss(outputs, labels)

    def set_loss(self, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The supervised terms: match at the masks' resolution, mask losses at the labels' resolution."""
        class_logits, mask_logits = outputs["class_logits"].float(), outputs["mask_logits"].float()
        coarse_labels = downsample_labels(labels, mask_logits.shape[-2:])
        region_classes, region_masks = [], []
        for image_labels in coarse_labels:
            classes, masks = label_regions(image_labels, self.num_classes, self.ignore_index)
            region_classes.append(classes)
            region_masks.append(masks)
        regions = Regions.match(class_logits, mask_logits, region_classes, region_masks,
                                valid=coarse_labels != self.ignore_index)
        matched_logits = F.interpolate(mask_logits[regions.image_index, regions.query_index][:, None],
                                       size=labels.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        matched_labels = labels[regions.image_index]
        targets = (matched_labels == regions.classes[:, None, None]).float()
        bce, dice = mask_losses(matched_logits.flatten(1), targets.flatten(1),
                                (matched_labels != self.ignore_index).flatten(1))
        return {"class": set_class_loss(class_logits, regions.query_targets, NO_OBJECT_WEIGHT),
                "mask_bce": bce, "mask_dice": dice}

    def weights(self, step: int) -> dict[str, float]:
        return dict(SET_LOSS_WEIGHTS)
