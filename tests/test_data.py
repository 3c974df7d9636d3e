"""Tests of contrastseg.data: SynthScapes, the folder reader, the joint transforms, the registry, make_synthetic."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastseg.data import DATASETS, SegmentationFolder, SynthScapes, build_dataset, dataset_info
from contrastseg.data.transforms import train_transform
from contrastseg.data.synthscapes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, POLE, SPLITS
from data_scripts_loader import load_data_script

REPO = Path(__file__).resolve().parents[1]

make_synthetic = load_data_script("make_synthetic")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """A small SynthScapes tree on disk: 64 px, 6 train and 3 val images."""
    root = tmp_path_factory.mktemp("synthscapes")
    make_synthetic.main(["--root", str(root), "--image-size", "64", "--splits", "train", "val",
                         "--num-train", "6", "--num-val", "3"])
    return root


def _copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


# ----------------------------------------------------------------------------------------------------------------
# SynthScapes


def test_class_table():
    assert NUM_CLASSES == len(CLASS_NAMES) == len(PALETTE) >= 8
    assert IGNORE_INDEX == 255
    assert all(len(rgb) == 3 and all(0 <= c <= 255 for c in rgb) for rgb in PALETTE)


def test_same_sample_is_bit_identical_in_any_order():
    dataset = SynthScapes("train", image_size=64, seed=3)
    forward = [dataset.render(i) for i in range(4)]
    backward = [dataset.render(i) for i in reversed(range(4))][::-1]
    again = SynthScapes("train", image_size=64, seed=3)
    for (image_a, label_a), (image_b, label_b) in zip(forward, backward):
        assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)
    image, label = again[2]
    assert torch.equal(image, torch.from_numpy(forward[2][0].copy()).permute(2, 0, 1).float() / 255)
    assert torch.equal(label, torch.from_numpy(forward[2][1].copy()).long())


def _render_in_child(args):
    split, size, seed, index = args
    return SynthScapes(split, image_size=size, seed=seed).render(index)


@pytest.mark.multiprocess
def test_same_sample_in_another_process():
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        image, label = pool.map(_render_in_child, [("val", 64, 1, 5)])[0]
    here_image, here_label = SynthScapes("val", image_size=64, seed=1).render(5)
    assert np.array_equal(image, here_image) and np.array_equal(label, here_label)


def test_different_index_seed_or_split_differ():
    reference = SynthScapes("train", image_size=64, seed=0).render(0)
    others = [
        SynthScapes("train", image_size=64, seed=0).render(1),
        SynthScapes("train", image_size=64, seed=1).render(0),
        *(SynthScapes(split, image_size=64, seed=0).render(0) for split in SPLITS if split != "train"),
    ]
    for image, label in others:
        assert not np.array_equal(image, reference[0])
        assert not np.array_equal(label, reference[1])


@pytest.mark.parametrize("size", [64, 100, 256])
def test_shapes_dtypes_and_values(size):
    dataset = SynthScapes("train", image_size=size, length=3)
    assert len(dataset) == 3
    for index in range(3):
        image, label = dataset[index]
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert label.shape == (size, size) and label.dtype == torch.int64
        assert 0 <= image.min() and image.max() <= 1
        values = set(label.unique().tolist())
        assert values <= set(range(NUM_CLASSES)) | {IGNORE_INDEX}
    with pytest.raises(IndexError):
        dataset[3]


def test_scene_is_the_same_at_every_size():
    """The layout is drawn in normalised coordinates: a downsampled large label mostly agrees with a small one."""
    small = SynthScapes("train", image_size=64).render(7)[1]
    large = SynthScapes("train", image_size=256).render(7)[1]
    assert (large[2::4, 2::4] == small).mean() > 0.85


def test_default_lengths_and_length_override():
    assert [len(SynthScapes(split)) for split in SPLITS] == [512, 128, 128, 2048]
    assert len(SynthScapes("unlabeled", length=10)) == 10


@pytest.fixture(scope="module")
def train_label_counts() -> np.ndarray:
    """Pixel counts per label value over 48 train images at 64 px, and the number of images holding each value."""
    dataset = SynthScapes("train", image_size=64)
    counts, images = np.zeros(256, np.int64), np.zeros(256, np.int64)
    for index in range(48):
        per_image = np.bincount(dataset.render(index)[1].ravel(), minlength=256)
        counts += per_image
        images += per_image > 0
    return np.stack([counts, images])


def test_every_class_and_ignore_appear(train_label_counts):
    counts, _ = train_label_counts
    missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if counts[c] == 0]
    assert not missing, f"classes never drawn: {missing}"
    assert counts[IGNORE_INDEX] > 0
    assert counts[NUM_CLASSES:IGNORE_INDEX].sum() == 0


def test_pole_is_thin_and_rare_but_present(train_label_counts):
    counts, images = train_label_counts
    fraction = counts[POLE] / counts.sum()
    assert 0 < fraction < 0.02
    assert images[POLE] >= 24  # in at least half the images


def test_road_and_sidewalk_share_colours_as_do_sky_and_window():
    """Context classes: the per-image mean colours of the paired classes come from one distribution."""
    dataset = SynthScapes("train", image_size=64)
    means = {c: [] for c in CLASS_NAMES}
    for index in range(40):
        image, label = dataset.render(index)
        for class_id, name in enumerate(CLASS_NAMES):
            mask = label == class_id
            if mask.sum() > 20:
                means[name].append(image[mask].mean(0))
    for a, b in (("road", "sidewalk"), ("sky", "window")):
        gap = np.abs(np.mean(means[a], 0) - np.mean(means[b], 0)).max()
        spread = np.std(means[a], 0).max()
        assert gap < spread, f"{a} and {b} mean colours differ by {gap:.3f} > spread {spread:.3f}"


def test_image_size_out_of_range():
    for size in (63, 513):
        with pytest.raises(ValueError, match="between 64 and 512"):
            SynthScapes(image_size=size)


def test_unknown_split():
    with pytest.raises(ValueError, match="unlabeled"):
        SynthScapes("training")


# ----------------------------------------------------------------------------------------------------------------
# Registry


def test_registry_entries():
    info = dataset_info("synthscapes")
    assert DATASETS["synthscapes"] is info
    assert (info.num_classes, info.class_names, info.palette, info.ignore_index) == (
        NUM_CLASSES, CLASS_NAMES, PALETTE, IGNORE_INDEX)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="synthscapes"):
        build_dataset("cityscpaes", "train")
    with pytest.raises(ValueError, match="synthscapes"):
        dataset_info("nope")


def test_build_dataset_on_the_fly_and_augmented():
    plain = build_dataset("synthscapes", "val", image_size=64, length=4, seed=2)
    assert isinstance(plain, SynthScapes) and len(plain) == 4
    augmented = build_dataset("synthscapes", "val", image_size=64, length=4, seed=2, augment=True)
    torch.manual_seed(0)
    image, label = augmented[0]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64) and label.dtype == torch.int64


# ----------------------------------------------------------------------------------------------------------------
# Disk: make_synthetic and SegmentationFolder


def test_disk_round_trip_equals_on_the_fly(synthetic_root):
    for split, length in (("train", 6), ("val", 3)):
        from_disk = build_dataset("synthscapes", split, root=str(synthetic_root))
        on_the_fly = SynthScapes(split, image_size=64, seed=0)
        assert len(from_disk) == length
        for index in range(length):
            disk_image, disk_label = from_disk[index]
            image, label = on_the_fly[index]
            assert torch.equal(disk_image, image) and torch.equal(disk_label, label)
    assert (synthetic_root / "synthscapes.json").is_file()
    assert len(build_dataset("synthscapes", "train", root=str(synthetic_root), length=2)) == 2


def test_make_synthetic_is_idempotent(synthetic_root, tmp_path, capsys):
    root = _copy_tree(synthetic_root, tmp_path / "copy")
    image_path, _ = make_synthetic.sample_paths(root, "train", 1)
    image_path.write_bytes(b"broken")
    make_synthetic.main(["--root", str(root), "--image-size", "64", "--splits", "train", "--num-train", "6"])
    assert "wrote 1 samples, kept 5" in capsys.readouterr().out
    assert torch.equal(SegmentationFolder(root, "train", NUM_CLASSES)[1][0], SynthScapes("train", 64)[1][0])
    with pytest.raises(SystemExit, match="--force"):
        make_synthetic.main(["--root", str(root), "--image-size", "96", "--splits", "val", "--num-val", "1"])


def test_missing_root_says_how_to_make_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="make_synthetic.py --root") as error:
        build_dataset("synthscapes", "train", root=str(missing))
    assert str(missing) in str(error.value)


def test_missing_split_and_missing_label(synthetic_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="test"):
        SegmentationFolder(synthetic_root, "test", NUM_CLASSES)
    root = _copy_tree(synthetic_root, tmp_path / "copy")
    _, label_path = make_synthetic.sample_paths(root, "val", 2)
    label_path.unlink()
    with pytest.raises(FileNotFoundError, match="synthscapes_000002_leftImg8bit.png"):
        SegmentationFolder(root, "val", NUM_CLASSES)


def test_no_images_found(tmp_path):
    (tmp_path / "leftImg8bit" / "train" / "city").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images found"):
        SegmentationFolder(tmp_path, "train", NUM_CLASSES)


def test_corrupt_png_names_the_file(synthetic_root, tmp_path):
    root = _copy_tree(synthetic_root, tmp_path / "copy")
    image_path, _ = make_synthetic.sample_paths(root, "val", 1)
    image_path.write_bytes(b"\x89PNG this is not an image" * 10)
    dataset = SegmentationFolder(root, "val", NUM_CLASSES)
    dataset[0]
    with pytest.raises(OSError, match="synthscapes_000001_leftImg8bit.png"):
        dataset[1]


def test_label_value_out_of_range_names_the_file(synthetic_root, tmp_path):
    root = _copy_tree(synthetic_root, tmp_path / "copy")
    _, label_path = make_synthetic.sample_paths(root, "val", 0)
    label = np.asarray(Image.open(label_path)).copy()
    label[:4, :4] = 77
    Image.fromarray(label).save(label_path)
    with pytest.raises(ValueError, match=r"synthscapes_000000_gtFine_labelTrainIds.png.*\[77\]"):
        SegmentationFolder(root, "val", NUM_CLASSES)[0]


def test_image_and_label_sizes_must_match(synthetic_root, tmp_path):
    root = _copy_tree(synthetic_root, tmp_path / "copy")
    _, label_path = make_synthetic.sample_paths(root, "val", 0)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(label_path)
    with pytest.raises(ValueError, match="48x32"):
        SegmentationFolder(root, "val", NUM_CLASSES)[0]


# ----------------------------------------------------------------------------------------------------------------
# Transforms


def _blocks(size: int = 64, block: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A label of random 8 px blocks (values 0..3) and an image whose red channel encodes it; asymmetric."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 4, (size // block, size // block), generator=generator)
    label = cells.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = torch.stack([0.2 + 0.2 * label.float(), torch.full_like(label, 0.5, dtype=torch.float32),
                         torch.full_like(label, 0.5, dtype=torch.float32)])
    return image, label


def _decode(image: torch.Tensor) -> torch.Tensor:
    return ((image[0] - 0.2) / 0.2).round().clamp(0, 3).long()


def _away_from_edges(label: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood holds one label value (bilinear and nearest agree there)."""
    padded = torch.nn.functional.pad(label[None, None].float(), (1, 1, 1, 1), mode="replicate")
    high = torch.nn.functional.max_pool2d(padded, 3, stride=1)
    low = -torch.nn.functional.max_pool2d(-padded, 3, stride=1)
    return (high == low)[0, 0]


