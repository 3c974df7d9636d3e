"""Training objectives: one per method, each returning a dict of named loss terms and owning their weights.

An objective is an ``nn.Module`` with two methods:

* ``forward(outputs, labels, step) -> dict[str, Tensor]``: the unweighted scalar terms, by name;
* ``weights(step) -> dict[str, float]``: the weight of each term at that step (warm-ups live here, explicitly).

``weighted_total`` is the one place where terms and weights meet. The engine logs every term by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyObjective(nn.Module):
    """The supervised baseline: pixel-wise cross-entropy with an ignore index.

    Shape:
        outputs["logits"]: (B, K, H, W); labels: (B, H, W) int64 in [0, K) or ``ignore_index``.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, outputs: dict, labels: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(outputs["logits"].float(), labels, ignore_index=self.ignore_index)}

    def weights(self, step: int) -> dict[str, float]:
        return {"ce": 1.0}


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of weight x term; a term with weight 0 (a warm-up) is left out of the graph, not multiplied by zero."""
    missing = set(terms) - set(weights)
    if missing:
        raise KeyError(f"loss terms without a weight: {sorted(missing)}")
    active = [weights[name] * value for name, value in terms.items() if weights[name] != 0]
    if not active:
        return sum(value.sum() * 0.0 for value in terms.values())
    return torch.stack(active).sum()


OBJECTIVES = {"ce": CrossEntropyObjective}


def build_objective(method: str, ignore_index: int = 255) -> nn.Module:
    from contrastseg.registry import lookup

    return lookup(OBJECTIVES, method, "method")(ignore_index=ignore_index)
