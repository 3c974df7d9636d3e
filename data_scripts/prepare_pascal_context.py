"""Prepare PASCAL-Context (59 classes + background) in the layout mmsegmentation documents.

    python data_scripts/prepare_pascal_context.py --root DIR [--download-dir DIR/downloads] [--skip-download]
        [--workers N]

ROOT is the contents of ``VOCdevkit/VOC2010``. Downloads the VOC2010 trainval tar (1.3 GB, MD5 checked) and the
PASCAL-Context full annotations ``trainval.tar.gz`` (one ``trainval/<id>.mat`` per image holding ``LabelMap``, the
459-class ids; the class names come from ``labels.txt``, lines ``<id>: <name>``, taken from the tarball when it holds
one and downloaded next to it otherwise), and writes::

    ROOT/JPEGImages/<id>.jpg, ROOT/Annotations, ROOT/ImageSets/Main, ...     (VOC2010, unpacked)
    ROOT/SegmentationClassContext/<id>.png        8-bit: 0 = background / other, 1..59 = CONTEXT_59_CLASSES
    ROOT/ImageSets/SegmentationContext/train.txt  VOC2010 ImageSets/Main/train.txt ids with a label map (4998)
    ROOT/ImageSets/SegmentationContext/val.txt    VOC2010 ImageSets/Main/val.txt ids with a label map (5105)

Train id k is the k-th name of ``CONTEXT_59_CLASSES`` (alphabetical: mmsegmentation's class order), found in
labels.txt by name. Names are compared without case, spaces or punctuation, with a few known variants
(``diningtable`` = ``table``, ...); a class that labels.txt does not name stops the script. A ``59_labels.txt``
found in the tarball or the download folder is only checked against the list. The annotation archive has no
published checksum (the script prints the SHA-256 it computed after a download); the addresses, the MD5 and the
annotation layout could not be verified offline. Idempotent: finished extractions are skipped (marker files) and
existing label PNGs are kept.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from download import (
    Archive, no_published_checksum, script_parser, fetch_archive, convert_labels, count_files, download_dir, extract,
    print_summary, read_lines, write_lines,
)

CONTEXT_URL = "https://cs.stanford.edu/~roozbeh/pascal-context/"
ARCHIVES = {
    "voc2010": Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
                       md5="da459979d0c395079b5c75ee67908abb", checksum_source="https://github.com/pytorch/vision/blob/main/torchvision/datasets/voc.py"),
    "context": Archive(CONTEXT_URL + "trainval.tar.gz", filename="pascal-context-trainval.tar.gz",
                       checksum_source=no_published_checksum("the PASCAL-Context page publishes none")),
    "labels": Archive(CONTEXT_URL + "labels.txt", filename="pascal-context-labels.txt",
                      checksum_source=no_published_checksum("the PASCAL-Context page publishes none")),
}
CONTEXT_59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood")
# other spellings of the 59 names seen in label lists (normalised form -> CONTEXT_59_CLASSES name)
ALIASES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
SPLITS = ("train", "val")


def normalise_name(name: str) -> str:
    """Lower case, letters and digits only: ``"TV monitor"`` -> ``"tvmonitor"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_label_names(text: str) -> dict[int, str]:
    """Class names by id from a label list: lines ``<id>: <name>`` (also ``<id> <name>`` or tab-separated).

    Blank lines, ``#`` comments and lines without a leading id are skipped; a name may hold spaces.
    """
    names = {}
    for line in text.splitlines():
        match = re.match(r"\s*(\d+)\s*[:\t ]\s*(\S.*?)\s*$", line.split("#", 1)[0])
        if match:
            names[int(match.group(1))] = match.group(2)
    return names


def context_ids(names: dict[int, str]) -> dict[str, int]:
    """The 459-class id of each of the 59 classes, matched by name (exact normalised name first, then aliases).

    Raises:
        ValueError: a class has no match in ``names`` (the message lists them).
    """
    exact, aliased = {}, {}
    for class_id, name in sorted(names.items()):
        key = normalise_name(name)
        if key in CONTEXT_59_CLASSES:
            exact.setdefault(key, class_id)
        elif key in ALIASES:
            aliased.setdefault(ALIASES[key], class_id)
    found = {name: exact.get(name, aliased.get(name)) for name in CONTEXT_59_CLASSES}
    missing = [name for name, class_id in found.items() if class_id is None]
    if missing:
        raise ValueError(f"the PASCAL-Context label list names no class {missing} (of its {len(names)} classes); "
                         f"is it the full 459-class labels.txt?")
    return found


def context_table(names: dict[int, str]) -> np.ndarray:
    """(65536,) uint8: 459-class id -> 1..59 for the 59 classes, 0 (background / other) for every other id."""
    table = np.zeros(1 << 16, dtype=np.uint8)
    ids = context_ids(names)
    for train_id, name in enumerate(CONTEXT_59_CLASSES, 1):
        table[ids[name]] = train_id
    return table


def check_59_list(path: Path) -> None:
    """Warn when a 59_labels.txt names other classes than ``CONTEXT_59_CLASSES`` (it does not decide the ids)."""
    listed = {ALIASES.get(key, key) for key in map(normalise_name, parse_label_names(path.read_text()).values())}
    if listed != set(CONTEXT_59_CLASSES):
        print(f"note: {path} differs from the built-in 59 classes: extra {sorted(listed - set(CONTEXT_59_CLASSES))}, "
              f"missing {sorted(set(CONTEXT_59_CLASSES) - listed)}; the built-in list is used")


def _first(folder: Path, name: str) -> Path | None:
    return next(iter(sorted(folder.rglob(name))), None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__, ARCHIVES)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root, downloads, progress = args.root, download_dir(args), not args.no_progress

    def get(key: str) -> Path:
        return fetch_archive(args, key, ARCHIVES[key])

    extract(get("voc2010"), root, strip="VOCdevkit/VOC2010", progress=progress)
    annotations = extract(get("context"), downloads / "pascal-context-trainval", progress=progress)
    label_list = _first(annotations, "labels.txt") or get("labels")
    table = context_table(parse_label_names(label_list.read_text()))
    for candidate in (_first(annotations, "59_labels.txt"), downloads / "59_labels.txt"):
        if candidate is not None and candidate.is_file():
            check_59_list(candidate)

    label_maps = {path.stem: path for path in sorted(annotations.rglob("*.mat"))}
    if not label_maps:
        raise FileNotFoundError(f"no .mat label maps under {str(annotations)!r}: not the expected archive layout")
    output = root / "SegmentationClassContext"
    written, kept = convert_labels([(path, output / f"{image_id}.png") for image_id, path in label_maps.items()],
                                   table, key="LabelMap", workers=args.workers, desc="SegmentationClassContext",
                                   progress=progress)
    counts = {}
    for split in SPLITS:
        ids = [image_id for image_id in read_lines(root / "ImageSets" / "Main" / f"{split}.txt")
               if image_id in label_maps]
        write_lines(root / "ImageSets" / "SegmentationContext" / f"{split}.txt", ids)
        counts[split] = {"images": len(ids), "labels": sum((output / f"{image_id}.png").is_file() for image_id in ids)}
    print_summary(f"PASCAL-Context in {root} ({count_files(output, '*.png')} label maps: {written} written, "
                  f"{kept} kept):", counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
