"""Pixel contrast (Wang et al., ICCV 2021): CE + weight x pixel-to-pixel InfoNCE across images, with memory.

Per step: labels are taken at the embedding stride, anchors are sampled (segmentation-aware hard anchor sampling by
default), and each anchor is contrasted with

* ``memory="none"``: the other anchors of the batch (the reference's no-memory variant);
* ``memory="pixel" | "segment" | "both"``: the other anchors of the batch **and** the filled rows of the class-wise
  memory queues (pixel embeddings and/or region means of past batches), optionally narrowed per anchor by
  ``memory_sampling`` ("random", "hardest", "semi_hard"; the paper describes these, the reference code lacks them).

Choices where the paper and the reference are silent or differ, with the alternative as a switch:

* The reference's memory variant contrasts anchors with the memory only; we keep the batch in the contrast set too
  (the batch is the freshest part of the memory). ``reference_quirks=True`` returns to memory-only and also turns on
  the reference's memory defects (pointer step 1, class 0 never written) to measure their cost.
* The memory is written after the loss, from the detached embeddings, every step from step 0, warm-up or not (as in
  the reference). The warm-up is an explicit weight of 0 for the contrast term (``weights``), the same with or
  without DDP (the reference applied the contrast term only in its distributed code path).
* Labels at the embedding stride are sampled by nearest neighbour (the reference's choice); the prediction used for
  hard anchors is the argmax of the head's un-upsampled logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastseg.losses import PixelContrastLoss
from contrastseg.memory import PixelSegmentMemory
from contrastseg.objectives.cross_entropy import CrossEntropyObjective
from contrastseg.samplers import (downsample_labels, gather_pixels, hard_anchor_sampling, random_anchor_sampling,
                                  select_contrast)

class PixelContrastObjective(CrossEntropyObjective):
    """CE (+ aux CE) + ``contrast_weight`` x pixel contrast, the contrast term at weight 0 before ``warmup_steps``.

    Shape:
        outputs["embedding"]: (B, D, h, w) unit-norm; outputs["coarse_logits"]: (B, K, h', w');
        labels: (B, H, W) int64 at the input resolution.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, *, proj_dim: int = 256,
                 contrast_weight: float = 0.1, warmup_steps: int = 0, temperature: float = 0.1,
                 base_temperature: float = 0.07, anchor_sampling: str = "hard", max_samples: int = 1024,
                 max_views: int = 100, memory: str = "none", memory_size: int = 5000, pixels_per_update: int = 10,
                 memory_sampling: str = "all", num_positives: int = 1024, num_negatives: int = 2048,
                 reference_quirks: bool = False, aux_weight: float = 0.0):
        super().__init__(num_classes, ignore_index, aux_weight=aux_weight)
        self.contrast_weight = contrast_weight
        self.warmup_steps = warmup_steps
        self.anchor_sampling = anchor_sampling
        self.max_samples, self.max_views = max_samples, max_views
        self.memory_sampling = memory_sampling
        self.num_positives, self.num_negatives = num_positives, num_negatives
        self.reference_quirks = reference_quirks
        self.loss = PixelContrastLoss(temperature, base_temperature)
        self.memory = None if memory == "none" else PixelSegmentMemory(
            num_classes, proj_dim, memory_size, kinds=memory, pixels_per_update=pixels_per_update,
            reference_quirks=reference_quirks, ignore_index=ignore_index)

    @classmethod
    def projection_levels(cls, cfg) -> int:
        return 1

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "PixelContrastObjective":
        return cls(num_classes, ignore_index, proj_dim=cfg.proj_dim, contrast_weight=cfg.contrast_weight,
                   warmup_steps=cfg.contrast_warmup, temperature=cfg.temperature,
                   base_temperature=cfg.base_temperature, anchor_sampling=cfg.anchor_sampling,
                   max_samples=cfg.max_samples, max_views=cfg.max_views, memory=cfg.memory,
                   memory_size=cfg.memory_size, pixels_per_update=cfg.pixels_per_update,
                   memory_sampling=cfg.memory_sampling, num_positives=cfg.num_positives,
                   num_negatives=cfg.num_negatives, reference_quirks=cfg.reference_quirks,
                   aux_weight=cfg.aux_weight)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        terms = super().forward(outputs, labels, step)
        embedding = outputs["embedding"]
        with torch.no_grad():
            small_labels = downsample_labels(labels, embedding.shape[-2:])
            sample = self.sample_anchors(small_labels, outputs["coarse_logits"])
        anchors = gather_pixels(embedding.float(), sample.indices)
        terms["contrast"] = self.contrast(anchors, sample.labels)
        return terms

    def sample_anchors(self, small_labels: torch.Tensor, coarse_logits: torch.Tensor):
        if self.anchor_sampling == "random":
            return random_anchor_sampling(small_labels, self.max_samples, self.ignore_index)
        predictions = coarse_logits.argmax(1, keepdim=True).float()
        predictions = F.interpolate(predictions, size=small_labels.shape[-2:], mode="nearest")[:, 0].long()
        return hard_anchor_sampling(small_labels, predictions, self.max_samples, self.max_views, self.ignore_index)

    def contrast(self, anchors: torch.Tensor, anchor_labels: torch.Tensor) -> torch.Tensor:
        """InfoNCE of the anchors against the batch and/or the memory. Shape: anchors (N, D), labels (N,)."""
        if self.memory is None:
            return self.loss(anchors, anchor_labels)
        rows, row_labels = self.memory.contents()
        selected = None
        if self.memory_sampling != "all" and len(rows):
            selected = select_contrast(anchors.detach(), anchor_labels, rows, row_labels, self.memory_sampling,
                                       self.num_positives, self.num_negatives)
        if self.reference_quirks:
            return self.loss(anchors, anchor_labels, rows, row_labels, contrast_mask=selected)
        if selected is not None:  # every anchor of the batch, the selected memory rows (the anchor itself excluded)
            selected = torch.cat([selected.new_ones(len(anchors), len(anchors)), selected], dim=1)
        return self.loss(anchors, anchor_labels, memory=rows, memory_labels=row_labels, contrast_mask=selected)

    def weights(self, step: int) -> dict[str, float]:
        contrast = 0.0 if step < self.warmup_steps else self.contrast_weight  # warm-up: the term is logged, not used
        return super().weights(step) | {"contrast": contrast}

    @torch.no_grad()
    def after_step(self, outputs: dict, labels: torch.Tensor) -> None:
        """Write this batch's detached embeddings into the memory queues (every rank's, under DDP)."""
        if self.memory is None:
            return
        keys = outputs["embedding"].detach().float()
        self.memory.update(keys, downsample_labels(labels, keys.shape[-2:]))
