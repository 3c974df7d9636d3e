"""Data sets: the built-in SynthScapes, folders in the Cityscapes layout, joint transforms, and the registry.

Every data set yields ``(image, label)`` pairs: image (3, H, W) float32 in [0, 1], label (H, W) int64 with values in
``[0, num_classes)`` or 255 (ignore).

Adding a data set takes one module that defines its ``DatasetInfo`` (class names from the official label table,
palette) and, where needed, a preparation script that writes the Cityscapes-like layout read by
``SegmentationFolder``; then one entry in ``DATASETS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from contrastseg.data import synthscapes
from contrastseg.data.folder import SegmentationFolder
from contrastseg.data.synthscapes import SynthScapes
from contrastseg.data.transforms import train_transform
from contrastseg.registry import lookup


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a plot need to know about a data set.

    Args:
        name: registry name.
        num_classes: number of evaluated classes; labels are in ``[0, num_classes)`` or ``ignore_index``.
        class_names: one name per class, in train-id order.
        palette: one RGB triple (0-255) per class, for plots.
        ignore_index: label value of pixels left out of the loss and the metrics.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255

    def __post_init__(self):
        if not len(self.class_names) == len(self.palette) == self.num_classes:
            raise ValueError(f"data set {self.name!r}: {self.num_classes} classes but {len(self.class_names)} "
                             f"names and {len(self.palette)} palette colours")


DATASETS: dict[str, DatasetInfo] = {
    "synthscapes": DatasetInfo("synthscapes", synthscapes.NUM_CLASSES, synthscapes.CLASS_NAMES, synthscapes.PALETTE,
                               synthscapes.IGNORE_INDEX),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of data set ``name``; an unknown name raises a ValueError listing the valid ones."""
    return lookup(DATASETS, name, "data set")


def build_dataset(name: str, split: str, *, root: str = "", image_size: int = 64, length: int | None = None,
                  seed: int = 0, augment: bool = False) -> Dataset:
    """A data set split, generated on the fly (SynthScapes without a root) or read from ``root``.

    Args:
        name: registry name (``DATASETS``).
        split: split name ("train", "val", "test"; SynthScapes also has "unlabeled").
        root: folder in the Cityscapes layout (``SegmentationFolder``); empty means SynthScapes on the fly.
        image_size: SynthScapes image side when generated on the fly; the crop side when ``augment`` is set. Images
            read from a root keep their stored size.
        length: number of samples; None means the whole split (SynthScapes: its default length). For a root, the
            first ``length`` files in sorted order.
        seed: SynthScapes generation seed; unused with a root.
        augment: apply ``train_transform(image_size)`` (flip, rescale, crop, colour jitter).

    Returns:
        A Dataset of ``(image, label)``: image (3, H, W) float32 in [0, 1], label (H, W) int64.
    """
    info = dataset_info(name)
    transform = train_transform(image_size) if augment else None
    if not root:
        if name != "synthscapes":
            raise ValueError(f"data set {name!r} is read from disk; give its root folder")
        return SynthScapes(split, image_size=image_size, length=length, seed=seed, transform=transform)
    dataset = SegmentationFolder(root, split, info.num_classes, transform=transform)
    if length is not None and length < len(dataset):
        return Subset(dataset, range(length))
    return dataset


__all__ = [
    "DATASETS", "DatasetInfo", "SegmentationFolder", "SynthScapes", "build_dataset", "dataset_info",
    "train_transform",
]
