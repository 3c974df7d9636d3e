"""Joint image + label augmentation for training, on tensors, with torchvision.transforms.v2.

The image travels as a ``tv_tensors.Image`` and the label as a ``tv_tensors.Mask``, so every geometric step draws its
random parameters once and applies them to both: bilinear for the image, nearest for the mask. Padding fills the
image with 0 and the mask with 255 (ignored). The colour jitter runs first, so padded pixels stay exactly 0 and the
jitter never touches the mask. Randomness comes from torch's global generator: ``torch.manual_seed`` fixes it.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from contrastseg.data.synthscapes import IGNORE_INDEX


class JointTransform:
    """Applies a v2 pipeline to an (image, label) pair of plain tensors and returns plain tensors.

    Args:
        pipeline: a torchvision v2 transform that handles ``tv_tensors.Image`` and ``tv_tensors.Mask``.

    Shape:
        image: (3, H, W) float in [0, 1].
        label: (H, W) int64, 255 = ignore.
        returns: (3, h, w) float32 and (h, w) int64, h and w set by the pipeline.
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # uint8 masks: nearest resizing of integer masks is defined for uint8, and every label fits in it.
        image, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(label.to(torch.uint8)))
        return image.as_subclass(torch.Tensor).float(), mask.as_subclass(torch.Tensor).long()

    def __repr__(self) -> str:
        return f"JointTransform({self.pipeline})"


def train_transform(crop_size: int | tuple[int, int], scale_range: tuple[float, float] = (0.75, 1.5),
                    flip_probability: float = 0.5, colour_jitter: float = 0.2,
                    base_size: int | None = None) -> JointTransform:
    """Colour jitter, horizontal flip, random rescale and a random crop, with ignore padding.

    Args:
        crop_size: the output crop, ``side`` or ``(height, width)`` in pixels.
        scale_range: range of the random rescale factor; the input's shorter side becomes ``factor * base_size``.
        flip_probability: chance of a horizontal flip.
        colour_jitter: brightness, contrast and saturation jitter strength; 0 turns it off. No hue jitter: it costs
            three times the rest of the pipeline, and the reference augments brightness only.
        base_size: the shorter side that factor 1 means; None = the crop's height. The papers rescale real images
            by [0.5, 2.0] around their stored size (Cityscapes: base 1024 for 512 x 1024 crops); our choice of the
            shorter side as the reference keeps the aspect ratio, where mmsegmentation fits the image into a box.

    Returns:
        A callable ``(image, label) -> (image, label)`` on tensors; see ``JointTransform`` for shapes.
    """
    height, width = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    base_size = base_size or height
    low, high = (max(1, round(base_size * factor)) for factor in scale_range)
    steps = [
        v2.ColorJitter(brightness=colour_jitter, contrast=colour_jitter, saturation=colour_jitter)
        if colour_jitter > 0 else v2.Identity(),
        v2.RandomHorizontalFlip(flip_probability),
        v2.RandomResize(low, high + 1, antialias=True),
        v2.RandomCrop((height, width), pad_if_needed=True,
                      fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}),
    ]
    return JointTransform(v2.Compose(steps))


class WeakStrongViews:
    """An unlabeled sample's two views for teacher-student training: (weak, strong), its label dropped.

    The weak view is ``weak`` applied to (image, label) (geometric augmentation); the strong view is the weak view
    after ``strong_photometric``, so both views show the same pixels at the same places and teacher regions line up
    with student regions. The label never leaves this transform: a semi-supervised engine cannot train on it.

    Shape:
        image: (3, H, W) float in [0, 1]; label: (H, W) int64.
        returns: weak (3, h, w) and strong (3, h, w) float32.
    """

    def __init__(self, weak: JointTransform, strong):
        self.weak, self.strong = weak, strong

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weak, _ = self.weak(image, label)
        return weak, self.strong(weak)


def strong_photometric(jitter: float = 0.5, jitter_probability: float = 0.8, grayscale_probability: float = 0.2,
                       blur_probability: float = 0.5) -> v2.Compose:
    """The student's strong view on top of the weak one: colour jitter (with hue), grayscale, Gaussian blur.

    Photometric only, as region matching between teacher and student needs geometrically aligned views; CutMix, the
    geometric part of the strong view, is applied per batch by the engine with the same box on the teacher's targets.
    The probabilities follow the semi-supervised segmentation literature (e.g. UniMatch); RC²L does not state its own.

    Shape:
        image: (3, H, W) float in [0, 1] -> (3, H, W) float in [0, 1].
    """
    return v2.Compose([
        v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter, hue=jitter / 2)], p=jitter_probability),
        v2.RandomGrayscale(grayscale_probability),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=blur_probability),
    ])
