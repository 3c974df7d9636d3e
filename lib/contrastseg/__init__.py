"""contrastseg: contrastive learning for semantic segmentation, reproduced on equal terms."""

__version__ = "0.1.0"
