"""Data sets: the built-in SynthScapes, the real data sets read from disk, joint transforms, and the registry.

Every data set yields ``(image, label)`` pairs: image (3, H, W) float32 in [0, 1], label (H, W) int64 with values in
``[0, num_classes)`` or 255 (ignore).

Real data sets (``real``) are read in the folder layouts mmsegmentation documents, each a thin layout over the
generic pair reader ``PairedSegmentation`` (``folder``). Adding one takes its class names and palette from the
official label table (``label_tables``), a reader class in ``real.READERS`` and one entry in ``DATASETS``; its
preparation script (``data_scripts/prepare_<name>.py``) writes the layout the reader's docstring draws.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from contrastseg.data import label_tables as tables
from contrastseg.data import synthscapes
from contrastseg.data.folder import PairedSegmentation, SegmentationFolder
from contrastseg.data.real import (
    ADE20K, READERS, CamVid, Cityscapes, CocoStuff10k, CocoStuff164k, PascalContext, VOCAug,
)
from contrastseg.data.real import SPLITS as REAL_SPLITS
from contrastseg.data.synthscapes import SynthScapes
from contrastseg.registry import lookup

DATA_FIELDS = ("dataset", "data_root", "image_size", "crop_width", "base_size", "scale_min", "scale_max",
               "train_split", "num_train", "num_val", "label_fraction", "partition_file")
"""The ExperimentConfig fields that choose a run's images, labels and augmentation (part of its run key)."""


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


def _real(name: str, class_names: tuple[str, ...], palette) -> DatasetInfo:
    return DatasetInfo(name, len(class_names), class_names, palette)


DATASETS: dict[str, DatasetInfo] = {
    "synthscapes": DatasetInfo("synthscapes", synthscapes.NUM_CLASSES, synthscapes.CLASS_NAMES, synthscapes.PALETTE,
                               synthscapes.IGNORE_INDEX),
    "cityscapes": _real("cityscapes", tables.CITYSCAPES_CLASSES, tables.CITYSCAPES_PALETTE),
    "camvid": _real("camvid", tables.CAMVID_CLASSES, tables.CAMVID_PALETTE),
    "pascal_context": _real("pascal_context", tables.PASCAL_CONTEXT_CLASSES, tables.PASCAL_CONTEXT_PALETTE),
    "coco_stuff10k": _real("coco_stuff10k", tables.COCO_STUFF_CLASSES, tables.COCO_STUFF_PALETTE),
    "coco_stuff164k": _real("coco_stuff164k", tables.COCO_STUFF_CLASSES, tables.COCO_STUFF_PALETTE),
    "ade20k": _real("ade20k", tables.ADE20K_CLASSES, tables.ADE20K_PALETTE),
    "voc_aug": _real("voc_aug", tables.VOC_CLASSES, tables.VOC_PALETTE),
}
SPLITS: dict[str, tuple[str, ...]] = {"synthscapes": synthscapes.SPLITS, **REAL_SPLITS}
"""The split names of each data set (SynthScapes on disk holds those that make_synthetic.py wrote)."""


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of data set ``name``; an unknown name raises a ValueError listing the valid ones."""
    return lookup(DATASETS, name, "data set")


def build_dataset(name: str, split: str, *, root: str = "", image_size: int = 64, length: int | None = None,
                  seed: int = 0, augment: bool = False) -> Dataset:
    """A data set split, generated on the fly (SynthScapes without a root) or read from ``root``.

    Args:
        name: registry name (``DATASETS``).
        split: split name, one of ``SPLITS[name]``.
        root: the data set's folder, in the layout its reader documents (``real.READERS``; SynthScapes on disk:
            ``SegmentationFolder``); empty means SynthScapes on the fly.
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
    transform = None
    if augment:
        from contrastseg.data.transforms import train_transform  # torchvision loads only where images are augmented

        transform = train_transform(image_size)
    if not root:
        if name != "synthscapes":
            raise ValueError(f"data set {name!r} is read from disk; give its root folder")
        return SynthScapes(split, image_size=image_size, length=length, seed=seed, transform=transform)
    if name in READERS:
        dataset = READERS[name](root, split, transform=transform)
    else:
        dataset = SegmentationFolder(root, split, info.num_classes, transform=transform)
    if length is not None and length < len(dataset):
        return Subset(dataset, range(length))
    return dataset


__all__ = [
    "ADE20K", "CamVid", "Cityscapes", "CocoStuff10k", "CocoStuff164k", "DATASETS", "DatasetInfo", "PairedSegmentation",
    "PascalContext", "SPLITS", "SegmentationFolder", "SynthScapes", "VOCAug", "build_dataset", "dataset_info",
]
