"""The fields of RC²L (Zhang et al., IJCAI 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from contrastseg.method import Check, ContrastTermConfig, SemiSupervisedConfig, one_of, weight_check

REGION_LOSSES = ("rcc", "smc", "rmc", "rfc")


@dataclass(frozen=True)
class RC2LConfig(SemiSupervisedConfig, ContrastTermConfig):
    """RC²L's fields, beside the teacher's and the unlabeled stream's (``SemiSupervisedConfig``) and the contrast
    term's ``contrast_weight`` (lambda_c of RMC and RFC) and ``temperature`` (RFC's).

    Fields:
        confidence_threshold: a teacher query becomes a pseudo-region when its top class probability reaches this.
        unlabeled_weight: lambda_u of the consistency terms (RCC, SMC).
        unlabeled_rampup: share of the steps over which the unlabeled terms' weights ramp up (sigmoid ramp).
        region_losses: the unlabeled terms that are on, comma-separated, from "rcc,smc,rmc,rfc".
        rcc_unmatched: RCC also pushes the student's unmatched queries towards "no object" (off: matched ones only).
        region_proj_dim: output size of RFC's region projector (mask_dim -> mask_dim -> region_proj_dim; the
            method's 256 -> 256 -> 128 at mask_dim 256).
    """

    REGION_LOSSES: ClassVar[tuple[str, ...]] = REGION_LOSSES

    confidence_threshold: float = 0.7
    unlabeled_weight: float = 1.0
    unlabeled_rampup: float = 0.1
    region_losses: str = "rcc,smc,rmc,rfc"
    rcc_unmatched: bool = False
    region_proj_dim: int = 128

    def __post_init__(self) -> None:
        for name in self.region_loss_names():
            one_of("region_losses", name, REGION_LOSSES, "region loss")
        super().__post_init__()

    def region_loss_names(self) -> tuple[str, ...]:
        """``region_losses`` as a tuple of names, e.g. ("rcc", "smc")."""
        return region_loss_names(self.region_losses)

    def checks(self) -> list[Check]:
        return super().checks() + [
            ("region_proj_dim", self.region_proj_dim >= 1, ">= 1"),
            ("confidence_threshold", 0 <= self.confidence_threshold <= 1, "in [0, 1]"),
            weight_check("unlabeled_weight", self.unlabeled_weight),
            ("unlabeled_rampup", 0 <= self.unlabeled_rampup <= 1, "in [0, 1]"),
        ]


def region_loss_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of region losses as a tuple of names: "rcc, smc" -> ("rcc", "smc")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())
