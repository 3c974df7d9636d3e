"""Prepare ADE20K (the SceneParsing / ADEChallengeData2016 release, 150 classes) in the layout mmsegmentation
documents.

    python data_scripts/prepare_ade20k.py --root DIR [--download-dir DIR/downloads] [--url URL] [--skip-download]

Downloads ``ADEChallengeData2016.zip`` (about 920 MB) and unpacks its ``ADEChallengeData2016/`` folder into ROOT::

    ROOT/images/{training,validation}/ADE_<split>_<number>.jpg
    ROOT/annotations/{training,validation}/ADE_<split>_<number>.png   8-bit, 0 = other, 1..150 = classes
    ROOT/objectInfo150.txt, ROOT/sceneCategories.txt

Labels are unchanged (the loader drops 0 and shifts 1..150 to 0..149). No checksum is published; the script prints
the SHA-256 it computed after a download. The address and the archive layout could not be verified offline.
Idempotent: a finished extraction is skipped (marker file ROOT/.ADEChallengeData2016.zip.<hash>.extracted).
"""

from __future__ import annotations

import argparse

from download import (
    Archive, script_parser, fetch_archive, count_files, extract, print_summary,
)

ARCHIVE = Archive("http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                  sha1="219e1696abb36c8ba3a3afe7fb2f4b4606a897c7", checksum_source="https://github.com/dmlc/gluon-cv/blob/master/scripts/datasets/ade20k.py")
ARCHIVE_FOLDER = "ADEChallengeData2016"
SPLITS = ("training", "validation")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__, {"": ARCHIVE})
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root, progress = args.root, not args.no_progress
    archive = fetch_archive(args, "", ARCHIVE)
    extract(archive, root, strip=ARCHIVE_FOLDER, progress=progress)
    print_summary(f"ADE20K in {root}:",
                  {split: {"images": count_files(root / "images" / split, "*.jpg"),
                           "labels": count_files(root / "annotations" / split, "*.png")} for split in SPLITS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
