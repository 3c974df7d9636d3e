"""Pure functions behind the region-level losses of RC²L (Zhang et al., IJCAI 2022, "Region-level Contrastive and
Consistency Learning for Semi-Supervised Semantic Segmentation") on a MaskFormer-style mask-classification model.

These are reconstructions (``docs/methods.md#rc2l``). Only the paper's abstract, introduction and figure captions
could be read: the paper names four losses (Region Mask Contrast, Region Feature
Contrast, Region Class Consistency, Semantic Mask Consistency), and its figure shows what they compare, but not their
formulas. The set-prediction losses follow MaskFormer (Cheng et al., NeurIPS 2021, "Per-Pixel Classification is Not
All You Need for Semantic Segmentation"): cross-entropy over K classes + "no object" with the no-object class
down-weighted, and binary cross-entropy + dice on the masks of matched queries.

* ``set_class_loss``: MaskFormer's weighted classification loss. It is both the supervised class loss and RCC (the
  student's matched queries against the teacher's region classes, unmatched queries against "no object").
* ``mask_losses``: mean binary cross-entropy and dice loss of matched masks (MaskFormer / Mask2Former).
* ``region_mask_contrast`` (RMC): an InfoNCE between a student mask and the teacher's region masks. **Ours:** the
  similarity is the soft dice coefficient, and the negatives are the other teacher regions of the *same* image only
  (masks of different images do not overlap spatially, so they carry no information).
* ``region_feature_contrast`` (RFC): an InfoNCE between mask-average-pooled region features. **Ours:** the negatives
  are the teacher regions of the *whole batch*, optionally without those of the anchor's class
  (supervised-contrastive style).
* ``semantic_mask_consistency`` (SMC): student semantic scores (MaskFormer's semantic inference,
  ``semantic_scores``) against the teacher's class-level masks. **Ours:** the loss is BCE + dice, and the student's
  scores are clamped to ``[eps, 1 - eps]`` first (a sum over queries, they can leave [0, 1]), the BCE's gradient
  passing through the clamp where it points back into the range (a confidently wrong student still learns).
* ``dice_similarity`` and ``mask_average_pool``: the building blocks (pairwise soft dice by one matmul; region
  features by a weighted mean over the pixels).

Conventions: every loss returns a scalar computed in float32 (float64 when an input is float64, also under autocast);
an empty input (no region, no present class, no valid pixel) gives a zero that is still connected to the
differentiable inputs, so ``backward()`` works and yields zero gradients, never NaN. Nothing is allocated on a fixed
device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "dice_similarity",
    "mask_average_pool",
    "mask_losses",
    "region_feature_contrast",
    "region_mask_contrast",
    "semantic_mask_consistency",
    "semantic_scores",
    "set_class_loss",
]


def dice_similarity(predicted: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice coefficient of every predicted mask with every target mask, by one matmul.

    Entry (r, t) is ``(2 sum_p predicted[r, p] target[t, p] + smooth) / (sum_p predicted[r, p] + sum_p target[t, p]
    + smooth)``: 1 for identical binary masks, ``smooth / (|r| + |t| + smooth)`` for disjoint ones, and 1 for two
    empty masks.

    Args:
        predicted: predicted masks as probabilities in [0, 1] (e.g. sigmoid of mask logits), one per row.
        target: target masks in [0, 1] (binary or soft), one per row.
        smooth: added to numerator and denominator; keeps empty masks finite (use a positive value for them).

    Returns:
        The pairwise dice coefficients.

    Shape:
        predicted: (R, P) float, P pixels.
        target: (T, P) float (bool or integer masks are cast).
        returns: (R, T) float32 (float64 when an input is float64).

    Raises:
        ValueError: if the inputs are not 2-D, their pixel counts differ, or ``smooth`` is negative.
    """
    _check_dim("predicted", predicted, 2, "(R, P)")
    _check_dim("target", target, 2, "(T, P)")
    if predicted.shape[1] != target.shape[1]:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must have the same "
                         f"number of pixels P")
    if smooth < 0:
        raise ValueError(f"smooth must be non-negative, got {smooth}")
    dtype = _compute_dtype(predicted, target)
    with _full_precision(predicted):
        predicted, target = predicted.to(dtype), target.to(dtype)
        overlap = predicted @ target.T
        return (2 * overlap + smooth) / (predicted.sum(1)[:, None] + target.sum(1)[None, :] + smooth)


