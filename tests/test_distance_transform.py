"""Exact batched Euclidean distance transform, checked against scipy.ndimage.distance_transform_edt."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from contrastseg.samplers.distance import distance_transform


def scipy_reference(mask: torch.Tensor) -> np.ndarray:
    """scipy's EDT per image, with our convention for images without a False pixel (inf everywhere)."""
    images = mask.cpu().numpy()
    out = np.empty(images.shape, dtype=np.float64)
    for index, image in enumerate(images):
        out[index] = np.inf if image.all() else ndimage.distance_transform_edt(image)
    return out


def assert_matches_scipy(mask: torch.Tensor, **kwargs) -> torch.Tensor:
    distances = distance_transform(mask, **kwargs)
    assert distances.shape == mask.shape and distances.dtype == torch.float32
    assert distances.device == mask.device
    np.testing.assert_allclose(distances.cpu().numpy(), scipy_reference(mask), rtol=0, atol=1e-5)
    return distances


def random_mask(shape, density: float, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 7), (1, 7, 1), (2, 13, 29), (3, 32, 32), (2, 40, 17)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_random_masks_match_scipy(shape, density):
    assert_matches_scipy(random_mask(shape, density, seed=sum(shape) + int(100 * density)))


def test_batch_of_different_images():
    mask = torch.stack([random_mask((24, 36), density, seed) for seed, density in enumerate([0.1, 0.6, 0.9, 0.99])])
    distances = assert_matches_scipy(mask)
    assert not torch.equal(distances[0], distances[1])


def test_blob_masks_match_scipy():
    """Compact regions, like BANE's error maps: distances grow towards the inside."""
    rows, cols = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    disc = (rows - 20) ** 2 + (cols - 30) ** 2 < 15**2
    box = (rows >= 5) & (rows < 40) & (cols >= 10) & (cols < 60)
    distances = assert_matches_scipy(torch.stack([disc, box, disc ^ box]))
    assert distances[1].max() == 18  # rows 5..39 of the box: row 22 is 18 rows from rows 4 and 40, outside it


def test_all_false_gives_zeros():
    distances = distance_transform(torch.zeros(2, 5, 9, dtype=torch.bool))
    assert torch.equal(distances, torch.zeros(2, 5, 9))


def test_all_true_image_gives_inf_and_leaves_others_alone():
    mask = random_mask((3, 11, 14), 0.7, seed=3)
    mask[1] = True
    distances = assert_matches_scipy(mask)
    assert torch.isinf(distances[1]).all()
    assert torch.isfinite(distances[0]).all() and torch.isfinite(distances[2]).all()


def test_single_false_pixel_gives_exact_euclidean_distances():
    height, width, row, col = 23, 31, 4, 27
    mask = torch.ones(1, height, width, dtype=torch.bool)
    mask[0, row, col] = False
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    expected = ((rows - row) ** 2 + (cols - col) ** 2).double().sqrt()
    np.testing.assert_allclose(distance_transform(mask)[0].numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_single_true_pixel_is_at_distance_one():
    mask = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask[0, 2, 3] = True
    mask[1, 0, 0] = True  # in a corner: the border is not a False pixel, still distance 1
    distances = assert_matches_scipy(mask)
    assert distances[0, 2, 3] == 1 and distances[1, 0, 0] == 1
    assert distances.sum() == 2


def test_border_is_not_a_false_pixel():
    """A True frame along the borders, False only in the centre column: distances count to that column only."""
    mask = torch.ones(1, 9, 9, dtype=torch.bool)
    mask[0, :, 4] = False
    distances = assert_matches_scipy(mask)
    assert torch.equal(distances[0, 0], torch.tensor([4.0, 3, 2, 1, 0, 1, 2, 3, 4]))


def test_non_square_batch():
    assert_matches_scipy(random_mask((2, 7, 50), 0.8, seed=5))
    assert_matches_scipy(random_mask((2, 50, 7), 0.8, seed=6))


@pytest.mark.parametrize("chunk_elements", [1, 100, 3 * 13 * 2 * 29 + 1])
def test_chunking_does_not_change_the_result(chunk_elements):
    mask = random_mask((2, 13, 29), 0.8, seed=7)
    expected = distance_transform(mask)
    assert torch.equal(distance_transform(mask, chunk_elements=chunk_elements), expected)


@pytest.mark.parametrize("shape", [(1, 1, 4100), (1, 4100, 1)])
def test_large_side_uses_exact_float64_path(shape):
    """H^2 + W^2 > 2^24 switches the squared distances to float64; values up to ~4100 stay exact."""
    mask = torch.ones(shape, dtype=torch.bool)
    mask.view(-1)[0] = False
    distances = assert_matches_scipy(mask)
    assert distances.view(-1)[-1] == 4099


@pytest.mark.parametrize("bad_mask", [torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.uint8),
                                      torch.zeros(2, 4, 4, dtype=torch.int64)])
def test_rejects_non_bool_dtype(bad_mask):
    with pytest.raises(ValueError, match="bool"):
        distance_transform(bad_mask)


@pytest.mark.parametrize("shape", [(4, 4), (1, 1, 4, 4), (5,)])
def test_rejects_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        distance_transform(torch.zeros(shape, dtype=torch.bool))


def test_rejects_non_tensor_and_bad_budget():
    with pytest.raises(ValueError, match="Tensor"):
        distance_transform(np.zeros((1, 3, 3), dtype=bool))
    with pytest.raises(ValueError, match="chunk_elements"):
        distance_transform(torch.zeros(1, 3, 3, dtype=torch.bool), chunk_elements=0)


def test_empty_batch():
    assert distance_transform(torch.zeros(0, 4, 5, dtype=torch.bool)).shape == (0, 4, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_scipy():
    mask = random_mask((4, 128, 256), 0.9, seed=8)
    mask[2] = True
    on_gpu = assert_matches_scipy(mask.cuda())
    assert torch.equal(on_gpu.cpu(), distance_transform(mask))
