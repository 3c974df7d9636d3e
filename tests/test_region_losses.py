"""The RC²L region losses (losses/region.py) against slow loop references, known answers, empty cases and bad shapes.

The references loop over rows, pixels and images with scalar torch ops in float64 (so that autograd can also give the
reference gradients); the fast functions are compared with them in float32 and float64.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastseg.losses.region import (dice_similarity, mask_average_pool, mask_losses, region_feature_contrast,
                                       region_mask_contrast, semantic_mask_consistency, semantic_scores,
                                       set_class_loss)

DTYPES = [torch.float32, torch.float64]

# regions per image: one region, one image, unequal counts, an image without regions
REGION_COUNTS = [[1], [4], [2, 3, 1], [3, 0, 2, 1]]


# ---------------------------------------------------------------------------------------------------------- references

def total(values):
    """Sum of scalar tensors, starting from a float64 zero (so that an empty sum is a tensor too)."""
    result = torch.zeros((), dtype=torch.float64)
    for value in values:
        result = result + value
    return result


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def dice_reference(predicted, target, smooth=1.0):
    predicted, target = predicted.double(), target.double()
    rows = []
    for r in range(predicted.shape[0]):
        row = []
        for t in range(target.shape[0]):
            pixels = range(predicted.shape[1])
            overlap = total(predicted[r, p] * target[t, p] for p in pixels)
            size_r, size_t = total(predicted[r, p] for p in pixels), total(target[t, p] for p in pixels)
            row.append((2 * overlap + smooth) / (size_r + size_t + smooth))
        rows.append(torch.stack(row) if row else torch.zeros(0, dtype=torch.float64))
    return torch.stack(rows)


def mask_losses_reference(mask_logits, target_masks, valid=None):
    logits, targets = mask_logits.double(), target_masks.double()
    num_masks, num_pixels = logits.shape
    bce_per_mask, dice_per_mask = [], []
    for j in range(num_masks):
        pixels = [p for p in range(num_pixels) if valid is None or bool(valid[j, p])]
        probabilities = {p: sigmoid(logits[j, p]) for p in pixels}
        terms = [-(targets[j, p] * torch.log(probabilities[p]) + (1 - targets[j, p]) * torch.log(1 - probabilities[p]))
                 for p in pixels]
        bce_per_mask.append(total(terms) / len(pixels) if pixels else total([]))
        overlap = total(probabilities[p] * targets[j, p] for p in pixels)
        sizes = total(probabilities[p] for p in pixels) + total(targets[j, p] for p in pixels)
        dice_per_mask.append(1 - (2 * overlap + 1) / (sizes + 1))
    return total(bce_per_mask) / num_masks, total(dice_per_mask) / num_masks


def set_class_reference(class_logits, target_classes, no_object_weight):
    """sum_i w_i ce_i / sum_i w_i with ce_i = log(sum_k exp z_ik) - z_i,target, by hand with math."""
    no_object = class_logits.shape[-1] - 1
    weighted, weights = 0.0, 0.0
    for logits, target in zip(class_logits.double().reshape(-1, no_object + 1).tolist(),
                              target_classes.reshape(-1).tolist()):
        ce = math.log(sum(math.exp(z) for z in logits)) - logits[target]
        w = no_object_weight if target == no_object else 1.0
        weighted += w * ce
        weights += w
    return weighted / weights


def info_nce_reference(similarity, candidates):
    """mean_j -log(exp S[j, j] / sum_{k in candidates[j]} exp S[j, k])."""
    losses = []
    for j, columns in enumerate(candidates):
        denominator = total(torch.exp(similarity[j, k]) for k in columns)
        losses.append(-(similarity[j, j] - torch.log(denominator)))
    return total(losses) / len(losses)


def region_mask_contrast_reference(student_mask_logits, teacher_masks, image_index, temperature=0.1):
    logits = student_mask_logits.double()
    probabilities = torch.stack([torch.stack([sigmoid(x) for x in row]) for row in logits])
    similarity = dice_reference(probabilities, teacher_masks) / temperature
    images = image_index.tolist()
    candidates = [[k for k in range(len(images)) if images[k] == images[j]] for j in range(len(images))]
    return info_nce_reference(similarity, candidates)


def region_feature_contrast_reference(student, teacher, temperature=0.1, classes=None, exclude_same_class=False):
    student, teacher = student.double(), teacher.double()
    num_regions, dim = student.shape
    similarity = torch.stack([torch.stack([total(student[j, d] * teacher[k, d] for d in range(dim)) / temperature
                                           for k in range(num_regions)]) for j in range(num_regions)])
    labels = None if classes is None else classes.tolist()
    candidates = [[k for k in range(num_regions) if k == j or not (exclude_same_class and labels[k] == labels[j])]
                  for j in range(num_regions)]
    return info_nce_reference(similarity, candidates)


def mask_average_pool_reference(features, masks, image_index, eps=1e-6):
    features, masks = features.double(), masks.double()
    _, channels, height, width = features.shape
    rows = []
    for t, b in enumerate(image_index.tolist()):
        weighted, weight = torch.zeros(channels, dtype=torch.float64), total([])
        for y in range(height):
            for x in range(width):
                weighted = weighted + masks[t, y, x] * features[b, :, y, x]
                weight = weight + masks[t, y, x]
        rows.append(weighted / (weight + eps))
    return torch.stack(rows)


def semantic_scores_reference(class_logits, mask_logits):
    class_logits, mask_logits = class_logits.double(), mask_logits.double()
    batch, num_queries, num_outputs = class_logits.shape
    images = []
    for b in range(batch):
        maps = []
        for c in range(num_outputs - 1):  # the last output is "no object"
            score = torch.zeros(mask_logits.shape[2:], dtype=torch.float64)
            for q in range(num_queries):
                probability = torch.exp(class_logits[b, q, c]) / total(torch.exp(z) for z in class_logits[b, q])
                score = score + probability * sigmoid(mask_logits[b, q])
            maps.append(score)
        images.append(torch.stack(maps))
    return torch.stack(images)


def clamp_passing_inward_bce_gradient(score, target, eps):
    """clamp(score, eps, 1 - eps) as a value; below the range where target > eps, or above it where target < 1 - eps
    (BCE's gradient at the bound points back into the range), the gradient passes as if there were no clamp."""
    clamped = torch.clamp(score, eps, 1 - eps)
    if (score < eps and target > eps) or (score > 1 - eps and target < 1 - eps):
        return clamped + (score - score.detach())
    return clamped


def semantic_mask_consistency_reference(scores, teacher_semantic, present, valid=None, eps=1e-4):
    scores, teacher_semantic = scores.double(), teacher_semantic.double()
    batch, num_classes, height, width = scores.shape
    pair_losses = []
    for b in range(batch):
        pixels = [(y, x) for y in range(height) for x in range(width) if valid is None or bool(valid[b, y, x])]
        for c in range(num_classes):
            if not present[b, c]:
                continue
            s = {yx: torch.clamp(scores[b, c][yx], eps, 1 - eps) for yx in pixels}
            t = {yx: teacher_semantic[b, c][yx] for yx in pixels}
            s_bce = {yx: clamp_passing_inward_bce_gradient(scores[b, c][yx], t[yx], eps) for yx in pixels}
            terms = [-(t[yx] * torch.log(s_bce[yx]) + (1 - t[yx]) * torch.log(1 - s_bce[yx])) for yx in pixels]
            bce = total(terms) / len(pixels) if pixels else total([])
            overlap = total(s[yx] * t[yx] for yx in pixels)
            dice = 1 - (2 * overlap + 1) / (total(s.values()) + total(t.values()) + 1)
            pair_losses.append(bce + dice)
    return total(pair_losses) / max(len(pair_losses), 1)


# ------------------------------------------------------------------------------------------------------------- inputs

def image_index_for(counts):
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def region_inputs(counts, num_pixels=10, dtype=torch.float32, seed=0):
    """Student mask logits, binary teacher masks and the image of each region."""
    generator = torch.Generator().manual_seed(seed)
    num_regions = sum(counts)
    logits = (2 * torch.randn(num_regions, num_pixels, generator=generator, dtype=torch.float64)).to(dtype)
    teacher = (torch.rand(num_regions, num_pixels, generator=generator) < 0.4).to(dtype)
    return logits, teacher, image_index_for(counts)


def unit_rows(n, d, generator, dtype=torch.float32):
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=1).to(dtype)


def tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}


def assert_matches(value, expected, dtype):
    assert value.dtype == dtype
    torch.testing.assert_close(value.double(), expected.double(), **tolerance(dtype))


def gradients(function, inputs):
    """Autograd gradients of function(*inputs) with respect to every input (float64 leaf copies)."""
    leaves = [x.detach().double().requires_grad_() for x in inputs]
    return torch.autograd.grad(function(*leaves), leaves)


def assert_same_gradients(fast, reference, inputs):
    for fast_grad, reference_grad in zip(gradients(fast, inputs), gradients(reference, inputs)):
        assert fast_grad.abs().sum() > 0
        torch.testing.assert_close(fast_grad, reference_grad, rtol=1e-9, atol=1e-11)


# -------------------------------------------------------------------------------------------------- dice_similarity

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,columns", [(1, 1), (3, 5), (6, 2)])
def test_dice_similarity_matches_the_loop_reference(dtype, rows, columns):
    generator = torch.Generator().manual_seed(rows * 10 + columns)
    predicted = torch.rand(rows, 9, generator=generator, dtype=torch.float64).to(dtype)
    target = (torch.rand(columns, 9, generator=generator) < 0.5).to(dtype)
    for smooth in (1.0, 0.5):
        value = dice_similarity(predicted, target, smooth)
        assert value.shape == (rows, columns)
        assert_matches(value, dice_reference(predicted, target, smooth), dtype)