def test_transform_keeps_image_and_label_aligned():
    transform = train_transform(64, colour_jitter=0.0)
    image, label = _blocks()
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_label = transform(image, label)
        assert out_image.shape == (3, 64, 64) and out_label.shape == (64, 64) and out_label.dtype == torch.int64
        inside = _away_from_edges(out_label) & (out_label != IGNORE_INDEX)
        assert inside.float().mean() > 0.3
        assert torch.equal(_decode(out_image)[inside], out_label[inside]), f"seed {seed}: misaligned"
        mirrored = out_label.flip(-1)  # the check catches a flip applied to one of the two
        assert not torch.equal(_decode(out_image)[inside], mirrored[inside])


def test_transform_pads_with_ignore_only_and_is_seeded():
    transform = train_transform(64)
    image, label = _blocks()
    padded_somewhere = False
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_label = transform(image, label)
        assert set(out_label.unique().tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}
        padding = out_label == IGNORE_INDEX
        assert torch.all(out_image[:, padding] == 0)  # ignore exactly where the image was padded
        assert torch.all(out_image.sum(0)[~padding] > 0)
        padded_somewhere |= bool(padding.any())
        torch.manual_seed(seed)
        again_image, again_label = transform(image, label)
        assert torch.equal(out_image, again_image) and torch.equal(out_label, again_label)
    assert padded_somewhere


