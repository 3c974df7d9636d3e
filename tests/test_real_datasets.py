"""Tests of the real data set readers (contrastseg.data.real) on fake trees in their real layouts, 12x16 px."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastseg.data import DATASETS, SPLITS, PairedSegmentation, SegmentationFolder, build_dataset
from contrastseg.data.folder import UNDEFINED_LABEL, identity_table, label_table
from contrastseg.data.label_tables import (
    ADE20K_CLASSES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, COCO_STUFF_182_TO_171, COCO_STUFF_CLASSES, VOC_PALETTE,
)
from contrastseg.data.partitions import image_ids
from contrastseg.data.real import READERS, Cityscapes, VOCAug

HEIGHT, WIDTH = 12, 16


def _stripes(values: list[int]) -> np.ndarray:
    """(HEIGHT, WIDTH) array of vertical stripes, one per value, left to right."""
    columns = np.array(values)[np.arange(WIDTH) * len(values) // WIDTH]
    return np.broadcast_to(columns, (HEIGHT, WIDTH)).copy()


def _write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_label(path: Path, values: list[int], palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(_stripes(values).astype(np.uint8))
    if palette:
        image.putpalette([channel for colour in VOC_PALETTE for channel in colour])
    image.save(path)


@dataclass
class FakeTree:
    """A data set tree written to disk, with what its reader must return.

    ``expected[split]`` maps each image id, in reading order, to the train ids of its label stripes. Sample 0 of
    ``split`` has a single label file (``label``), in a form where ``undefined_value`` is not a label value.
    """

    name: str
    root: Path
    split: str
    image: Path
    label: Path
    undefined_value: int
    expected: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def cityscapes_tree(root: Path) -> FakeTree:
    images, labels = root / "leftImg8bit", root / "gtFine"
    samples = [  # (split, city, name, label files {suffix: raw stripes}, expected train ids)
        ("train", "aachen", "aachen_000000_000019", {"labelIds": [7, 26, 0, 33, 255]}, [0, 13, 255, 18, 255]),
        ("train", "aachen", "aachen_000001_000019", {"labelTrainIds": [0, 18, 255]}, [0, 18, 255]),
        ("train", "bremen", "bremen_000000_000019", {"labelIds": [8, 24, 4]}, [1, 11, 255]),
        ("val", "frankfurt", "frankfurt_000000_000294", {"labelTrainIds": [5, 6], "labelIds": [7, 7]}, [5, 6]),
        ("test", "berlin", "berlin_000000_000019", {"labelIds": [0, 3]}, [255, 255]),
    ]
    for index, (split, city, name, label_files, _) in enumerate(samples):
        _write_image(images / split / city / f"{name}_leftImg8bit.png", index)
        for form, values in label_files.items():
            _write_label(labels / split / city / f"{name}_gtFine_{form}.png", values)
    return FakeTree("cityscapes", root, "train", images / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png",
                    labels / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", 34,
                    _expected(samples))


def camvid_tree(root: Path) -> FakeTree:
    samples = [
        ("train", "0001TP_006690", [0, 10, 11, 3], [0, 10, 255, 3]),
        ("train", "0001TP_006720", [255, 5], [255, 5]),
        ("val", "0016E5_07959", [1, 2], [1, 2]),
        ("test", "Seq05VD_f00000", [9, 11], [9, 255]),
    ]
    for index, (split, name, values, _) in enumerate(samples):
        _write_image(root / split / f"{name}.png", index)
        _write_label(root / f"{split}annot" / f"{name}.png", values)
    return FakeTree("camvid", root, "train", root / "train" / "0001TP_006690.png",
                    root / "trainannot" / "0001TP_006690.png", 12, _expected(samples))


def pascal_context_tree(root: Path) -> FakeTree:
    samples = [
        ("train", "2008_000002", [0, 1, 59], [255, 0, 58]),
        ("train", "2008_000003", [15, 37], [14, 36]),
        ("val", "2008_000005", [47, 0], [46, 255]),
    ]
    for index, (split, image_id, values, _) in enumerate(samples):
        _write_image(root / "JPEGImages" / f"{image_id}.jpg", index)
        _write_label(root / "SegmentationClassContext" / f"{image_id}.png", values)
    _write_image(root / "JPEGImages" / "2008_000099.jpg", 9)  # in no split list
    _write_lists(root / "ImageSets" / "SegmentationContext", samples)
    return FakeTree("pascal_context", root, "train", root / "JPEGImages" / "2008_000002.jpg",
                    root / "SegmentationClassContext" / "2008_000002.png", 60, _expected(samples))


def coco_stuff10k_tree(root: Path) -> FakeTree:
    samples = [
        ("train2014", "COCO_train2014_000000000077", [1, 171, 0], [0, 170, 255]),  # mmsegmentation's 10k form
        ("train2014", "COCO_train2014_000000000113", [82, 93], [81, 92]),
        ("test2014", "COCO_train2014_000000000165", [4, 255], [3, 255]),
    ]
    for index, (folder, name, values, _) in enumerate(samples):
        _write_image(root / "images" / folder / f"{name}.jpg", index)
        _write_label(root / "annotations" / folder / f"{name}_labelTrainIds.png", values)
    expected = _expected(samples)
    return FakeTree("coco_stuff10k", root, "train", root / "images" / "train2014" / f"{samples[0][1]}.jpg",
                    root / "annotations" / "train2014" / f"{samples[0][1]}_labelTrainIds.png", 172,
                    {"train": expected["train2014"], "val": expected["test2014"], "test": expected["test2014"]})


def coco_stuff164k_tree(root: Path) -> FakeTree:
    samples = [  # (folder, name, {label file suffix: raw stripes}, expected train ids)
        ("train2017", "000000000009", {".png": [0, 11, 12, 181, 255]}, [0, 255, 11, 170, 255]),
        ("train2017", "000000000025", {"_labelTrainIds.png": [170, 80, 255]}, [170, 80, 255]),
        ("val2017", "000000000139", {"_labelTrainIds.png": [4, 5], ".png": [0, 0]}, [4, 5]),
    ]
    for index, (folder, name, label_files, _) in enumerate(samples):
        _write_image(root / "images" / folder / f"{name}.jpg", index)
        for suffix, values in label_files.items():
            _write_label(root / "annotations" / folder / f"{name}{suffix}", values)
    expected = _expected(samples)
    return FakeTree("coco_stuff164k", root, "train", root / "images" / "train2017" / "000000000009.jpg",
                    root / "annotations" / "train2017" / "000000000009.png", 182,
                    {"train": expected["train2017"], "val": expected["val2017"]})


def ade20k_tree(root: Path) -> FakeTree:
    samples = [
        ("training", "ADE_train_00000001", [0, 1, 150, 255], [255, 0, 149, 255]),
        ("training", "ADE_train_00000002", [3, 4], [2, 3]),
        ("validation", "ADE_val_00000001", [13, 0], [12, 255]),
    ]
    for index, (folder, name, values, _) in enumerate(samples):
        _write_image(root / "images" / folder / f"{name}.jpg", index)
        _write_label(root / "annotations" / folder / f"{name}.png", values)
    expected = _expected(samples)
    return FakeTree("ade20k", root, "train", root / "images" / "training" / "ADE_train_00000001.jpg",
                    root / "annotations" / "training" / "ADE_train_00000001.png", 151,
                    {"train": expected["training"], "val": expected["validation"]})


def voc_aug_tree(root: Path) -> FakeTree:
    samples = [  # (split, id, {label folder: raw stripes}, expected train ids)
        ("train", "2007_000032", {"SegmentationClass": [0, 15, 255]}, [0, 15, 255]),
        ("train", "2007_000039", {"SegmentationClass": [1, 1], "SegmentationClassAug": [20, 1]}, [20, 1]),
        ("val", "2007_000033", {"SegmentationClass": [0, 7]}, [0, 7]),
        ("sbd", "2008_000008", {"SegmentationClassAug": [13, 0]}, [13, 0]),
    ]
    for index, (_, image_id, label_files, _) in enumerate(samples):
        _write_image(root / "JPEGImages" / f"{image_id}.jpg", index)
        for folder, values in label_files.items():
            _write_label(root / folder / f"{image_id}.png", values, palette=folder == "SegmentationClass")
    lists = root / "ImageSets" / "Segmentation"
    _write_lists(lists, samples)
    (lists / "aug.txt").write_text("2008_000008\n")  # mmsegmentation's aug.txt: the SBD additions only
    expected = _expected(samples)
    expected["aug"] = dict(sorted({**expected["train"], **expected.pop("sbd")}.items()))
    return FakeTree("voc_aug", root, "train", root / "JPEGImages" / "2007_000032.jpg",
                    root / "SegmentationClass" / "2007_000032.png", 21, expected)


def _expected(samples) -> dict[str, dict[str, list[int]]]:
    """Expected train ids by split and image id, sorted by id; a sample is (split, ..., id, raw, train ids)."""
    expected: dict[str, dict[str, list[int]]] = {}
    for sample in samples:
        expected.setdefault(sample[0], {})[sample[-3]] = sample[-1]
    return {split: dict(sorted(by_name.items())) for split, by_name in expected.items()}


def _write_lists(folder: Path, samples) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        ids = [sample[1] for sample in samples if sample[0] == split]
        (folder / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in reversed(ids)))


BUILDERS = {
    "cityscapes": cityscapes_tree, "camvid": camvid_tree, "pascal_context": pascal_context_tree,
    "coco_stuff10k": coco_stuff10k_tree, "coco_stuff164k": coco_stuff164k_tree, "ade20k": ade20k_tree,
    "voc_aug": voc_aug_tree,
}
REAL_NAMES = sorted(BUILDERS)


@pytest.fixture(params=REAL_NAMES)
def tree(request, tmp_path) -> FakeTree:
    return BUILDERS[request.param](tmp_path / request.param)


# ----------------------------------------------------------------------------------------------------------------
# Reading


def test_registry_covers_every_reader():
    assert set(READERS) == set(BUILDERS) == set(DATASETS) - {"synthscapes"}
    assert {name: SPLITS[name] for name in REAL_NAMES} == {name: reader.splits for name, reader in READERS.items()}


def test_every_split_reads_its_images_with_mapped_labels(tree):
    assert set(tree.expected) == set(SPLITS[tree.name])
    for split, expected in tree.expected.items():
        dataset = READERS[tree.name](tree.root, split)
        assert isinstance(dataset, PairedSegmentation)
        assert len(dataset) == len(expected) and dataset.image_ids == list(expected)
        for index, train_ids in enumerate(expected.values()):
            image, label = dataset[index]
            assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
            assert 0 <= image.min() and image.max() <= 1
            assert label.dtype == torch.int64
            assert torch.equal(label, torch.from_numpy(_stripes(train_ids))), f"{split} {index}"


def test_png_images_are_read_exactly(tmp_path):
    tree = camvid_tree(tmp_path)
    image, _ = READERS["camvid"](tree.root, "train")[0]
    stored = np.asarray(Image.open(tree.image))
    assert torch.equal(image, torch.from_numpy(stored.copy()).permute(2, 0, 1).float() / 255)


def test_build_dataset_by_name_with_length_and_augment(tree):
    dataset = build_dataset(tree.name, tree.split, root=str(tree.root))
    assert isinstance(dataset, READERS[tree.name]) and len(dataset) == len(tree.expected[tree.split])
    first = build_dataset(tree.name, tree.split, root=str(tree.root), length=1)
    assert len(first) == 1 and image_ids(first) == list(tree.expected[tree.split])[:1]
    augmented = build_dataset(tree.name, tree.split, root=str(tree.root), image_size=8, augment=True)
    torch.manual_seed(0)
    image, label = augmented[0]
    assert image.shape == (3, 8, 8) and label.shape == (8, 8) and label.dtype == torch.int64


def test_build_dataset_needs_a_root_for_real_data():
    with pytest.raises(ValueError, match="root folder"):
        build_dataset("ade20k", "train")


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="ade20k.*camvid.*cityscapes.*coco_stuff10k.*voc_aug"):
        build_dataset("ade", "train", root=str(tmp_path))


def test_unknown_split_lists_the_valid_ones(tree):
    with pytest.raises(ValueError, match=re.escape(", ".join(SPLITS[tree.name]))):
        READERS[tree.name](tree.root, "training")


def test_cityscapes_train_ids_are_read_before_label_ids(tmp_path):
    tree = cityscapes_tree(tmp_path)
    val = Cityscapes(tree.root, "val")
    assert val.label_paths[0].name.endswith("_gtFine_labelTrainIds.png")
    train = Cityscapes(tree.root, "train")
    assert [path.name.rsplit("_", 1)[1] for path in train.label_paths] == [
        "labelIds.png", "labelTrainIds.png", "labelIds.png"]
    assert train.image_ids == ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"]


def test_segmentation_folder_reads_train_ids_only(tmp_path):
    tree = cityscapes_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="aachen_000000_000019_leftImg8bit.png"):
        SegmentationFolder(tree.root, "train", 19)
    assert len(SegmentationFolder(tree.root, "val", 19)) == 1


def test_voc_palette_labels_are_read_as_indices(tmp_path):
    tree = voc_aug_tree(tmp_path)
    assert Image.open(tree.label).mode == "P"
    _, label = VOCAug(tree.root, "train")[0]
    assert torch.equal(label, torch.from_numpy(_stripes([0, 15, 255])))


def test_voc_aug_accepts_trainaug_and_rejects_val_images(tmp_path):
    tree = voc_aug_tree(tmp_path)
    lists = tree.root / "ImageSets" / "Segmentation"
    (lists / "aug.txt").unlink()
    (lists / "trainaug.txt").write_text("2007_000032\n2007_000039\n2008_000008\n")
    assert VOCAug(tree.root, "aug").image_ids == list(tree.expected["aug"])
    (lists / "aug.txt").write_text("2008_000008\n2007_000033\n")
    with pytest.raises(ValueError, match="val image.*2007_000033"):
        VOCAug(tree.root, "aug")


def test_image_listed_but_missing_names_the_file(tmp_path):
    tree = pascal_context_tree(tmp_path)
    tree.image.unlink()
    with pytest.raises(FileNotFoundError, match="train.txt.*2008_000002.jpg"):
        READERS["pascal_context"](tree.root, "train")


# ----------------------------------------------------------------------------------------------------------------
# Label tables and class tables


def test_class_tables_match_the_official_counts():
    expected = {"cityscapes": 19, "camvid": 11, "pascal_context": 59, "coco_stuff10k": 171, "coco_stuff164k": 171,
                "ade20k": 150, "voc_aug": 21}
    for name, num_classes in expected.items():
        info = DATASETS[name]
        assert info.num_classes == len(info.class_names) == len(info.palette) == num_classes
        assert len(set(info.class_names)) == num_classes and len(set(info.palette)) == num_classes
        assert info.ignore_index == 255
    assert (COCO_STUFF_CLASSES[0], COCO_STUFF_CLASSES[79], COCO_STUFF_CLASSES[80], COCO_STUFF_CLASSES[170]) == (
        "person", "toothbrush", "banner", "wood")
    assert (ADE20K_CLASSES[0], ADE20K_CLASSES[12], ADE20K_CLASSES[149]) == ("wall", "person", "flag")
    assert DATASETS["voc_aug"].class_names[0] == "background" and DATASETS["voc_aug"].palette[1] == (128, 0, 0)


def test_coco_stuff_182_to_171_table():
    table = COCO_STUFF_182_TO_171
    assert table.shape == (256,) and table.dtype == np.uint8
    assert (table[0], table[11], table[12], table[181], table[255]) == (0, 255, 11, 170, 255)
    used = [coco_id for coco_id in range(182) if table[coco_id] != 255]
    assert len(used) == 171 and [int(table[coco_id]) for coco_id in used] == list(range(171))
    assert table[182] == UNDEFINED_LABEL


def test_cityscapes_label_id_table():
    table = CITYSCAPES_LABEL_ID_TO_TRAIN_ID
    assert (table[7], table[26], table[33], table[0], table[255]) == (0, 13, 18, 255, 255)
    assert sorted(int(table[i]) for i in range(34) if table[i] != 255) == list(range(19))
    assert table[34] == UNDEFINED_LABEL


def test_label_table_helpers():
    table = label_table({3: 0, 4: 1}, ignored=[0])
    assert (table[3], table[4], table[0], table[255], table[5]) == (0, 1, 255, 255, UNDEFINED_LABEL)
    assert list(identity_table(3)[:4]) == [0, 1, 2, UNDEFINED_LABEL]


# ----------------------------------------------------------------------------------------------------------------
# Errors that name the file


def test_missing_root_names_the_prepare_script(tmp_path):
    scripts = {"cityscapes": "prepare_cityscapes.py", "camvid": "prepare_camvid.py",
               "pascal_context": "prepare_pascal_context.py", "coco_stuff10k": "prepare_coco_stuff.py --variant 10k",
               "coco_stuff164k": "prepare_coco_stuff.py --variant 164k", "ade20k": "prepare_ade20k.py",
               "voc_aug": "prepare_voc.py"}
    for name, reader in READERS.items():
        absent = tmp_path / "absent"
        with pytest.raises(FileNotFoundError, match=re.escape(f"data_scripts/{scripts[name]} --root {absent}")):
            reader(absent, reader.splits[0])


@pytest.mark.parametrize("name, removed, split, listed", [
    ("cityscapes", "leftImg8bit/val", "val", "train"),
    ("camvid", "val", "val", "test, testannot, train, trainannot, valannot"),
    ("pascal_context", "ImageSets/SegmentationContext/val.txt", "val", "train.txt"),
    ("coco_stuff10k", "images/test2014", "test", "train2014"),
    ("coco_stuff164k", "images/val2017", "val", "train2017"),
    ("ade20k", "images/validation", "val", "training"),
    ("voc_aug", "ImageSets/Segmentation/aug.txt", "aug", "train.txt, val.txt"),
])
def test_missing_split_lists_what_exists(tmp_path, name, removed, split, listed):
    tree = BUILDERS[name](tmp_path / name)
    path = tree.root / removed
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(listed)):
        READERS[name](tree.root, split)


def test_missing_label_file_names_the_image(tree):
    tree.label.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(tree.image.name) + ".*no label file"):
        READERS[tree.name](tree.root, tree.split)


def test_corrupt_image_names_the_file(tree):
    tree.image.write_bytes(b"\xff\xd8 this is not an image" * 10)
    dataset = READERS[tree.name](tree.root, tree.split)
    dataset[1]
    with pytest.raises(OSError, match=re.escape(tree.image.name)):
        dataset[0]


def test_corrupt_label_names_the_file(tree):
    tree.label.write_bytes(b"\x89PNG garbage" * 10)
    with pytest.raises(OSError, match=re.escape(tree.label.name)):
        READERS[tree.name](tree.root, tree.split)[0]


def test_undefined_label_value_names_the_file_and_value(tree):
    _write_label(tree.label, [0, tree.undefined_value])
    with pytest.raises(ValueError, match=re.escape(tree.label.name) + rf".*\[{tree.undefined_value}\]"):
        READERS[tree.name](tree.root, tree.split)[0]


def test_label_of_another_size_names_both_files(tree):
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(tree.label)
    with pytest.raises(ValueError, match=re.escape(tree.label.name) + ".*10x8.*" + re.escape(tree.image.name)):
        READERS[tree.name](tree.root, tree.split)[0]


def test_sixteen_bit_label_is_rejected(tree):
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint16)).save(tree.label)
    with pytest.raises(ValueError, match=re.escape(tree.label.name) + ".*mode"):
        READERS[tree.name](tree.root, tree.split)[0]
