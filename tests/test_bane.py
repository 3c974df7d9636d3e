"""BANE sampler: hand-built error regions with known rims, and a slow per-class scipy reference on random maps."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import ndimage

from contrastseg.methods.contextrast.bane import BaneSample, boundary_aware_negatives, negatives_mask
from contrastseg.samplers.distance import distance_transform

IGNORE = 255


def square_error_maps(size=12, top=3, side=6, true_class=1, predicted_class=2):
    """One correctly predicted image of class 0 with a ``side`` x ``side`` square of class 1 predicted as 2."""
    labels = torch.zeros(1, size, size, dtype=torch.int64)
    predictions = labels.clone()
    labels[0, top:top + side, top:top + side] = true_class
    predictions[0, top:top + side, top:top + side] = predicted_class
    return labels, predictions


def rim_of(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of the mask with a 4-neighbour outside it (inside the image), i.e. at distance 1."""
    return distance_transform(mask) == 1


def reference_bane(labels: torch.Tensor, predictions: torch.Tensor, fraction: float, max_per_class: int,
                   literal: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow oracle: a Python loop over classes and images, scipy's EDT, sorted() on (distance, flat index)."""
    labels_np, predictions_np = labels.cpu().numpy(), predictions.cpu().numpy()
    error = (labels_np != IGNORE) & (labels_np != predictions_np)
    distance = np.zeros(labels_np.shape, dtype=np.float64)
    selected = np.zeros(labels_np.shape, dtype=bool)
    for class_id in np.unique(labels_np[error]):
        class_error = error & (labels_np == class_id)
        for image in range(labels_np.shape[0]):
            region = class_error[image]
            if region.all():
                distance[image][region] = np.inf
            elif region.any():
                distance[image][region] = ndimage.distance_transform_edt(region)[region]
        flat_indices = np.flatnonzero(class_error)
        ranked = sorted(flat_indices, key=lambda index: (distance.reshape(-1)[index], index))
        quota = min(math.ceil(Fraction(str(fraction)) * len(ranked)), max_per_class)
        selected.reshape(-1)[ranked[:quota]] = True
    source = labels_np if literal else predictions_np
    negative_for = np.where(selected, source, -1)
    return selected, negative_for, distance


def random_maps(seed: int, shape=(3, 11, 14), num_classes=4):
    """Blobby labels (coarse grid upsampled), predictions with blobby errors, and a few ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = shape

    def blobs(values):
        coarse = torch.randint(0, values, (batch, 1, (height + 2) // 3, (width + 2) // 3), generator=generator)
        return torch.nn.functional.interpolate(coarse.float(), scale_factor=3, mode="nearest")[:, 0, :height, :width]

    labels = blobs(num_classes).long()
    wrong = blobs(3) == 0  # about a third of the image, in blobs
    predictions = torch.where(wrong, torch.randint(0, num_classes, shape, generator=generator), labels)
    predictions = torch.where(torch.rand(shape, generator=generator) < 0.05, (labels + 1) % num_classes, predictions)
    labels = torch.where(torch.rand(shape, generator=generator) < 0.05, IGNORE, labels)
    return labels, predictions


def assert_matches_reference(labels, predictions, fraction, max_per_class, literal=False):
    sample = boundary_aware_negatives(labels, predictions, fraction=fraction, max_per_class=max_per_class,
                                      ignore_index=IGNORE, literal=literal, tie_break="index")
    selected, negative_for, distance = reference_bane(labels, predictions, fraction, max_per_class, literal)
    np.testing.assert_array_equal(sample.selected.cpu().numpy(), selected)
    np.testing.assert_array_equal(sample.negative_for.cpu().numpy(), negative_for)
    np.testing.assert_allclose(sample.distance.cpu().numpy(), distance, rtol=0, atol=1e-5)
    return sample


def test_small_fraction_selects_rim_only_and_negative_for_predicted_class():
    labels, predictions = square_error_maps()
    error = labels == 1
    sample = boundary_aware_negatives(labels, predictions, fraction=0.2)
    assert isinstance(sample, BaneSample)
    assert sample.selected.shape == labels.shape and sample.selected.dtype == torch.bool
    assert sample.negative_for.dtype == torch.int64 and sample.distance.dtype == torch.float32
    assert sample.num_selected == math.ceil(0.2 * 36) == 8
    assert bool((sample.selected <= rim_of(error)).all())
    assert bool((sample.distance[sample.selected] == 1).all())
    assert torch.equal(sample.negative_for[sample.selected], torch.full((8,), 2))
    assert bool((sample.negative_for[~sample.selected] == -1).all())
    # distance on every error pixel, 0 elsewhere
    assert torch.equal(sample.distance, distance_transform(error))

    literal = boundary_aware_negatives(labels, predictions, fraction=0.2, literal=True,
                                       generator=torch.Generator().manual_seed(0))
    sample = boundary_aware_negatives(labels, predictions, fraction=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(literal.selected, sample.selected)
    assert torch.equal(literal.negative_for[literal.selected], torch.full((8,), 1))


def test_fraction_one_selects_whole_region():
    labels, predictions = square_error_maps()
    sample = boundary_aware_negatives(labels, predictions, fraction=1.0)
    assert torch.equal(sample.selected, labels == 1)


@pytest.mark.parametrize("fraction, max_per_class, expected", [
    (0.25, 1024, 9),  # exact: 36 / 4
    (0.3, 1024, 11),  # ceil(10.8)
    (0.001, 1024, 1),  # at least one
    (1.0, 1024, 36),
    (0.5, 5, 5),  # capped
    (1.0, 1, 1),
])
def test_quota_is_ceil_of_fraction_capped(fraction, max_per_class, expected):
    labels, predictions = square_error_maps()
    sample = boundary_aware_negatives(labels, predictions, fraction=fraction, max_per_class=max_per_class)
    assert sample.num_selected == expected


def test_quota_is_not_fooled_by_binary_floating_point():
    labels, predictions = square_error_maps(side=5)
    labels[0, 3:8, 8] = 1  # a 5 x 6 region: 30 pixels; 0.1 * 30 == 3.0000000000000004 in float64
    predictions[0, 3:8, 8] = 2
    assert boundary_aware_negatives(labels, predictions, fraction=0.1).num_selected == 3


def test_lowest_flat_indices_win_ties_and_result_is_deterministic():
    labels, predictions = square_error_maps()
    first = boundary_aware_negatives(labels, predictions, fraction=0.2, tie_break="index")
    second = boundary_aware_negatives(labels, predictions, fraction=0.2, tie_break="index")
    assert torch.equal(first.selected, second.selected) and torch.equal(first.negative_for, second.negative_for)
    # all 20 rim pixels are at distance 1; the 8 lowest flat indices: row 3 (cols 3..8), then row 4 cols 3 and 8
    expected = torch.zeros_like(first.selected)
    expected[0, 3, 3:9] = True
    expected[0, 4, 3] = expected[0, 4, 8] = True
    assert torch.equal(first.selected, expected)
    assert torch.equal(first.indices, torch.nonzero(expected.reshape(-1)).squeeze(1))


def test_selection_is_per_class_over_the_whole_batch():
    """A 2 x 2 error square in image 0 and a 6 x 6 one in image 1, same class: one quota for the class."""
    labels, predictions = square_error_maps()
    small_labels, small_predictions = square_error_maps(side=2)
    labels, predictions = torch.cat([small_labels, labels]), torch.cat([small_predictions, predictions])
    sample = boundary_aware_negatives(labels, predictions, fraction=0.5, tie_break="index")  # 20 of 24 rim pixels
    assert sample.num_selected == 20
    assert bool(sample.selected[0, 3:5, 3:5].all())  # the small square first (lower flat indices)
    assert int(sample.selected[1].sum()) == 16 and bool((sample.distance[sample.selected] == 1).all())


def test_random_ties_spread_the_picks_over_the_batch_and_keep_the_closest():
    """Two identical 6 x 6 error squares in two images: 20 rim pixels each at distance 1, a quota of 8."""
    labels, predictions = square_error_maps()
    labels, predictions = torch.cat([labels, labels]), torch.cat([predictions, predictions])
    picks_in_first_image = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        sample = boundary_aware_negatives(labels, predictions, fraction=0.1, generator=generator)
        assert sample.num_selected == 8 and bool((sample.distance[sample.selected] == 1).all())
        picks_in_first_image.append(int(sample.selected[0].sum()))
    assert sum(picks_in_first_image) / 400 == pytest.approx(4.0, abs=0.3)  # index ties would give 8
    again = [boundary_aware_negatives(labels, predictions, fraction=0.1, generator=torch.Generator().manual_seed(5))
             for _ in range(2)]
    assert torch.equal(again[0].selected, again[1].selected)


def test_touching_error_regions_of_different_classes_have_their_own_rims():
    labels = torch.zeros(1, 10, 12, dtype=torch.int64)
    predictions = labels.clone()
    labels[0, 2:8, 2:6], predictions[0, 2:8, 2:6] = 1, 2  # class 1 predicted as 2 ...
    labels[0, 2:8, 6:10], predictions[0, 2:8, 6:10] = 3, 1  # ... touching class 3 predicted as 1
    sample = boundary_aware_negatives(labels, predictions, fraction=1.0)
    per_class = distance_transform(labels == 1) + distance_transform(labels == 3)
    assert torch.equal(sample.distance, per_class)
    # on the shared edge each region is at its rim; the union of the errors would put it 2 pixels deep
    assert torch.equal(sample.distance[0, 4, 5:7], torch.tensor([1.0, 1.0]))
    assert torch.equal(distance_transform(labels != 0)[0, 4, 5:7], torch.tensor([3.0, 3.0]))
    assert torch.equal(sample.negative_for[0, 4, 5:7], torch.tensor([2, 1]))

    rims = boundary_aware_negatives(labels, predictions, fraction=0.5)  # 12 of 16 rim pixels per class
    assert int(rims.selected[labels == 1].sum()) == 12 and int(rims.selected[labels == 3].sum()) == 12
    assert bool((rims.distance[rims.selected] == 1).all())


def test_ignored_pixels_are_never_selected():
    labels, predictions = square_error_maps()
    labels[0, 5:7, :] = IGNORE  # a band through the square, predicted as anything
    predictions[0, 5:7, :] = 7
    sample = boundary_aware_negatives(labels, predictions, fraction=1.0, ignore_index=IGNORE)
    assert not bool(sample.selected[labels == IGNORE].any())
    assert torch.equal(sample.selected, labels == 1)
    assert bool((sample.distance[labels == IGNORE] == 0).all())
    assert bool((sample.negative_for[labels == IGNORE] == -1).all())


@pytest.mark.parametrize("case", ["correct", "all_ignored", "empty_batch"])
def test_no_errors_selects_nothing(case):
    labels, _ = square_error_maps()
    predictions = labels.clone()
    if case == "all_ignored":
        predictions = predictions + 1
        labels = torch.full_like(labels, IGNORE)
    elif case == "empty_batch":
        labels, predictions = labels[:0], predictions[:0]
    sample = boundary_aware_negatives(labels, predictions)
    assert sample.num_selected == 0 and sample.selected.shape == labels.shape
    assert bool((sample.negative_for == -1).all()) and bool((sample.distance == 0).all())
    assert negatives_mask(sample, torch.tensor([0, 1])).shape == (2, labels.numel())


def test_error_region_filling_an_image_has_inf_distance_and_is_ranked_last():
    full = torch.ones(1, 4, 4, dtype=torch.int64)  # image 0: all class 1, all predicted 2
    labels, predictions = square_error_maps(size=4, top=1, side=2)  # image 1: a 2 x 2 error square of class 1
    labels, predictions = torch.cat([full, labels]), torch.cat([full + 1, predictions])
    sample = boundary_aware_negatives(labels, predictions, fraction=0.5, tie_break="index")  # ceil(0.5 * 20) = 10
    assert bool(torch.isinf(sample.distance[0]).all())
    assert sample.num_selected == 10
    assert bool(sample.selected[1, 1:3, 1:3].all())  # the 4 finite distances first
    expected_full = torch.zeros(4, 4, dtype=torch.bool)
    expected_full[0, :] = True
    expected_full[1, :2] = True  # then 6 inf pixels, lowest flat indices first
    assert torch.equal(sample.selected[0], expected_full)
    everything = boundary_aware_negatives(labels, predictions, fraction=1.0)
    assert torch.equal(everything.selected, labels == 1)


def test_negatives_mask_rows():
    labels, predictions = random_maps(seed=5)
    sample = boundary_aware_negatives(labels, predictions, fraction=0.5)
    anchor_classes = torch.tensor([0, 1, 2, 3, 9, -1])
    mask = negatives_mask(sample, anchor_classes)
    assert mask.shape == (6, labels.numel()) and mask.dtype == torch.bool
    flat_negative_for = sample.negative_for.reshape(labels.shape[0], -1).flatten()
    for row, anchor_class in enumerate(anchor_classes.tolist()):
        expected = (flat_negative_for == anchor_class) & sample.selected.reshape(-1)
        assert torch.equal(mask[row], expected)
    assert not bool(mask[4:].any())  # a class with no negatives, and -1 (unselected pixels) never marked
    assert torch.equal(mask.sum(0).bool(), sample.selected.reshape(-1))
    assert torch.equal(mask.sum(0).bool().nonzero().squeeze(1), sample.indices)


@pytest.mark.parametrize("seed", range(6))
def test_matches_slow_reference_on_random_maps(seed):
    labels, predictions = random_maps(seed)
    for fraction, max_per_class in [(0.2, 1024), (0.05, 1024), (0.5, 7), (1.0, 1024), (0.3, 3)]:
        sample = assert_matches_reference(labels, predictions, fraction, max_per_class)
        assert sample.num_selected > 0
    assert_matches_reference(labels, predictions, 0.2, 1024, literal=True)


def test_matches_slow_reference_with_whole_image_errors():
    labels, predictions = random_maps(seed=11, shape=(3, 7, 9))
    labels[1], predictions[1] = 2, 0  # image 1: one error region filling it
    assert_matches_reference(labels, predictions, 0.5, 1024)
    assert_matches_reference(labels, predictions, 1.0, 1024)


def test_accepts_other_integer_dtypes():
    labels, predictions = random_maps(seed=2)
    expected = boundary_aware_negatives(labels, predictions, tie_break="index")
    sample = boundary_aware_negatives(labels.to(torch.uint8), predictions.int(), tie_break="index")
    assert torch.equal(sample.selected, expected.selected) and sample.negative_for.dtype == torch.int64


@pytest.mark.parametrize("kwargs, message", [
    ({"fraction": 0.0}, "fraction"),
    ({"fraction": 1.5}, "fraction"),
    ({"max_per_class": 0}, "max_per_class"),
    ({"predictions": torch.zeros(1, 3, 4, dtype=torch.int64)}, "shape"),
    ({"predictions": torch.zeros(1, 4, 4)}, "integer"),
    ({"labels": torch.zeros(4, 4, dtype=torch.int64)}, "labels"),
    ({"tie_break": "first"}, "tie_break"),
])
def test_rejects_bad_inputs(kwargs, message):
    arguments = {"labels": torch.zeros(1, 4, 4, dtype=torch.int64), "predictions": torch.ones(1, 4, 4,
                                                                                             dtype=torch.int64)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        boundary_aware_negatives(**arguments)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_reference():
    labels, predictions = random_maps(seed=3, shape=(4, 33, 47), num_classes=6)
    labels[2], predictions[2] = 1, 4
    expected = boundary_aware_negatives(labels, predictions, fraction=0.2, max_per_class=50, tie_break="index")
    sample = assert_matches_reference(labels.cuda(), predictions.cuda(), 0.2, 50)
    for field in ("selected", "negative_for", "distance"):
        assert getattr(sample, field).device.type == "cuda"
        assert torch.equal(getattr(sample, field).cpu(), getattr(expected, field))
    mask = negatives_mask(sample, torch.arange(6))
    assert mask.device.type == "cuda" and torch.equal(mask.cpu(), negatives_mask(expected, torch.arange(6)))
