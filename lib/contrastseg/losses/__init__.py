"""Contrastive losses: pure functions in ``functional``, ``nn.Module`` shells holding the hyperparameters."""

from contrastseg.losses import functional
from contrastseg.losses.pixel_contrast import PixelContrastLoss

__all__ = ["PixelContrastLoss", "functional"]
