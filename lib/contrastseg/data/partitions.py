"""Labeled / unlabeled partitions of a training split for semi-supervised learning, as split lists.

A split list is a text file with one image id per line (``#`` starts a comment); the labeled images of a partition
are the ids it lists, and the rest of the training split is unlabeled. This is the format of the published
semi-supervised splits (CPS, U2PL, UniMatch list one image per line), so the same reader serves PASCAL VOC and
Cityscapes later. An image id is the image file's name without its suffix (``SegmentationFolder.image_ids``);
SynthScapes generated on the fly uses the names that ``data_scripts/make_synthetic.py`` writes, so a split list
means the same images on the fly and on disk.

SynthScapes partitions come from ``partition_indices``: one seeded permutation of the training images, of which a
fraction f labels the first ``round(f * n)``, so the partitions are nested (every image labeled at 1/16 is labeled
at 1/8). ``data_scripts/make_partitions.py`` writes them as split lists; the committed lists under
``data_scripts/splits/`` are checked against this function by the tests.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from contrastseg.seeds import sample_seed

# the partitions the semi-supervised papers report, as (name used in file names, fraction)
STANDARD_FRACTIONS = (("1_16", 1 / 16), ("1_8", 1 / 8), ("1_4", 1 / 4), ("1_2", 1 / 2))
PARTITION_SEED = 0  # one fixed partition per (data set, size): a run's seed varies the model, not its labels


def partition_indices(num_images: int, fraction: float, seed: int = PARTITION_SEED) -> list[int]:
    """The labeled images of a nested, deterministic partition: ``round(fraction * num_images)`` (at least 1), sorted.

    Raises:
        ValueError: ``fraction`` outside (0, 1] or no images.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if num_images < 1:
        raise ValueError(f"cannot partition a training split of {num_images} images")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(sample_seed(seed, num_images)))
    count = max(1, round(fraction * num_images))
    return sorted(order[:count].tolist())


def image_ids(dataset: Dataset) -> list[str]:
    """The image ids of a data set (``image_ids`` of SynthScapes or SegmentationFolder), through Subsets."""
    if isinstance(dataset, Subset):
        ids = image_ids(dataset.dataset)
        return [ids[index] for index in dataset.indices]
    if not hasattr(dataset, "image_ids"):
        raise TypeError(f"{type(dataset).__name__} has no image ids, so split lists cannot name its images")
    return list(dataset.image_ids)


def read_split_list(path: str | Path) -> list[str]:
    """The image ids in a split list, in file order; blank lines and ``#`` comments are skipped.

    Raises:
        FileNotFoundError: no such file (the message names it).
        ValueError: the file lists no id, or an id twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {str(path)!r} does not exist")
    ids = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    ids = [image_id for image_id in ids if image_id]
    if not ids:
        raise ValueError(f"split list {str(path)!r} lists no image id")
    repeated = sorted(image_id for image_id, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"split list {str(path)!r} lists {repeated[:5]} more than once")
    return ids


def write_split_list(path: str | Path, ids: list[str], header: str = "") -> None:
    """Write ids one per line, after an optional ``#`` comment header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + "".join(f"{image_id}\n" for image_id in ids))


def split_labeled(image_ids: list[str], fraction: float = 1.0, split_list: str | Path = "") -> tuple[list[int],
                                                                                                       list[int]]:
    """Positions of the labeled and the unlabeled images of a training split.

    Args:
        image_ids: the training split's image ids, in data set order.
        fraction: share of labeled images (``partition_indices``), used when no split list is given.
        split_list: a split list file naming the labeled images; it overrides ``fraction``.

    Returns:
        (labeled, unlabeled): sorted positions into ``image_ids``; unlabeled is empty when every image is labeled.

    Raises:
        ValueError: the split list names an image that is not in the split (the message names the first ones).
    """
    if split_list:
        position = {image_id: index for index, image_id in enumerate(image_ids)}
        listed = read_split_list(split_list)
        unknown = [image_id for image_id in listed if image_id not in position]
        if unknown:
            raise ValueError(f"split list {str(split_list)!r} names {len(unknown)} image(s) not in the training "
                             f"split, e.g. {unknown[:3]}")
        labeled = sorted(position[image_id] for image_id in listed)
    else:
        labeled = partition_indices(len(image_ids), fraction)
    chosen = set(labeled)
    return labeled, [index for index in range(len(image_ids)) if index not in chosen]