def test_dice_similarity_known_values():
    masks = torch.tensor([[1.0, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    similarity = dice_similarity(masks, masks)
    assert similarity[0, 0].item() == 1.0 and similarity[1, 1].item() == 1.0
    assert similarity[2, 2].item() == 1.0  # two empty masks: smooth / smooth
    assert similarity[0, 1].item() == pytest.approx(1 / (2 + 3 + 1))  # disjoint: smooth / (|a| + |b| + smooth)
    assert similarity[0, 2].item() == pytest.approx(1 / (2 + 0 + 1))


def test_low_precision_inputs_are_computed_in_float32():
    generator = torch.Generator().manual_seed(1)
    predicted, target = torch.rand(3, 6, generator=generator), (torch.rand(4, 6, generator=generator) < 0.5).float()
    value = dice_similarity(predicted.half(), target.half())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, dice_similarity(predicted.half().float(), target))
    student, teacher = unit_rows(5, 4, generator), unit_rows(5, 4, generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = region_feature_contrast(student, teacher)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, region_feature_contrast(student, teacher))


# ------------------------------------------------------------------------------------------------------ mask_losses

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_masks", [1, 4])
@pytest.mark.parametrize("valid_layout", [None, "per_mask", "shared"])
def test_mask_losses_match_the_loop_reference(dtype, num_masks, valid_layout):
    logits, targets, _ = region_inputs([num_masks], num_pixels=12, dtype=dtype, seed=num_masks)
    generator = torch.Generator().manual_seed(7)
    valid = {None: None, "per_mask": torch.rand(num_masks, 12, generator=generator) < 0.7,
             "shared": torch.rand(12, generator=generator) < 0.7}[valid_layout]
    bce, dice = mask_losses(logits, targets, valid)
    expanded = None if valid is None else valid.expand(num_masks, 12)
    expected_bce, expected_dice = mask_losses_reference(logits, targets, expanded)
    assert_matches(bce, expected_bce, dtype)
    assert_matches(dice, expected_dice, dtype)


@pytest.mark.parametrize("with_valid", [False, True])
def test_mask_losses_gradients_match_the_reference(with_valid):
    logits, targets, _ = region_inputs([3], num_pixels=8, dtype=torch.float64, seed=2)
    valid = torch.rand(3, 8, generator=torch.Generator().manual_seed(3)) < 0.6 if with_valid else None
    for term in (0, 1):
        assert_same_gradients(lambda x: mask_losses(x, targets, valid)[term],
                              lambda x: mask_losses_reference(x, targets, valid)[term], [logits])


def test_mask_losses_known_answer_for_zero_logits():
    targets = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0]])
    bce, dice = mask_losses(torch.zeros(2, 4), targets)
    assert bce.item() == pytest.approx(math.log(2))  # sigmoid(0) = 1/2 at every pixel
    # mask 0: (2 * 1 + 1) / (2 + 2 + 1); mask 1: (2 * 0.5 + 1) / (2 + 1 + 1)
    assert dice.item() == pytest.approx(((1 - 3 / 5) + (1 - 2 / 4)) / 2)


def test_a_mask_without_valid_pixels_contributes_zero_but_counts():
    logits, targets, _ = region_inputs([3], num_pixels=6, seed=4)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1] = False
    bce, dice = mask_losses(logits, targets, valid)
    kept_bce, kept_dice = mask_losses(logits[[0, 2]], targets[[0, 2]])
    torch.testing.assert_close(bce, kept_bce * 2 / 3)
    torch.testing.assert_close(dice, kept_dice * 2 / 3)


# --------------------------------------------------------------------------------------------------- set_class_loss

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("no_object_weight", [0.1, 1.0, 0.0])
@pytest.mark.parametrize("batch,queries,num_classes", [(1, 1, 1), (2, 5, 3), (3, 4, 6)])
def test_set_class_loss_equals_the_weighted_cross_entropy_by_hand(dtype, no_object_weight, batch, queries,
                                                                  num_classes):
    generator = torch.Generator().manual_seed(batch * 100 + queries)
    class_logits = (2 * torch.randn(batch, queries, num_classes + 1, generator=generator, dtype=torch.float64)).to(
        dtype)
    targets = torch.randint(0, num_classes + 1, (batch, queries), generator=generator)
    targets[0, 0] = 0  # at least one real class, so that the weights never sum to zero
    value = set_class_loss(class_logits, targets, no_object_weight)
    expected = set_class_reference(class_logits, targets, no_object_weight)
    assert value.dtype == dtype
    assert value.item() == pytest.approx(expected, **{"rel": tolerance(dtype)["rtol"], "abs": tolerance(dtype)["atol"]})
    weight = torch.ones(num_classes + 1, dtype=dtype)
    weight[-1] = no_object_weight
    torch.testing.assert_close(value, F.cross_entropy(class_logits.flatten(0, 1), targets.flatten(), weight=weight))


