"""Readers of the real data sets, in the folder layouts mmsegmentation documents (what people have on disk).

Each reader is a thin layout over ``PairedSegmentation``: it finds the (image, label) pairs of a split under a root
folder and picks the lookup table of each label file (``label_tables``). All yield ``(image, label)``: image
(3, H, W) float32 in [0, 1], label (H, W) int64 in ``[0, num_classes)`` or 255 (ignore). ``image_ids`` are the image
file names without their suffix, in sorted order; split lists and partitions name images by them.

========================  =======  ===================  ==========================================================
name                      classes  splits               label files
========================  =======  ===================  ==========================================================
``cityscapes``            19       train, val, test     train ids, or Cityscapes label ids mapped by the official
                                                        table
``camvid``                11       train, val, test     0..10 classes, 11 void -> 255
``pascal_context``        59       train, val           0 background -> 255, c -> c - 1
``coco_stuff10k``         171      train, val, test     train ids 0..170, 255 = unlabeled
``coco_stuff164k``        171      train, val           train ids 0..170, or raw 182-id stuffthingmaps mapped by
                                                        ``COCO_STUFF_182_TO_171``
``ade20k``                150      train, val           0 other -> 255, c -> c - 1
``voc_aug``               21       train, val, aug      train ids (0 = background), 255 = boundary
========================  =======  ===================  ==========================================================

Label checks. A raw value that a label format defines but does not evaluate (Cityscapes label ids outside the 19
classes, CamVid void, ADE20K 0, COCO-Stuff's unused thing ids, 255) maps to 255. A raw value the format does not
define at all is an error naming the file and the values: train ids >= num_classes other than 255, Cityscapes label
ids 34..254, CamVid 12..254, PASCAL-Context 60..254, ADE20K 151..254, raw COCO-Stuff ids 182..254. Such values
mean a broken or wrongly converted file, not an unlabelled pixel.

A missing root names the data script that writes the layout (``PREPARE_COMMANDS``); a missing split folder or split
list lists what exists; an image without a label file, an unreadable image, a size mismatch and an undefined
label value each raise an error that names the file. Readers that list an image folder read every image type their
layout allows (``IMAGE_SUFFIXES`` for COCO-Stuff and ADE20K) and name the other files they skip in a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from contrastseg.data.folder import (
    MAX_LISTED, LabelTable, PairedSegmentation, SegmentationFolder, pair_labels, require_folder,
)
from contrastseg.data.label_tables import (
    ADE20K_CLASSES, ADE20K_TO_TRAIN_ID, CAMVID_CLASSES, CAMVID_TO_TRAIN_ID, CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID, COCO_STUFF_182_TO_171, COCO_STUFF_CLASSES, COCO_STUFF10K_TRAIN_IDS,
    COCO_STUFF_TRAIN_IDS, PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_TO_TRAIN_ID, VOC_CLASSES, VOC_TRAIN_IDS,
)
from contrastseg.data.partitions import read_split_list

CITYSCAPES_LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
COCO_STUFF_TRAIN_ID_SUFFIX = "_labelTrainIds.png"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""The image files the ``images/<folder>`` layouts read (COCO-Stuff, ADE20K): JPEG as published, or PNG."""

# (label folder, label file suffix after the image name, lookup table), in order of preference
LabelForm = tuple[Path, str, LabelTable]
# what a layout found: (image path, label path) pairs, the lookup table of each label file, the image ids
FoundPairs = tuple[list[tuple[Path, Path]], list[LabelTable], list[str]]


PREPARE_COMMANDS = {
    "cityscapes": "data_scripts/prepare_cityscapes.py",
    "camvid": "data_scripts/prepare_camvid.py",
    "pascal_context": "data_scripts/prepare_pascal_context.py",
    "coco_stuff10k": "data_scripts/prepare_coco_stuff.py --variant 10k",
    "coco_stuff164k": "data_scripts/prepare_coco_stuff.py --variant 164k",
    "ade20k": "data_scripts/prepare_ade20k.py",
    "voc_aug": "data_scripts/prepare_voc.py",
}
"""The data script (and its options) that writes each data set in the layout its reader expects."""


