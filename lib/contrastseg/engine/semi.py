"""Semi-supervised pieces of the engine: the EMA teacher, CutMix boxes, and the unlabeled batch of a step.

The engine trains semi-supervised when the method says so (``Method.semi_supervised``; ``SemiSupervision`` holds
the run's part of it): each step then also draws a batch of unlabeled images as (weak, strong) views
(``data.transforms.WeakStrongViews``), mixes the strong views with CutMix, runs the student on them and the EMA
teacher on the weak views, and hands both and the boxes to the objective as its ``unlabeled`` argument
(``UnlabeledOutputs``). The objective mixes the teacher's targets with the same boxes (``mix_with_partner``).

Both student passes (labeled images, CutMix-ed strong views) and the teacher's pass run inside the forward of
``engine.train.TrainingLoss``, the one module that DistributedDataParallel wraps under several processes, so the
reducer sees one forward per backward; the teacher is an argument of that forward, never a DDP parameter, and
follows the unwrapped student (``EmaTeacher.update``). Under data parallelism each process draws its own CutMix
boxes (seeded by step and rank) and pairs each sample with the next one of its own share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Dataset

from contrastseg.engine.batching import SeededAugmentation, StepBatchSampler, augmentation
from contrastseg.engine.distributed import Distributed
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


@dataclass
class UnlabeledViews:
    """A step's unlabeled images: weak views (teacher), strong views before CutMix (student), and the CutMix boxes.

    Shape:
        weak, strong: (B, 3, H, W) float in [0, 1].
    """

    weak: torch.Tensor
    strong: torch.Tensor
    cutmix: CutMix

    def outputs(self, student, teacher: EmaTeacher) -> "UnlabeledOutputs":
        """The student (a callable: the model or its compiled form) on the CutMix-ed strong views, then the teacher
        on the weak views."""
        mixed = student(self.cutmix.mix_with_partner(self.strong))
        return UnlabeledOutputs(mixed, teacher(self.weak), self.cutmix)


@dataclass
class UnlabeledOutputs:
    """What a semi-supervised objective gets of a step's unlabeled images (its ``unlabeled`` argument).

    Attributes:
        student: the student's outputs on the CutMix-ed strong views (with gradient).
        teacher: the teacher's outputs on the weak views (no gradient).
        cutmix: the boxes the strong views were mixed with, to mix the teacher's targets alike.
    """

    student: dict
    teacher: dict
    cutmix: CutMix


class SemiSupervision:
    """A semi-supervised run's part of the training loop: the EMA teacher and the stream of unlabeled views.

    The teacher exists from the start (a resume loads its state); ``start`` opens the unlabeled stream at the
    run's first step, and ``views(step)`` gives each step's ``UnlabeledViews``, seeded like the labeled batches
    (this process's share under data parallelism).
    """

    def __init__(self, cfg, model: torch.nn.Module, world: Distributed = Distributed()):
        self.cfg, self.world = cfg, world
        self.teacher = EmaTeacher(model, cfg.ema_momentum)
        self.stream = None

    def start(self, unlabeled: Dataset, start_step: int, pin_memory: bool) -> None:
        self.stream = unlabeled_batches(self.cfg, unlabeled, start_step, pin_memory, self.world)

    def views(self, step: int, device: torch.device, layout: torch.memory_format) -> UnlabeledViews:
        weak, strong = (view.to(device, non_blocking=True, memory_format=layout) for view in next(self.stream))
        boxes = CutMix.draw(len(strong), *strong.shape[-2:], self.cfg.cutmix_probability, self.cfg.seed,
                            step * self.world.world_size + self.world.rank, device)
        return UnlabeledViews(weak, strong, boxes)


def unlabeled_batches(cfg, unlabeled: Dataset, start_step: int, pin_memory: bool,
                      world: Distributed = Distributed()):
    """An iterator of (weak, strong) batches of unlabeled images for steps ``start_step ..``, seeded like the rest
    (this process's share of each under data parallelism)."""
    from contrastseg.data.transforms import WeakStrongViews, strong_photometric

    batch_size = cfg.unlabeled_batch_size or cfg.batch_size
    seed = cfg.seed + 7919  # the unlabeled stream must not repeat the labeled one's order and augmentation
    views = SeededAugmentation(unlabeled, WeakStrongViews(augmentation(cfg), strong_photometric()), seed)
    sampler = StepBatchSampler(len(views), batch_size, cfg.steps, seed, start_step, world.rank, world.world_size)
    return iter(DataLoader(views, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=pin_memory,
                           generator=torch.Generator().manual_seed(seed)))