def test_set_class_loss_known_answers():
    uniform = torch.zeros(2, 3, 5)  # K = 4: every cross-entropy is log 5, whatever the weights
    targets = torch.tensor([[0, 4, 4], [2, 4, 1]])
    assert set_class_loss(uniform, targets).item() == pytest.approx(math.log(5))
    # only "no object" targets with weight 0: 0 instead of 0 / 0, with a zero gradient
    logits = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(0)).requires_grad_()
    value = set_class_loss(logits, torch.full((1, 2), 2), no_object_weight=0.0)
    value.backward()
    assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


# ------------------------------------------------------------------------------------------------------------- RMC

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("counts", REGION_COUNTS, ids=str)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_region_mask_contrast_matches_the_loop_reference(dtype, counts, temperature):
    logits, teacher, image_index = region_inputs(counts, dtype=dtype, seed=sum(counts))
    value = region_mask_contrast(logits, teacher, image_index, temperature)
    assert_matches(value, region_mask_contrast_reference(logits, teacher, image_index, temperature), dtype)


def test_region_mask_contrast_gradients_match_the_reference():
    logits, teacher, image_index = region_inputs([2, 3, 1], dtype=torch.float64, seed=5)
    assert_same_gradients(lambda x: region_mask_contrast(x, teacher, image_index),
                          lambda x: region_mask_contrast_reference(x, teacher, image_index), [logits])


def test_region_mask_contrast_prefers_the_matched_masks():
    # two images with 3 and 2 disjoint teacher regions over 12 pixels
    teacher = torch.zeros(5, 12, dtype=torch.float64)
    for row, pixels in enumerate([range(0, 4), range(4, 7), range(7, 12), range(0, 6), range(6, 12)]):
        teacher[row, list(pixels)] = 1.0
    image_index = torch.tensor([0, 0, 0, 1, 1])
    perfect = 30 * (2 * teacher - 1)  # sigmoid(+-30) is 0 / 1 up to 1e-13
    shuffled = perfect[[1, 2, 0, 4, 3]]  # each student mask matched to another region of its image
    temperature = 0.1
    perfect_loss = region_mask_contrast(perfect, teacher, image_index, temperature)
    assert perfect_loss < region_mask_contrast(shuffled, teacher, image_index, temperature)
    # analytic: positive dice 1, negative dice 1 / (|j| + |k| + 1) for disjoint binary masks
    sizes, images = teacher.sum(1).tolist(), image_index.tolist()
    expected = []
    for j in range(5):
        negatives = [math.exp(1 / (sizes[j] + sizes[k] + 1) / temperature) for k in range(5)
                     if k != j and images[k] == images[j]]
        expected.append(-math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + sum(negatives))))
    assert perfect_loss.item() == pytest.approx(sum(expected) / 5, rel=1e-9)


def test_region_mask_contrast_is_zero_for_a_region_alone_in_its_image():
    logits, teacher, image_index = region_inputs([1, 1, 1], seed=6)
    logits.requires_grad_()
    value = region_mask_contrast(logits, teacher, image_index)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() < 1e-6


def test_region_mask_contrast_ignores_other_images():
    logits, teacher, image_index = region_inputs([3, 2], seed=8)
    together = region_mask_contrast(logits, teacher, image_index)
    apart = [region_mask_contrast(logits[rows], teacher[rows], image_index[rows]) for rows in (slice(0, 3),
                                                                                                slice(3, 5))]
    torch.testing.assert_close(together, (3 * apart[0] + 2 * apart[1]) / 5)
    # the same regions, all in one image, see each other as negatives
    assert not torch.allclose(together, region_mask_contrast(logits, teacher, torch.zeros_like(image_index)))


# ------------------------------------------------------------------------------------------------------------- RFC

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_regions", [1, 2, 7])
@pytest.mark.parametrize("exclude_same_class", [False, True])
def test_region_feature_contrast_matches_the_loop_reference(dtype, num_regions, exclude_same_class):
    generator = torch.Generator().manual_seed(num_regions)
    student, teacher = unit_rows(num_regions, 5, generator, dtype), unit_rows(num_regions, 5, generator, dtype)
    classes = torch.randint(0, 3, (num_regions,), generator=generator)
    for temperature in (0.1, 0.3):
        value = region_feature_contrast(student, teacher, temperature, classes, exclude_same_class)
        expected = region_feature_contrast_reference(student, teacher, temperature, classes, exclude_same_class)
        assert_matches(value, expected, dtype)


