"""Semi-supervised pieces of the engine: the EMA teacher, CutMix boxes, and the unlabeled batch of a step.

The engine trains semi-supervised when the objective says so (``semi_supervised = True``): each step then also
draws a batch of unlabeled images as (weak, strong) views (``data.transforms.WeakStrongViews``), mixes the strong
views with CutMix, runs the student on them and the EMA teacher on the weak views, and hands both to the objective
as ``outputs["unlabeled"]``, ``outputs["teacher"]`` and ``outputs["cutmix"]``. The objective mixes the teacher's
targets with the same boxes (``mix_with_partner``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.utils import ModelEmaV3

from contrastseg.seeds import sample_seed

CUTMIX_AREA = (0.02, 0.4)  # share of the image a CutMix box covers, as in UniMatch (Yang et al., CVPR 2023)
CUTMIX_ASPECT = (0.3, 1 / 0.3)  # the box's height / width


def mean_teacher_momentum(step: int, momentum: float) -> float:
    """min(1 - 1 / (step + 1), momentum): the teacher follows the student closely at first (Tarvainen & Valpola)."""
    return min(1 - 1 / (step + 1), momentum)


class EmaTeacher(ModelEmaV3):
    """The teacher: an exponential moving average of the student (timm's ModelEmaV3), always in eval mode.

    ``update(student, step)`` sets the momentum by ``mean_teacher_momentum`` and averages every floating-point
    entry of the state dict, BatchNorm running statistics included. The teacher runs without gradients and with its
    BatchNorm layers on their running statistics (eval mode). Its state is part of a run's checkpoint.
    """

    def __init__(self, student: torch.nn.Module, momentum: float):
        super().__init__(student, decay=momentum)
        self.momentum = momentum
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def update(self, student: torch.nn.Module, step: int) -> None:  # noqa: D102 (documented on the class)
        self.decay = mean_teacher_momentum(step, self.momentum)
        super().update(student)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict:
        self.module.eval()
        return self.module(images)


@dataclass
class CutMix:
    """CutMix of a batch with a partner image per sample: ``where(box, x[partner], x)``.

    Attributes:
        box: (B, H, W) bool, True where a sample shows its partner; all False for samples drawn without CutMix.
        partner: (B,) int64, the image each sample borrows its box from (the next one in the batch).
    """

    box: torch.Tensor
    partner: torch.Tensor

    @classmethod
    def draw(cls, batch_size: int, height: int, width: int, probability: float, seed: int, step: int,
             device: torch.device | str = "cpu") -> "CutMix":
        """Boxes for one step; they depend only on (seed, step), so a resumed run draws the same ones."""
        generator = torch.Generator().manual_seed(sample_seed(seed, step, 1))
        box = torch.zeros(batch_size, height, width, dtype=torch.bool)
        for index in range(batch_size):
            draws = torch.rand(5, generator=generator).tolist()
            if batch_size < 2 or draws[0] >= probability:
                continue
            area = height * width * (CUTMIX_AREA[0] + draws[1] * (CUTMIX_AREA[1] - CUTMIX_AREA[0]))
            aspect = math.exp(math.log(CUTMIX_ASPECT[0]) + draws[2] * math.log(CUTMIX_ASPECT[1] / CUTMIX_ASPECT[0]))
            box_height = min(height, max(1, round(math.sqrt(area * aspect))))
            box_width = min(width, max(1, round(math.sqrt(area / aspect))))
            top = int(draws[3] * (height - box_height + 1))
            left = int(draws[4] * (width - box_width + 1))
            box[index, top:top + box_height, left:left + box_width] = True
        partner = torch.roll(torch.arange(batch_size), -1)
        return cls(box.to(device), partner.to(device))

    def mix_with_partner(self, values: torch.Tensor) -> torch.Tensor:
        """Mix a batch of maps with the boxes, resized (nearest) to the maps' size.

        Shape:
            values: (B, ..., h, w) -> (B, ..., h, w).
        """
        box = self.resized(values.shape[-2:])
        box = box.view(box.shape[0], *([1] * (values.ndim - 3)), *box.shape[-2:])
        return torch.where(box, values[self.partner], values)

    def resized(self, size: tuple[int, int]) -> torch.Tensor:
        """The boxes at another resolution (nearest). Shape: (B, H, W) -> (B, *size) bool."""
        if tuple(size) == tuple(self.box.shape[-2:]):
            return self.box
        return torch.nn.functional.interpolate(self.box[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0.5
