"""Prepare PASCAL VOC 2012 with the SBD augmentation ("aug", 10582 training images) in the layout mmsegmentation
documents.

    python data_scripts/prepare_voc.py --root DIR [--download-dir DIR/downloads] [--skip-download] [--workers N]
        [--semi-splits | --split-lists-url BASE [--split-names 1_16 1_8 1_4 1_2]]

ROOT is the contents of ``VOCdevkit/VOC2012``. Downloads the VOC2012 trainval tar (1.9 GB) and the SBD
``benchmark.tgz`` (1.4 GB; only ``benchmark_RELEASE/dataset/{cls,train.txt,val.txt}`` is unpacked, into the
download folder), both MD5 checked, and writes::

    ROOT/JPEGImages/<id>.jpg, ROOT/SegmentationClass/<id>.png, ROOT/ImageSets/Segmentation/{train,val}.txt, ...
    ROOT/SegmentationClassAug/<id>.png        8-bit class indices 0..20, 255 = boundary / ignore
    ROOT/ImageSets/Segmentation/aug.txt       (VOC train | SBD train | SBD val) - VOC val, sorted

SegmentationClassAug holds a label for every id of aug.txt and of VOC val: VOC's own SegmentationClass indices
where VOC has a label (VOC wins), SBD's ``GTcls.Segmentation`` otherwise.

Semi-supervised split lists (one labeled image id per line, ``contrastseg.data.partitions`` format):

- ``--semi-splits`` writes ``ROOT/splits/{1_16,1_8,1_4,1_2}.txt``: contrastseg's own nested, deterministic
  partitions of aug.txt (``partition_indices``). They are NOT the lists of CPS, U2PL or UniMatch.
- ``--split-lists-url BASE`` instead downloads ``BASE/<name>/labeled.txt`` for each ``--split-names`` entry and
  writes its ids to ``ROOT/splits/<name>.txt``, for the exact published lists; lines may be ids or image paths
  (``JPEGImages/<id>.jpg ...``). E.g. U2PL's repository keeps lists under
  ``https://raw.githubusercontent.com/Haochen-Wang409/U2PL/main/data/splits/pascal`` (not verified offline: check
  the folder names there).

The addresses, MD5 digests and archive layouts could not be verified offline. Idempotent: finished extractions are
skipped (marker files), existing label PNGs are kept and unchanged lists are not rewritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from contrastseg.data.partitions import STANDARD_FRACTIONS, partition_indices, read_split_list

from download import (
    Archive, script_parser, fetch_archive, convert_labels, count_files, download,
    download_dir, extract, print_summary, read_lines, write_lines,
)

ARCHIVES = {
    "voc2012": Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                       md5="6cd6e144f989b92b3379bac3b3de84fd", checksum_source="https://github.com/pytorch/vision/blob/main/torchvision/datasets/voc.py"),
    "sbd": Archive("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
                   "benchmark.tgz", md5="82b4d87ceb2ed10f6038a1cba92111cb",
                   checksum_source="https://github.com/pytorch/vision/blob/main/torchvision/datasets/sbd.py"),
}
SBD_FOLDER = "benchmark_RELEASE/dataset"
SBD_KEY = "GTcls.Segmentation"
REAL_AUG_SIZE = 10582
NOT_PUBLISHED_LISTS = ("contrastseg's own deterministic partition (contrastseg.data.partitions.partition_indices); "
                       "not the CPS, U2PL or UniMatch lists")


def aug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]) -> list[str]:
    """The aug training ids: (VOC train | SBD train | SBD val) - VOC val, sorted."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def label_sources(ids: list[str], voc_labels: Path, sbd_labels: Path) -> list[Path]:
    """The label file of each id: VOC's SegmentationClass PNG when there is one (VOC wins), else SBD's .mat.

    Raises:
        FileNotFoundError: an id has neither (the message names the first ones).
    """
    sources = [voc_labels / f"{image_id}.png" if (voc_labels / f"{image_id}.png").is_file()
               else sbd_labels / f"{image_id}.mat" for image_id in ids]
    missing = [image_id for image_id, source in zip(ids, sources) if not source.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids have no label in {str(voc_labels)!r} nor {str(sbd_labels)!r}, "
                                f"e.g. {missing[:3]}")
    return sources


