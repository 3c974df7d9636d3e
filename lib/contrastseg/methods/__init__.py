"""The method registry: every method of the suite by its config name, each a folder of this package.

A method is a ``contrastseg.method.Method`` defined as ``METHOD`` in ``methods/<name>/__init__.py``: its config
fields (which the flat ``ExperimentConfig`` takes over), its objective, and whether it trains semi-supervised or on a
mask-classification model. Adding a method is a folder beside these and one line in ``METHODS``
(``docs/architecture.md``); the core reaches methods only through this table.
"""

from __future__ import annotations

from contrastseg.method import Method
from contrastseg.methods import contextrast, cross_entropy, mask_classification, pixel_contrast, rc2l
from contrastseg.registry import lookup

METHODS: dict[str, Method] = {method.name: method for method in (
    cross_entropy.METHOD,
    pixel_contrast.METHOD,
    contextrast.METHOD,
    mask_classification.METHOD,
    rc2l.METHOD,
)}


def method_named(name: str) -> Method:
    """``METHODS[name]``; an unknown name raises a ValueError that lists the valid ones."""
    return lookup(METHODS, name, "method")


def build_objective(cfg, num_classes: int, ignore_index: int = 255):
    """The objective of the config ``cfg``'s method for a data set of ``num_classes`` (an ``nn.Module``)."""
    return cfg.method_spec().objective_class().from_config(cfg, num_classes, ignore_index)


__all__ = ["METHODS", "build_objective", "method_named"]