def prepare_hint(name: str, root: str | Path) -> str:
    """How to make the missing root of data set ``name``, for error messages."""
    return f"make it with `python {PREPARE_COMMANDS[name]} --root {root}` (layout: contrastseg.data.real)"


def _check_split(name: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise ValueError(f"unknown {name} split {split!r}; valid splits: {', '.join(splits)}")


def _require_root(root: str | Path, name: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist; {prepare_hint(name, root)}")
    return root


def _pairs_in_folders(image_dir: Path, image_suffixes: tuple[str, ...], label_forms: list[LabelForm]) -> FoundPairs:
    """The pairs of every image in ``image_dir`` (``images_in_folder``), named by file name without suffix."""
    image_paths = images_in_folder(image_dir, image_suffixes)
    return _pairs_of_images(image_paths, [path.stem for path in image_paths], label_forms)


def images_in_folder(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The image files directly in ``folder`` whose suffix is one of ``suffixes`` (in any letter case), sorted.

    The other files are not read, and a warning names them (hidden files such as ``.DS_Store`` aside), so that
    images saved in another format are not dropped unnoticed.

    Raises:
        FileNotFoundError: no image file in ``folder``.
        ValueError: two image files with one name (``<name>.jpg`` and ``<name>.png``); the message names them.
    """
    names = sorted(entry.name for entry in os.scandir(folder) if not entry.is_dir() and not entry.name.startswith("."))
    images = [folder / name for name in names if Path(name).suffix.lower() in suffixes]
    skipped = [name for name in names if Path(name).suffix.lower() not in suffixes]
    if skipped:
        listed = ", ".join(repr(name) for name in skipped[:MAX_LISTED])
        more = f" and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
        warnings.warn(f"{len(skipped)} file(s) in {str(folder)!r} are not read, since image files there end in "
                      f"{', '.join(suffixes)}: {listed}{more}", stacklevel=2)
    if not images:
        raise FileNotFoundError(f"no images found in {str(folder)!r} (expected <name> with one of the suffixes "
                                f"{', '.join(suffixes)})")
    by_name: dict[str, list[Path]] = {}
    for path in images:
        by_name.setdefault(path.stem, []).append(path)
    clashes = [paths for paths in by_name.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(" and ".join(repr(path.name) for path in paths) for paths in clashes[:MAX_LISTED])
        raise ValueError(f"{len(clashes)} image name(s) in {str(folder)!r} have more than one file, so which one "
                         f"is the image is unclear: {listed}")
    return images


def _pairs_of_ids(ids: list[str], image_dir: Path, image_suffix: str, split_lists: list[Path],
                  label_forms: list[LabelForm]) -> FoundPairs:
    """The pairs of the images that split lists name: ``image_dir/<id><image_suffix>``, all of which must exist."""
    present = set(os.listdir(image_dir))
    missing = [image_id for image_id in ids if f"{image_id}{image_suffix}" not in present]
    if missing:
        lists = ", ".join(repr(str(path)) for path in split_lists)
        raise FileNotFoundError(f"split list {lists} names {len(missing)} image(s) missing from "
                                f"{str(image_dir)!r}, e.g. {str(image_dir / (missing[0] + image_suffix))!r}")
    return _pairs_of_images([image_dir / f"{image_id}{image_suffix}" for image_id in ids], ids, label_forms)


def _pairs_of_images(image_paths: list[Path], names: list[str], label_forms: list[LabelForm]) -> FoundPairs:
    def label_candidates(image_path: Path, name: str) -> list[tuple[Path, LabelTable]]:
        return [(folder / f"{name}{suffix}", table) for folder, suffix, table in label_forms]

    label_paths, tables = pair_labels(image_paths, label_candidates, names)
    return list(zip(image_paths, label_paths)), tables, names


def _split_lists(list_dir: Path, root: Path, *names: str) -> list[Path]:
    """The split lists ``list_dir/<name>.txt`` that exist; none raises a FileNotFoundError listing those that do."""
    require_folder(list_dir, root, "split list folder")
    paths = [list_dir / f"{name}.txt" for name in names]
    existing = [path for path in paths if path.is_file()]
    if not existing:
        wanted = " or ".join(repr(str(path)) for path in paths)
        found = sorted(candidate.name for candidate in list_dir.glob("*.txt"))
        raise FileNotFoundError(f"split list {wanted} does not exist; lists found in {str(list_dir)!r}: "
                                f"{', '.join(found) or 'none'}")
    return existing


class _RootedSegmentation(PairedSegmentation):
    """A real data set read from ``root``: the repr names the root and the split."""

    name = ""
    splits: tuple[str, ...] = ()

    def _open(self, root: str | Path, split: str) -> Path:
        _check_split(self.name, split, self.splits)
        self.root, self.split = _require_root(root, self.name), split
        return self.root

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"


class _ImagesAndAnnotations(_RootedSegmentation):
    """The ``images/<folder>/<name>.jpg`` + ``annotations/<folder>/<name><suffix>`` layout (COCO-Stuff, ADE20K).

    Images may also be ``.jpeg`` or ``.png`` files (``IMAGE_SUFFIXES``). Subclasses set ``split_folders``
    (split -> folder), ``label_forms`` ((suffix, label table) pairs, the first form present per image wins) and
    ``class_names``.
    """

    image_suffixes = IMAGE_SUFFIXES
    split_folders: dict[str, str] = {}
    label_forms: tuple[tuple[str, LabelTable], ...] = ()
    class_names: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        root = self._open(root, split)
        folder = self.split_folders[split]
        image_dir = require_folder(root / "images" / folder, root, "split folder")
        label_dir = require_folder(root / "annotations" / folder, root, "label folder")
        pairs, tables, ids = _pairs_in_folders(
            image_dir, self.image_suffixes, [(label_dir, suffix, table) for suffix, table in self.label_forms])
        super().__init__(pairs, len(self.class_names), tables, ids, transform)


class Cityscapes(SegmentationFolder):
    """Cityscapes fine annotations, 19 classes.

    Layout under ``root``::

        root/
        ├── leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png            RGB image
        └── gtFine/{train,val,test}/<city>/
            ├── <name>_gtFine_labelTrainIds.png    train ids 0..18, 255 = ignore (read when present)
            └── <name>_gtFine_labelIds.png         label ids 0..33 (-1 as 255), mapped by the official table

    ``image_ids`` are ``<name>`` (``<city>_<seq>_<frame>``). The test split's public labels are all ignore.

    Args:
        root: the Cityscapes root.
        split: "train", "val" or "test".
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 19) or 255 (ignore).
    """

    name = "cityscapes"
    splits = ("train", "val", "test")
    label_forms = (SegmentationFolder.label_forms[0], (CITYSCAPES_LABEL_ID_SUFFIX, CITYSCAPES_LABEL_ID_TO_TRAIN_ID))
    missing_root_hint = prepare_hint(name, "{root}")

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        _check_split(self.name, split, self.splits)
        super().__init__(root, split, len(CITYSCAPES_CLASSES), transform)


class CamVid(_RootedSegmentation):
    """CamVid, the 11-class version of SegNet (367 train, 101 val, 233 test images at 480x360).

    Layout under ``root``::

        root/
        ├── train/<name>.png          RGB image
        ├── trainannot/<name>.png     8-bit label: 0..10 classes, 11 = void -> 255
        ├── val/, valannot/
        └── test/, testannot/

    ``image_ids`` are ``<name>`` (e.g. ``0001TP_006690``).

    Args:
        root: the CamVid root.
        split: "train", "val" or "test".
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 11) or 255 (ignore).
    """

    name = "camvid"
    splits = ("train", "val", "test")

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        root = self._open(root, split)
        image_dir = require_folder(root / split, root, "split folder")
        label_dir = require_folder(root / f"{split}annot", root, "label folder")
        pairs, tables, ids = _pairs_in_folders(image_dir, (".png",), [(label_dir, ".png", CAMVID_TO_TRAIN_ID)])
        super().__init__(pairs, len(CAMVID_CLASSES), tables, ids, transform)


class PascalContext(_RootedSegmentation):
    """PASCAL-Context, 59 classes (4996 train, 5104 val images), as mmsegmentation's conversion writes it.

    Layout under ``root`` (the ``VOCdevkit/VOC2010`` folder)::

        root/
        ├── JPEGImages/<id>.jpg                          RGB image
        ├── SegmentationClassContext/<id>.png            8-bit label: 0 = background -> 255, c -> c - 1
        └── ImageSets/SegmentationContext/{train,val}.txt    one image id per line

    ``image_ids`` are the ids of the split list (e.g. ``2008_000002``), sorted.

    Args:
        root: the VOC2010 folder.
        split: "train" or "val".
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 59) or 255 (ignore).
    """

    name = "pascal_context"
    splits = ("train", "val")

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        root = self._open(root, split)
        split_lists = _split_lists(root / "ImageSets" / "SegmentationContext", root, split)
        image_dir = require_folder(root / "JPEGImages", root, "image folder")
        label_dir = require_folder(root / "SegmentationClassContext", root, "label folder")
        pairs, tables, ids = _pairs_of_ids(sorted(read_split_list(split_lists[0])), image_dir, ".jpg", split_lists,
                                           [(label_dir, ".png", PASCAL_CONTEXT_TO_TRAIN_ID)])
        super().__init__(pairs, len(PASCAL_CONTEXT_CLASSES), tables, ids, transform)


class CocoStuff10k(_ImagesAndAnnotations):
    """COCO-Stuff 10k, 171 classes (9000 train, 1000 test images).

    Layout under ``root``::

        root/
        ├── images/{train2014,test2014}/<name>.jpg                           RGB image (or .jpeg, .png)
        └── annotations/{train2014,test2014}/<name>_labelTrainIds.png       1..171, 0 = unlabeled

    The folder layout and label values of mmsegmentation's 10k converter (and ``data_scripts/prepare_coco_stuff.py
    --variant 10k``): train ids counted from 1, read as 0..170 with 0 -> 255 (mmsegmentation's
    ``reduce_zero_label``). Note the 164k version's files count from 0 instead. Splits: "train" reads train2014;
    "val" and "test" both read test2014, the 1000 evaluation images.
    ``image_ids`` are ``<name>`` (e.g. ``COCO_train2014_000000000077``).

    Args:
        root: the COCO-Stuff 10k root.
        split: "train", "val" or "test".
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 171) or 255 (ignore).
    """

    name = "coco_stuff10k"
    splits = ("train", "val", "test")
    split_folders = {"train": "train2014", "val": "test2014", "test": "test2014"}

    label_forms = ((COCO_STUFF_TRAIN_ID_SUFFIX, COCO_STUFF10K_TRAIN_IDS),)
    class_names = COCO_STUFF_CLASSES


class CocoStuff164k(_ImagesAndAnnotations):
    """COCO-Stuff 164k, 171 classes (118k train, 5k val images).

    Layout under ``root``::

        root/
        ├── images/{train2017,val2017}/<name>.jpg                            RGB image (or .jpeg, .png)
        └── annotations/{train2017,val2017}/
            ├── <name>_labelTrainIds.png    train ids 0..170, 255 = unlabeled (read when present)
            └── <name>.png                  raw stuffthingmaps: 0-based COCO ids 0..181, 255 = unlabeled,
                                            mapped by ``COCO_STUFF_182_TO_171``

    ``image_ids`` are ``<name>`` (e.g. ``000000000139``).

    Args:
        root: the COCO-Stuff 164k root.
        split: "train" (train2017) or "val" (val2017).
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 171) or 255 (ignore).
    """

    name = "coco_stuff164k"
    splits = ("train", "val")
    split_folders = {"train": "train2017", "val": "val2017"}

    label_forms = ((COCO_STUFF_TRAIN_ID_SUFFIX, COCO_STUFF_TRAIN_IDS), (".png", COCO_STUFF_182_TO_171))
    class_names = COCO_STUFF_CLASSES


class ADE20K(_ImagesAndAnnotations):
    """ADE20K SceneParsing (ADEChallengeData2016), 150 classes (20210 train, 2000 val images).

    Layout under ``root`` (the ``ADEChallengeData2016`` folder)::

        root/
        ├── images/{training,validation}/<name>.jpg          RGB image (or <name>.jpeg, <name>.png)
        └── annotations/{training,validation}/<name>.png     8-bit label: 0 = other -> 255, c -> c - 1

    ``image_ids`` are ``<name>`` (e.g. ``ADE_train_00000001``).

    Args:
        root: the ADEChallengeData2016 folder.
        split: "train" (training) or "val" (validation).
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 150) or 255 (ignore).
    """

    name = "ade20k"
    splits = ("train", "val")
    split_folders = {"train": "training", "val": "validation"}

    label_forms = ((".png", ADE20K_TO_TRAIN_ID),)
    class_names = ADE20K_CLASSES


class VOCAug(_RootedSegmentation):
    """PASCAL VOC 2012 with the SBD extra labels, 21 classes including background.

    Layout under ``root`` (the ``VOCdevkit/VOC2012`` folder)::

        root/
        ├── JPEGImages/<id>.jpg                       RGB image
        ├── SegmentationClassAug/<id>.png             8-bit label, train ids, 255 = ignore (read when present)
        ├── SegmentationClass/<id>.png                palette PNG: its indices are the train ids, 255 = boundary
        └── ImageSets/Segmentation/
            ├── train.txt                             1464 ids
            ├── val.txt                               1449 ids
            └── aug.txt and/or trainaug.txt           SBD additions (mmsegmentation's aug.txt: 9118 ids) or the
                                                      whole augmented set (trainaug.txt: 10582 ids)

    Splits: "train" and "val" read their lists; "aug" is the 10582-image augmented training set, the union of
    train.txt with aug.txt and trainaug.txt (whichever exist, at least one), so both mmsegmentation's aug.txt (SBD
    only) and a full 10582-id list give the same set. An aug id that val.txt also lists is an error. ``image_ids``
    are the ids (e.g. ``2007_000032``), sorted.

    Args:
        root: the VOC2012 folder.
        split: "train", "val" or "aug".
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, 21) or 255 (ignore).
    """

    name = "voc_aug"
    splits = ("train", "val", "aug")
    augmented_lists = ("aug", "trainaug")

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        root = self._open(root, split)
        list_dir = root / "ImageSets" / "Segmentation"
        image_dir = require_folder(root / "JPEGImages", root, "image folder")
        if split == "aug":
            split_lists = _split_lists(list_dir, root, "train") + _split_lists(list_dir, root, *self.augmented_lists)
        else:
            split_lists = _split_lists(list_dir, root, split)
        ids = set().union(*(read_split_list(path) for path in split_lists))
        val_list = list_dir / "val.txt"
        if split == "aug" and val_list.is_file():
            leaked = sorted(ids.intersection(read_split_list(val_list)))
            if leaked:
                lists = ", ".join(repr(str(path)) for path in split_lists)
                raise ValueError(f"the aug split ({lists}) holds {len(leaked)} val image(s), e.g. {leaked[:3]}")
        label_forms = [(root / "SegmentationClassAug", ".png", VOC_TRAIN_IDS),
                       (root / "SegmentationClass", ".png", VOC_TRAIN_IDS)]
        pairs, tables, ids = _pairs_of_ids(sorted(ids), image_dir, ".jpg", split_lists, label_forms)
        super().__init__(pairs, len(VOC_CLASSES), tables, ids, transform)


READERS: dict[str, type[PairedSegmentation]] = {
    reader.name: reader for reader in (Cityscapes, CamVid, PascalContext, CocoStuff10k, CocoStuff164k, ADE20K, VOCAug)
}
SPLITS: dict[str, tuple[str, ...]] = {name: reader.splits for name, reader in READERS.items()}
