"""Regions and their matching for RC²L (Zhang et al., IJCAI 2022) on a mask-classification segmentor.

RC²L's losses compare the student's N query predictions with a set of target regions, one image at a time; these
functions build the regions and decide which query answers for which region. All run under ``no_grad`` and return
indices or binary masks; the losses live elsewhere.

* ``label_regions``: the ground-truth regions of a labeled image, one binary mask per class present (MaskFormer's
  semantic-segmentation targets), for the supervised loss.
* ``teacher_regions``: the pseudo-regions of an unlabeled image from the teacher's predictions: queries whose top
  real-class probability is at least ``threshold``, with their masks binarised at ``sigmoid > mask_threshold``,
  empty masks dropped. These give the region classes (RCC), region masks (RMC) and region features (RFC).
  ``threshold=0.7`` and ``mask_threshold=0.5`` are design choices (``docs/methods.md#rc2l``), not
  values from the paper.
* ``semantic_targets``: class-level masks, the union of a set of regions' masks per class, for the semantic mask
  consistency (SMC).
* ``matching_cost`` and ``hungarian_match``: the one-to-one assignment of queries to regions (labeled or teacher)
  that makes a "positive pair" well defined. The cost is Mask2Former's (Cheng et al., CVPR 2022): 2 x class + 5 x
  mean binary cross-entropy + 5 x dice (MaskFormer's focal + dice cost, which Mask2Former replaced, is not
  used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def matching_cost(class_logits: torch.Tensor, mask_logits: torch.Tensor, target_classes: torch.Tensor,
                  target_masks: torch.Tensor, valid: torch.Tensor | None = None, class_weight: float = 2.0,
                  bce_weight: float = 5.0, dice_weight: float = 5.0) -> torch.Tensor:
    """Cost of assigning each query to each target region of one image (lower is better).

    With p = softmax(class_logits), x a query's mask logits and t a target mask, over the valid pixels only:

    * class cost: ``-p[target_class]``;
    * mask cost: mean of ``BCE(x, t) = softplus(x) - x * t`` over the pixels, computed for all pairs at once as
      ``(sum softplus(x) - x @ t.T) / P``;
    * dice cost: ``1 - (2 sigmoid(x) @ t.T + 1) / (sum sigmoid(x) + sum t + 1)``.

    With no valid pixel the two mask costs are 0 and only the class cost remains.

    Args:
        class_logits: class logits of the queries, the last column for "no object".
        mask_logits: mask logits of the queries, flattened over the pixels (or sampled points).
        target_classes: class of each target region.
        target_masks: binary mask of each target region, on the same pixels.
        valid: which pixels count; all when None.
        class_weight: weight of the class cost (Mask2Former: 2).
        bce_weight: weight of the mask binary cross-entropy cost (Mask2Former: 5).
        dice_weight: weight of the dice cost (Mask2Former: 5).

    Shape:
        class_logits: (N, K + 1); mask_logits: (N, P); target_classes: (T,) int64; target_masks: (T, P) float in
        {0, 1}; valid: (P,) bool.
        returns: (N, T) float32.
    """
    if class_logits.ndim != 2 or mask_logits.ndim != 2 or class_logits.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"expected class_logits (N, K + 1) and mask_logits (N, P), got {tuple(class_logits.shape)} "
                         f"and {tuple(mask_logits.shape)}")
    if target_masks.ndim != 2 or target_masks.shape != (target_classes.shape[0], mask_logits.shape[1]):
        raise ValueError(f"expected target_classes (T,) and target_masks (T, P={mask_logits.shape[1]}), got "
                         f"{tuple(target_classes.shape)} and {tuple(target_masks.shape)}")
    logits = mask_logits.float()
    targets = target_masks.float()
    if valid is not None:
        if valid.shape != (mask_logits.shape[1],):
            raise ValueError(f"expected valid ({mask_logits.shape[1]},), got {tuple(valid.shape)}")
        logits, targets = logits[:, valid], targets[:, valid]
    num_pixels = max(logits.shape[1], 1)

    class_cost = -class_logits.float().softmax(dim=-1)[:, target_classes]
    bce_cost = (F.softplus(logits).sum(dim=1, keepdim=True) - logits @ targets.T) / num_pixels
    probabilities = logits.sigmoid()
    dice_cost = 1 - (2 * probabilities @ targets.T + 1) / (
        probabilities.sum(dim=1, keepdim=True) + targets.sum(dim=1)[None, :] + 1)
    return class_weight * class_cost + bce_weight * bce_cost + dice_weight * dice_cost


@torch.no_grad()
def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of queries to targets (``scipy.optimize.linear_sum_assignment``, on CPU).

    Every target gets a query when N >= T; otherwise N targets get one.

    Args:
        cost: cost of assigning each query (row) to each target (column), e.g. from ``matching_cost``.

    Returns:
        ``(query_index, target_index)``: matched pairs, sorted by target index, on the cost's device.

    Shape:
        cost: (N, T).
        returns: two (min(N, T),) int64 tensors.
    """
    from scipy.optimize import linear_sum_assignment

    if cost.ndim != 2:
        raise ValueError(f"expected a cost matrix (N, T), got {tuple(cost.shape)}")
    finite = torch.isfinite(cost)
    if not finite.all():
        nan, inf = int(cost.isnan().sum()), int((~finite).sum() - cost.isnan().sum())
        raise ValueError(f"the matching cost has {nan} NaN and {inf} infinite entries; check the logits")
    if cost.numel() == 0:
        empty = torch.empty(0, dtype=torch.int64, device=cost.device)
        return empty, empty.clone()
    rows, columns = linear_sum_assignment(cost.detach().cpu().double().numpy())
    query_index = torch.as_tensor(rows, dtype=torch.int64)
    target_index = torch.as_tensor(columns, dtype=torch.int64)
    order = torch.argsort(target_index)
    return query_index[order].to(cost.device), target_index[order].to(cost.device)