def test_transform_crops_rectangles_and_rescales_around_the_base_size():
    """A 512 x 1024 Cityscapes-style crop from a 128 x 256 image: with base 128 and scale [0.5, 2] the shorter side
    becomes 64..256, so the crop is padded at small scales and full at large ones."""
    image, label = torch.rand(3, 128, 256), torch.randint(0, 4, (128, 256))
    transform = train_transform((64, 128), (0.5, 2.0), colour_jitter=0.0, base_size=128)
    padded = []
    for seed in range(16):
        torch.manual_seed(seed)
        out_image, out_label = transform(image, label)
        assert out_image.shape == (3, 64, 128) and out_label.shape == (64, 128)
        padded.append(bool((out_label == IGNORE_INDEX).any()))
    assert not all(padded)  # scale factors >= 0.5 cover the 64-pixel crop height
    small = train_transform((64, 128), (0.25, 0.25), colour_jitter=0.0, base_size=128)
    torch.manual_seed(0)
    _, out_label = small(image, label)  # 32 x 64 after the rescale: three quarters of the crop is padding
    assert (out_label == IGNORE_INDEX).float().mean() == pytest.approx(0.75)


def test_transform_on_synthscapes_keeps_ignore_regions():
    transform = train_transform(64)
    image, label = SynthScapes("train", image_size=64)[0]
    torch.manual_seed(0)
    out_image, out_label = transform(image, label)
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist()) | {IGNORE_INDEX}
    assert out_image.dtype == torch.float32 and 0 <= out_image.min() and out_image.max() <= 1


