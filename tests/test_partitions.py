"""Semi-supervised partitions: nested, deterministic, committed split lists equal to the function, clear errors."""

import time
from pathlib import Path

import pytest
import torch

from contrastseg.config import smoke
from contrastseg.data import build_dataset
from contrastseg.data.partitions import (STANDARD_FRACTIONS, image_ids, partition_indices, read_split_list,
                                         split_labeled, write_split_list)
from contrastseg.engine.train import build_training_sets
from data_scripts_loader import load_data_script

SPLITS = Path(__file__).resolve().parents[1] / "data_scripts" / "splits"


def test_partitions_are_nested_sized_and_deterministic():
    partitions = [partition_indices(512, fraction) for _, fraction in STANDARD_FRACTIONS]
    assert [len(p) for p in partitions] == [32, 64, 128, 256]
    for smaller, larger in zip(partitions, partitions[1:]):
        assert set(smaller) <= set(larger)
    assert partitions[0] == partition_indices(512, 1 / 16)
    assert partitions[0] == sorted(partitions[0]) and partitions[0] != list(range(32))
    assert partition_indices(512, 1.0) == list(range(512))
    assert len(partition_indices(10, 0.01)) == 1  # at least one labeled image


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_bad_fraction_raises(fraction):
    with pytest.raises(ValueError, match="label fraction"):
        partition_indices(100, fraction)


@pytest.mark.parametrize("num_images", [256, 512])
def test_committed_split_lists_are_the_functions_partitions(num_images):
    ids = image_ids(build_dataset("synthscapes", "train", length=num_images))
    for name, fraction in STANDARD_FRACTIONS:
        listed = read_split_list(SPLITS / f"synthscapes_train_{num_images}" / f"{name}.txt")
        assert listed == [ids[index] for index in partition_indices(num_images, fraction)]


def test_split_list_and_fraction_select_the_same_images(tmp_path):
    ids = [f"img_{index:03d}" for index in range(40)]
    path = tmp_path / "1_4.txt"
    write_split_list(path, [ids[index] for index in partition_indices(40, 0.25)], header="a test\npartition")
    assert path.read_text().startswith("# a test\n# partition\n")
    from_list = split_labeled(ids, split_list=path)
    from_fraction = split_labeled(ids, fraction=0.25)
    assert from_list == from_fraction
    labeled, unlabeled = from_list
    assert len(labeled) == 10 and sorted(labeled + unlabeled) == list(range(40))


def test_split_list_errors_name_the_file_and_the_ids(tmp_path):
    ids = ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        split_labeled(ids, split_list=tmp_path / "missing.txt")
    (tmp_path / "unknown.txt").write_text("a\nzzz\n")
    with pytest.raises(ValueError, match="zzz"):
        split_labeled(ids, split_list=tmp_path / "unknown.txt")
    (tmp_path / "twice.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="more than once"):
        read_split_list(tmp_path / "twice.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="no image id"):
        read_split_list(tmp_path / "empty.txt")


def test_image_ids_of_synthscapes_match_the_files_on_disk(tmp_path):
    from contrastseg.data import SegmentationFolder
    load_data_script("make_synthetic").main(["--root", str(tmp_path), "--image-size", "64", "--splits", "train",
                                             "--num-train", "5"])
    on_disk = SegmentationFolder(tmp_path, "train", 9)
    assert image_ids(on_disk) == image_ids(build_dataset("synthscapes", "train", length=5))
    assert image_ids(build_dataset("synthscapes", "train", root=str(tmp_path), length=3)) == on_disk.image_ids[:3]


def test_training_sets_follow_the_partition():
    labeled, unlabeled = build_training_sets(smoke(num_train=64, label_fraction=0.25))
    assert len(labeled) == 16 and len(unlabeled) == 48
    assert not set(labeled.indices) & set(unlabeled.indices)
    image, label = labeled[0]
    assert torch.equal(label, build_dataset("synthscapes", "train", length=64, image_size=64)[labeled.indices[0]][1])
    full_labeled, full_unlabeled = build_training_sets(smoke(num_train=64))
    assert len(full_labeled) == 64 and full_unlabeled.indices == full_labeled.indices  # "full": every image both ways


def test_make_partitions_script_writes_the_committed_lists(tmp_path):
    load_data_script("make_partitions").main(["--num-images", "256", "--out", str(tmp_path)])
    for name, _ in STANDARD_FRACTIONS:
        assert (tmp_path / f"{name}.txt").read_text() == (SPLITS / "synthscapes_train_256" / f"{name}.txt").read_text()


def test_a_long_split_list_reads_in_linear_time_and_names_its_duplicate(tmp_path):
    ids = [f"2008_{number:06d}" for number in range(100_000)]
    path = tmp_path / "long.txt"
    write_split_list(path, ids, header="100,000 ids")
    started = time.perf_counter()
    assert read_split_list(path) == ids
    assert time.perf_counter() - started < 0.5
    write_split_list(path, ids + [ids[123], ids[99_999]])
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"long\.txt.*\['2008_000123', '2008_099999'\] more than once"):
        read_split_list(path)
    assert time.perf_counter() - started < 0.5
