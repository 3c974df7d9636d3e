"""The supervised baseline, and the base class that every objective extends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AUX_WEIGHT = 0.4  # the papers' weight of the auxiliary CE (DeepLabV3's FCN head, OCR's soft regions); see aux_weight


class CrossEntropyObjective(nn.Module):
    """Pixel-wise cross-entropy with an ignore index (+ ``aux_weight`` x the CE of the model's auxiliary logits).

    The auxiliary term ``aux`` is computed when ``aux_weight > 0`` and the outputs have "aux_logits" (a model built
    with an auxiliary head, or OCR, while training); the papers use ``AUX_WEIGHT`` = 0.4. ``from_config`` reads
    ``cfg.aux_weight``.

    Every objective follows the same protocol:

    * ``forward(outputs, labels, step) -> dict[str, Tensor]``: the unweighted scalar terms, by name;
    * ``weights(step) -> dict[str, float]``: the weight of each term at that step (warm-ups live here);
    * ``after_step(outputs, labels)``: state updates after the loss (memory banks); a no-op here;
    * ``projection_levels(cfg)``: how many of the backbone's last levels get a projection head (0: none);
    * ``semi_supervised``: True makes the engine add unlabeled images and an EMA teacher (``engine.semi``);
    * ``mask_classification``: True when the objective needs a mask-classification model (region outputs);
    * ``from_config(cfg, num_classes, ignore_index)``: the one adapter from an ExperimentConfig to keyword arguments.

    Shape:
        outputs["logits"]: (B, K, H, W); optional outputs["aux_logits"]: (B, K, H, W);
        labels: (B, H, W) int64 in [0, K) or ``ignore_index``.
    """

    semi_supervised = False
    mask_classification = False

    def __init__(self, num_classes: int, ignore_index: int = 255, *, aux_weight: float = 0.0):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight

    @classmethod
    def projection_levels(cls, cfg) -> int:
        """How many of the backbone's last levels the model must project for this method under ``cfg``."""
        return 0

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "CrossEntropyObjective":
        return cls(num_classes, ignore_index, aux_weight=cfg.aux_weight)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(outputs["logits"].float(), labels, ignore_index=self.ignore_index)}
        if self.aux_weight > 0 and "aux_logits" in outputs:
            terms["aux"] = F.cross_entropy(outputs["aux_logits"].float(), labels, ignore_index=self.ignore_index)
        return terms

    def weights(self, step: int) -> dict[str, float]:
        return {"ce": 1.0} | ({"aux": self.aux_weight} if self.aux_weight > 0 else {})

    def after_step(self, outputs: dict, labels: torch.Tensor) -> None:
        """Nothing to update for plain cross-entropy."""
