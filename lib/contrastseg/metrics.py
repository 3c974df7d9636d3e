"""Segmentation metrics: confusion-matrix mIoU, per-class IoU, pixel accuracy and boundary IoU.

All functions work on the tensors' device. ``SegmentationMetrics`` accumulates over a data set; the free functions
turn its counts into numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """Count (ground truth, prediction) pairs over the pixels whose label is not ``ignore_index``.

    Shape:
        preds: (...) int, predicted class per pixel.
        labels: (...) int, same shape; values in [0, num_classes) or ``ignore_index``.
        returns: (K, K) int64, rows = ground truth, columns = prediction.
    """
    if preds.shape != labels.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} differ in shape")
    valid = labels != ignore_index
    gt, pred = labels[valid].long(), preds[valid].long()
    if gt.numel() and (gt.min() < 0 or gt.max() >= num_classes):
        bad = torch.unique(gt[(gt < 0) | (gt >= num_classes)]).tolist()
        raise ValueError(f"label values {bad} are outside [0, {num_classes}) and are not {ignore_index}")
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class; NaN for a class absent from both prediction and ground truth.

    Shape:
        confusion: (K, K) int, rows = ground truth.
        returns: (K,) float64.
    """
    confusion = confusion.double()
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, math.nan))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes present in prediction or ground truth.

    Args:
        confusion: (K, K) int64, rows = ground truth, columns = prediction. Classes absent from both are left out
            of the mean. NaN if no class is present at all.
    """
    return float(torch.nanmean(per_class_iou(confusion)))


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """Fraction of labelled pixels predicted correctly (confusion: (K, K), rows = ground truth)."""
    total = confusion.sum()
    return float(confusion.diagonal().sum() / total) if total > 0 else math.nan


def inner_boundary(masks: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels of each mask within ``width`` pixels (chessboard distance) of the mask's edge, inside the mask.

    The image border is not an edge: a mask that fills the image has no boundary. This is the band of
    Boundary IoU (Cheng et al., CVPR 2021) with a square structuring element instead of a disk.

    Shape:
        masks: (B, K, H, W) bool -> (B, K, H, W) bool.
    """
    outside = (~masks).float()
    # max-pooling pads with -inf, so beyond the border counts as inside: the border is no edge
    near_outside = F.max_pool2d(outside, kernel_size=2 * width + 1, stride=1, padding=width) > 0
    return masks & near_outside


class SegmentationMetrics:
    """Accumulates a confusion matrix and boundary IoU counts over batches.

    Args:
        num_classes: K.
        ignore_index: label value left out of every metric.
        boundary_width: band width in pixels for boundary IoU.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, boundary_width: int = 2):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_width = boundary_width
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.boundary_intersection = torch.zeros(num_classes, dtype=torch.int64)
        self.boundary_union = torch.zeros(num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch. Shape: preds (B, H, W) int, labels (B, H, W) int."""
        self.confusion += confusion_matrix(preds, labels, self.num_classes, self.ignore_index).cpu()
        classes = torch.arange(self.num_classes, device=labels.device).view(1, -1, 1, 1)
        valid = (labels != self.ignore_index).unsqueeze(1)
        gt_band = inner_boundary(labels.unsqueeze(1) == classes, self.boundary_width) & valid
        pred_band = inner_boundary(preds.unsqueeze(1) == classes, self.boundary_width) & valid
        self.boundary_intersection += (gt_band & pred_band).sum((0, 2, 3)).cpu()
        self.boundary_union += (gt_band | pred_band).sum((0, 2, 3)).cpu()

    def compute(self) -> dict:
        """Return ``{"miou", "pixel_accuracy", "per_class_iou", "boundary_iou", "per_class_boundary_iou"}``.

        Per-class values are lists with None for classes absent from both prediction and ground truth.
        """
        iou = per_class_iou(self.confusion)
        union = self.boundary_union.double()
        boundary = torch.where(union > 0, self.boundary_intersection / union.clamp(min=1),
                               torch.full_like(union, math.nan))
        as_list = lambda values: [None if math.isnan(v) else v for v in values.tolist()]  # noqa: E731
        return {
            "miou": mean_iou(self.confusion),
            "pixel_accuracy": pixel_accuracy(self.confusion),
            "per_class_iou": as_list(iou),
            "boundary_iou": float(torch.nanmean(boundary)),
            "per_class_boundary_iou": as_list(boundary),
        }
