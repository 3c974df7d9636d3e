"""Training objectives: one per method, each returning a dict of named loss terms and owning their weights.

See ``CrossEntropyObjective`` for the protocol. ``weighted_total`` is the one place where terms and weights meet;
the engine logs every term by name.
"""

from __future__ import annotations

import torch

from contrastseg.objectives.contextrast import ContextrastObjective
from contrastseg.objectives.cross_entropy import CrossEntropyObjective
from contrastseg.objectives.pixel_contrast import PixelContrastObjective
from contrastseg.objectives.rc2l import MaskClassificationObjective, RC2LObjective
from contrastseg.registry import lookup

OBJECTIVES = {
    "ce": CrossEntropyObjective,
    "pixel_contrast": PixelContrastObjective,
    "contextrast": ContextrastObjective,
    "mask_classification": MaskClassificationObjective,
    "rc2l": RC2LObjective,
}


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of weight x term; a term with weight 0 (a warm-up) is left out of the graph, not multiplied by zero."""
    missing = set(terms) - set(weights)
    if missing:
        raise KeyError(f"loss terms without a weight: {sorted(missing)}")
    active = [weights[name] * value for name, value in terms.items() if weights[name] != 0]
    if not active:
        return sum(value.sum() * 0.0 for value in terms.values())
    return torch.stack(active).sum()


def build_objective(cfg, num_classes: int, ignore_index: int = 255) -> torch.nn.Module:
    """The objective of ``cfg.method``; an unknown name raises an error listing the valid ones."""
    return lookup(OBJECTIVES, cfg.method, "method").from_config(cfg, num_classes, ignore_index)


__all__ = [
    "OBJECTIVES",
    "ContextrastObjective",
    "CrossEntropyObjective",
    "MaskClassificationObjective",
    "PixelContrastObjective",
    "RC2LObjective",
    "build_objective",
    "weighted_total",
]
