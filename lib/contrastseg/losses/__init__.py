"""Contrastive losses: pure functions in ``functional`` (pixel contrast) and ``region`` (RC²L), ``nn.Module`` shells
holding the hyperparameters, and the class anchors of Contextrast (``anchors``)."""

from contrastseg.losses import functional
from contrastseg.losses.anchors import class_anchors, class_sums_per_image, mix_anchors
from contrastseg.losses.pixel_contrast import PixelContrastLoss
from contrastseg.losses.rc2l import (RegionClassConsistencyLoss, RegionFeatureContrastLoss, RegionMaskContrastLoss,
                                     SemanticMaskConsistencyLoss)

__all__ = ["PixelContrastLoss", "RegionClassConsistencyLoss", "RegionFeatureContrastLoss", "RegionMaskContrastLoss",
           "SemanticMaskConsistencyLoss", "class_anchors", "class_sums_per_image", "functional", "mix_anchors"]
