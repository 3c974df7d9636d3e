"""Evaluation: predictions over a data set, accumulated into mIoU, per-class IoU, pixel accuracy, boundary IoU and F."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from contrastseg.engine.distributed import Distributed
from contrastseg.metrics import SegmentationMetrics, predicted_classes


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA devices that support it; a no-op context elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, amp: bool = True, scales: tuple[float, ...] = (1.0,),
            flip: bool = False, window: tuple[int, int] | None = None) -> torch.Tensor:
    """Class per pixel, from one forward pass or the papers' test-time protocol.

    With the defaults, the argmax of one forward pass. Otherwise the class probabilities (``class_probabilities``:
    the softmax of a dense model's "logits", a mask-classification model's semantic scores as they are) are summed
    over every scale in ``scales`` (the image resized bilinearly by that factor, the probabilities resized back),
    with the horizontally flipped image too when ``flip`` is set, and each pass runs in overlapping windows of
    ``window`` = (height, width) pixels when given (see ``window_probabilities``).

    Shape:
        images: (B, 3, H, W) in [0, 1] -> (B, H, W) int64.
    """
    if scales == (1.0,) and not flip and window is None:
        with autocast_for(images.device, amp):
            return predicted_classes(model(images)["logits"])
    return predicted_classes(multiscale_probabilities(model, images, amp, scales, flip, window))


def multiscale_probabilities(model: nn.Module, images: torch.Tensor, amp: bool, scales: tuple[float, ...],
                            flip: bool, window: tuple[int, int] | None) -> torch.Tensor:
    """Class probabilities summed over scales and flips (not normalised: only their argmax is used).

    Shape:
        images: (B, 3, H, W) -> (B, K, H, W) float32.
    """
    size = images.shape[-2:]
    total = None
    for scale in scales:
        scaled = images if scale == 1 else F.interpolate(
            images, size=[max(1, round(side * scale)) for side in size], mode="bilinear", align_corners=False)
        views = [scaled, scaled.flip(-1)] if flip else [scaled]
        for view_index, view in enumerate(views):
            probabilities = window_probabilities(model, view, amp, window)
            if view_index == 1:
                probabilities = probabilities.flip(-1)
            if probabilities.shape[-2:] != size:
                probabilities = F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
            total = probabilities if total is None else total + probabilities
    return total


def class_probabilities(outputs: dict) -> torch.Tensor:
    """The per-pixel class scores that the test-time protocol sums over views, from a model's outputs.

    A dense model's "logits" go through a softmax. A mask-classification model (its outputs hold "class_logits")
    gives as "logits" its semantic scores, already class probabilities summed over the queries (MaskFormer's
    semantic inference): they are taken as they are.

    Shape:
        outputs["logits"]: (B, K, H, W) -> (B, K, H, W) float32.
    """
    scores = outputs["logits"].float()
    return scores if "class_logits" in outputs else scores.softmax(1)


def window_probabilities(model: nn.Module, images: torch.Tensor, amp: bool,
                         window: tuple[int, int] | None) -> torch.Tensor:
    """Class probabilities (``class_probabilities``) of the whole image, or averaged over overlapping sliding windows.

    Windows of ``window`` pixels (clipped to the image) step by two thirds of their size, the last one flush with
    the far edge, so every pixel is covered; where windows overlap their probabilities are averaged.

    Shape:
        images: (B, 3, H, W) -> (B, K, H, W) float32.
    """
    if window is None:
        with autocast_for(images.device, amp):
            return class_probabilities(model(images))
    height, width = images.shape[-2:]
    window_height, window_width = min(window[0], height), min(window[1], width)
    total = counts = None
    for top in window_starts(height, window_height):
        for left in window_starts(width, window_width):
            crop = images[..., top:top + window_height, left:left + window_width]
            with autocast_for(images.device, amp):
                probabilities = class_probabilities(model(crop))
            if total is None:
                total = images.new_zeros(len(images), probabilities.shape[1], height, width, dtype=torch.float32)
                counts = images.new_zeros(1, 1, height, width, dtype=torch.float32)
            total[..., top:top + window_height, left:left + window_width] += probabilities
            counts[..., top:top + window_height, left:left + window_width] += 1
    return total / counts


def window_starts(length: int, window: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels along ``length`` pixels: stride ceil(2/3 window), last flush."""
    if window >= length:
        return [0]
    stride = -(-2 * window // 3)
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, num_classes: int, *, batch_size: int = 8,
             device: str | torch.device = "cpu", boundary_width: int = 2, ignore_index: int = 255,
             amp: bool = True, progress: bool = True, fscore_widths: tuple[int, ...] = (),
             scales: tuple[float, ...] = (1.0,), flip: bool = False, window: tuple[int, int] | None = None,
             world: Distributed = Distributed()) -> dict:
    """Evaluate ``model`` on every image of ``dataset`` at its own size.

    Single scale without flip by default; ``scales``, ``flip`` and ``window`` turn on the papers' test-time
    protocol (see ``predict``). Images of different sizes (real data sets) are predicted one at a time.
    ``boundary_width`` is the band of boundary IoU and the tolerance of the boundary F-score; ``fscore_widths`` adds
    further tolerances (see ``SegmentationMetrics``). Under data parallelism each process passes its share of the
    images and ``world``; the counts are summed over processes, so every process returns the metrics of the whole.

    Returns:
        ``SegmentationMetrics.compute()``: miou, pixel_accuracy, per_class_iou, boundary_iou, per_class_boundary_iou,
        boundary_f, per_class_boundary_f and boundary_f@{w} for each w in ``fscore_widths``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = SegmentationMetrics(num_classes, ignore_index, boundary_width, fscore_widths)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=list)
    for samples in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        same_size = len({image.shape for image, _ in samples}) == 1
        for group in [samples] if same_size else [[sample] for sample in samples]:
            images = torch.stack([image for image, _ in group]).to(device)
            labels = torch.stack([label for _, label in group]).to(device)
            metrics.update(predict(model, images, amp, scales, flip, window), labels)
    model.train(was_training)
    world.sum_tensors(metrics.counts())
    return metrics.compute()
