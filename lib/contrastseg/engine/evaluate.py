"""Evaluation: predictions over a data set, accumulated into mIoU, per-class IoU, pixel accuracy, boundary IoU and F."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from contrastseg.metrics import SegmentationMetrics


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA devices that support it; a no-op context elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, amp: bool = True) -> torch.Tensor:
    """Class per pixel. Shape: images (B, 3, H, W) in [0, 1] -> (B, H, W) int64."""
    with autocast_for(images.device, amp):
        return model(images)["logits"].argmax(1)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, num_classes: int, *, batch_size: int = 8,
             device: str | torch.device = "cpu", boundary_width: int = 2, ignore_index: int = 255,
             amp: bool = True, progress: bool = True, fscore_widths: tuple[int, ...] = ()) -> dict:
    """Evaluate ``model`` on every image of ``dataset`` at its own size (single scale, no flip).

    ``boundary_width`` is the band of boundary IoU and the tolerance of the boundary F-score; ``fscore_widths`` adds
    further tolerances (see ``SegmentationMetrics``).

    Returns:
        ``SegmentationMetrics.compute()``: miou, pixel_accuracy, per_class_iou, boundary_iou, per_class_boundary_iou,
        boundary_f, per_class_boundary_f and boundary_f@{w} for each w in ``fscore_widths``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = SegmentationMetrics(num_classes, ignore_index, boundary_width, fscore_widths)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for images, labels in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        images, labels = images.to(device), labels.to(device)
        metrics.update(predict(model, images, amp), labels)
    model.train(was_training)
    return metrics.compute()
