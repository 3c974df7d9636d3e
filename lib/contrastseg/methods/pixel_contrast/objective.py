"""Pixel contrast (Wang et al., ICCV 2021): CE + weight x pixel-to-pixel InfoNCE across images, with memory.

Per step: labels are taken at the embedding stride, anchors are sampled (segmentation-aware hard anchor sampling by
default), and each anchor is contrasted with

* ``memory="none"``: the other anchors of the batch (the reference's no-memory variant);
* ``memory="pixel" | "segment" | "both"``: the other anchors of the batch **and** the filled rows of the class-wise
  memory queues (pixel embeddings and/or region means of past batches), optionally narrowed per anchor by
  ``memory_sampling`` ("random", "hardest", "semi_hard"; the paper describes these, the reference code lacks them;
  semi-hard draws at random among the hardest ``semi_hard_pool`` share of each set, ``memory_selection``).

Choices where the paper and the reference are silent or differ, with the alternative as a switch:

* The reference's memory variant contrasts anchors with the memory only; we keep the batch in the contrast set too
  (the batch is the freshest part of the memory). ``reference_quirks=True`` returns to memory-only and also turns on
  the reference's memory defects, to measure their cost (listed in ``PixelContrastObjective``).
* The memory is written after the loss, from the detached embeddings, every step from step 0, warm-up or not (as in
  the reference). The warm-up is an explicit weight of 0 for the contrast term (``weights``), the same with or
  without DDP (the reference applied the contrast term only in its distributed code path).
* Labels at the embedding stride are sampled by nearest neighbour (the reference's choice); the prediction used for
  hard anchors is the argmax of the head's un-upsampled logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastseg.methods.pixel_contrast.loss import PixelContrastLoss
from contrastseg.methods.pixel_contrast.memory import PixelSegmentMemory
from contrastseg.methods.pixel_contrast.memory_selection import SEMI_HARD_POOL, select_contrast
from contrastseg.metrics import predicted_classes
from contrastseg.objectives.cross_entropy import CrossEntropyObjective
from contrastseg.samplers.hard_anchor import (downsample_labels, gather_pixels, hard_anchor_sampling,
                                              random_anchor_sampling)

class PixelContrastObjective(CrossEntropyObjective):
    """CE (+ aux CE) + ``contrast_weight`` x pixel contrast, the contrast term at weight 0 before ``warmup_steps``.

    ``reference_quirks=True`` (with a memory; without one it changes nothing) reproduces exactly these defects of the
    reference code (``memory`` in this folder for the details): the anchors contrast with the memory rows only, without
    the batch; the pixel queue's pointer advances by 1 per write of up to ``pixels_per_update`` rows, and a write
    that reaches the end goes to the last slots and resets the pointer to 0; class 0 is never written, yet
    ``memory_size`` zero rows labelled 0 per queue stay in the contrast set (positives of class-0 anchors, negatives
    of the others); a pixel write takes the features at K random raster positions among the image's first n (n the
    class's pixel count), whatever their class, under the class's label. ``memory_sampling`` then selects among
    those rows, zero rows included.

    Diagnostics (``diagnostics()``, of the last forward, this process's batch):

    * ``anchors``: anchors drawn (0 when no (image, class) pair has more than ``max_views`` pixels at the embedding
      stride: the contrast term is then 0);
    * ``anchor_pairs``: (image, class) pairs that gave anchors;
    * ``hard_anchor_share``: share of the anchors whose coarse prediction is wrong (hard-anchor sampling only; 0
      without anchors);
    * ``memory_fill_pixel``, ``memory_fill_segment``: filled rows / capacity of each queue the objective holds, as the
      contrast saw it (before this step's write).

    Shape:
        outputs["embedding"]: (B, D, h, w) unit-norm; outputs["coarse_logits"]: (B, K, h', w');
        labels: (B, H, W) int64 at the input resolution.
    """

    method_terms = ("contrast",)
    def __init__(self, num_classes: int, ignore_index: int = 255, *, proj_dim: int = 256,
                 contrast_weight: float = 0.1, warmup_steps: int = 0, temperature: float = 0.1,
                 base_temperature: float = 0.07, anchor_sampling: str = "hard", max_samples: int = 1024,
                 max_views: int = 100, memory: str = "none", memory_size: int = 5000, pixels_per_update: int = 10,
                 memory_sampling: str = "all", num_positives: int = 1024, num_negatives: int = 2048,
                 semi_hard_pool: float = SEMI_HARD_POOL, reference_quirks: bool = False, aux_weight: float = 0.0):
        super().__init__(num_classes, ignore_index, aux_weight=aux_weight)
        self.contrast_weight = contrast_weight
        self.warmup_steps = warmup_steps
        self.anchor_sampling = anchor_sampling
        self.max_samples, self.max_views = max_samples, max_views
        self.memory_sampling = memory_sampling
        self.num_positives, self.num_negatives = num_positives, num_negatives
        self.semi_hard_pool = semi_hard_pool
        self.reference_quirks = reference_quirks
        self.loss = PixelContrastLoss(temperature, base_temperature)
        self.memory = None if memory == "none" else PixelSegmentMemory(
            num_classes, proj_dim, memory_size, kinds=memory, pixels_per_update=pixels_per_update,
            reference_quirks=reference_quirks, ignore_index=ignore_index)

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "PixelContrastObjective":
        return cls(num_classes, ignore_index, proj_dim=cfg.proj_dim, contrast_weight=cfg.contrast_weight,
                   warmup_steps=cfg.contrast_warmup, temperature=cfg.temperature,
                   base_temperature=cfg.base_temperature, anchor_sampling=cfg.anchor_sampling,
                   max_samples=cfg.max_samples, max_views=cfg.max_views, memory=cfg.memory,
                   memory_size=cfg.memory_size, pixels_per_update=cfg.pixels_per_update,
                   memory_sampling=cfg.memory_sampling, num_positives=cfg.num_positives,
                   num_negatives=cfg.num_negatives, semi_hard_pool=cfg.semi_hard_pool,
                   reference_quirks=cfg.reference_quirks,
                   aux_weight=cfg.aux_weight)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int, unlabeled=None) -> dict[str, torch.Tensor]:
        terms = super().forward(outputs, labels, step)
        embedding = outputs["embedding"]
        with torch.no_grad():
            small_labels = downsample_labels(labels, embedding.shape[-2:])
            sample = self.sample_anchors(small_labels, outputs["coarse_logits"])
            self.last_counts = self.anchor_counts(sample) | self.memory_fill()
        anchors = gather_pixels(embedding.float(), sample.indices)
        terms["contrast"] = self.contrast(anchors, sample.labels)
        return terms

    def sample_anchors(self, small_labels: torch.Tensor, coarse_logits: torch.Tensor):
        if self.anchor_sampling == "random":
            return random_anchor_sampling(small_labels, self.max_samples, self.ignore_index)
        predictions = predicted_classes(coarse_logits, keepdim=True).float()
        predictions = F.interpolate(predictions, size=small_labels.shape[-2:], mode="nearest")[:, 0].long()
        return hard_anchor_sampling(small_labels, predictions, self.max_samples, self.max_views, self.ignore_index)

    def anchor_counts(self, sample) -> dict[str, torch.Tensor | float]:
        """``anchors``, ``anchor_pairs`` and (hard-anchor sampling) ``hard_anchor_share`` of an ``AnchorSample``."""
        counts = {"anchors": sample.num_anchors, "anchor_pairs": sample.num_pairs}
        if self.anchor_sampling != "random":  # random sampling does not look at the predictions
            counts["hard_anchor_share"] = sample.is_hard.float().mean() if sample.num_anchors else 0.0
        return counts

    def memory_fill(self) -> dict[str, torch.Tensor]:
        """Per queue, ``memory_fill_<kind>``: filled rows / (classes x slots per class); empty without memory."""
        if self.memory is None:
            return {}
        return {f"memory_fill_{kind}": memory.filled.sum() / (memory.num_classes * memory.size)
                for kind, memory in self.memory.memories.items()}

    @classmethod
    def describe_activity(cls, means: dict[str, float]) -> list[str]:
        phrases = [f"{means['anchors']:.0f} anchors/step"] if "anchors" in means else []
        if "hard_anchor_share" in means:
            phrases.append(f"{100 * means['hard_anchor_share']:.0f} % hard")
        phrases += [f"{kind} memory {100 * means[f'memory_fill_{kind}']:.0f} % full" for kind in ("pixel", "segment")
                    if f"memory_fill_{kind}" in means]
        return phrases

    def contrast(self, anchors: torch.Tensor, anchor_labels: torch.Tensor) -> torch.Tensor:
        """InfoNCE of the anchors against the batch and/or the memory. Shape: anchors (N, D), labels (N,)."""
        if self.memory is None:
            return self.loss(anchors, anchor_labels)
        rows, row_labels = self.memory.contents()
        selected = self.select_memory_rows(anchors, anchor_labels, rows, row_labels)
        if self.reference_quirks:
            return self.loss(anchors, anchor_labels, rows, row_labels, contrast_mask=selected)
        if selected is not None:  # every anchor of the batch, the selected memory rows (the anchor itself excluded)
            selected = torch.cat([selected.new_ones(len(anchors), len(anchors)), selected], dim=1)
        return self.loss(anchors, anchor_labels, memory=rows, memory_labels=row_labels, contrast_mask=selected)

    def select_memory_rows(self, anchors: torch.Tensor, anchor_labels: torch.Tensor, rows: torch.Tensor,
                           row_labels: torch.Tensor) -> torch.Tensor | None:
        """Which memory rows each anchor contrasts with under ``memory_sampling`` (``select_contrast``, the
        semi-hard pool ``semi_hard_pool``); None for all of them.

        Shape: anchors (N, D); anchor_labels (N,); rows (R, D); row_labels (R,) -> (N, R) bool or None.
        """
        if self.memory_sampling == "all" or not len(rows):
            return None
        return select_contrast(anchors.detach(), anchor_labels, rows, row_labels, self.memory_sampling,
                               self.num_positives, self.num_negatives, semi_hard_fraction=self.semi_hard_pool)

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
