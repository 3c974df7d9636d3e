"""Prepare COCO-Stuff (171 classes: 80 things, 91 stuff) in the layout mmsegmentation documents.

    python data_scripts/prepare_coco_stuff.py --root DIR --variant {164k,10k} [--download-dir DIR/downloads]
        [--skip-download] [--workers N]

``--variant 164k`` (COCO 2017 images, about 19 GB of archives): downloads ``train2017.zip``, ``val2017.zip`` and
``stuffthingmaps_trainval2017.zip``, whose PNGs hold ids 0..181 of the 182-id space and 255 = unlabeled::

    ROOT/images/{train2017,val2017}/<name>.jpg
    ROOT/annotations/{train2017,val2017}/<name>_labelTrainIds.png     8-bit, train ids 0..170, 255 = ignore

``--variant 10k`` (the 2016 release, 9000 train + 1000 test images, about 2 GB): downloads
``cocostuff-10k-v1.1.zip``, whose ``annotations/<name>.mat`` hold an ``S`` array of ids 1..182 (0 = unlabeled),
split by ``imageLists/{train,test}.txt``::

    ROOT/images/{train2014,test2014}/<name>.jpg
    ROOT/annotations/{train2014,test2014}/<name>_labelTrainIds.png    8-bit, train ids 1..171, 0 = ignore

(the 10k label values of mmsegmentation's converter, counted from 1, so that trees made by either tool read alike).
Train ids drop the 11 thing ids COCO never used ({11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90} in the 0-based
182-id space) and renumber the other 171 in order (``contrastseg.data.label_tables.COCO_STUFF_182_TO_171``). The
raw label maps are unpacked in the download folder, not in ROOT. No checksums are published for these archives;
the script prints the SHA-256 it computed after a download. The addresses and archive layouts could not be
verified offline. Idempotent: finished extractions are skipped (marker files) and existing outputs are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from contrastseg.data.folder import IGNORE_INDEX, UNDEFINED_LABEL
from contrastseg.data.label_tables import COCO_STUFF_182_TO_171

from download import (
    Archive, no_published_checksum, script_parser, fetch_archive, convert_labels, count_files, download_dir, extract,
    place_files, print_summary, read_lines,
)

IMAGES_URL = "http://images.cocodataset.org/zips/"
STUFF_URL = "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/"
ARCHIVES = {
    "164k": {
        "train2017": Archive(IMAGES_URL + "train2017.zip", sha1="10ad623668ab00c62c096f0ed636d6aff41faca5",
                             checksum_source="https://github.com/dmlc/gluon-cv/blob/master/scripts/datasets/mscoco.py"),
        "val2017": Archive(IMAGES_URL + "val2017.zip", sha1="4950dc9d00dbe1c933ee0170f5797584351d2a41",
                           checksum_source="https://github.com/dmlc/gluon-cv/blob/master/scripts/datasets/mscoco.py"),
        "stuffthingmaps": Archive(STUFF_URL + "stuffthingmaps_trainval2017.zip", checksum_source=no_published_checksum(
            "neither the COCO-Stuff repository nor torchvision, TensorFlow Datasets or mmsegmentation list one")),
    },
    "10k": {"cocostuff-10k": Archive(STUFF_URL + "cocostuff-10k-v1.1.zip", checksum_source=no_published_checksum(
        "neither the COCO-Stuff repository nor torchvision, TensorFlow Datasets or mmsegmentation list one"))},
}
SPLITS = {"164k": ("train2017", "val2017"), "10k": ("train2014", "test2014")}
LABEL_SUFFIX = "_labelTrainIds.png"


def coco_stuff10k_table() -> np.ndarray:
    """(256,) uint8: a 10k ``S`` value (1..182, 0 = unlabeled) -> mmsegmentation's 10k train id (1..171, 0 =
    unlabeled); the unused thing ids -> 0, values the format does not define -> ``UNDEFINED_LABEL``."""
    table = np.full(256, UNDEFINED_LABEL, dtype=np.uint8)
    table[0] = 0
    train_ids = COCO_STUFF_182_TO_171[:182].astype(np.int64)
    table[1:183] = np.where(train_ids == IGNORE_INDEX, 0, train_ids + 1)
    return table


def _find_folder(top: Path, relative: str) -> Path:
    """The folder under ``top`` (at most two levels down) that holds ``relative``."""
    for candidate in (top, *sorted(path for path in top.glob("*") if path.is_dir()),
                      *sorted(path for path in top.glob("*/*") if path.is_dir())):
        if (candidate / relative).exists():
            return candidate
    raise FileNotFoundError(f"no {relative} under {str(top)!r}: not the expected archive layout")


def prepare_164k(args: argparse.Namespace, downloads: Path, progress: bool) -> tuple[int, int]:
    archives = {key: fetch_archive(args, key, archive) for key, archive in ARCHIVES["164k"].items()}
    for split in SPLITS["164k"]:
        extract(archives[split], args.root / "images", include=[split], progress=progress)
    raw_root = extract(archives["stuffthingmaps"], downloads / "stuffthingmaps_trainval2017", progress=progress)
    jobs = []
    for split in SPLITS["164k"]:
        raw_folder = _find_folder(raw_root, split) / split
        jobs += [(path, args.root / "annotations" / split / f"{path.stem}{LABEL_SUFFIX}")
                 for path in sorted(raw_folder.glob("*.png"))]
    return convert_labels(jobs, COCO_STUFF_182_TO_171, workers=args.workers, desc="labelTrainIds",
                          progress=progress)


def prepare_10k(args: argparse.Namespace, downloads: Path, progress: bool) -> tuple[int, int]:
    archive = fetch_archive(args, "cocostuff-10k", ARCHIVES["10k"]["cocostuff-10k"])
    source = _find_folder(extract(archive, downloads / "cocostuff-10k-v1.1", progress=progress),
                          "imageLists/train.txt")
    table = coco_stuff10k_table()
    images, labels = [], []
    for split, list_name in zip(SPLITS["10k"], ("train", "test")):
        names = [Path(line).stem for line in read_lines(source / "imageLists" / f"{list_name}.txt")]
        images += [(source / "images" / f"{name}.jpg", args.root / "images" / split / f"{name}.jpg") for name in names]
        labels += [(source / "annotations" / f"{name}.mat", args.root / "annotations" / split / f"{name}{LABEL_SUFFIX}")
                   for name in names]
    place_files(images, desc="images", progress=progress)
    return convert_labels(labels, table, key="S", workers=args.workers, desc="labelTrainIds", progress=progress)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__, {**ARCHIVES["164k"], **ARCHIVES["10k"]})
    parser.add_argument("--variant", choices=sorted(ARCHIVES), default="164k", help="which COCO-Stuff (default 164k)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    downloads, progress = download_dir(args), not args.no_progress
    prepare = prepare_164k if args.variant == "164k" else prepare_10k
    written, kept = prepare(args, downloads, progress)
    print_summary(f"COCO-Stuff {args.variant} in {args.root} (labels: {written} written, {kept} kept):",
                  {split: {"images": count_files(args.root / "images" / split, "*.jpg"),
                           "labels": count_files(args.root / "annotations" / split, f"*{LABEL_SUFFIX}")}
                   for split in SPLITS[args.variant]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
