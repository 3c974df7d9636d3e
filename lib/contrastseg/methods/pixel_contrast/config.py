"""The fields of pixel contrast (Wang et al., ICCV 2021)."""

from __future__ import annotations

from dataclasses import dataclass

from contrastseg.method import Check, PixelEmbeddingConfig, one_of, temperature_check

ANCHOR_SAMPLINGS = ("hard", "random")
MEMORIES = ("none", "pixel", "segment", "both")
MEMORY_SAMPLINGS = ("all", "random", "hardest", "semi_hard")


@dataclass(frozen=True)
class PixelContrastConfig(PixelEmbeddingConfig):
    """Pixel contrast's fields, beside the embedding term's ``proj_dim``,
    ``contrast_weight``, ``contrast_warmup`` and ``temperature``.

    Fields:
        base_temperature: the reference's scale tau / tau_b of the InfoNCE.
        anchor_sampling: "hard" (segmentation-aware, half mis-predicted) or "random".
        max_samples, max_views: anchor budget per device and forward pass, and its cap per (image, class).
        memory: "none" (in-batch contrast only), "pixel", "segment" or "both".
        memory_size: rows per class in each queue.
        pixels_per_update: pixels written per (image, class) into the pixel queue.
        memory_sampling: which memory rows an anchor contrasts with: "all", "random", "hardest" or "semi_hard".
        num_positives, num_negatives: rows per anchor for the random, hardest and semi-hard samplings.
        semi_hard_pool: share of an anchor's memory positives (and, apart, of its negatives) from which "semi_hard"
            draws its num_positives (num_negatives) at random: the hardest share, at least the K drawn. Semi-hard
            differs from hardest only above num_positives / memory_size (one full queue: 0.5 at smoke, about 0.2
            at demo); the paper's 10% does not.
        reference_quirks: reproduce the reference code's memory defects (pixel pointer step 1, class 0 never
            written but its zero rows kept in the contrast as class 0, pixel-queue writes from the image's first
            raster positions, memory rows only without in-batch contrast), to measure what they cost.
    """

    base_temperature: float = 0.07
    anchor_sampling: str = "hard"
    max_samples: int = 1024
    max_views: int = 100
    memory: str = "none"
    memory_size: int = 5000
    pixels_per_update: int = 10
    memory_sampling: str = "all"
    num_positives: int = 1024
    num_negatives: int = 2048
    semi_hard_pool: float = 0.75
    reference_quirks: bool = False

    def __post_init__(self) -> None:
        one_of("anchor_sampling", self.anchor_sampling, ANCHOR_SAMPLINGS, "anchor sampling")
        one_of("memory", self.memory, MEMORIES, "memory")
        one_of("memory_sampling", self.memory_sampling, MEMORY_SAMPLINGS, "memory sampling")
        super().__post_init__()

    def checks(self) -> list[Check]:
        return super().checks() + [
            temperature_check("base_temperature", self.base_temperature),
            ("max_samples", self.max_samples >= 1, ">= 1"),
            ("max_views", self.max_views >= 1, ">= 1"),
            ("memory_size", self.memory_size >= 1, ">= 1"),
            ("pixels_per_update", 1 <= self.pixels_per_update <= self.memory_size, "in [1, memory_size]"),
            ("num_positives", self.num_positives >= 1, ">= 1"),
            ("num_negatives", self.num_negatives >= 1, ">= 1"),
            ("semi_hard_pool", 0 < self.semi_hard_pool <= 1, "in (0, 1]"),
        ]

    def projection_levels(self) -> int:
        return 1
