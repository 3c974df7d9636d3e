"""Segmentation data read from disk: a generic reader of (image file, label file) pairs and the Cityscapes layout.

``PairedSegmentation`` reads any list of pairs. Each label file goes through a 256-entry lookup table from its raw
8-bit values to train ids, so one reader serves label files already in train ids and files in a data set's own ids
(Cityscapes label ids, ADE20K's 1-based classes, ...). A table entry is one of:

- a train id in ``[0, num_classes)``: the raw value names that class;
- 255 (``IGNORE_INDEX``): the raw value is defined but left out of the loss and the metrics (void, unlabelled,
  boundary). Raw 255 always maps to 255;
- anything else (``label_table`` writes ``UNDEFINED_LABEL``): the raw value is not defined by the label format, so
  a file that holds it is broken (a colour PNG saved as 8 bits, a label of another data set, a wrong conversion) and
  reading it raises an error that names the file and the raw values.

``SegmentationFolder`` reads the Cityscapes folder layout with train-id label PNGs; SynthScapes written by
``data_scripts/make_synthetic.py`` uses it with the city ``synthscapes``. The real data sets are in
``contrastseg.data.real``.

Problems with the files raise errors that name the file: missing folders and label files when the data set is built,
and unreadable images, undefined label values and size mismatches when a sample is read. ``file_problems`` finds the
unreadable files, wrong label modes and size mismatches of a whole data set up front from the file headers alone, so
that a bad file is reported before training rather than when it is first read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
IGNORE_INDEX = 255
UNDEFINED_LABEL = 254  # the table entry of raw values a label format does not define
TABLE_SIZE = 256
LABEL_MODES = ("L", "P")  # 8-bit grey or palette PNGs, read as raw values
MAX_LISTED = 5  # the bad files an error message lists; it also says how many there are in all
HEADER_CHUNK = 256  # pairs whose headers one worker thread reads per task
HEADER_THREADS = 8  # threads that read headers: the wait on a network file system's latency overlaps

LabelTable = np.ndarray  # (256,) uint8: raw label value -> train id, IGNORE_INDEX, or undefined


def label_table(train_ids: Mapping[int, int], ignored: Iterable[int] = ()) -> LabelTable:
    """A lookup table from raw 8-bit label values to train ids.

    Args:
        train_ids: raw value -> train id, for the raw values that name a class.
        ignored: raw values that are defined but not evaluated; they map to ``IGNORE_INDEX``, as 255 always does.

    Returns:
        (256,) uint8; every raw value not named maps to ``UNDEFINED_LABEL``, which readers report as an error.
    """
    table = np.full(TABLE_SIZE, UNDEFINED_LABEL, np.uint8)
    table[list(ignored)] = IGNORE_INDEX
    table[IGNORE_INDEX] = IGNORE_INDEX
    for raw_value, train_id in train_ids.items():
        table[raw_value] = train_id
    return table


def identity_table(num_classes: int) -> LabelTable:
    """The table of label files already in train ids: ``[0, num_classes)`` and 255 kept, other values undefined."""
    return label_table({value: value for value in range(num_classes)})


class PairedSegmentation(Dataset):
    """Images and labels read from a list of (image file, label file) pairs.

    Args:
        pairs: (image path, label path) per sample. Images are PNG or JPEG in any mode PIL converts to RGB; labels
            are 8-bit PNGs, grey ('L') or palette ('P', read as the palette indices).
        num_classes: number of train ids; mapped labels are in ``[0, num_classes)`` or 255.
        label_tables: raw value -> train id lookup (``label_table``), one (256,) uint8 table for every file or a
            sequence of one per pair; None means the labels are train ids already (``identity_table``).
        image_ids: one id per pair, the names split lists use; default: the image file name without its suffix.
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, num_classes) or 255 (ignore).
    """

    def __init__(self, pairs: Sequence[tuple[str | Path, str | Path]], num_classes: int,
                 label_tables: LabelTable | Sequence[LabelTable] | None = None, image_ids: Sequence[str] | None = None,
                 transform=None):
        if not 0 < num_classes <= UNDEFINED_LABEL:
            raise ValueError(f"num_classes must be in [1, {UNDEFINED_LABEL}], got {num_classes}")
        self.num_classes, self.transform = int(num_classes), transform
        self.image_paths = [Path(image_path) for image_path, _ in pairs]
        self.label_paths = [Path(label_path) for _, label_path in pairs]
        if label_tables is None:
            label_tables = identity_table(self.num_classes)
        if isinstance(label_tables, np.ndarray):
            label_tables = [label_tables] * len(self.image_paths)
        if len(label_tables) != len(self.image_paths):
            raise ValueError(f"{len(label_tables)} label tables for {len(self.image_paths)} pairs")
        for table in label_tables:
            if table.shape != (TABLE_SIZE,) or table.dtype != np.uint8:
                raise ValueError(f"a label table must be ({TABLE_SIZE},) uint8, got {table.shape} {table.dtype}")
        self.label_tables = list(label_tables)
        if image_ids is None:
            image_ids = [path.stem for path in self.image_paths]
        if len(image_ids) != len(self.image_paths):
            raise ValueError(f"{len(image_ids)} image ids for {len(self.image_paths)} pairs")
        self._image_ids = list(image_ids)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def image_ids(self) -> list[str]:
        """One id per sample: the image file name without its suffix, the names that split lists use."""
        return list(self._image_ids)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as checked arrays: image (H, W, 3) uint8 and label (H, W) uint8 in train ids."""
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        image = np.asarray(open_image(image_path).convert("RGB"))
        label_image = open_image(label_path)
        if label_image.mode not in LABEL_MODES:
            raise ValueError(f"label file {str(label_path)!r} has mode {label_image.mode!r}; "
                             f"expected an 8-bit grey ('L') or palette ('P') PNG")
        raw_label = np.asarray(label_image)
        if raw_label.shape != image.shape[:2]:
            raise ValueError(f"label {str(label_path)!r} is {raw_label.shape[1]}x{raw_label.shape[0]} px but its "
                             f"image {str(image_path)!r} is {image.shape[1]}x{image.shape[0]} px")
        table = self.label_tables[index]
        raw_values = np.flatnonzero(np.bincount(raw_label.ravel(), minlength=TABLE_SIZE))
        train_ids = table[raw_values]
        undefined = raw_values[(train_ids >= self.num_classes) & (train_ids != IGNORE_INDEX)]
        if undefined.size:
            raise ValueError(f"label file {str(label_path)!r} has values {undefined.tolist()} that its label format "
                             f"does not define (train ids are [0, {self.num_classes}) and {IGNORE_INDEX} = ignore)")
        return image, np.take(table, raw_label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(*self.read(index), self.transform)

    def file_problems(self, indices: Sequence[int] | None = None) -> list[tuple[Path, str]]:
        """What is wrong with the files of the samples ``indices`` (default: all), from their headers alone.

        See ``file_problems``; no pixel data is decoded, so undefined label values are found only when a sample is
        read.

        Returns:
            (file, what is wrong) per problem, in sample order; empty when every file opens and every pair agrees.
        """
        indices = range(len(self)) if indices is None else indices
        return file_problems([(self.image_paths[index], self.label_paths[index]) for index in indices])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, num_classes={self.num_classes})"


