"""PixelContrastLoss and functional.pixel_contrast against a slow loop oracle, edge cases, chunking, gradients."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contrastseg.methods.pixel_contrast.loss import PixelContrastLoss
from contrastseg.losses.functional import MIN_CHUNK_ROWS, SIMILARITY_BUDGET, default_chunk_size, pixel_contrast


def loop_reference(anchors, anchor_labels, contrast, contrast_labels, temperature=0.1, base_temperature=0.07,
                   exclude_self=False, contrast_mask=None):
    """The formula written out with Python loops over anchors and positives, in float64 (math.exp / math.log)."""
    anchors, contrast = anchors.double().tolist(), contrast.double().tolist()
    anchor_labels, contrast_labels = anchor_labels.tolist(), contrast_labels.tolist()
    mask = None if contrast_mask is None else contrast_mask.tolist()
    anchor_losses = []
    for i, anchor in enumerate(anchors):
        similarity = [sum(a * c for a, c in zip(anchor, row)) / temperature for row in contrast]
        taking_part = [(mask is None or mask[i][j]) and not (exclude_self and i == j) for j in range(len(contrast))]
        positives = [j for j, label in enumerate(contrast_labels) if taking_part[j] and label == anchor_labels[i]]
        negatives = [j for j, label in enumerate(contrast_labels) if taking_part[j] and label != anchor_labels[i]]
        if not positives:
            continue
        terms = []
        for p in positives:
            denominator = math.exp(similarity[p]) + sum(math.exp(similarity[n]) for n in negatives)
            terms.append(similarity[p] - math.log(denominator))
        anchor_losses.append(-(temperature / base_temperature) * sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses) if anchor_losses else 0.0


def unit_rows(n, d, generator, dtype=torch.float32):
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=1).to(dtype)


# (name, N, M or None for in-batch, D, labels of anchors, labels of contrast); labels given as a number of classes or
# an explicit list
CASES = [
    ("in_batch", 24, None, 8, 4, None),
    ("in_batch_singletons", 7, None, 5, [0, 1, 1, 2, 3, 3, 3], None),  # classes 0 and 2 have one sample: no positive
    ("in_batch_one_class", 6, None, 4, [2] * 6, None),  # nobody has negatives
    ("in_batch_no_positives", 5, None, 4, [0, 1, 2, 3, 4], None),
    ("single_anchor_memory", 1, 30, 6, [1], 3),
    ("memory", 20, 45, 8, 5, 5),
    ("memory_unseen_classes", 10, 25, 8, [0, 1, 7, 7, 9, 1, 0, 0, 1, 9], 3),  # 7 and 9 are not in memory
    ("memory_one_class", 8, 12, 4, [0] * 8, [0] * 12),
]


def build_case(name, n, m, d, anchor_classes, contrast_classes, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    anchors = unit_rows(n, d, generator, dtype)
    if isinstance(anchor_classes, int):
        anchor_labels = torch.randint(0, anchor_classes, (n,), generator=generator)
    else:
        anchor_labels = torch.tensor(anchor_classes)
    if m is None:
        return anchors, anchor_labels, anchors, anchor_labels, True
    contrast = unit_rows(m, d, generator, dtype)
    if isinstance(contrast_classes, int):
        contrast_labels = torch.randint(0, contrast_classes, (m,), generator=generator)
    else:
        contrast_labels = torch.tensor(contrast_classes)
    return anchors, anchor_labels, contrast, contrast_labels, False


def random_mask(n, m, seed=1, keep=0.6):
    return torch.rand(n, m, generator=torch.Generator().manual_seed(seed)) < keep


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_mask", [False, True])
def test_matches_the_loop_reference(case, dtype, with_mask):
    anchors, anchor_labels, contrast, contrast_labels, in_batch = build_case(*case, dtype=dtype)
    mask = random_mask(len(anchors), len(contrast)) if with_mask else None
    for exclude_self in ([True, False] if in_batch else [False]):
        expected = loop_reference(anchors, anchor_labels, contrast, contrast_labels, 0.1, 0.07, exclude_self, mask)
        for chunk_size in (1, 3, None):
            value = pixel_contrast(anchors, anchor_labels, contrast, contrast_labels, 0.1, 0.07, exclude_self,
                                   contrast_mask=mask, chunk_size=chunk_size)
            assert value.dtype == dtype
            tolerance = 1e-10 if dtype == torch.float64 else 2e-6
            assert value.item() == pytest.approx(expected, rel=tolerance, abs=tolerance)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_and_returned_in_float32(dtype):
    anchors, anchor_labels, contrast, contrast_labels, _ = build_case("memory", 16, 40, 8, 4, 4, dtype=dtype)
    value = pixel_contrast(anchors, anchor_labels, contrast, contrast_labels, chunk_size=5)
    assert value.dtype == torch.float32
    # the oracle sees the same rounded inputs; the rows are then only approximately unit-norm, which does not matter
    assert value.item() == pytest.approx(loop_reference(anchors, anchor_labels, contrast, contrast_labels), rel=1e-5)
    # against the unrounded float32 inputs only a loose agreement is possible
    exact = pixel_contrast(anchors.float(), anchor_labels, contrast.float(), contrast_labels)
    assert value.item() == pytest.approx(exact.item(), rel=0.05)


def test_autocast_does_not_lower_the_precision():
    anchors, anchor_labels, contrast, contrast_labels, _ = build_case("memory", 16, 40, 8, 4, 4)
    expected = pixel_contrast(anchors, anchor_labels, contrast, contrast_labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = pixel_contrast(anchors, anchor_labels, contrast, contrast_labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_chunk_sizes_agree_in_value_and_gradient(in_batch, with_mask):
    generator = torch.Generator().manual_seed(3)
    n, m = 23, (23 if in_batch else 57)
    anchors = unit_rows(n, 16, generator)
    anchor_labels = torch.randint(0, 4, (n,), generator=generator)
    contrast = anchors if in_batch else unit_rows(m, 16, generator)
    contrast_labels = anchor_labels if in_batch else torch.randint(0, 4, (m,), generator=generator)
    mask = random_mask(n, m, seed=4) if with_mask else None
    results = []
    for chunk_size in (1, 3, None):
        leaf_anchors = anchors.clone().requires_grad_()
        leaf_contrast = leaf_anchors if in_batch else contrast.clone().requires_grad_()
        value = pixel_contrast(leaf_anchors, anchor_labels, leaf_contrast, contrast_labels, exclude_self=in_batch,
                               contrast_mask=mask, chunk_size=chunk_size)
        value.backward()
        grads = [leaf_anchors.grad] + ([] if in_batch else [leaf_contrast.grad])
        assert all(torch.isfinite(g).all() for g in grads)
        results.append((value.detach(), grads))
    (value0, grads0), *others = results
    assert grads0[0].abs().sum() > 0
    for value, grads in others:
        torch.testing.assert_close(value, value0, rtol=1e-6, atol=1e-6)
        for grad, grad0 in zip(grads, grads0):
            torch.testing.assert_close(grad, grad0, rtol=1e-6, atol=1e-6)


def test_gradcheck_in_float64():
    generator = torch.Generator().manual_seed(5)
    anchors = unit_rows(6, 3, generator, torch.float64).requires_grad_()
    contrast = unit_rows(9, 3, generator, torch.float64).requires_grad_()
    anchor_labels = torch.tensor([0, 0, 1, 2, 1, 3])  # class 3 has no positive in memory
    contrast_labels = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2, 0])
    mask = random_mask(6, 9, seed=6, keep=0.8)
    mask[0, contrast_labels != anchor_labels[0]] = False  # anchor 0 has positives but no negatives

    def memory_loss(a, c):
        return pixel_contrast(a, anchor_labels, c, contrast_labels, 0.5, 0.07, contrast_mask=mask, chunk_size=2)

    def in_batch_loss(a):
        return pixel_contrast(a, anchor_labels, a, anchor_labels, 0.5, 0.07, exclude_self=True, chunk_size=4)

    assert torch.autograd.gradcheck(memory_loss, (anchors, contrast))
    assert torch.autograd.gradcheck(in_batch_loss, (anchors,))


def test_gradient_reaches_whichever_input_requires_it():
    anchors, anchor_labels, contrast, contrast_labels, _ = build_case("memory", 12, 30, 8, 3, 3)
    both = [anchors.clone().requires_grad_(), contrast.clone().requires_grad_()]
    pixel_contrast(both[0], anchor_labels, both[1], contrast_labels, chunk_size=5).backward()
    for index in (0, 1):
        inputs = [anchors, contrast]
        inputs[index] = inputs[index].clone().requires_grad_()
        value = pixel_contrast(inputs[0], anchor_labels, inputs[1], contrast_labels, chunk_size=5)
        (grad,) = torch.autograd.grad(value, inputs[index])
        torch.testing.assert_close(grad, both[index].grad)
    with torch.no_grad():
        assert not pixel_contrast(both[0], anchor_labels, both[1], contrast_labels).requires_grad


@pytest.mark.parametrize("chunk_size", [1, None])
def test_no_positive_anywhere_gives_a_zero_with_a_gradient(chunk_size):
    anchors = unit_rows(5, 4, torch.Generator().manual_seed(7)).requires_grad_()
    labels = torch.arange(5)
    value = PixelContrastLoss(chunk_size=chunk_size)(anchors, labels)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(anchors.grad, torch.zeros_like(anchors))


def test_empty_anchors_or_contrast_give_a_zero_with_a_gradient():
    anchors = unit_rows(4, 3, torch.Generator().manual_seed(8)).requires_grad_()
    labels = torch.zeros(4, dtype=torch.long)
    empty_rows, empty_labels = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    for value in (pixel_contrast(anchors, labels, empty_rows, empty_labels),
                  pixel_contrast(anchors[:0], labels[:0], anchors, labels),
                  pixel_contrast(anchors[:0], labels[:0], anchors[:0], labels[:0], exclude_self=True)):
        assert value.item() == 0.0 and value.dtype == torch.float32
        value.backward()
        assert torch.equal(anchors.grad, torch.zeros_like(anchors))


def test_an_anchor_without_negatives_contributes_zero_and_finite_gradients():
    anchors = unit_rows(6, 4, torch.Generator().manual_seed(9)).requires_grad_()
    value = PixelContrastLoss(chunk_size=2)(anchors, torch.full((6,), 3))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(anchors.grad).all()


def test_a_mask_that_leaves_nothing_gives_zero():
    anchors, anchor_labels, contrast, contrast_labels, _ = build_case("memory", 10, 20, 4, 3, 3)
    mask = torch.zeros(10, 20, dtype=torch.bool)
    assert pixel_contrast(anchors, anchor_labels, contrast, contrast_labels, contrast_mask=mask).item() == 0.0


def test_extreme_temperature_and_identical_vectors_stay_finite():
    vector = F.normalize(torch.ones(1, 8), dim=1)
    anchors = vector.repeat(12, 1).requires_grad_()
    labels = torch.tensor([0, 1, 2] * 4)
    memory = torch.cat([vector.repeat(20, 1), -vector.repeat(10, 1)])
    memory_labels = torch.tensor([0, 1] * 10 + [2] * 10)
    for value in (pixel_contrast(anchors, labels, anchors, labels, 0.01, 0.07, exclude_self=True, chunk_size=5),
                  pixel_contrast(anchors, labels, memory, memory_labels, 0.01, 0.07, chunk_size=5),
                  pixel_contrast(anchors.half(), labels, memory.half(), memory_labels, 0.01, 0.07)):
        assert torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, anchors)
        assert torch.isfinite(grad).all()
    # the exact answer: for in-batch each positive ties with 8 negatives at s = 100 -> l = -log(9)
    value = pixel_contrast(anchors, labels, anchors, labels, 0.01, 0.07, exclude_self=True)
    assert value.item() == pytest.approx((0.01 / 0.07) * math.log(9), rel=1e-5)  # s = 100 has a float32 ulp of 8e-6
    expected = loop_reference(anchors.detach(), labels, memory, memory_labels, 0.01, 0.07)
    value = pixel_contrast(anchors, labels, memory, memory_labels, 0.01, 0.07)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_module_in_batch_equals_functional_with_exclude_self():
    anchors, labels, *_ = build_case("in_batch", 24, None, 8, 4, None)
    loss = PixelContrastLoss(temperature=0.2, base_temperature=0.1, chunk_size=7)
    expected = pixel_contrast(anchors, labels, anchors, labels, 0.2, 0.1, exclude_self=True)
    torch.testing.assert_close(loss(anchors, labels), expected)
    memory, memory_labels = anchors.flip(0), labels.flip(0)
    torch.testing.assert_close(loss(anchors, labels, memory, memory_labels),
                               pixel_contrast(anchors, labels, memory, memory_labels, 0.2, 0.1))
    assert "temperature=0.2" in repr(loss)


def test_bad_inputs_raise_clear_errors():
    anchors, labels = torch.zeros(4, 8), torch.zeros(4, dtype=torch.long)
    loss = PixelContrastLoss()
    with pytest.raises(ValueError, match="exclude_self"):
        pixel_contrast(anchors, labels, torch.zeros(5, 8), torch.zeros(5, dtype=torch.long), exclude_self=True)
    with pytest.raises(ValueError, match="D=8 but contrast rows have D=6"):
        loss(anchors, labels, torch.zeros(5, 6), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="anchor_labels"):
        loss(anchors, labels[:3])
    with pytest.raises(ValueError, match="contrast_labels must be"):
        loss(anchors, labels, torch.zeros(5, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="without contrast_labels"):
        loss(anchors, labels, torch.zeros(5, 8))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        loss(torch.zeros(2, 4, 8), labels)
    with pytest.raises(ValueError, match="contrast_mask must be"):
        loss(anchors, labels, contrast_mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        loss(anchors, labels, contrast_mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match="temperature"):
        PixelContrastLoss(temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        PixelContrastLoss(chunk_size=0)


def test_default_chunk_size_follows_the_budget():
    assert default_chunk_size(19_000) == SIMILARITY_BUDGET // 19_000 >= MIN_CHUNK_ROWS
    assert default_chunk_size(190_000) == 4 * SIMILARITY_BUDGET // 190_000 == 88  # thin chunks: stretched up to 4x
    assert default_chunk_size(100_000) == MIN_CHUNK_ROWS  # stretched, within 4x
    assert default_chunk_size(190_000, budget=2**24) == MIN_CHUNK_ROWS
    assert default_chunk_size(10**9) == 1
    assert default_chunk_size(0) == SIMILARITY_BUDGET


def test_benchmark_loss_only_agrees_with_the_dense_loop_reference():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pixel_contrast.py"
    spec = importlib.util.spec_from_file_location("pixel_contrast_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    result = benchmark.time_loss_only(num_anchors=50, num_classes=5, rows_per_class=20, dim=16, repeats=1,
                                      device="cpu", chunk_size=7)
    assert result["max_abs_difference"] < 1e-5
    assert {row["implementation"] for row in result["rows"]} == {"ours", "reference_loop"}


def test_the_forward_pass_keeps_no_similarity_matrix_for_backward():
    generator = torch.Generator().manual_seed(10)
    anchors = unit_rows(200, 16, generator).requires_grad_()
    contrast = unit_rows(300, 16, generator)
    saved_sizes = []

    def pack(tensor):
        saved_sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        value = pixel_contrast(anchors, torch.randint(0, 5, (200,), generator=generator), contrast,
                               torch.randint(0, 5, (300,), generator=generator), chunk_size=10)
    assert max(saved_sizes) <= 300 * 16  # the inputs, never a (chunk, M) or (N, M) matrix
    value.backward()
    assert torch.isfinite(anchors.grad).all()


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_memory_rows_are_contrast_rows_without_gradient(with_mask, chunk_size):
    """In-batch contrast plus constant memory rows = the loop oracle over the concatenated contrast set, and the
    anchors' gradient equals that of the concatenation in which only the anchor part carries a gradient."""
    generator = torch.Generator().manual_seed(11)
    anchors = unit_rows(14, 8, generator)
    anchor_labels = torch.randint(0, 4, (14,), generator=generator)
    memory = unit_rows(33, 8, generator)
    memory_labels = torch.randint(0, 4, (33,), generator=generator)
    mask = random_mask(14, 14 + 33, seed=12) if with_mask else None
    contrast_all, labels_all = torch.cat([anchors, memory]), torch.cat([anchor_labels, memory_labels])
    not_self = torch.cat([~torch.eye(14, dtype=torch.bool), torch.ones(14, 33, dtype=torch.bool)], dim=1)
    oracle_mask = not_self if mask is None else not_self & mask
    expected = loop_reference(anchors, anchor_labels, contrast_all, labels_all, 0.1, 0.07, contrast_mask=oracle_mask)

    leaf = anchors.clone().requires_grad_()
    constant = memory.clone().requires_grad_()  # would get a gradient if the loss computed one
    value = PixelContrastLoss(chunk_size=chunk_size)(leaf, anchor_labels, contrast_mask=mask, memory=constant,
                                                     memory_labels=memory_labels)
    assert value.item() == pytest.approx(expected, rel=2e-6, abs=2e-6)
    value.backward()
    assert constant.grad is None

    concatenated = anchors.clone().requires_grad_()
    reference = pixel_contrast(concatenated, anchor_labels, torch.cat([concatenated, memory]), labels_all,
                               contrast_mask=oracle_mask, chunk_size=chunk_size)
    reference.backward()
    torch.testing.assert_close(leaf.grad, concatenated.grad, rtol=1e-6, atol=1e-7)


def test_memory_arguments_are_checked():
    anchors, labels = torch.zeros(4, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="give both or neither"):
        pixel_contrast(anchors, labels, anchors, labels, memory=torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"memory must be \(R, D=8\)"):
        pixel_contrast(anchors, labels, anchors, labels, memory=torch.zeros(3, 6),
                       memory_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="memory_labels must be"):
        pixel_contrast(anchors, labels, anchors, labels, memory=torch.zeros(3, 8),
                       memory_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, M \+ R\) = \(4, 7\)"):
        pixel_contrast(anchors, labels, anchors, labels, memory=torch.zeros(3, 8),
                       memory_labels=torch.zeros(3, dtype=torch.long), contrast_mask=torch.ones(4, 4, dtype=bool))
