"""The supervised baseline, and the base class that every objective extends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AUX_WEIGHT = 0.4  # the papers' weight of the auxiliary CE (DeepLabV3's FCN head, OCR's soft regions); see aux_weight


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean pixel cross-entropy over the pixels not labelled ``ignore_index``; 0 when there are none.

    ``F.cross_entropy``'s mean reduction divides by the number of valid pixels, which is 0 / 0 = NaN for a batch
    whose pixels are all ignored (a crop of void only); such a batch gives a zero that is still connected to
    ``logits`` (its gradient is zero), and the run goes on. Any other batch gets ``F.cross_entropy`` itself, to the
    last bit (the check costs one host synchronisation, beside the per-step ``.item()`` of the logged terms).

    Shape:
        logits: (B, K, H, W) float; labels: (B, H, W) int64 in [0, K) or ``ignore_index`` -> () float.
    """
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


class CrossEntropyObjective(nn.Module):
    """Pixel-wise cross-entropy with an ignore index (+ ``aux_weight`` x the CE of the model's auxiliary logits).

    The auxiliary term ``aux`` is computed when ``aux_weight > 0`` and the outputs have "aux_logits" (a model built
    with an auxiliary head, or OCR, while training); the papers use ``AUX_WEIGHT`` = 0.4. ``from_config`` reads
    ``cfg.aux_weight``.

    Every objective follows the same protocol:

    * ``forward(outputs, labels, step, unlabeled=None) -> dict[str, Tensor]``: the unweighted scalar terms, by name;
      ``unlabeled`` is the step's ``engine.semi.UnlabeledOutputs`` (the student's and the teacher's outputs on the
      unlabeled images, and the CutMix boxes) for a semi-supervised method, None otherwise;
    * ``weights(step) -> dict[str, float]``: the weight of each term at that step (warm-ups live here);
    * ``after_step(outputs, labels)``: state updates after the loss (memory banks); a no-op here;
    * ``from_config(cfg, num_classes, ignore_index)``: the one adapter from an ExperimentConfig to keyword arguments
      (the fields it reads are the method's config fields, ``contrastseg.method.MethodConfig``, and the core's);
    * ``method_terms``: the terms that are the method's own (none here); ``tables.method_activity`` counts the logged
      steps on which one of them was non-zero;
    * ``diagnostics() -> dict[str, float]``: counts of the last forward that say whether the method acted (anchors
      drawn, regions kept, ...; none here), recorded under no_grad from what the forward computes anyway; the engine
      logs them under "diagnostics" in each step's log line; ``describe_activity`` phrases their means.

    What the engine needs of a method beyond its objective (a projection head, an EMA teacher, a mask-classification
    model) is stated by its ``contrastseg.method.Method`` and config.

    Shape:
        outputs["logits"]: (B, K, H, W); optional outputs["aux_logits"]: (B, K, H, W);
        labels: (B, H, W) int64 in [0, K) or ``ignore_index``.
    """

    method_terms: tuple[str, ...] = ()

    def __init__(self, num_classes: int, ignore_index: int = 255, *, aux_weight: float = 0.0):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.last_counts: dict[str, torch.Tensor | float] = {}  # what diagnostics() reads; tensors: no sync here

    @classmethod
    def from_config(cls, cfg, num_classes: int, ignore_index: int = 255) -> "CrossEntropyObjective":
        return cls(num_classes, ignore_index, aux_weight=cfg.aux_weight)

    def forward(self, outputs: dict, labels: torch.Tensor, step: int, unlabeled=None) -> dict[str, torch.Tensor]:
        terms = {"ce": masked_cross_entropy(outputs["logits"].float(), labels, self.ignore_index)}
        if self.aux_weight > 0 and "aux_logits" in outputs:
            terms["aux"] = masked_cross_entropy(outputs["aux_logits"].float(), labels, self.ignore_index)
        return terms

    def weights(self, step: int) -> dict[str, float]:
        return {"ce": 1.0} | ({"aux": self.aux_weight} if self.aux_weight > 0 else {})

    def after_step(self, outputs: dict, labels: torch.Tensor) -> None:
        """Nothing to update for plain cross-entropy."""

    def diagnostics(self) -> dict[str, float]:
        """The counts of the last forward (this process's), by name; empty for plain cross-entropy."""
        return counts_as_floats(self.last_counts)

    @classmethod
    def describe_activity(cls, means: dict[str, float]) -> list[str]:
        """Short phrases for a run's mean diagnostics (``tables.activity_line``), e.g. ["256 anchors/step"]."""
        return []


def counts_as_floats(counts: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Counts as Python floats; the tensor ones (0-dim, on one device) are read in a single transfer."""
    tensors = [name for name, value in counts.items() if isinstance(value, torch.Tensor)]
    read = {}
    if tensors:
        stacked = torch.stack([counts[name].detach().float().reshape(()) for name in tensors])
        read = dict(zip(tensors, stacked.tolist()))
    return {name: float(read.get(name, value)) for name, value in counts.items()}
