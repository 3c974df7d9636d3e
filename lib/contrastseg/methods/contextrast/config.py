"""The fields of Contextrast (Sung et al., CVPR 2024)."""

from __future__ import annotations

from dataclasses import dataclass

from contrastseg.method import Check, PixelEmbeddingConfig, one_of

BANE_MODES = ("off", "union", "replace")
MAX_LEVELS = 4  # the backbone levels that can be projected


@dataclass(frozen=True)
class ContextrastConfig(PixelEmbeddingConfig):
    """Contextrast's fields, beside the embedding term's ``proj_dim``, ``contrast_weight``,
    ``contrast_warmup`` and ``temperature`` (the paper has no tau / tau_b scale).

    Fields:
        contrast_levels: projected backbone levels, the last ones (4 = the paper; 1 = the last level only).
        reverse_level_weights: lambda 1.0, 0.7, 0.4, 0.1 from the finest level up instead of from the last level down.
        anchor_mixing: w_h in ``normalize((1 - w_h) A_i + w_h A_last)``; 0 = every level its own anchors.
        detach_anchors: stop the gradient through the class anchors (the paper keeps it).
        level_max_pixels, level_max_per_class: class-balanced pixel sample per level, in total and per class.
        bane: boundary-aware negatives "off", added to the sampled negatives ("union") or instead of them
            ("replace").
        bane_fraction: K, the share of each class's error pixels nearest the error rim taken as hard negatives.
        bane_max_per_class: cap on BANE negatives per class and level.
        bane_literal: a BANE pixel is a negative of its own class's anchor (the paper's literal text) instead of the
            anchor of the class it was wrongly predicted as.
    """

    contrast_levels: int = 4
    reverse_level_weights: bool = False
    anchor_mixing: float = 0.5
    detach_anchors: bool = False
    level_max_pixels: int = 10000
    level_max_per_class: int = 2500
    bane: str = "union"
    bane_fraction: float = 0.2
    bane_max_per_class: int = 1024
    bane_literal: bool = False

    def __post_init__(self) -> None:
        one_of("bane", self.bane, BANE_MODES, "bane mode")
        super().__post_init__()

    def checks(self) -> list[Check]:
        return super().checks() + [
            ("contrast_levels", 1 <= self.contrast_levels <= MAX_LEVELS, f"between 1 and {MAX_LEVELS}"),
            ("anchor_mixing", 0 <= self.anchor_mixing <= 1, "in [0, 1]"),
            ("level_max_pixels", self.level_max_pixels >= 1, ">= 1"),
            ("level_max_per_class", self.level_max_per_class >= 1, ">= 1"),
            ("bane_fraction", 0 < self.bane_fraction <= 1, "in (0, 1]"),
            ("bane_max_per_class", self.bane_max_per_class >= 1, ">= 1"),
        ]

    def projection_levels(self) -> int:
        return self.contrast_levels
