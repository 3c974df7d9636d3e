"""Prepare Cityscapes (fine annotations) in the layout mmsegmentation documents.

    python data_scripts/prepare_cityscapes.py --root DIR [--download-dir DIR/downloads] [--workers N]

Cityscapes needs a login, so nothing is downloaded: without the archives the script exits (status 1) with the
steps to get them. With ``gtFine_trainvaltest.zip`` and ``leftImg8bit_trainvaltest.zip`` in the download folder it
extracts them (checked for unsafe members) into ROOT and writes, next to every ``*_gtFine_labelIds.png``, the
``*_gtFine_labelTrainIds.png`` of the official table (ids 7, 8, 11, 12, 13, 17, 19, 20, ..., 33 -> train ids 0..18,
every other id -> 255). Layout::

    ROOT/leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<name>_gtFine_labelIds.png          (and the other gtFine files)
    ROOT/gtFine/{train,val,test}/<city>/<name>_gtFine_labelTrainIds.png     written here

A ROOT that already holds both folders (extracted by hand) is converted without the archives. Idempotent: finished
extractions are skipped (marker files ROOT/.<archive>.extracted) and existing labelTrainIds files are kept.
Cityscapes publishes no checksums, so none is checked; the archive names and their internal layout follow the
Cityscapes site and cityscapesScripts and could not be verified against the real archives offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrastseg.data.label_tables import CITYSCAPES_LABEL_ID_TO_TRAIN_ID

from download import (script_parser, convert_labels, count_files, download_dir, extract,
                      print_summary, require_files)

ARCHIVES = ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip")
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def manual_download_steps(downloads: Path) -> list[str]:
    return [
        "Register (free, for research) at https://www.cityscapes-dataset.com/register/ and log in.",
        "On https://www.cityscapes-dataset.com/downloads/ download gtFine_trainvaltest.zip (241 MB) and "
        "leftImg8bit_trainvaltest.zip (11 GB).",
        f"Put both zips in {downloads} (or pass --download-dir with the folder that holds them).",
        "Run this script again with the same --root.",
    ]


def _already_extracted(root: Path) -> bool:
    return any((root / "gtFine").glob(f"*/*/*{LABEL_IDS_SUFFIX}")) and any(
        (root / "leftImg8bit").glob("*/*/*_leftImg8bit.png"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root, downloads, progress = args.root, download_dir(args), not args.no_progress
    present = [downloads / name for name in ARCHIVES if (downloads / name).is_file()]
    if len(present) < len(ARCHIVES) and _already_extracted(root):
        print(f"{root} holds extracted Cityscapes folders; converting those (archives not needed)")
    else:
        present = require_files(downloads, ARCHIVES, manual_download_steps(downloads),
                                title="Cityscapes needs a login, so this script cannot download it. To prepare it:")
    for archive in present:
        extract(archive, root, progress=progress)

    jobs = [(path, path.with_name(path.name[:-len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX))
            for path in sorted((root / "gtFine").glob(f"*/*/*{LABEL_IDS_SUFFIX}"))]
    written, kept = convert_labels(jobs, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, workers=args.workers, desc="labelTrainIds",
                                   progress=progress)
    splits = sorted(path.name for path in (root / "leftImg8bit").iterdir() if path.is_dir())
    print_summary(f"Cityscapes in {root} (labelTrainIds: {written} written, {kept} kept):",
                  {split: {"images": count_files(root / "leftImg8bit" / split, "*/*_leftImg8bit.png"),
                           "labels": count_files(root / "gtFine" / split, f"*/*{TRAIN_IDS_SUFFIX}")}
                   for split in splits})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