@torch.no_grad()
def label_regions(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth regions of one labeled image: one binary mask per class present, ignored pixels in none.

    Args:
        labels: class of each pixel, or ``ignore_index``.
        num_classes: K; labels outside [0, K) other than ``ignore_index`` raise a ValueError.
        ignore_index: label of pixels without a class.

    Returns:
        ``(classes, masks)``: the classes present, ascending, and their masks.

    Shape:
        labels: (H, W) int64.
        returns: classes (T,) int64; masks (T, H, W) float32 in {0, 1}.
    """
    if labels.ndim != 2:
        raise ValueError(f"expected labels (H, W), got {tuple(labels.shape)}")
    labeled = labels[labels != ignore_index]
    out_of_range = labeled[(labeled < 0) | (labeled >= num_classes)]
    if out_of_range.numel():
        raise ValueError(f"label {int(out_of_range[0])} is outside [0, {num_classes}) and is not "
                         f"ignore_index={ignore_index}")
    classes = torch.unique(labeled).to(torch.int64)  # sorted
    masks = (labels[None] == classes[:, None, None]).to(torch.float32)
    return classes, masks


@torch.no_grad()
def teacher_regions(class_logits: torch.Tensor, mask_logits: torch.Tensor, threshold: float = 0.7,
                    mask_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RC²L's pseudo-regions of one unlabeled image, from the teacher's query predictions.

    A query is kept when its highest real-class probability (softmax over all K + 1 logits, then the maximum over the
    first K) is at least ``threshold`` and its binarised mask ``sigmoid(mask_logits) > mask_threshold`` is not empty.
    A query whose most likely class is "no object" has a real-class probability below 1/2, so it is dropped for any
    ``threshold >= 0.5``.

    Args:
        class_logits: the teacher's class logits, the last column for "no object".
        mask_logits: the teacher's mask logits.
        threshold: minimum class probability of a kept query (a design choice).
        mask_threshold: mask probability above which a pixel is in the region (design choice).

    Returns:
        ``(classes, masks, query_index)``: class, binary mask and teacher query of each region, T possibly 0.

    Shape:
        class_logits: (N, K + 1); mask_logits: (N, h, w).
        returns: classes (T,) int64; masks (T, h, w) float32 in {0, 1}; query_index (T,) int64.
    """
    if class_logits.ndim != 2 or mask_logits.ndim != 3 or class_logits.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"expected class_logits (N, K + 1) and mask_logits (N, h, w), got "
                         f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}")
    scores, classes = class_logits.float().softmax(dim=-1)[:, :-1].max(dim=1)
    masks = mask_logits.float().sigmoid() > mask_threshold
    keep = (scores >= threshold) & masks.flatten(1).any(dim=1)
    query_index = torch.nonzero(keep).squeeze(1)
    return classes[query_index], masks[query_index].to(torch.float32), query_index


@torch.no_grad()
def semantic_targets(classes: torch.Tensor, masks: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-level masks: the union (pixel-wise maximum) of the region masks of each class.

    Args:
        classes: class of each region, in [0, K).
        masks: mask of each region, in [0, 1].
        num_classes: K.

    Returns:
        ``(class_masks, present)``: one mask per class (zeros for classes without a region), and which classes
        have a region.

    Shape:
        classes: (T,) int64; masks: (T, h, w).
        returns: class_masks (K, h, w) float32; present (K,) bool.
    """
    if masks.ndim != 3 or classes.shape != masks.shape[:1]:
        raise ValueError(f"expected classes (T,) and masks (T, h, w), got {tuple(classes.shape)} and "
                         f"{tuple(masks.shape)}")
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"region classes must lie in [0, {num_classes}), got {classes.tolist()}")
    class_masks = masks.new_zeros((num_classes, *masks.shape[1:]), dtype=torch.float32)
    index = classes.view(-1, 1, 1).expand_as(masks)
    class_masks.scatter_reduce_(0, index, masks.float(), reduce="amax", include_self=True)
    present = torch.bincount(classes, minlength=num_classes) > 0
    return class_masks, present
