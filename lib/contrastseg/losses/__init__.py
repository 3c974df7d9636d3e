"""Contrastive losses: pure functions in ``functional``, ``nn.Module`` shells holding the hyperparameters, and the
class anchors of Contextrast (``anchors``)."""

from contrastseg.losses import functional
from contrastseg.losses.anchors import class_anchors, class_sums_per_image, mix_anchors
from contrastseg.losses.pixel_contrast import PixelContrastLoss

__all__ = ["PixelContrastLoss", "class_anchors", "class_sums_per_image", "functional", "mix_anchors"]