class SegmentationFolder(PairedSegmentation):
    """Images and labels read from a Cityscapes-like folder tree.

    Layout under ``root``::

        leftImg8bit/<split>/<city>/<name>_leftImg8bit.png           RGB image
        gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png       8-bit label, train ids, 255 = ignore

    Subclasses accept more label forms through ``label_forms`` (``contrastseg.data.real.Cityscapes`` adds the
    ``_gtFine_labelIds.png`` form).

    Args:
        root: data set root, holding ``leftImg8bit/`` and ``gtFine/``.
        split: split folder name, e.g. "train" or "val".
        num_classes: label values must be in ``[0, num_classes)`` or 255.
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, num_classes) or 255 (ignore).
    """

    # (label file suffix, lookup table or None for train ids), in order of preference
    label_forms: tuple[tuple[str, LabelTable | None], ...] = ((LABEL_SUFFIX, None),)
    missing_root_hint = ("for the synthetic data set, make it with `python data_scripts/make_synthetic.py --root "
                         "{root}`, or leave the root empty to generate SynthScapes on the fly")

    def __init__(self, root: str | Path, split: str, num_classes: int, transform=None):
        self.root, self.split = Path(root), split
        if not self.root.is_dir():
            raise FileNotFoundError(f"data root {str(self.root)!r} does not exist; "
                                    + self.missing_root_hint.format(root=self.root))
        image_dir = require_folder(self.root / "leftImg8bit" / split, self.root, "split folder")
        label_dir = self.root / "gtFine" / split
        image_paths = find_images(image_dir, f"*/*{IMAGE_SUFFIX}", f"<city>/<name>{IMAGE_SUFFIX}")
        names = [path.name[:-len(IMAGE_SUFFIX)] for path in image_paths]
        identity = identity_table(num_classes)

        def label_candidates(image_path: Path, name: str) -> list[tuple[Path, LabelTable]]:
            city_dir = label_dir / image_path.parent.name
            return [(city_dir / f"{name}{suffix}", identity if table is None else table)
                    for suffix, table in self.label_forms]

        label_paths, tables = pair_labels(image_paths, label_candidates, names)
        super().__init__(list(zip(image_paths, label_paths)), num_classes, tables, names, transform)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, num_classes={self.num_classes})"


