"""Write the semi-supervised partitions of a training split as split lists (one labeled image id per line).

    python data_scripts/make_partitions.py --out DIR (--num-images N | --root ROOT) [--dataset synthscapes]

Writes ``DIR/1_16.txt``, ``1_8.txt``, ``1_4.txt`` and ``1_2.txt``: the labeled images of each partition, nested
(``contrastseg.data.partitions.partition_indices``). Without ``--root`` the ids are SynthScapes' first N training
images; with ``--root`` they are the training images found under ROOT (Cityscapes layout). A run uses a list with
``partition_file=DIR/1_8.txt``, or, for SynthScapes, simply ``label_fraction=0.125`` (the same images). Idempotent:
the lists depend only on the ids.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrastseg.data import build_dataset
from contrastseg.data.partitions import STANDARD_FRACTIONS, image_ids, partition_indices, write_split_list


def write_partitions(out: Path, ids: list[str], source: str) -> list[Path]:
    """One split list per standard fraction under ``out``; returns the paths."""
    paths = []
    for name, fraction in STANDARD_FRACTIONS:
        labeled = partition_indices(len(ids), fraction)
        path = out / f"{name}.txt"
        header = f"labeled images of the {name.replace('_', '/')} partition of {source} ({len(labeled)} of {len(ids)})"
        write_split_list(path, [ids[index] for index in labeled], header=header)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the split lists")
    parser.add_argument("--dataset", default="synthscapes")
    parser.add_argument("--root", default="", help="data set root (Cityscapes layout); empty: SynthScapes on the fly")
    parser.add_argument("--split", default="train", help='training split to partition (VOC: "aug")')
    parser.add_argument("--num-images", type=int, default=0, help="first N training images (0: the whole split)")
    args = parser.parse_args(argv)
    if not args.root and not args.num_images:
        parser.error("give --num-images N (SynthScapes on the fly) or --root ROOT")
    ids = image_ids(build_dataset(args.dataset, args.split, root=args.root, length=args.num_images or None))
    source = f"{args.dataset} train ({'first ' + str(args.num_images) if args.num_images else 'all'} images)"
    for path in write_partitions(args.out, ids, source):
        print(path)


if __name__ == "__main__":
    main()