def mask_losses(mask_logits: torch.Tensor, target_masks: torch.Tensor,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy and dice loss of T predicted masks against their targets (row j against row j).

    ``bce`` is the mean over masks of the mean over valid pixels of ``binary_cross_entropy_with_logits``; ``dice`` is
    the mean over masks of ``1 - dice coefficient`` of ``sigmoid(mask_logits)`` and the target over the valid pixels
    (smooth 1, as in ``dice_similarity``). A mask without valid pixels contributes 0 to both (and still counts in the
    mean over masks). Weights (MaskFormer uses 20 x focal + 1 x dice, Mask2Former 5 x BCE + 5 x dice) are the
    caller's.

    Args:
        mask_logits: raw logits of the predicted masks.
        target_masks: the matched target masks, in {0, 1}.
        valid: optional bool mask of the pixels that count, per mask or shared by all masks.

    Returns:
        ``(bce, dice)``, two scalars; both zero (connected to ``mask_logits``) when T == 0.

    Shape:
        mask_logits: (T, P) float.
        target_masks: (T, P) float.
        valid: (T, P) or (P,) bool.
        returns: two () float32 (float64 when an input is float64).

    Raises:
        ValueError: on inconsistent shapes or a non-bool ``valid``.
    """
    _check_dim("mask_logits", mask_logits, 2, "(T, P)")
    _check_same_shape("target_masks", target_masks, "mask_logits", mask_logits)
    valid = _pixel_mask(valid, mask_logits.shape)
    dtype = _compute_dtype(mask_logits, target_masks)
    if mask_logits.shape[0] == 0:
        return _connected_zero(dtype, mask_logits), _connected_zero(dtype, mask_logits)
    logits, targets = mask_logits.to(dtype), target_masks.to(dtype)
    pixel_bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    probabilities = logits.sigmoid()
    if valid is None:
        num_valid = logits.new_full((logits.shape[0],), float(logits.shape[1]))
    else:
        pixel_bce = torch.where(valid, pixel_bce, 0.0)
        probabilities = torch.where(valid, probabilities, 0.0)
        targets = torch.where(valid, targets, 0.0)
        num_valid = valid.sum(1).to(dtype)
    bce = pixel_bce.sum(1) / num_valid.clamp(min=1)
    dice = 1 - (2 * (probabilities * targets).sum(1) + 1) / (probabilities.sum(1) + targets.sum(1) + 1)
    return bce.mean(), dice.mean()


def set_class_loss(class_logits: torch.Tensor, target_classes: torch.Tensor,
                   no_object_weight: float = 0.1) -> torch.Tensor:
    """MaskFormer's classification loss: cross-entropy over K classes + "no object", the latter down-weighted.

    The class weights are ones with ``weight[K] = no_object_weight``, passed as ``weight=`` to ``F.cross_entropy``:
    the result is ``sum_i w_i ce_i / sum_i w_i`` over all B x N queries, ``w_i = weight[target_i]``. Serves both the
    supervised class loss (targets from the ground-truth regions) and the Region Class Consistency (RCC, targets the
    classes of the teacher's regions for matched queries, K for the others). When the weights sum to zero (no query,
    or every target "no object" with ``no_object_weight=0``) the result is a zero connected to ``class_logits``.

    Args:
        class_logits: class logits of each query; the last index K is "no object".
        target_classes: target class of each query in [0, K]; K for queries matched to nothing.
        no_object_weight: weight of the "no object" class (MaskFormer: 0.1).

    Returns:
        The weighted mean cross-entropy.

    Shape:
        class_logits: (B, N, K + 1) float.
        target_classes: (B, N) int64.
        returns: () float32 (float64 when ``class_logits`` is float64).

    Raises:
        ValueError: on inconsistent shapes, non-integer targets or a negative ``no_object_weight``.
    """
    _check_dim("class_logits", class_logits, 3, "(B, N, K + 1)")
    if class_logits.shape[2] < 2:
        raise ValueError(f"class_logits must be (B, N, K + 1) with K >= 1, got shape {tuple(class_logits.shape)}")
    if target_classes.shape != class_logits.shape[:2]:
        raise ValueError(f"target_classes must be (B, N) = {tuple(class_logits.shape[:2])} to match class_logits "
                         f"{tuple(class_logits.shape)}, got shape {tuple(target_classes.shape)}")
    _check_integer("target_classes", target_classes)
    if no_object_weight < 0:
        raise ValueError(f"no_object_weight must be non-negative, got {no_object_weight}")
    dtype = _compute_dtype(class_logits)
    logits = class_logits.to(dtype).flatten(0, 1)
    if logits.shape[0] == 0:
        return _connected_zero(dtype, class_logits)
    targets = target_classes.flatten().long()
    weight = logits.new_ones(logits.shape[1])
    weight[-1] = no_object_weight
    weighted_ce = F.cross_entropy(logits, targets, weight=weight, reduction="none")  # w_i * ce_i
    # sum w_i ce_i / sum w_i, as reduction="mean" computes it, but 0 rather than 0 / 0 when the weights sum to 0
    return weighted_ce.sum() / weight[targets].sum().clamp(min=torch.finfo(dtype).tiny)


def region_mask_contrast(student_mask_logits: torch.Tensor, teacher_masks: torch.Tensor, image_index: torch.Tensor,
                         temperature: float = 0.1) -> torch.Tensor:
    """Region Mask Contrast (RMC): InfoNCE between student and teacher region masks, dice as the similarity.

    With ``S = dice_similarity(sigmoid(student_mask_logits), teacher_masks) / temperature``, anchor j (the student
    mask matched to teacher region j) has its teacher region j as the positive and the other teacher regions of the
    same image as negatives: ``loss_j = logsumexp_{k: image_k = image_j} S[j, k] - S[j, j]``. The result is the mean
    over j. An anchor alone in its image gives 0 (log 1). Dice similarity and same-image negatives are our
    reconstruction (module docstring). The T x T similarity is computed whole (one matmul) and the cross-image
    entries are masked out: with tens of regions per batch, cheaper than a loop over images.

    Args:
        student_mask_logits: mask logits of the student query matched to each teacher region (row j to region j).
        teacher_masks: the teacher's binarised region masks (no gradient expected, none required).
        image_index: the image of each region.
        temperature: tau_m in ``S = dice / tau_m``.

    Returns:
        The mean InfoNCE loss; a zero connected to the inputs when T == 0.

    Shape:
        student_mask_logits: (T, P) float, P pixels (of a common resolution).
        teacher_masks: (T, P) float.
        image_index: (T,) int64.
        returns: () float32 (float64 when an input is float64).

    Raises:
        ValueError: on inconsistent shapes, a non-integer ``image_index`` or a non-positive temperature.
    """
    _check_dim("student_mask_logits", student_mask_logits, 2, "(T, P)")
    _check_same_shape("teacher_masks", teacher_masks, "student_mask_logits", student_mask_logits)
    _check_index("image_index", image_index, student_mask_logits.shape[0])
    _check_temperature(temperature)
    dtype = _compute_dtype(student_mask_logits, teacher_masks)
    if student_mask_logits.shape[0] == 0:
        return _connected_zero(dtype, student_mask_logits, teacher_masks)
    similarity = dice_similarity(student_mask_logits.to(dtype).sigmoid(), teacher_masks) / temperature
    same_image = image_index[:, None] == image_index[None, :]
    return _info_nce(similarity, same_image)


def region_feature_contrast(student_features: torch.Tensor, teacher_features: torch.Tensor, temperature: float = 0.1,
                            classes: torch.Tensor | None = None, exclude_same_class: bool = False) -> torch.Tensor:
    """Region Feature Contrast (RFC): InfoNCE between student and teacher region features over the whole batch.

    With ``S = student_features @ teacher_features.T / temperature``, anchor j (student region feature matched to
    teacher region j) has teacher row j as the positive and every other teacher row of the batch (all images) as a
    negative: ``loss_j = logsumexp_k S[j, k] - S[j, j]``; the result is the mean over j. With
    ``exclude_same_class``, the rows ``k != j`` with ``classes[k] == classes[j]`` are left out of anchor j's
    denominator (same-class regions are not negatives, as in supervised contrastive learning). Batch-wide negatives
    are our reconstruction (module docstring).

    Args:
        student_features: unit-norm region features of the student (normalise before; not renormalised here).
        teacher_features: unit-norm region features of the teacher, row j matched to student row j.
        temperature: tau_f in ``S = <r_s, r_t> / tau_f``.
        classes: class of each region; required by ``exclude_same_class``.
        exclude_same_class: leave same-class regions out of the negatives.

    Returns:
        The mean InfoNCE loss; a zero connected to the inputs when T == 0.

    Shape:
        student_features: (T, D) float.
        teacher_features: (T, D) float.
        classes: (T,) int64.
        returns: () float32 (float64 when an input is float64).

    Raises:
        ValueError: on inconsistent shapes, a non-positive temperature, or ``exclude_same_class`` without
            ``classes``.
    """
    _check_dim("student_features", student_features, 2, "(T, D)")
    _check_same_shape("teacher_features", teacher_features, "student_features", student_features)
    _check_temperature(temperature)
    if exclude_same_class and classes is None:
        raise ValueError("exclude_same_class=True needs the classes of the regions, got classes=None")
    if classes is not None:
        _check_index("classes", classes, student_features.shape[0])
    dtype = _compute_dtype(student_features, teacher_features)
    if student_features.shape[0] == 0:
        return _connected_zero(dtype, student_features, teacher_features)
    with _full_precision(student_features):
        similarity = student_features.to(dtype) @ teacher_features.to(dtype).T / temperature
    if exclude_same_class:
        itself = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
        allowed = (classes[:, None] != classes[None, :]) | itself
    else:
        allowed = None
    return _info_nce(similarity, allowed)


def mask_average_pool(features: torch.Tensor, masks: torch.Tensor, image_index: torch.Tensor,
                      eps: float = 1e-6) -> torch.Tensor:
    """Mask average pooling (MAP): the mean feature of each region, weighted by its mask.

    Row t is ``sum_x masks[t, x] features[image_index[t], :, x] / (sum_x masks[t, x] + eps)``. The regions are grouped
    by image (one device synchronisation, for the group sizes) and each group is one matmul with its image's
    feature map, so the cost is T x C x h x w multiply-adds, with no (T, C, h, w) copy of the features.

    Args:
        features: feature maps (e.g. the pixel decoder's), at the masks' resolution.
        masks: non-negative pixel weights of each region (soft probabilities or binary masks).
        image_index: the image of each region, in [0, B).
        eps: added to each region's total weight; an empty mask gives a zero feature.

    Returns:
        The region features (not normalised).

    Shape:
        features: (B, C, h, w) float.
        masks: (T, h, w) float.
        image_index: (T,) int64.
        returns: (T, C) float32 (float64 when an input is float64); (0, C), connected to ``features``, when T == 0.

    Raises:
        ValueError: on inconsistent shapes, or ``image_index`` values outside [0, B).
    """
    _check_dim("features", features, 4, "(B, C, h, w)")
    _check_dim("masks", masks, 3, "(T, h, w)")
    if masks.shape[1:] != features.shape[2:]:
        raise ValueError(f"masks {tuple(masks.shape)} must have the spatial size of features "
                         f"{tuple(features.shape)}")
    _check_index("image_index", image_index, masks.shape[0])
    dtype = _compute_dtype(features, masks)
    num_images, channels = features.shape[:2]
    flat_features = features.to(dtype).flatten(2)  # (B, C, hw)
    if masks.shape[0] == 0:
        return flat_features.sum(2)[:0] + masks.to(dtype).sum() * 0.0  # (0, C), connected to the inputs
    flat_masks = masks.to(dtype).flatten(1)  # (T, hw)
    # regions per image, shifted by one so that bin 0 counts the negative indices: one synchronisation in all
    counts = torch.bincount((image_index + 1).clamp(min=0), minlength=num_images + 1).tolist()
    if counts[0] or len(counts) > num_images + 1:
        raise ValueError(f"image_index must lie in [0, B) = [0, {num_images}) for features "
                         f"{tuple(features.shape)}, got values from {int(image_index.min())} to "
                         f"{int(image_index.max())}")
    group_sizes = counts[1:]
    order = torch.argsort(image_index, stable=True)
    with _full_precision(features):
        groups = flat_masks[order].split(group_sizes)
        weighted_sums = torch.cat([group @ flat_features[b].T for b, group in enumerate(groups)])  # (T, C), sorted
    pooled = torch.empty_like(weighted_sums).index_copy(0, order, weighted_sums)
    return pooled / (flat_masks.sum(1, keepdim=True) + eps)


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """MaskFormer's semantic inference: per-class scores ``sum_q softmax(class_logits_q)[c] * sigmoid(mask_q)``.

    The "no object" probability (last index) is dropped. A score lies in [0, N] in principle (in practice mostly in
    [0, 1]): it is a sum over the N queries.

    Args:
        class_logits: class logits of each query; the last index K is "no object".
        mask_logits: mask logits of each query.

    Returns:
        The semantic score map of every real class.

    Shape:
        class_logits: (B, N, K + 1) float.
        mask_logits: (B, N, h, w) float.
        returns: (B, K, h, w) float32 (float64 when an input is float64).

    Raises:
        ValueError: on inconsistent shapes.
    """
    _check_dim("class_logits", class_logits, 3, "(B, N, K + 1)")
    _check_dim("mask_logits", mask_logits, 4, "(B, N, h, w)")
    if class_logits.shape[2] < 2:
        raise ValueError(f"class_logits must be (B, N, K + 1) with K >= 1, got shape {tuple(class_logits.shape)}")
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(f"class_logits {tuple(class_logits.shape)} and mask_logits {tuple(mask_logits.shape)} must "
                         f"have the same (B, N)")
    dtype = _compute_dtype(class_logits, mask_logits)
    with _full_precision(class_logits):
        class_probabilities = class_logits.to(dtype).softmax(-1)[..., :-1]
        return torch.einsum("bnk,bnhw->bkhw", class_probabilities, mask_logits.to(dtype).sigmoid())


def semantic_mask_consistency(scores: torch.Tensor, teacher_semantic: torch.Tensor, present: torch.Tensor,
                              valid: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Semantic Mask Consistency (SMC): the student's semantic scores against the teacher's class-level masks.

    For each present (image b, class c), with ``s = clamp(scores[b, c], eps, 1 - eps)`` and ``t =
    teacher_semantic[b, c]``, over the valid pixels of image b: the mean of ``BCE(s, t) = -(t log s + (1 - t)
    log(1 - s))`` plus ``1 - dice coefficient(s, t)`` (smooth 1, as in ``dice_similarity``). The result is the mean
    over present pairs. A pair without valid pixels contributes 0 (and still counts); none present gives a zero
    connected to ``scores``.

    The clamp is ours: the student's score is a sum over queries (``semantic_scores``) and can leave [0, 1], where
    BCE is undefined. The clamped score is used in the dice term too, so that the dice coefficient stays <= 1 (on
    the raw score it would keep rewarding scores above 1 where t = 1). A plain clamp would leave no gradient where
    the student is confidently wrong (a score near 0 where t = 1, or near or above 1 where t = 0), exactly where it
    must learn; so the BCE term passes its gradient through the clamp (straight-through: the value is the clamped
    one, the gradient that of BCE at the clamp bound, ``-t / eps + (1 - t) / (1 - eps)`` below the range) wherever
    that gradient points back into ``[eps, 1 - eps]``: below the range where ``t > eps``, above it where
    ``t < 1 - eps``. Elsewhere outside the range (a score above 1 where t = 1, below eps where t = 0: nothing to
    correct) and in the dice term, the raw score gets no gradient. BCE + dice is our reconstruction (module
    docstring).

    Args:
        scores: the student's semantic scores, from ``semantic_scores``.
        teacher_semantic: the teacher's class-level masks (union of its kept region masks per class), in {0, 1}.
        present: the (image, class) pairs the teacher kept; only these take part.
        valid: optional bool mask of the pixels that count in each image.
        eps: clamp margin, in (0, 0.5).

    Returns:
        The mean over present pairs of BCE + dice loss.

    Shape:
        scores: (B, K, h, w) float.
        teacher_semantic: (B, K, h, w) float.
        present: (B, K) bool.
        valid: (B, h, w) bool.
        returns: () float32 (float64 when an input is float64).

    Raises:
        ValueError: on inconsistent shapes, non-bool ``present`` / ``valid``, or ``eps`` outside (0, 0.5).
    """
    _check_dim("scores", scores, 4, "(B, K, h, w)")
    _check_same_shape("teacher_semantic", teacher_semantic, "scores", scores)
    if present.shape != scores.shape[:2] or present.dtype != torch.bool:
        raise ValueError(f"present must be (B, K) = {tuple(scores.shape[:2])} bool to match scores "
                         f"{tuple(scores.shape)}, got shape {tuple(present.shape)} {present.dtype}")
    if valid is not None and (valid.shape != scores.shape[:1] + scores.shape[2:] or valid.dtype != torch.bool):
        raise ValueError(f"valid must be (B, h, w) = {tuple(scores.shape[:1] + scores.shape[2:])} bool to match "
                         f"scores {tuple(scores.shape)}, got shape {tuple(valid.shape)} {valid.dtype}")
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    dtype = _compute_dtype(scores, teacher_semantic)
    raw = scores.to(dtype)
    student = raw.clamp(eps, 1 - eps)
    # 1 - clamp(s, eps, 1 - eps), clamped on this side: 1 - eps is not exact in float32, eps nearly is
    student_complement = (1 - raw).clamp(eps, 1 - eps)
    target = teacher_semantic.to(dtype)
    # straight-through where the BCE gradient at the clamp bound, (s - t) / (s (1 - s)), points back into the range:
    # the value stays the clamped one (raw - raw.detach() is exactly 0), the gradient is the BCE's at the bound
    inward = ((raw < eps) & (target > eps)) | ((raw > 1 - eps) & (target < 1 - eps))
    passed = raw - raw.detach()
    bce_student = torch.where(inward, student + passed, student)
    bce_complement = torch.where(inward, student_complement - passed, student_complement)
    pixel_bce = -(target * bce_student.log() + (1 - target) * bce_complement.log())
    if valid is None:
        num_valid = pixel_bce.new_full((scores.shape[0], 1), float(scores.shape[2] * scores.shape[3]))
    else:
        pixel_valid = valid[:, None]  # (B, 1, h, w)
        pixel_bce = torch.where(pixel_valid, pixel_bce, 0.0)
        student = torch.where(pixel_valid, student, 0.0)
        target = torch.where(pixel_valid, target, 0.0)
        num_valid = valid.sum((1, 2)).to(dtype)[:, None]  # (B, 1)
    bce = pixel_bce.sum((2, 3)) / num_valid.clamp(min=1)
    dice = 1 - (2 * (student * target).sum((2, 3)) + 1) / (student.sum((2, 3)) + target.sum((2, 3)) + 1)
    per_pair = torch.where(present, bce + dice, 0.0)  # (B, K)
    return per_pair.sum() / present.sum().clamp(min=1).to(dtype)


def _info_nce(similarity: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """``mean_j (logsumexp_{k allowed for j} S[j, k] - S[j, j])``; the diagonal must be allowed (it keeps every row's
    log-sum-exp finite, and gives exactly 0 to a row with nothing else allowed).

    Shape: similarity (T, T) float, T >= 1; allowed (T, T) bool or None (all allowed); returns ().
    """
    if allowed is not None:
        similarity_in = similarity.masked_fill(~allowed, float("-inf"))
    else:
        similarity_in = similarity
    return (torch.logsumexp(similarity_in, dim=1) - similarity.diagonal()).mean()


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The floating dtype the losses compute in: the inputs' promoted dtype, at least float32."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _full_precision(like: torch.Tensor):
    """A context that turns autocast off on ``like``'s device, so that matmuls stay in the computed dtype."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def _connected_zero(dtype: torch.dtype, *inputs: torch.Tensor) -> torch.Tensor:
    """A zero scalar that carries a (zero) gradient to every floating input."""
    zero = torch.zeros((), dtype=dtype, device=inputs[0].device)
    for tensor in inputs:
        if tensor.is_floating_point():
            zero = zero + tensor.to(dtype).sum() * 0.0
    return zero


def _pixel_mask(valid: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """``valid`` as a (T, P) bool mask, or None; a (P,) mask is broadcast over the T rows."""
    if valid is None:
        return None
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be bool, got {valid.dtype}")
    if valid.shape == shape[1:]:
        return valid[None].expand(shape)
    if valid.shape != shape:
        raise ValueError(f"valid must be (T, P) = {tuple(shape)} or (P,) = {tuple(shape[1:])}, got shape "
                         f"{tuple(valid.shape)}")
    return valid


def _check_dim(name: str, tensor: torch.Tensor, dim: int, layout: str) -> None:
    if tensor.dim() != dim:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(tensor.shape)}")


def _check_same_shape(name: str, tensor: torch.Tensor, reference_name: str, reference: torch.Tensor) -> None:
    if tensor.shape != reference.shape:
        raise ValueError(f"{name} must have the shape of {reference_name} {tuple(reference.shape)}, got shape "
                         f"{tuple(tensor.shape)}")


def _check_integer(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (int64), got {tensor.dtype}")


def _check_index(name: str, index: torch.Tensor, num_regions: int) -> None:
    if index.shape != (num_regions,):
        raise ValueError(f"{name} must be (T,) = ({num_regions},), one entry per region, got shape "
                         f"{tuple(index.shape)}")
    _check_integer(name, index)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