def to_tensors(image: np.ndarray, label: np.ndarray, transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A data set sample from arrays: (H, W, 3) uint8 image and (H, W) label -> tensors, then ``transform``.

    Shape:
        returns: image (3, H, W) float32 in [0, 1] (a copy: cached arrays stay untouched), label (H, W) int64.
    """
    image = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
    label = torch.from_numpy(label.astype(np.int64))
    return transform(image, label) if transform is not None else (image, label)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (PNG, JPEG, ...); an unreadable file raises an OSError that names it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError) as error:
        raise OSError(f"cannot read image file {str(path)!r}: {error}") from error


def pair_problems(image_path: Path, label_path: Path) -> list[tuple[Path, str]]:
    """What is wrong with one (image, label) pair, from the two headers (see ``file_problems``)."""
    headers, problems = {}, []
    for path in (image_path, label_path):
        try:
            with Image.open(path) as image:  # reads the header; the pixels are decoded only by load()
                headers[path] = image.mode, image.size
        except FileNotFoundError:
            problems.append((path, "does not exist"))
        except (OSError, SyntaxError, ValueError) as error:
            reason = str(error).replace(f" {str(path)!r}", "")  # PIL's message may repeat the path
            problems.append((path, f"cannot be opened as an image ({reason})"))
    if label_path in headers and headers[label_path][0] not in LABEL_MODES:
        problems.append((label_path, f"has mode {headers[label_path][0]!r}; expected an 8-bit grey ('L') or "
                                     f"palette ('P') PNG"))
    if len(headers) == 2 and headers[image_path][1] != headers[label_path][1]:
        (label_width, label_height), (image_width, image_height) = headers[label_path][1], headers[image_path][1]
        problems.append((label_path, f"is {label_width}x{label_height} px but its image {str(image_path)!r} is "
                                     f"{image_width}x{image_height} px"))
    return problems


def file_problems(pairs: Sequence[tuple[Path, Path]]) -> list[tuple[Path, str]]:
    """What is wrong with the files of (image, label) pairs, from their headers alone (no pixel data is decoded).

    A problem is a file that does not exist, one that does not open as an image, a label file that is not 8-bit
    grey or palette, or a label whose size differs from its image's. The headers are read by a few threads, which
    overlap the per-file latency of network file systems.

    Args:
        pairs: (image path, label path) per sample.

    Returns:
        (file, what is wrong) per problem, in the order of ``pairs``; empty when all is well.
    """
    def chunk_problems(start: int) -> list[tuple[Path, str]]:
        return [problem for image_path, label_path in pairs[start:start + HEADER_CHUNK]
                for problem in pair_problems(Path(image_path), Path(label_path))]

    starts = range(0, len(pairs), HEADER_CHUNK)
    if len(starts) <= 1:
        return [problem for start in starts for problem in chunk_problems(start)]
    with ThreadPoolExecutor(min(HEADER_THREADS, len(starts))) as pool:
        return [problem for chunk in pool.map(chunk_problems, starts) for problem in chunk]


def require_folder(folder: Path, root: Path, what: str) -> Path:
    """``folder`` if it is a directory; otherwise a FileNotFoundError listing the folders next to it.

    Args:
        folder: the folder the layout needs.
        root: the data set root; the message lists the contents of the nearest existing folder between the two.
        what: what the folder is, for the message ("split folder", "image folder", ...).
    """
    if folder.is_dir():
        return folder
    existing = folder.parent
    while not existing.is_dir() and root in existing.parents:
        existing = existing.parent
    found = sorted(path.name for path in existing.iterdir() if path.is_dir()) if existing.is_dir() else []
    raise FileNotFoundError(f"{what} {str(folder)!r} does not exist; folders found in {str(existing)!r}: "
                            f"{', '.join(found) or 'none'}")


def find_images(folder: Path, pattern: str, expected: str) -> list[Path]:
    """The files in ``folder`` matching the glob ``pattern``, sorted; none raises a FileNotFoundError."""
    paths = sorted(folder.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no images found in {str(folder)!r} (expected {expected})")
    return paths


def pair_labels(image_paths: Sequence[Path], label_candidates: Callable[[Path, str], list[tuple[Path, LabelTable]]],
                names: Sequence[str]) -> tuple[list[Path], list[LabelTable]]:
    """The label file of each image: the first of its candidates that exists, with that candidate's table.

    Existence is looked up in one directory listing per label folder, which is fast on network file systems.

    Args:
        image_paths: the images.
        label_candidates: ``(image path, name) -> [(label path, table), ...]`` in order of preference.
        names: the name of each image, passed to ``label_candidates``.

    Raises:
        FileNotFoundError: images without any of their label files; the message says how many and names the first
            ``MAX_LISTED`` with their candidates.
    """
    listings: dict[Path, set[str]] = {}

    def exists(path: Path) -> bool:
        if path.parent not in listings:
            listings[path.parent] = set(os.listdir(path.parent)) if path.parent.is_dir() else set()
        return path.name in listings[path.parent]

    label_paths, tables, unlabeled = [], [], []
    for image_path, name in zip(image_paths, names):
        candidates = label_candidates(image_path, name)
        found = next(((path, table) for path, table in candidates if exists(path)), None)
        if found is None:
            unlabeled.append((image_path, " or ".join(repr(str(path)) for path, _ in candidates)))
            continue
        label_paths.append(found[0])
        tables.append(found[1])
    if len(unlabeled) == 1:
        image_path, expected = unlabeled[0]
        raise FileNotFoundError(f"image {str(image_path)!r} has no label file; expected {expected}")
    if unlabeled:
        listed = "; ".join(f"image {str(image_path)!r} (expected {expected})"
                           for image_path, expected in unlabeled[:MAX_LISTED])
        more = f"; and {len(unlabeled) - MAX_LISTED} more" if len(unlabeled) > MAX_LISTED else ""
        raise FileNotFoundError(f"{len(unlabeled)} of {len(image_paths)} images have no label file: {listed}{more}")
    return label_paths, tables
