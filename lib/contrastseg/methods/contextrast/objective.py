"""Contextrast (Sung et al., CVPR 2024): CE + weight x sum over levels of lambda_i x pixel-to-anchor InfoNCE.

Per step and per projected level i (finest first in the model's outputs, the last level = the backbone's last):

1. labels at the level's resolution (nearest);
2. anchors: the mean embedding of each class present in the batch at that level (``anchors.class_anchors``), mixed
   with the last level's anchors, ``normalize((1 - w_h) A_i + w_h A_last)`` (``anchors.mix_anchors``); the last
   level's anchors are its normalised means;
3. pixels: a class-balanced uniform sample of the level's pixels (``samplers.class_balanced_sampling``: at most
   2,500 per class and 10,000 in total, classes under 5 pixels dropped);
4. negatives: for anchor n, the sampled pixels of the other classes and, with BANE, the boundary-aware hard negatives
   assigned to n (``bane.boundary_aware_negatives`` on the final prediction at the level's resolution);
5. loss: InfoNCE with the anchor as the query, each sampled pixel of its class as a positive against the negatives,
   averaged over positives then over the classes present (``functional.pixel_contrast`` with
   ``base_temperature = temperature``: the paper has no tau / tau_b scale).

Level weights lambda are 1.0, 0.7, 0.4, 0.1 from the last level down (``LEVEL_WEIGHTS``); with fewer levels the first
ones of that list are used, so ``levels=1`` is the "pixel-anchor loss on the last level only" ablation.

Choices where the paper is silent (``docs/methods.md#contextrast``), each with its switch:

* ``anchor_mixing`` is w_h, with w_l = 1 - w_h (default 0.5; 0 = no mixing, each level its own anchors);
* anchors keep their gradient (the supplement differentiates the loss with respect to them); ``detach_anchors``;
* the level weights go from the last level (1.0) down; ``reverse_level_weights`` puts 1.0 on the finest level
  instead (the order of the multi-scale code of Pissas et al.);
* BANE negatives are added to the sampled negatives (``bane="union"``); ``"replace"`` keeps only the BANE negatives
  (an anchor whose class was never predicted wrongly then has no negatives and contributes 0); ``"off"`` is the
  no-BANE baseline. A BANE pixel is a hard negative for the anchor of the class it was wrongly predicted as and
  stays a positive of its own class when it is also in the sample; ``bane_literal`` follows the paper's literal text
  (a negative of its own class's anchor: it is then no longer a positive of that anchor);
* a pixel that is both sampled and a BANE negative of anchor n counts once in anchor n's denominator;
* the prediction BANE uses is the argmax of the full-resolution logits (the final prediction), resized to each
  level by nearest neighbour like the labels, and detached.

Note: with ``bane="union"``, BANE changes the loss only where the class-balanced sample leaves pixels out (at the
smoke preset's 16 x 16 maps this needs the smaller caps that ``smoke()`` sets); ``"replace"`` changes it always.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastseg.losses.functional import pixel_contrast
from contrastseg.methods.contextrast.anchors import class_anchors, mix_anchors
from contrastseg.methods.contextrast.bane import boundary_aware_negatives
from contrastseg.methods.contextrast.config import BANE_MODES
from contrastseg.metrics import predicted_classes
from contrastseg.objectives.cross_entropy import CrossEntropyObjective
from contrastseg.samplers.hard_anchor import class_balanced_sampling, downsample_labels, gather_pixels

LEVEL_WEIGHTS = (1.0, 0.7, 0.4, 0.1)
"""lambda of the last level first, then the next finer ones (paper, Sec. 3)."""
MIN_PIXELS_PER_CLASS = 5
"""A class with fewer pixels at a level is left out of that level's sample (Pissas et al.'s ``min_views``)."""
NEGATIVE_ONLY = -1
"""Label given to the BANE rows of the contrast set: never equal to an anchor's class, so never a positive."""


def level_weights(levels: int, reverse: bool = False) -> tuple[float, ...]:
    """lambda per projected level, finest first (the order of ``outputs["level_embeddings"]``).

    ``levels=4``: (0.1, 0.4, 0.7, 1.0); ``reverse=True``: (1.0, 0.7, 0.4, 0.1).
    """
    if not 1 <= levels <= len(LEVEL_WEIGHTS):
        raise ValueError(f"levels must be between 1 and {len(LEVEL_WEIGHTS)}, got {levels}")
    last_first = LEVEL_WEIGHTS[:levels]
    return last_first if reverse else last_first[::-1]


