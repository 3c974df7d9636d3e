"""BANE, boundary-aware negative sampling (Contextrast, Sung et al., CVPR 2024), vectorised.

For one feature level, BANE picks the mispredicted pixels that lie on the rim of their error region and uses them as
hard negatives. It works per class n over the whole batch (``docs/methods.md#bane``):

1. Error region ``E_n = (labels == n) & (predictions != n)``: pixels of class n predicted as another class. Pixels
   labelled ``ignore_index`` are never in an error region.
2. Rim distance ``D_n``: the exact Euclidean distance of each ``E_n`` pixel to the nearest pixel outside ``E_n``
   (``distance_transform`` of the class-wise mask). The masks are class-wise, not their union: where the error
   regions of two classes touch, each has its own rim there.
3. Selection: the ``ceil(fraction * |E_n|)`` pixels of ``E_n`` with the smallest distance (at least 1, at most
   ``max_per_class``). Ties are broken at random by default (``tie_break="random"``, from ``generator``): on the
   coarse grids of the feature levels most rim pixels are at distance 1, and breaking those ties by position would
   take every hard negative from the first images of the batch and the top rows of each. ``tie_break="index"``
   breaks them by the lower flat pixel index instead (deterministic without a generator; the tests' oracle).

Which anchor a selected pixel is a hard negative for: by default the anchor of the class
it was *wrongly predicted as*. The pixel stays a positive for its own class's anchor; taken literally, the paper's
text would make it both a positive and a negative of the same anchor. ``literal=True`` gives the literal reading
(its ground-truth class) as an ablation.

Conventions worth knowing:

* The image border is not an edge (the ``distance_transform`` convention): an error pixel on the border is at
  distance 1 only if a pixel inside the image next to it is outside the error region.
* Ignored pixels are outside every error region, so an error pixel next to an ignored one is on the rim.
* An error region that fills a whole image (every pixel of the image is class n and mispredicted) has no pixel
  outside it: its distances are ``+inf``. Selection is by rank, so these pixels come after every finite distance of
  the class but are still chosen when the quota reaches them (e.g. ``fraction=1.0``).

Vectorisation. No Python loop over images, classes or pixels: the masks of the C' classes with errors are stacked
into one (C' * B, h, w) batch for ``distance_transform``, and the per-class selection is one group-wise top-k by
sorting the (class, distance, flat index) keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrastseg.samplers.distance import distance_transform
from contrastseg.samplers.hard_anchor import random_permutation

_QUOTA_RELATIVE_TOLERANCE = 1e-12
"""``fraction * count`` is shrunk by this relative amount before the ceiling, so that e.g. 0.1 * 30 (which is
3.0000000000000004 in binary floating point) gives a quota of 3, not 4."""


TIE_BREAKS = ("random", "index")


@dataclass(frozen=True)
class BaneSample:
    """Hard negatives chosen by BANE at one feature level.

    Attributes:
        selected: whether the pixel is a BANE hard negative.
        negative_for: class of the anchor the pixel is a hard negative for, -1 where not selected. By default the
            class the pixel was wrongly predicted as; its ground-truth class with ``literal=True``.
        distance: rim distance of every error pixel to the nearest pixel outside its class's error region (selected
            or not), ``+inf`` in an error region filling a whole image, 0 on pixels that are not errors.

    Shape:
        selected: (B, h, w) bool; negative_for: (B, h, w) int64; distance: (B, h, w) float32.
    """

    selected: torch.Tensor
    negative_for: torch.Tensor
    distance: torch.Tensor

    @property
    def indices(self) -> torch.Tensor:
        """Flat indices of the selected pixels into the ``B * h * w`` pixels (image-major, row-major), ascending.

        Shape:
            returns: (N,) int64, for ``gather_pixels``.
        """
        return torch.nonzero(self.selected.reshape(-1)).squeeze(1)

    @property
    def num_selected(self) -> int:
        return int(self.selected.sum())


def _check_inputs(labels: torch.Tensor, predictions: torch.Tensor, fraction: float, max_per_class: int,
                  tie_break: str) -> None:
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    for name, tensor in (("labels", labels), ("predictions", predictions)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class ids, got dtype {tensor.dtype}")
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, h, w) (use labels[None] for one image), got {tuple(labels.shape)}")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    if predictions.device != labels.device:
        raise ValueError(f"predictions are on {predictions.device}, labels on {labels.device}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1:
        raise ValueError(f"max_per_class must be an int >= 1, got {max_per_class!r}")


def _classwise_rim_distances(error_classes: torch.Tensor, error_pixels: torch.Tensor, class_of_error: torch.Tensor,
                             shape: torch.Size) -> torch.Tensor:
    """Distance of each error pixel to the nearest pixel outside the error region of its own class.

    The class-wise error masks are stacked into one ``(C' * B, h, w)`` batch (class-major) for ``distance_transform``.

    Args:
        error_classes: the classes that have error pixels, ascending (C' of them).
        error_pixels: flat indices of the error pixels into the ``B * h * w`` pixels.
        class_of_error: position in ``error_classes`` of each error pixel's class.
        shape: (B, h, w).

    Shape:
        error_classes: (C',) int64; error_pixels: (N,) int64; class_of_error: (N,) int64.
        returns: (N,) float32, ``+inf`` where the class's error region fills the pixel's whole image.
    """
    num_pixels = shape.numel()
    if error_pixels.numel() == 0:
        return torch.zeros(0, dtype=torch.float32, device=error_pixels.device)
    stacked_masks = torch.zeros(error_classes.numel() * num_pixels, dtype=torch.bool, device=error_pixels.device)
    stacked_position = class_of_error * num_pixels + error_pixels
    stacked_masks[stacked_position] = True
    stacked_distances = distance_transform(stacked_masks.view(-1, shape[-2], shape[-1]))
    return stacked_distances.reshape(-1)[stacked_position]


def _quota(counts: torch.Tensor, fraction: float, max_per_class: int) -> torch.Tensor:
    """Pixels to select per class: ``min(ceil(fraction * count), max_per_class)``, at least 1 for a non-empty class.

    Shape:
        counts: (C',) int64 -> (C',) int64.
    """
    wanted = torch.ceil(counts.double() * fraction * (1.0 - _QUOTA_RELATIVE_TOLERANCE)).long()
    return torch.minimum(wanted.clamp(min=1), counts).clamp(max=max_per_class)


def _closest_per_group(groups: torch.Tensor, distances: torch.Tensor, quota: torch.Tensor,
                       tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """Group-wise top-k: in each group g, the ``quota[g]`` elements with the smallest distance.

    Elements are sorted by (group, distance, tie rank), the tie rank being the position in ``tie_order`` (a
    permutation of the elements; None: the identity, equal distances go to the lower position). ``+inf`` distances
    come last in their group.

    Shape:
        groups: (N,) int64 in [0, G); distances: (N,) float; quota: (G,) int64.
        returns: (N,) bool, True on the chosen elements.
    """
    if tie_order is None:
        tie_order = torch.arange(groups.numel(), device=groups.device)
    by_distance = tie_order[torch.sort(distances[tie_order], stable=True).indices]  # ties keep the tie order
    order = by_distance[torch.sort(groups[by_distance], stable=True).indices]
    sorted_groups = groups[order]
    counts = torch.bincount(groups, minlength=quota.numel())
    rank_in_group = torch.arange(order.numel(), device=groups.device) - (counts.cumsum(0) - counts)[sorted_groups]
    chosen = torch.zeros_like(groups, dtype=torch.bool)
    chosen[order] = rank_in_group < quota[sorted_groups]
    return chosen


@torch.no_grad()
def boundary_aware_negatives(labels: torch.Tensor, predictions: torch.Tensor, fraction: float = 0.2,
                             max_per_class: int = 1024, ignore_index: int = 255, literal: bool = False,
                             tie_break: str = "random", generator: torch.Generator | None = None) -> BaneSample:
    """BANE hard negatives of one feature level: the mispredicted pixels closest to the rim of their error region.

    Per class n over the whole batch: the error region ``E_n = (labels == n) & (predictions != n)`` (ignored pixels
    excluded), the exact Euclidean distance of each of its pixels to the nearest pixel outside ``E_n`` (the image
    border is not an edge), and the ``min(ceil(fraction * |E_n|), max_per_class)`` pixels with the smallest distance,
    ties broken at random (or by the lower flat index ``(b * h + y) * w + x``). An error region filling a whole image
    has ``+inf`` distances: ranked after all finite ones, still selected when the quota reaches them.

    Args:
        labels: ground truth at the level's resolution.
        predictions: the final prediction (argmax), downsampled to the level's resolution by the caller (nearest).
        fraction: share of each class's error pixels selected (``ceil``, so at least 1); 1.0 selects every error
            pixel (up to ``max_per_class``).
        max_per_class: cap on the pixels selected per class, over the whole batch.
        ignore_index: label value never in an error region.
        literal: ablation. False (default): a selected pixel is a hard negative for the anchor of the class it was
            predicted as. True: for the anchor of its own ground-truth class, the paper's literal text.
        tie_break: "random" (default): equal distances are ranked in a uniformly random order; "index": by the lower
            flat index, deterministic.
        generator: source of the random tie order; None uses the global RNG of the labels' device.

    Returns:
        The selection, on the labels' device.

    Raises:
        ValueError: on non-integer or mismatched inputs, ``fraction`` outside (0, 1], ``max_per_class`` < 1 or an
            unknown ``tie_break``.

    Shape:
        labels: (B, h, w) int, ``ignore_index`` = void; predictions: (B, h, w) int.
        returns: ``BaneSample`` with (B, h, w) fields.
    """
    _check_inputs(labels, predictions, fraction, max_per_class, tie_break)
    labels, predictions = labels.long(), predictions.long()
    flat_labels = labels.reshape(-1)
    is_error = (labels != ignore_index) & (predictions != labels)
    error_pixels = torch.nonzero(is_error.reshape(-1)).squeeze(1)  # ascending flat index
    error_classes, class_of_error = torch.unique(flat_labels[error_pixels], sorted=True, return_inverse=True)

    error_distances = _classwise_rim_distances(error_classes, error_pixels, class_of_error, labels.shape)
    counts = torch.bincount(class_of_error, minlength=error_classes.numel())
    tie_order = random_permutation(error_pixels.numel(), labels.device, generator) if tie_break == "random" else None
    chosen = _closest_per_group(class_of_error, error_distances, _quota(counts, fraction, max_per_class), tie_order)

    selected_pixels = error_pixels[chosen]
    selected = torch.zeros_like(flat_labels, dtype=torch.bool)
    selected[selected_pixels] = True
    anchor_class_source = flat_labels if literal else predictions.reshape(-1)
    negative_for = torch.full_like(flat_labels, -1)
    negative_for[selected_pixels] = anchor_class_source[selected_pixels]
    distance = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device).view(-1)
    distance[error_pixels] = error_distances
    return BaneSample(selected.view(labels.shape), negative_for.view(labels.shape), distance.view(labels.shape))


@torch.no_grad()
def negatives_mask(sample: BaneSample, anchor_classes: torch.Tensor) -> torch.Tensor:
    """Per anchor class, the BANE hard negatives assigned to it.

    Args:
        sample: output of ``boundary_aware_negatives``.
        anchor_classes: class of each anchor row of the loss.

    Returns:
        Row c marks the selected pixels whose ``negative_for`` equals ``anchor_classes[c]``, over the ``B * h * w``
        pixels flattened image-major, row-major (``reshape(B, -1)`` then flatten). A class that is not an anchor
        gives an all-False row; unselected pixels are never marked, whatever the anchor class.

    Shape:
        anchor_classes: (C,) int -> (C, B * h * w) bool.
    """
    if anchor_classes.dim() != 1:
        raise ValueError(f"anchor_classes must be 1-D (C,), got shape {tuple(anchor_classes.shape)}")
    negative_for = sample.negative_for.reshape(-1)
    anchor_classes = anchor_classes.to(device=negative_for.device, dtype=torch.int64)
    return (negative_for[None, :] == anchor_classes[:, None]) & sample.selected.reshape(1, -1)