@pytest.mark.parametrize("exclude_same_class", [False, True])
def test_region_feature_contrast_gradients_match_the_reference(exclude_same_class):
    generator = torch.Generator().manual_seed(9)
    student, teacher = unit_rows(6, 4, generator, torch.float64), unit_rows(6, 4, generator, torch.float64)
    classes = torch.tensor([0, 1, 0, 2, 1, 0])
    assert_same_gradients(lambda s, t: region_feature_contrast(s, t, 0.2, classes, exclude_same_class),
                          lambda s, t: region_feature_contrast_reference(s, t, 0.2, classes, exclude_same_class),
                          [student, teacher])


@pytest.mark.parametrize("num_regions", [1, 2, 5])
def test_region_feature_contrast_analytic_value_for_orthogonal_regions(num_regions):
    identity = torch.eye(num_regions, 6, dtype=torch.float64)  # row j matches itself, orthogonal to the others
    temperature = 0.1
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + num_regions - 1))
    value = region_feature_contrast(identity, identity, temperature)
    assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_excluding_same_class_regions_removes_them_from_the_denominator():
    identity = torch.eye(4, dtype=torch.float64)
    classes = torch.tensor([0, 0, 1, 2])  # regions 0 and 1 share a class
    temperature = 0.1
    positive = math.exp(1 / temperature)
    expected = (2 * -math.log(positive / (positive + 2)) + 2 * -math.log(positive / (positive + 3))) / 4
    excluded = region_feature_contrast(identity, identity, temperature, classes, exclude_same_class=True)
    assert excluded.item() == pytest.approx(expected, rel=1e-12)
    assert excluded < region_feature_contrast(identity, identity, temperature, classes)
    # classes given without exclude_same_class change nothing
    torch.testing.assert_close(region_feature_contrast(identity, identity, temperature, classes),
                               region_feature_contrast(identity, identity, temperature))


def test_exclude_same_class_needs_classes():
    rows = torch.eye(3)
    with pytest.raises(ValueError, match="classes"):
        region_feature_contrast(rows, rows, exclude_same_class=True)


# ------------------------------------------------------------------------------------------------ mask_average_pool

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("counts", REGION_COUNTS, ids=str)
@pytest.mark.parametrize("binary", [False, True])
def test_mask_average_pool_matches_the_loop_reference(dtype, counts, binary):
    generator = torch.Generator().manual_seed(len(counts) + 10 * binary)
    features = torch.randn(len(counts), 3, 3, 4, generator=generator, dtype=torch.float64).to(dtype)
    masks = torch.rand(sum(counts), 3, 4, generator=generator, dtype=torch.float64).to(dtype)
    if binary:
        masks = (masks < 0.5).to(dtype)
        masks[0] = 0  # an empty mask gives a zero feature
    image_index = image_index_for(counts).flip(0)  # not sorted by image
    value = mask_average_pool(features, masks, image_index)
    assert value.shape == (sum(counts), 3)
    assert_matches(value, mask_average_pool_reference(features, masks, image_index), dtype)


def test_mask_average_pool_gradients_match_the_reference():
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(3, 2, 2, 3, generator=generator, dtype=torch.float64)
    masks = torch.rand(4, 2, 3, generator=generator, dtype=torch.float64)
    image_index = torch.tensor([2, 0, 2, 1])  # unsorted
    weights = torch.randn(4, 2, generator=generator, dtype=torch.float64)  # a non-trivial function of the output
    assert_same_gradients(lambda f, m: (mask_average_pool(f, m, image_index) * weights).sum(),
                          lambda f, m: (mask_average_pool_reference(f, m, image_index) * weights).sum(),
                          [features, masks])


def test_mask_average_pool_of_a_one_pixel_mask_is_that_pixel():
    features = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    masks = torch.zeros(2, 3, 3, dtype=torch.float64)
    masks[0, 1, 2] = 1.0
    masks[1, 0, 0] = 0.5  # a single soft weight: still that pixel's feature
    pooled = mask_average_pool(features, masks, torch.tensor([1, 0]), eps=0.0)
    torch.testing.assert_close(pooled, torch.stack([features[1, :, 1, 2], features[0, :, 0, 0]]))


