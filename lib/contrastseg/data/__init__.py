"""Data sets: the built-in SynthScapes, the real data sets read from disk, joint transforms, and the registry.

Every data set yields ``(image, label)`` pairs: image (3, H, W) float32 in [0, 1], label (H, W) int64 with values in
``[0, num_classes)`` or 255 (ignore).

Real data sets (``real``) are read in the folder layouts mmsegmentation documents, each a thin layout over the
generic pair reader ``PairedSegmentation`` (``folder``). Adding one takes its class names and palette from the
official label table (``label_tables``), a reader class in ``real.READERS`` and one entry in ``DATASETS``; its
preparation script (``data_scripts/prepare_<name>.py``) writes the layout the reader's docstring draws.

``check_dataset_files(cfg)`` checks before training that every image and label file of a run's training and
evaluation splits exists and opens, from the file headers, so that a bad file stops the run before its first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch.utils.data import Dataset, Subset

from contrastseg.data import label_tables as tables
from contrastseg.data import synthscapes
from contrastseg.data.folder import MAX_LISTED, PairedSegmentation, SegmentationFolder
from contrastseg.data.real import (
    ADE20K, READERS, CamVid, Cityscapes, CocoStuff10k, CocoStuff164k, PascalContext, VOCAug,
)
from contrastseg.data.real import SPLITS as REAL_SPLITS
from contrastseg.data.synthscapes import SynthScapes
from contrastseg.paths import resolve_data_root
from contrastseg.registry import lookup

if TYPE_CHECKING:
    from contrastseg.config import ExperimentConfig

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


class DatasetFilesError(OSError):
    """Files of a data set split are missing, do not open, or an image and its label differ in size.

    Attributes:
        problems: (split, file, what is wrong) per problem, every one found.
    """

    def __init__(self, message: str, problems: list[tuple[str, Path, str]]):
        super().__init__(message)
        self.problems = problems


BUILD_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError)  # what the readers raise for a bad layout


def _split_files(name: str, split: str, root: str, length: int | None) -> tuple[int, list[tuple[Path, str]]]:
    """The number of files of a split that training reads and the problems found in them (``file_problems``)."""
    try:
        dataset = build_dataset(name, split, root=root, length=length)
    except BUILD_ERRORS as error:
        if type(error) not in BUILD_ERRORS:  # a subclass may take other constructor arguments
            raise
        raise type(error)(f"the {split!r} split of data set {name!r} cannot be read: {error}") from error
    indices = None
    if isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, list(dataset.indices)
    if not isinstance(dataset, PairedSegmentation):  # generated in memory: no files
        return 0, []
    return 2 * (len(dataset) if indices is None else len(indices)), dataset.file_problems(indices)


def _raise_for_problems(name: str, root: str, checked: dict[str, int],
                        problems: dict[str, list[tuple[Path, str]]]) -> None:
    found = [(split, path, what) for split, split_problems in problems.items() for path, what in split_problems]
    if not found:
        return
    lines = []
    for split, split_problems in problems.items():
        if not split_problems:
            continue
        bad_files = len({path for path, _ in split_problems})
        lines.append(f"{split!r} split: {bad_files} of its {checked[split]} files are bad:")
        lines.extend(f"  {str(path)!r} {what}" for path, what in split_problems[:MAX_LISTED])
        if len(split_problems) > MAX_LISTED:
            lines.append(f"  and {len(split_problems) - MAX_LISTED} more problem(s)")
    message = f"data set {name!r} under {root!r} has bad files; fix or remove them before training:\n"
    raise DatasetFilesError(message + "\n".join(lines), found)


def check_split_files(name: str, split: str, *, root: str, length: int | None = None) -> int:
    """Check that every image and label file of one split exists and opens, reading their headers only.

    The split is found as ``build_dataset(name, split, root=root, length=length)`` finds it, so exactly the files
    that training (or evaluation) reads are checked: the first ``length`` samples, or all of them. Each file must
    open as an image, each label file must be 8-bit grey or palette, and a label must have its image's size
    (``PairedSegmentation.file_problems``). Pixel data is not decoded. SynthScapes generated in memory (empty
    ``root``) has no files: nothing is checked.

    Args:
        name: registry name (``DATASETS``).
        split: split name, one of ``SPLITS[name]``.
        root: the data set's folder (already resolved, e.g. by ``contrastseg.paths.resolve_data_root``); empty for
            SynthScapes generated in memory.
        length: number of samples read; None means the whole split.

    Returns:
        The number of files checked (images and labels; 0 without files).

    Raises:
        DatasetFilesError: bad files; the message names the split, the first ``MAX_LISTED`` problems and how many
            files are bad in all.
        FileNotFoundError, ValueError: the split cannot be found in ``root`` (a missing folder, an image without a
            label file); the reader's message, prefixed with the split and the data set.
    """
    checked, problems = _split_files(name, split, root, length)
    _raise_for_problems(name, root, {split: checked}, {split: problems})
    return checked


def check_dataset_files(cfg: ExperimentConfig) -> dict[str, int]:
    """Check the files of a run's training split and evaluation split before it trains (``check_split_files``).

    The splits are those ``contrastseg.engine.train`` reads: ``cfg.train_split`` with ``cfg.num_train`` samples and
    ``cfg.eval_split`` with ``cfg.num_val`` (0 = the whole split), under ``resolve_data_root(cfg.data_root)``. Both
    splits are checked before an error is raised, so it reports the bad files of both.

    Returns:
        The number of files checked per split name; 0 for SynthScapes generated in memory.

    Raises:
        DatasetFilesError: bad files in either split; the message names each split with its bad files.
        FileNotFoundError, ValueError: a split cannot be found under the root (see ``check_split_files``).
    """
    root = resolve_data_root(cfg.data_root)
    lengths: dict[str, int] = {}  # samples read per split, 0 = all
    for split, length in ((cfg.train_split, cfg.num_train), (cfg.eval_split, cfg.num_val)):
        # a split that is both trained and evaluated on is checked once, for the longer of the two reads
        lengths[split] = 0 if 0 in (length, lengths.get(split)) else max(length, lengths.get(split, 0))
    checked: dict[str, int] = {}
    problems: dict[str, list[tuple[Path, str]]] = {}
    for split, length in lengths.items():
        checked[split], problems[split] = _split_files(cfg.dataset, split, root, length or None)
    _raise_for_problems(cfg.dataset, root, checked, problems)
    return checked


__all__ = [
    "ADE20K", "CamVid", "Cityscapes", "CocoStuff10k", "CocoStuff164k", "DATASETS", "DatasetFilesError", "DatasetInfo",
    "PairedSegmentation", "PascalContext", "SPLITS", "SegmentationFolder", "SynthScapes", "VOCAug", "build_dataset",
    "check_dataset_files", "check_split_files", "dataset_info",
]
