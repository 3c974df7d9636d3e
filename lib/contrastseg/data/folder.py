"""Segmentation data in the Cityscapes folder layout, with train-id label PNGs.

Layout under ``root``::

    leftImg8bit/<split>/<city>/<name>_leftImg8bit.png           RGB image
    gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png       8-bit label, train ids, 255 = ignore

SynthScapes written by ``data_scripts/make_synthetic.py`` uses this layout with the city ``synthscapes``. Problems
with the files raise errors that name the file: missing folders and label files when the data set is built, and
unreadable PNGs, out-of-range label values and size mismatches when a sample is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
IGNORE_INDEX = 255


class SegmentationFolder(Dataset):
    """Images and train-id labels read from a Cityscapes-like folder tree.

    Args:
        root: data set root, holding ``leftImg8bit/`` and ``gtFine/``.
        split: split folder name, e.g. "train" or "val".
        num_classes: label values must be in ``[0, num_classes)`` or 255.
        transform: joint callable ``(image, label) -> (image, label)`` applied to the tensors.

    Shape:
        image: (3, H, W) float32 in [0, 1].
        label: (H, W) int64, values in [0, num_classes) or 255 (ignore).
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, transform=None):
        self.root, self.split, self.num_classes, self.transform = Path(root), split, int(num_classes), transform
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {str(self.root)!r} does not exist; for the synthetic data set, make it with "
                f"`python data_scripts/make_synthetic.py --root {self.root}`, or leave the root empty to generate "
                f"SynthScapes on the fly")
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        if not image_dir.is_dir():
            found = sorted(p.name for p in (self.root / "leftImg8bit").glob("*") if p.is_dir())
            raise FileNotFoundError(f"split folder {str(image_dir)!r} does not exist; splits found under "
                                    f"{str(self.root / 'leftImg8bit')!r}: {', '.join(found) or 'none'}")
        self.image_paths = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.image_paths:
            raise FileNotFoundError(f"no images found in {str(image_dir)!r} (expected <city>/<name>{IMAGE_SUFFIX})")
        self.label_paths = []
        for image_path in self.image_paths:
            name = image_path.name[:-len(IMAGE_SUFFIX)]
            label_path = label_dir / image_path.parent.name / f"{name}{LABEL_SUFFIX}"
            if not label_path.is_file():
                raise FileNotFoundError(f"image {str(image_path)!r} has no label file; expected {str(label_path)!r}")
            self.label_paths.append(label_path)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def image_ids(self) -> list[str]:
        """Image names without the suffix (``<city>_<...>`` in Cityscapes), the ids that split lists use."""
        return [path.name[:-len(IMAGE_SUFFIX)] for path in self.image_paths]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as arrays, checked: image (H, W, 3) uint8 and label (H, W) uint8."""
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        image = np.array(_open_png(image_path).convert("RGB"))
        label_image = _open_png(label_path)
        if label_image.mode not in ("L", "P"):
            raise ValueError(f"label file {str(label_path)!r} has mode {label_image.mode!r}; "
                             f"expected an 8-bit ('L') PNG of train ids")
        label = np.array(label_image)
        if label.shape != image.shape[:2]:
            raise ValueError(f"label {str(label_path)!r} is {label.shape[1]}x{label.shape[0]} px but its image "
                             f"{str(image_path)!r} is {image.shape[1]}x{image.shape[0]} px")
        counts = np.bincount(label.ravel(), minlength=256)
        bad = [int(value) for value in np.flatnonzero(counts) if self.num_classes <= value < IGNORE_INDEX]
        if bad:
            raise ValueError(f"label file {str(label_path)!r} has values {bad} outside [0, {self.num_classes}) "
                             f"and not {IGNORE_INDEX} (ignore)")
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(*self.read(index), self.transform)

    def __repr__(self) -> str:
        return f"SegmentationFolder(root={str(self.root)!r}, split={self.split!r}, num_classes={self.num_classes})"


def to_tensors(image: np.ndarray, label: np.ndarray, transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A data set sample from arrays: (H, W, 3) uint8 image and (H, W) label -> tensors, then ``transform``.

    Shape:
        returns: image (3, H, W) float32 in [0, 1] (a copy: cached arrays stay untouched), label (H, W) int64.
    """
    image = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
    label = torch.from_numpy(label.astype(np.int64))
    return transform(image, label) if transform is not None else (image, label)


def _open_png(path: Path) -> Image.Image:
    """Open and fully decode an image file; an unreadable file raises an OSError that names it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError) as error:
        raise OSError(f"cannot read image file {str(path)!r}: {error}") from error