def test_mask_average_pool_rejects_an_image_index_outside_the_batch():
    features, masks = torch.zeros(2, 3, 4, 4), torch.ones(2, 4, 4)
    for image_index in (torch.tensor([0, 2]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match="image_index must lie in"):
            mask_average_pool(features, masks, image_index)


# ------------------------------------------------------------------------------------------------- semantic scores

@pytest.mark.parametrize("dtype", DTYPES)
def test_semantic_scores_match_the_loop_reference(dtype):
    generator = torch.Generator().manual_seed(13)
    class_logits = torch.randn(2, 4, 4, generator=generator, dtype=torch.float64).to(dtype)  # K = 3
    mask_logits = (2 * torch.randn(2, 4, 3, 2, generator=generator, dtype=torch.float64)).to(dtype)
    value = semantic_scores(class_logits, mask_logits)
    assert value.shape == (2, 3, 3, 2)
    assert_matches(value, semantic_scores_reference(class_logits, mask_logits), dtype)
    assert_same_gradients(lambda c, m: (semantic_scores(c, m) ** 2).sum(),
                          lambda c, m: (semantic_scores_reference(c, m) ** 2).sum(), [class_logits, mask_logits])


def test_semantic_scores_of_a_confident_query_is_its_mask():
    class_logits = torch.tensor([[[50.0, 0, 0], [0, 0, 50]]], dtype=torch.float64)  # query 0: class 0, query 1: none
    mask_logits = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    scores = semantic_scores(class_logits, mask_logits)
    torch.testing.assert_close(scores[0, 0], torch.sigmoid(mask_logits[0, 0]))
    torch.testing.assert_close(scores[0, 1], torch.zeros(2, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------------------- SMC

def semantic_inputs(dtype=torch.float32, seed=15, scale=1.0):
    """Scores partly above 1 (scale > 1) and below eps, teacher masks, present pairs (one image with none)."""
    generator = torch.Generator().manual_seed(seed)
    scores = (scale * torch.rand(3, 3, 3, 4, generator=generator, dtype=torch.float64)).to(dtype)
    scores[0, 0, 0, 0] = 0.0  # clamped from below
    teacher = (torch.rand(3, 3, 3, 4, generator=generator) < 0.5).to(dtype)
    present = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    return scores, teacher, present


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_valid", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1.4])
def test_semantic_mask_consistency_matches_the_loop_reference(dtype, with_valid, scale):
    scores, teacher, present = semantic_inputs(dtype, scale=scale)
    valid = torch.rand(3, 3, 4, generator=torch.Generator().manual_seed(16)) < 0.7 if with_valid else None
    value = semantic_mask_consistency(scores, teacher, present, valid)
    assert_matches(value, semantic_mask_consistency_reference(scores, teacher, present, valid), dtype)


@pytest.mark.parametrize("with_valid", [False, True])
def test_semantic_mask_consistency_gradients_match_the_reference(with_valid):
    scores, teacher, present = semantic_inputs(torch.float64, scale=1.4)
    valid = torch.rand(3, 3, 4, generator=torch.Generator().manual_seed(17)) < 0.7 if with_valid else None
    assert_same_gradients(lambda s: semantic_mask_consistency(s, teacher, present, valid),
                          lambda s: semantic_mask_consistency_reference(s, teacher, present, valid), [scores])
    # through semantic_scores, as in training
    generator = torch.Generator().manual_seed(18)
    class_logits = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    mask_logits = torch.randn(3, 5, 3, 4, generator=generator, dtype=torch.float64)
    assert_same_gradients(
        lambda c, m: semantic_mask_consistency(semantic_scores(c, m), teacher, present, valid),
        lambda c, m: semantic_mask_consistency_reference(semantic_scores_reference(c, m), teacher, present, valid),
        [class_logits, mask_logits])


def test_semantic_mask_consistency_is_smallest_for_the_teacher_masks():
    _, teacher, present = semantic_inputs(torch.float64)
    eps = 1e-4
    perfect = semantic_mask_consistency(teacher, teacher, present, eps=eps)
    # clamped at eps: BCE = -log(1 - eps) at every pixel; dice of (1 - eps) t with t is close to 1
    assert perfect.item() == pytest.approx(-math.log(1 - eps), abs=2e-4)
    assert perfect < semantic_mask_consistency(torch.full_like(teacher, 0.5), teacher, present)
    assert perfect < semantic_mask_consistency(1 - teacher, teacher, present)


def test_semantic_mask_consistency_pulls_a_confidently_wrong_student_towards_the_teacher_class():
    # every query is sure of class 1 with a full mask; the teacher sees class 0 everywhere
    eps = 1e-4
    class_logits = torch.tensor([[[-20.0, 20.0, -20.0], [-20.0, 20.0, -20.0]]], requires_grad=True)
    mask_logits = torch.full((1, 2, 3, 3), 5.0, requires_grad=True)
    teacher = torch.zeros(1, 2, 3, 3)
    teacher[:, 0] = 1
    present = torch.tensor([[True, False]])
    scores = semantic_scores(class_logits, mask_logits)
    assert scores[0, 0].max() < eps  # below the clamp
    leaf = scores.detach().requires_grad_()
    semantic_mask_consistency(leaf, teacher, present, eps=eps).backward()
    # BCE at the clamp bound: d/ds -log(s) = -1 / eps per pixel, over 9 pixels; dice gives none below the clamp
    torch.testing.assert_close(leaf.grad[0, 0], torch.full((3, 3), -1 / (9 * eps)))
    assert torch.equal(leaf.grad[0, 1], torch.zeros(3, 3))  # class 1 is not present
    semantic_mask_consistency(scores, teacher, present, eps=eps).backward()
    assert torch.isfinite(class_logits.grad).all() and torch.isfinite(mask_logits.grad).all()
    assert (class_logits.grad[0, :, 0] < 0).all()  # gradient descent raises the teacher class's logit


def test_semantic_mask_consistency_pulls_scores_above_one_back_only_where_the_teacher_says_no():
    eps = 1e-4
    scores = torch.tensor([1.3, 1.3, 0.5, -0.2, -0.2], dtype=torch.float64).view(1, 1, 1, 5).requires_grad_()
    teacher = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64).view(1, 1, 1, 5)
    present = torch.ones(1, 1, dtype=torch.bool)
    value = semantic_mask_consistency(scores, teacher, present, eps=eps)
    assert_matches(value, semantic_mask_consistency_reference(scores.detach(), teacher, present, eps=eps),
                   torch.float64)
    value.backward()
    bce = scores.grad[0, 0, 0] - torch.autograd.grad(  # the BCE part only: remove the dice part's gradient
        dice_part(scores, teacher, eps), scores)[0][0, 0, 0]
    assert bce[0] > 0  # above 1 where the teacher says no: pushed down
    assert bce[1] == 0  # above 1 where the teacher says yes: not rewarded for growing
    assert bce[2] < 0  # inside the range: the plain BCE gradient
    assert bce[3] < 0  # below 0 where the teacher says yes: pushed up
    assert bce[4] == 0  # below 0 where the teacher says no: left alone


def dice_part(scores, teacher, eps):
    clamped = scores.clamp(eps, 1 - eps)
    return 1 - (2 * (clamped * teacher).sum() + 1) / (clamped.sum() + teacher.sum() + 1)


def test_semantic_mask_consistency_only_counts_present_pairs():
    scores, teacher, present = semantic_inputs()
    value = semantic_mask_consistency(scores, teacher, present)
    changed = scores.clone()
    changed[1] = 0.5  # image 1 has no present class
    changed[0, 1] = 0.9  # (0, 1) is not present
    torch.testing.assert_close(semantic_mask_consistency(changed, teacher, present), value)


# ------------------------------------------------------------------------------------------------------ empty cases

def empty_cases():
    """(name, function of leaf tensors, leaves): each must give 0 (or an empty tensor) with a zero gradient."""
    generator = torch.Generator().manual_seed(19)
    logits, teacher, _ = region_inputs([2, 2], seed=20)
    scores, semantic_teacher, _ = semantic_inputs()
    no_index = torch.zeros(0, dtype=torch.long)
    return [
        ("mask_losses_no_mask", lambda x: sum(mask_losses(x, torch.zeros(0, 10))), [torch.zeros(0, 10)]),
        ("mask_losses_no_valid_pixel",
         lambda x: sum(mask_losses(x, teacher, torch.zeros(10, dtype=torch.bool))), [logits]),
        ("set_class_loss_no_query", lambda x: set_class_loss(x, torch.zeros(2, 0, dtype=torch.long)),
         [torch.zeros(2, 0, 4)]),
        ("rmc_no_region", lambda x: region_mask_contrast(x, torch.zeros(0, 10), no_index), [torch.zeros(0, 10)]),
        ("rfc_no_region", lambda s, t: region_feature_contrast(s, t, classes=no_index, exclude_same_class=True),
         [torch.zeros(0, 4), torch.zeros(0, 4)]),
        ("map_no_region", lambda f, m: mask_average_pool(f, m, no_index),
         [torch.randn(2, 3, 4, 4, generator=generator), torch.zeros(0, 4, 4)]),
        ("smc_no_present_class",
         lambda s: semantic_mask_consistency(s, semantic_teacher, torch.zeros(3, 3, dtype=torch.bool)), [scores]),
        ("smc_no_valid_pixel",
         lambda s: semantic_mask_consistency(s, semantic_teacher, torch.ones(3, 3, dtype=torch.bool),
                                             torch.zeros(3, 3, 4, dtype=torch.bool)), [scores]),
    ]


@pytest.mark.parametrize("case", empty_cases(), ids=[case[0] for case in empty_cases()])
def test_empty_inputs_give_a_zero_with_a_zero_gradient(case):
    _, function, inputs = case
    leaves = [x.clone().requires_grad_() for x in inputs]
    value = function(*leaves)
    assert value.requires_grad
    if value.dim() == 0:
        assert value.item() == 0.0
    else:
        assert value.numel() == 0 and value.shape == (0, inputs[0].shape[1])
    value.sum().backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(leaf))


# ------------------------------------------------------------------------------------------------------ bad shapes

def bad_calls():
    logits, teacher, image_index = region_inputs([2, 1], seed=21)  # T = 3, P = 10
    rows = torch.eye(3)
    scores, semantic_teacher, present = semantic_inputs()
    return [
        ("dice_pixels", lambda: dice_similarity(torch.rand(2, 5), torch.rand(3, 6)), "same number of pixels"),
        ("dice_dim", lambda: dice_similarity(torch.rand(5), torch.rand(3, 5)), r"predicted must be \(R, P\)"),
        ("mask_losses_target", lambda: mask_losses(logits, teacher[:2]), r"target_masks must have the shape"),
        ("mask_losses_valid", lambda: mask_losses(logits, teacher, torch.ones(3, 9, dtype=torch.bool)),
         r"valid must be \(T, P\)"),
        ("mask_losses_valid_dtype", lambda: mask_losses(logits, teacher, torch.ones(10)), "valid must be bool"),
        ("class_targets", lambda: set_class_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long)),
         r"target_classes must be \(B, N\)"),
        ("class_targets_float", lambda: set_class_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3)), "integer"),
        ("class_logits_dim", lambda: set_class_loss(torch.zeros(6, 4), torch.zeros(6, dtype=torch.long)),
         r"class_logits must be \(B, N, K \+ 1\)"),
        ("rmc_teacher", lambda: region_mask_contrast(logits, teacher[:, :5], image_index), "teacher_masks"),
        ("rmc_index", lambda: region_mask_contrast(logits, teacher, image_index[:2]), r"image_index must be \(T,\)"),
        ("rmc_temperature", lambda: region_mask_contrast(logits, teacher, image_index, 0.0), "temperature"),
        ("rfc_teacher", lambda: region_feature_contrast(rows, torch.eye(3, 4)), "teacher_features"),
        ("rfc_classes", lambda: region_feature_contrast(rows, rows, classes=torch.zeros(2, dtype=torch.long)),
         r"classes must be \(T,\)"),
        ("map_spatial", lambda: mask_average_pool(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5),
                                                  torch.tensor([0, 1])), "spatial size"),
        ("map_dim", lambda: mask_average_pool(torch.zeros(3, 4, 4), torch.zeros(2, 4, 4), torch.tensor([0, 1])),
         r"features must be \(B, C, h, w\)"),
        ("map_index", lambda: mask_average_pool(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), torch.tensor([0])),
         r"image_index must be \(T,\)"),
        ("semantic_scores_queries", lambda: semantic_scores(torch.zeros(2, 3, 4), torch.zeros(2, 4, 5, 5)),
         "same"),
        ("smc_teacher", lambda: semantic_mask_consistency(scores, semantic_teacher[:2], present),
         "teacher_semantic"),
        ("smc_present", lambda: semantic_mask_consistency(scores, semantic_teacher, present[:, :2]),
         r"present must be \(B, K\)"),
        ("smc_present_dtype", lambda: semantic_mask_consistency(scores, semantic_teacher, present.float()),
         "present must be"),
        ("smc_valid", lambda: semantic_mask_consistency(scores, semantic_teacher, present,
                                                        torch.ones(3, 4, 3, dtype=torch.bool)),
         r"valid must be \(B, h, w\)"),
    ]


