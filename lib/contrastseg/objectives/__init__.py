"""The supervised objectives that the methods build on, and the objective protocol.

* ``cross_entropy``: ``CrossEntropyObjective``, pixel cross-entropy (+ the auxiliary head's); the base class of every
  objective, whose docstring states the protocol;
* ``mask_classification``: ``MaskClassificationObjective``, MaskFormer's set loss (the supervised part of the
  mask-classification methods).

A method's own objective lives in its folder (``contrastseg.methods``). ``weighted_total`` is the one place where
terms and weights meet; the engine logs every term by name.
"""

from __future__ import annotations

import torch

from contrastseg.objectives.cross_entropy import CrossEntropyObjective
from contrastseg.objectives.mask_classification import MaskClassificationObjective


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of weight x term; a term with weight 0 (a warm-up) is left out of the graph, not multiplied by zero."""
    missing = set(terms) - set(weights)
    if missing:
        raise KeyError(f"loss terms without a weight: {sorted(missing)}")
    active = [weights[name] * value for name, value in terms.items() if weights[name] != 0]
    if not active:
        return sum(value.sum() * 0.0 for value in terms.values())
    return torch.stack(active).sum()


__all__ = ["CrossEntropyObjective", "MaskClassificationObjective", "weighted_total"]
