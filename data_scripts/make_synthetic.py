"""Write SynthScapes to disk in the Cityscapes layout, so it can be read like a real data set.

    python data_scripts/make_synthetic.py --root DIR [--image-size 128] [--seed 0]
        [--splits train val test unlabeled] [--num-train N] [--num-val N] [--num-test N] [--num-unlabeled N] [--force]

Writes ``DIR/leftImg8bit/<split>/synthscapes/synthscapes_<index>_leftImg8bit.png`` (RGB) and
``DIR/gtFine/<split>/synthscapes/synthscapes_<index>_gtFine_labelTrainIds.png`` (8-bit train ids, 255 = ignore), and
``DIR/synthscapes.json`` with the generator parameters. PNG is lossless: ``build_dataset("synthscapes", split,
root=DIR)`` returns exactly the samples generated on the fly with the same seed and size.

Idempotent: files that exist and read back at the right size are kept; ``--force`` rewrites everything. Samples
beyond a split's requested length (from an earlier, longer run) are deleted. A root made with another image size,
seed or generator knobs is refused unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from contrastseg.data.folder import IMAGE_SUFFIX, LABEL_SUFFIX
from contrastseg.data.synthscapes import DEFAULT_LENGTHS, SPLITS, SynthScapes, generator_parameters, sample_name

CITY = "synthscapes"
PARAMETERS_FILE = "synthscapes.json"


def sample_paths(root: Path, split: str, index: int) -> tuple[Path, Path]:
    """Image and label paths of sample ``index`` of ``split`` under ``root``."""
    name = sample_name(index)
    return (root / "leftImg8bit" / split / CITY / f"{name}{IMAGE_SUFFIX}",
            root / "gtFine" / split / CITY / f"{name}{LABEL_SUFFIX}")


def _readable(path: Path, image_size: int) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
            return image.size == (image_size, image_size)
    except (OSError, SyntaxError, ValueError):
        return False


def _remove_beyond(root: Path, split: str, length: int) -> int:
    """Delete this script's samples of ``split`` with an index >= ``length`` (left by a longer earlier run)."""
    removed = 0
    for folder, suffix in (("leftImg8bit", IMAGE_SUFFIX), ("gtFine", LABEL_SUFFIX)):
        for path in (root / folder / split / CITY).glob(f"{CITY}_*{suffix}"):
            index = path.name[len(CITY) + 1:-len(suffix)]
            if index.isdigit() and int(index) >= length:
                path.unlink()
                removed += folder == "leftImg8bit"
    return removed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="output folder")
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels, 64 to 512")
    parser.add_argument("--seed", type=int, default=0, help="SynthScapes seed")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to write")
    for split in SPLITS:
        parser.add_argument(f"--num-{split}", type=int, default=None,
                            help=f"images in {split} (default {DEFAULT_LENGTHS[split]})")
    parser.add_argument("--force", action="store_true", help="rewrite existing files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root: Path = args.root
    lengths = {split: getattr(args, f"num_{split}") for split in args.splits}
    lengths = {split: DEFAULT_LENGTHS[split] if n is None else n for split, n in lengths.items()}
    datasets = {split: SynthScapes(split, args.image_size, lengths[split], args.seed) for split in args.splits}

    parameters_path = root / PARAMETERS_FILE
    parameters = {"generator": "contrastseg.data.synthscapes", "image_size": args.image_size, "seed": args.seed,
                  "splits": {}, **generator_parameters()}
    if parameters_path.is_file():
        previous = json.loads(parameters_path.read_text())
        clash = [key for key in ("image_size", "seed", "knobs") if previous.get(key) != parameters[key]]
        if clash and not args.force:
            sys.exit(f"{root} holds SynthScapes made with other {', '.join(clash)} ({parameters_path}); "
                     f"use --force to rewrite it, or another --root")
        if not clash:
            parameters["splits"] = previous.get("splits", {})
    parameters["splits"].update(lengths)

    written = kept = removed = 0
    with tqdm(total=sum(lengths.values()), desc="synthscapes", unit="img") as progress:
        for split, dataset in datasets.items():
            progress.set_postfix_str(split)
            for index in range(len(dataset)):
                image_path, label_path = sample_paths(root, split, index)
                if not args.force and _readable(image_path, args.image_size) and _readable(label_path, args.image_size):
                    kept += 1
                else:
                    image, label = dataset.render(index)
                    image_path.parent.mkdir(parents=True, exist_ok=True)
                    label_path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(image_path)
                    Image.fromarray(label).save(label_path)
                    written += 1
                progress.update()
            removed += _remove_beyond(root, split, len(dataset))
    root.mkdir(parents=True, exist_ok=True)
    parameters_path.write_text(json.dumps(parameters, indent=2) + "\n")
    print(f"{root}: wrote {written} samples, kept {kept}, removed {removed} beyond the requested lengths; "
          f"parameters in {parameters_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