def write_semi_splits(root: Path, ids: list[str]) -> list[Path]:
    """Nested split lists of ``ids`` for the standard fractions, ``root/splits/<name>.txt``."""
    paths = []
    for name, fraction in STANDARD_FRACTIONS:
        labeled = partition_indices(len(ids), fraction)
        path = root / "splits" / f"{name}.txt"
        write_lines(path, [ids[index] for index in labeled],
                    header=f"labeled images of the {name.replace('_', '/')} partition of VOC aug ({len(labeled)} of "
                           f"{len(ids)}): {NOT_PUBLISHED_LISTS}")
        paths.append(path)
    return paths


def ids_of_list(path: Path) -> list[str]:
    """Image ids of a published split list: the first field of each line, as a file name without folder or suffix."""
    return [Path(line.split()[0]).stem for line in read_lines(path) if not line.startswith("#")]


def fetch_split_lists(root: Path, downloads: Path, base_url: str, names: list[str], ids: list[str],
                      progress: bool) -> list[Path]:
    """Download ``<base_url>/<name>/labeled.txt`` per name and write its ids to ``root/splits/<name>.txt``.

    Raises:
        ValueError: a list names an image that is not in aug.txt (the message names the list and the first ones).
    """
    known, paths = set(ids), []
    for name in names:
        url = f"{base_url.rstrip('/')}/{name}/labeled.txt"
        listed = ids_of_list(download(url, downloads / "split-lists" / name / "labeled.txt", progress=progress))
        unknown = [image_id for image_id in listed if image_id not in known]
        if unknown:
            raise ValueError(f"{url} names {len(unknown)} images that are not in aug.txt, e.g. {unknown[:3]}")
        path = root / "splits" / f"{name}.txt"
        write_lines(path, listed, header=f"labeled images listed by {url} ({len(listed)} of {len(ids)})")
        read_split_list(path)  # refuses an empty list or repeated ids
        paths.append(path)
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__, ARCHIVES)
    lists = parser.add_mutually_exclusive_group()
    lists.add_argument("--semi-splits", action="store_true",
                       help="write contrastseg's own nested partitions of aug to ROOT/splits/ (not CPS/U2PL lists)")
    lists.add_argument("--split-lists-url", default="", metavar="BASE",
                       help="download BASE/<name>/labeled.txt for each --split-names entry into ROOT/splits/")
    parser.add_argument("--split-names", nargs="+", default=[name for name, _ in STANDARD_FRACTIONS],
                        help="folder names under BASE (default: 1_16 1_8 1_4 1_2)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root, downloads, progress = args.root, download_dir(args), not args.no_progress

    def get(key: str) -> Path:
        return fetch_archive(args, key, ARCHIVES[key])

    extract(get("voc2012"), root, strip="VOCdevkit/VOC2012", progress=progress)
    sbd = extract(get("sbd"), downloads / "SBD", strip=SBD_FOLDER, include=["cls", "train.txt", "val.txt"],
                  progress=progress)
    lists = root / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_lines(lists / "train.txt"), read_lines(lists / "val.txt")
    train = aug_ids(voc_train, voc_val, read_lines(sbd / "train.txt"), read_lines(sbd / "val.txt"))
    write_lines(lists / "aug.txt", train)

    labeled = sorted(set(train) | set(voc_val))
    sources = label_sources(labeled, root / "SegmentationClass", sbd / "cls")
    output = root / "SegmentationClassAug"
    written, kept = convert_labels([(source, output / f"{image_id}.png") for image_id, source in zip(labeled, sources)],
                                   np.arange(256, dtype=np.uint8), key=SBD_KEY, workers=args.workers,
                                   desc="SegmentationClassAug", progress=progress)
    if args.semi_splits:
        split_lists = write_semi_splits(root, train)
    elif args.split_lists_url:
        split_lists = fetch_split_lists(root, downloads, args.split_lists_url, args.split_names, train, progress)
    else:
        split_lists = []

    expected = "" if len(train) == REAL_AUG_SIZE else f" ({REAL_AUG_SIZE} with the full VOC2012 and SBD)"
    print_summary(f"PASCAL VOC 2012 + SBD in {root} (SegmentationClassAug: {written} written, {kept} kept, "
                  f"{count_files(output, '*.png')} in all):",
                  {f"aug{expected}": {"images": len(train)}, "val": {"images": len(voc_val)},
                   **{f"splits/{path.name}": {"labeled": len(read_split_list(path))} for path in split_lists}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
