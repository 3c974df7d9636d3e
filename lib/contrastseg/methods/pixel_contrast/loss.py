"""``PixelContrastLoss``: the module shell around ``functional.pixel_contrast`` (Wang et al., ICCV 2021)."""

from __future__ import annotations

import torch
from torch import nn

from contrastseg.losses.functional import pixel_contrast


class PixelContrastLoss(nn.Module):
    """Supervised pixel-to-pixel InfoNCE: each positive against itself plus all negatives of its anchor.

    Without a contrast set the anchors are contrasted with each other (in-batch, as in the paper's no-memory variant;
    an anchor is not its own positive). With one (memory rows, or any other embeddings) the anchors are contrasted
    only with it. ``memory`` rows are added to either as constants (no gradient flows into them): in-batch contrast
    plus a memory bank is ``loss(anchors, labels, memory=rows, memory_labels=row_labels)``. See
    ``contrastseg.losses.functional.pixel_contrast`` for the formula, the edge cases and how the anchors x contrast
    similarities are chunked to bound memory.

    Args:
        temperature: tau in ``s = f . g / tau`` (0.1 in the paper's Cityscapes configs, 0.07 with memory).
        base_temperature: the loss is scaled by ``temperature / base_temperature`` (0.07 in the paper).
        chunk_size: anchor rows whose similarities exist at once; None picks it from
            ``functional.SIMILARITY_BUDGET``.

    Shape:
        anchors: (N, D) float, unit-norm rows.
        anchor_labels: (N,) int.
        contrast: (M, D) float, unit-norm rows; None means the anchors themselves.
        contrast_labels: (M,) int; required with ``contrast``, forbidden without.
        memory: (R, D) float, unit-norm rows after the contrast set, without gradient; None: no such rows.
        memory_labels: (R,) int; required with ``memory``.
        contrast_mask: (N, M + R) bool, which contrast rows take part for each anchor (in-batch: M = N); None: all.
        returns: () float32 (float64 for float64 inputs).
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float = 0.07, chunk_size: int | None = None):
        super().__init__()
        if not (temperature > 0 and base_temperature > 0):
            raise ValueError(f"temperatures must be positive, got temperature={temperature}, "
                             f"base_temperature={base_temperature}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of anchor rows, got {chunk_size}")
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.chunk_size = chunk_size

    def forward(self, anchors: torch.Tensor, anchor_labels: torch.Tensor, contrast: torch.Tensor | None = None,
                contrast_labels: torch.Tensor | None = None,
                contrast_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_labels: torch.Tensor | None = None) -> torch.Tensor:
        if contrast is None:
            if contrast_labels is not None:
                raise ValueError("contrast_labels were given without contrast rows")
            contrast, contrast_labels, exclude_self = anchors, anchor_labels, True
        else:
            if contrast_labels is None:
                raise ValueError("contrast rows were given without contrast_labels")
            exclude_self = False
        return pixel_contrast(anchors, anchor_labels, contrast, contrast_labels, self.temperature,
                              self.base_temperature, exclude_self, contrast_mask=contrast_mask, memory=memory,
                              memory_labels=memory_labels, chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
                f"chunk_size={self.chunk_size}")