@pytest.mark.parametrize("case", bad_calls(), ids=[case[0] for case in bad_calls()])
def test_bad_shapes_raise_value_error(case):
    _, call, message = case
    with pytest.raises(ValueError, match=message):
        call()


def test_module_shells_equal_their_functions():
    from contrastseg.methods.rc2l.losses import (RegionClassConsistencyLoss, RegionFeatureContrastLoss,
                                                 RegionMaskContrastLoss, SemanticMaskConsistencyLoss)

    generator = torch.Generator().manual_seed(7)
    class_logits = torch.randn(2, 5, 4, generator=generator)
    targets = torch.randint(0, 4, (2, 5), generator=generator)
    assert torch.equal(RegionClassConsistencyLoss(0.3)(class_logits, targets),
                       set_class_loss(class_logits, targets, 0.3))
    logits, masks = torch.randn(4, 30, generator=generator), (torch.rand(4, 30, generator=generator) > 0.5).float()
    image_index = torch.tensor([0, 0, 1, 1])
    assert torch.equal(RegionMaskContrastLoss(0.2)(logits, masks, image_index),
                       region_mask_contrast(logits, masks, image_index, 0.2))
    rows = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
    others = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
    classes = torch.tensor([1, 1, 2, 3])
    assert torch.equal(RegionFeatureContrastLoss(0.3, exclude_same_class=True)(rows, others, classes),
                       region_feature_contrast(rows, others, 0.3, classes, exclude_same_class=True))
    scores = torch.rand(2, 3, 5, 5, generator=generator)
    teacher = (torch.rand(2, 3, 5, 5, generator=generator) > 0.5).float()
    present = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.equal(SemanticMaskConsistencyLoss()(scores, teacher, present),
                       semantic_mask_consistency(scores, teacher, present))
