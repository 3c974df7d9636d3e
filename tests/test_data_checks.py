"""Tests of the data file check before training (``contrastseg.data.check_dataset_files``) and of the image types
the folder readers take, on fake trees in the real layouts (see test_real_datasets)."""

from __future__ import annotations

import io
import re
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from contrastseg.config import ExperimentConfig, smoke
from contrastseg.data import DatasetFilesError, check_dataset_files, check_split_files
from contrastseg.data.folder import MAX_LISTED
from contrastseg.data.real import ADE20K, READERS
from test_real_datasets import BUILDERS, HEIGHT, WIDTH, ade20k_tree

REAL_NAMES = sorted(BUILDERS)


def _ade20k_config(root: Path, **overrides) -> ExperimentConfig:
    return ExperimentConfig(dataset="ade20k", data_root=str(root), **overrides)


def _png_bytes(mode: str, size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    stream = io.BytesIO()
    Image.new(mode, size).save(stream, format="PNG")
    return stream.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# The check before training


def test_synthscapes_in_memory_has_no_files_to_check():
    assert check_dataset_files(smoke()) == {"train": 0, "val": 0}


@pytest.mark.parametrize("name", REAL_NAMES)
def test_good_trees_pass_and_every_file_of_each_split_is_counted(tmp_path, name):
    tree = BUILDERS[name](tmp_path / name)
    for split, expected in tree.expected.items():
        assert check_split_files(name, split, root=str(tree.root)) == 2 * len(expected)


def test_bad_files_of_both_splits_are_named_with_their_split(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    train_label = tree.root / "annotations" / "training" / "ADE_train_00000002.png"
    train_label.write_bytes(b"\x89PNG garbage" * 10)
    val_image = tree.root / "images" / "validation" / "ADE_val_00000001.jpg"
    val_image.unlink()
    val_image.symlink_to(tmp_path / "gone.jpg")  # listed in the folder, but it does not open
    with pytest.raises(DatasetFilesError) as error:
        check_dataset_files(_ade20k_config(tree.root))
    message = str(error.value)
    assert "'ade20k'" in message and str(tree.root) in message
    train_part, val_part = message.split("'train' split: ")[1].split("'val' split: ")
    assert "1 of its 4 files are bad" in train_part and str(train_label) in train_part
    assert "cannot be opened as an image" in train_part
    assert "1 of its 2 files are bad" in val_part and f"{str(val_image)!r} does not exist" in val_part
    assert [(split, path) for split, path, _ in error.value.problems] == [("train", train_label), ("val", val_image)]


def test_training_stops_on_a_bad_val_file_before_its_first_step(tmp_path):
    from contrastseg.engine import train

    tree = ade20k_tree(tmp_path / "ade20k")
    val_label = tree.root / "annotations" / "validation" / "ADE_val_00000001.png"
    val_label.write_bytes(b"not a png")
    cfg = smoke(dataset="ade20k", data_root=str(tree.root), steps=2, checkpoint_every=1, num_train=0, num_val=0,
                batch_size=2)
    with pytest.raises(DatasetFilesError, match=re.escape(str(val_label))):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.ckpt").exists() and not (tmp_path / "run" / "log.jsonl").exists()


def test_label_size_and_mode_are_checked_from_the_headers(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    tree.label.write_bytes(_png_bytes("RGB"))
    other = tree.root / "annotations" / "training" / "ADE_train_00000002.png"
    other.write_bytes(_png_bytes("L", (10, 8)))
    with pytest.raises(DatasetFilesError) as error:
        check_split_files("ade20k", "train", root=str(tree.root))
    assert f"{str(tree.label)!r} has mode 'RGB'" in str(error.value)
    assert re.search(re.escape(repr(str(other))) + r" is 10x8 px but its image .*ADE_train_00000002.jpg.* is 16x12",
                     str(error.value))


def test_only_the_samples_training_reads_are_checked(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    (tree.root / "annotations" / "training" / "ADE_train_00000002.png").write_bytes(b"broken")
    assert check_dataset_files(_ade20k_config(tree.root, num_train=1)) == {"train": 2, "val": 2}
    with pytest.raises(DatasetFilesError, match="ADE_train_00000002.png"):
        check_dataset_files(_ade20k_config(tree.root, num_train=2))


def test_a_split_both_trained_and_evaluated_on_is_checked_once_at_its_longer_length(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    assert check_dataset_files(_ade20k_config(tree.root, eval_split="train", num_train=1, num_val=0)) == {"train": 4}


def test_a_long_list_of_bad_files_is_cut_and_counted(tmp_path):
    root = tmp_path / "ade20k"
    _write_ade20k_pngs(root, "training", 20)
    _write_ade20k_pngs(root, "validation", 1)
    for index in range(12):
        (root / "images" / "training" / f"ADE_train_{index:08d}.png").write_bytes(b"broken")
    with pytest.raises(DatasetFilesError) as error:
        check_dataset_files(_ade20k_config(root))
    message = str(error.value)
    assert "12 of its 40 files are bad" in message and f"and {12 - MAX_LISTED} more" in message
    assert message.count("cannot be opened") == MAX_LISTED and len(error.value.problems) == 12
    assert "'val' split" not in message


def test_a_split_that_cannot_be_built_keeps_its_error_type_and_names_the_split(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    for name in ("ADE_train_00000001", "ADE_train_00000002"):
        (tree.root / "annotations" / "training" / f"{name}.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"'train' split of data set 'ade20k'.*2 of 2 images have no label"):
        check_dataset_files(_ade20k_config(tree.root))
    with pytest.raises(FileNotFoundError, match=r"'val' split of data set 'ade20k'.*prepare_ade20k.py"):
        check_split_files("ade20k", "val", root=str(tmp_path / "absent"))


def _write_ade20k_pngs(root: Path, folder: str, count: int) -> None:
    """``count`` pairs of tiny PNG images and labels in the ADE20K layout, written from two byte strings."""
    image, label = _png_bytes("RGB"), _png_bytes("L")
    (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    prefix = "train" if folder == "training" else "val"
    for index in range(count):
        (root / "images" / folder / f"ADE_{prefix}_{index:08d}.png").write_bytes(image)
        (root / "annotations" / folder / f"ADE_{prefix}_{index:08d}.png").write_bytes(label)


def test_ten_thousand_files_are_checked_in_a_few_seconds(tmp_path):
    root = tmp_path / "ade20k"
    _write_ade20k_pngs(root, "training", 4000)
    _write_ade20k_pngs(root, "validation", 1000)
    began = time.perf_counter()
    checked = check_dataset_files(_ade20k_config(root, num_train=0, num_val=0))
    seconds = time.perf_counter() - began
    assert checked == {"train": 8000, "val": 2000}
    assert seconds < 8, f"checking 10,000 files took {seconds:.1f} s"  # about 1 s on a busy 2-core machine


# ----------------------------------------------------------------------------------------------------------------
# Image types of the folder layouts


def test_ade20k_reads_jpeg_and_png_images(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    images = tree.root / "images" / "training"
    Image.open(images / "ADE_train_00000002.jpg").save(images / "ADE_train_00000002.png")
    (images / "ADE_train_00000002.jpg").unlink()
    Image.open(images / "ADE_train_00000001.jpg").save(images / "ADE_train_00000003.jpeg", format="JPEG")
    (tree.root / "annotations" / "training" / "ADE_train_00000003.png").write_bytes(tree.label.read_bytes())
    dataset = ADE20K(tree.root, "train")
    assert dataset.image_ids == ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"]
    assert [path.suffix for path in dataset.image_paths] == [".jpg", ".png", ".jpeg"]
    image, label = dataset[1]
    assert image.shape == (3, HEIGHT, WIDTH) and label.shape == (HEIGHT, WIDTH)


def test_one_image_name_with_two_files_is_an_error_naming_both(tmp_path):
    tree = ade20k_tree(tmp_path / "ade20k")
    Image.open(tree.image).save(tree.image.with_suffix(".png"))
    with pytest.raises(ValueError, match=r"'ADE_train_00000001\.jpg' and 'ADE_train_00000001\.png'"):
        ADE20K(tree.root, "train")


@pytest.mark.parametrize("name", ["ade20k", "camvid"])
def test_files_a_folder_layout_skips_are_named_in_a_warning(tmp_path, name):
    tree = BUILDERS[name](tmp_path / name)
    (tree.image.parent / "notes.txt").write_text("not an image")
    Image.open(tree.image).save(tree.image.parent / "extra.bmp")
    (tree.image.parent / ".DS_Store").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"2 file\(s\) in .* are not read.*'extra\.bmp', 'notes\.txt'") as caught:
        dataset = READERS[name](tree.root, tree.split)
    assert ".DS_Store" not in str(caught[0].message)
    assert len(dataset) == len(tree.expected[tree.split])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        READERS[name](tree.root, "val")  # a folder without other files: no warning
