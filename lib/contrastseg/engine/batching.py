"""Deterministic, resumable batching: the batch at step s and its augmentation depend only on (seed, s).

``StepBatchSampler`` yields, for each step, the (epoch, index) pairs of that step's batch, from any start step.
``SeededAugmentation`` draws each sample's augmentation from a generator seeded by (seed, epoch, index), so the
result is the same with any number of loader workers and after a resume.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from contrastseg.seeds import sample_seed


class StepBatchSampler(Sampler):
    """Batches for steps ``start_step .. total_steps - 1``: a fresh permutation per epoch, incomplete batches dropped.

    Each batch is a list of ``(epoch, index)`` pairs, for ``SeededAugmentation``. Under data parallelism
    (``world_size`` > 1) the process of rank r gets the r-th contiguous share of each global batch of
    ``batch_size``, so the processes together see the single-process run's images.
    """

    def __init__(self, num_samples: int, batch_size: int, total_steps: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if num_samples < batch_size:
            raise ValueError(f"the training set has {num_samples} images, fewer than one batch of {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {world_size} processes; "
                             f"make it a multiple of the number of devices")
        self.share = batch_size // world_size
        self.first = rank * self.share
        self.num_samples, self.batch_size = num_samples, batch_size
        self.total_steps, self.seed, self.start_step = total_steps, seed, start_step
        self.batches_per_epoch = num_samples // batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self):
        order_epoch, order = -1, None
        for step in range(self.start_step, self.total_steps):
            epoch, position = divmod(step, self.batches_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, self.epoch_order(epoch)
            start = position * self.batch_size + self.first
            batch = order[start:start + self.share]
            yield [(epoch, int(index)) for index in batch]

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0)


class SeededAugmentation(Dataset):
    """Wraps a (image, label) data set; item ``(epoch, index)`` is sample ``index`` under a seeded random transform."""

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image, label = self.dataset[index]
        if self.transform is None:
            return image, label
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue seeds for every accelerator backend,
            # which formats a stack trace per backend and call (about 1 ms per sample)
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image, label)


def augmentation(cfg):
    """The training images' joint augmentation under the config ``cfg``: crop size, rescale range and base size."""
    from contrastseg.data.transforms import train_transform

    return train_transform(cfg.crop_size(), (cfg.scale_min, cfg.scale_max), base_size=cfg.base_size or None)