def test_rendered_samples_are_cached_read_only_shared_and_equal_to_fresh_renders(monkeypatch):
    from contrastseg.data import synthscapes

    synthscapes.RENDERED.clear()
    renders = []
    original = synthscapes.render_scene
    monkeypatch.setattr(synthscapes, "render_scene", lambda *args: renders.append(args) or original(*args))
    cached = SynthScapes("train", image_size=64, length=8)
    first, again = cached.render(3), cached.render(3)
    assert first[0] is again[0] and not first[0].flags.writeable and len(renders) == 1
    shared = SynthScapes("train", image_size=64, length=8).render(3)  # another instance, the same sample
    assert shared[0] is first[0] and len(renders) == 1
    synthscapes.RENDERED.clear()
    fresh = SynthScapes("train", image_size=64, length=8).render(3)
    assert fresh[0] is not first[0] and len(renders) == 2
    assert np.array_equal(first[0], fresh[0]) and np.array_equal(first[1], fresh[1])
    image, label = cached[3]
    image += 1  # the tensors handed out are copies: the cache is untouched
    assert np.array_equal(cached.render(3)[0], fresh[0])
    other_seed = SynthScapes("train", image_size=64, length=8, seed=1).render(3)
    assert not np.array_equal(other_seed[0], fresh[0])  # the key holds the seed, the split and the size
    assert not np.array_equal(SynthScapes("val", image_size=64, length=8).render(3)[0], fresh[0])


def test_the_render_cache_keeps_no_more_than_its_budget(monkeypatch):
    from contrastseg.data import synthscapes

    synthscapes.RENDERED.clear()
    sample_bytes = 64 * 64 * 3 + 64 * 64
    monkeypatch.setattr(synthscapes, "CACHE_BYTES", 2 * sample_bytes)
    data = SynthScapes("train", image_size=64, length=8)
    for index in range(4):
        data.render(index)
    assert len(synthscapes.RENDERED.samples) == 2 and synthscapes.RENDERED.bytes == 2 * sample_bytes
    assert data.render(3)[0] is not data.render(3)[0]  # rendered anew, not kept
    synthscapes.RENDERED.clear()