class ContextrastObjective(CrossEntropyObjective):
    """CE (+ aux CE) + ``contrast_weight`` x sum_i lambda_i x pixel-to-anchor loss of level i, with BANE negatives.

    Terms: ``ce`` (and ``aux``), ``contrast`` (the lambda-weighted sum, what the weight multiplies) and, for the
    log only (weight 0), ``contrast_level{i}`` per level, i = 1 the finest projected level.

    Diagnostics (``diagnostics()``, of the last forward, this process's batch), per level i:

    * ``anchors_level{i}``: classes with an anchor (present in the batch at that level's resolution);
    * ``pixels_level{i}``: pixels of the class-balanced sample;
    * ``bane_negatives_level{i}``: BANE hard negatives selected (0 with ``bane="off"``).

    Shape:
        outputs["level_embeddings"]: tuple of L maps (B, D, h_i, w_i), unit norm, finest first;
        outputs["logits"]: (B, K, H, W); labels: (B, H, W) int64 at the input resolution.
    """

    method_terms = ("contrast",)
    def __init__(self, num_classes: int, ignore_index: int = 255, *, levels: int = 4,
                 reverse_level_weights: bool = False, contrast_weight: float = 0.1, warmup_steps: int = 0,
                 temperature: float = 0.1, anchor_mixing: float = 0.5, detach_anchors: bool = False,
                 max_pixels: int = 10000, max_pixels_per_class: int = 2500, bane: str = "union",
                 bane_fraction: float = 0.2, bane_max_per_class: int = 1024, bane_literal: bool = False,
                 aux_weight: float = 0.0):
        super().__init__(num_classes, ignore_index, aux_weight=aux_weight)
        if bane not in BANE_MODES:
            raise ValueError(f"unknown bane mode {bane!r}; valid: {', '.join(BANE_MODES)}")
        if not 0.0 <= anchor_mixing <= 1.0:
            raise ValueError(f"anchor_mixing (w_h) must be in [0, 1], got {anchor_mixing}")
        self.level_weights = level_weights(levels, reverse_level_weights)
        self.contrast_weight, self.warmup_steps = contrast_weight, warmup_steps
        self.temperature = temperature
        self.anchor_mixing, self.detach_anchors = anchor_mixing, detach_anchors
        self.max_pixels, self.max_pixels_per_class = max_pixels, max_pixels_per_class
        self.bane, self.bane_fraction = bane, bane_fraction
        self.bane_max_per_class, self.bane_literal = bane_max_per_class, bane_literal

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "ContextrastObjective":
        return cls(num_classes, ignore_index, levels=cfg.contrast_levels,
                   reverse_level_weights=cfg.reverse_level_weights, contrast_weight=cfg.contrast_weight,
                   warmup_steps=cfg.contrast_warmup, temperature=cfg.temperature, anchor_mixing=cfg.anchor_mixing,
                   detach_anchors=cfg.detach_anchors, max_pixels=cfg.level_max_pixels,
                   max_pixels_per_class=cfg.level_max_per_class, bane=cfg.bane, bane_fraction=cfg.bane_fraction,
                   bane_max_per_class=cfg.bane_max_per_class, bane_literal=cfg.bane_literal,
                   aux_weight=cfg.aux_weight)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int, unlabeled=None) -> dict[str, torch.Tensor]:
        terms = super().forward(outputs, labels, step)
        embeddings = [level.float() for level in outputs["level_embeddings"]]
        if len(embeddings) != len(self.level_weights):
            raise ValueError(f"the model projects {len(embeddings)} levels, the objective expects "
                             f"{len(self.level_weights)} (build it with proj_levels={len(self.level_weights)})")
        level_labels = [downsample_labels(labels, level.shape[-2:]) for level in embeddings]
        anchors = [class_anchors(level, small, self.num_classes, self.ignore_index, self.detach_anchors)
                   for level, small in zip(embeddings, level_labels)]
        last_anchors, last_classes = anchors[-1]
        predictions = predicted_classes(outputs["logits"].detach()) if self.bane != "off" else None

        level_terms, self.last_counts = [], {}
        for index, (level, small_labels, (level_anchors, classes)) in enumerate(zip(embeddings, level_labels,
                                                                                    anchors)):
            if index == len(embeddings) - 1:
                mixed = F.normalize(level_anchors, dim=1)
            else:
                mixed = mix_anchors(level_anchors, classes, last_anchors, last_classes,
                                    1.0 - self.anchor_mixing, self.anchor_mixing)
            small_predictions = None if predictions is None else downsample_labels(predictions, level.shape[-2:])
            level_counts = {"anchors": classes.numel()}
            level_terms.append(self.level_loss(level, small_labels, mixed, classes, small_predictions, level_counts))
            self.last_counts |= {f"{name}_level{index + 1}": value for name, value in level_counts.items()}
            terms[f"contrast_level{index + 1}"] = level_terms[-1].detach()
        terms["contrast"] = sum(weight * term for weight, term in zip(self.level_weights, level_terms))
        return terms

    def level_loss(self, embedding: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor,
                   anchor_classes: torch.Tensor, predictions: torch.Tensor | None,
                   counts: dict | None = None) -> torch.Tensor:
        """Pixel-to-anchor InfoNCE of one level; ``counts``, when given, receives "pixels" (sampled) and
        "bane_negatives" (selected).

        Shape:
            embedding: (B, D, h, w) unit norm; labels, predictions: (B, h, w) int64 (predictions None without BANE);
            anchors: (C, D) unit norm, one per class in ``anchor_classes`` (C,) int64; returns () float32.
        """
        sample = class_balanced_sampling(labels, self.max_pixels, self.max_pixels_per_class, MIN_PIXELS_PER_CLASS,
                                         self.ignore_index)
        pixels = gather_pixels(embedding, sample.indices)
        counts = {} if counts is None else counts
        counts["pixels"], counts["bane_negatives"] = sample.num_anchors, 0
        if predictions is None:
            return pixel_contrast(anchors, anchor_classes, pixels, sample.labels, self.temperature,
                                  base_temperature=self.temperature)
        contrast_labels, contrast_mask, hard_indices = self.bane_contrast(labels, predictions, sample, anchor_classes)
        counts["bane_negatives"] = hard_indices.numel()
        contrast = torch.cat([pixels, gather_pixels(embedding, hard_indices)])
        return pixel_contrast(anchors, anchor_classes, contrast, contrast_labels, self.temperature,
                              base_temperature=self.temperature, contrast_mask=contrast_mask)

    @torch.no_grad()
    def bane_contrast(self, labels: torch.Tensor, predictions: torch.Tensor, sample,
                      anchor_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contrast set = the sampled pixels, then the BANE pixels as negative-only rows; which rows each anchor sees.

        Returns:
            contrast_labels: the sampled pixels' classes, then ``NEGATIVE_ONLY`` for the BANE rows.
            contrast_mask: row c marks the sampled pixels anchor c takes part with (all of them with "union", only
                its positives with "replace"; never one that is also a BANE negative of anchor c) and the BANE
                rows assigned to anchor c.
            hard_indices: flat pixel indices of the BANE rows.

        Shape:
            labels, predictions: (B, h, w); anchor_classes: (C,) -> (P + Q,), (C, P + Q) bool, (Q,) int64 for P
            sampled pixels and Q BANE pixels.
        """
        bane = boundary_aware_negatives(labels, predictions, self.bane_fraction, self.bane_max_per_class,
                                        self.ignore_index, literal=self.bane_literal)
        hard_indices = bane.indices
        negative_for = bane.negative_for.reshape(-1)
        for_anchor = anchor_classes[:, None]
        sampled_part = (negative_for[sample.indices][None, :] != for_anchor)  # count a BANE pixel once
        if self.bane == "replace":
            sampled_part &= sample.labels[None, :] == for_anchor
        hard_part = negative_for[hard_indices][None, :] == for_anchor
        contrast_labels = torch.cat([sample.labels, torch.full_like(hard_indices, NEGATIVE_ONLY)])
        return contrast_labels, torch.cat([sampled_part, hard_part], dim=1), hard_indices

    @classmethod
    def describe_activity(cls, means: dict[str, float]) -> list[str]:
        phrases = []
        for name, text in (("anchors", "anchors (classes)"), ("bane_negatives", "BANE negatives")):
            per_level = [means[f"{name}_level{level}"] for level in range(1, len(LEVEL_WEIGHTS) + 1)
                         if f"{name}_level{level}" in means]
            if per_level:  # finest level first, like the levels' numbers
                phrases.append(f"{text} per level " + "/".join(f"{value:.3g}" for value in per_level))
        return phrases

    def weights(self, step: int) -> dict[str, float]:
        contrast = 0.0 if step < self.warmup_steps else self.contrast_weight  # warm-up: the term is logged, not used
        per_level = {f"contrast_level{index + 1}": 0.0 for index in range(len(self.level_weights))}  # log only
        return super().weights(step) | {"contrast": contrast} | per_level
