"""Anchor samplers (segmentation-aware hard anchors, uniform) and per-anchor memory selection."""

import math
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastseg.methods.pixel_contrast.memory_selection import CONTRAST_MODES, select_contrast
from contrastseg.samplers import (AnchorSample, downsample_labels, gather_pixels, hard_anchor_sampling,
                                  random_anchor_sampling, sample_within_groups)
from contrastseg.samplers import hard_anchor

IGNORE = 255


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_class_image(hard: int, easy: int, cls: int = 1, side: int = 40, rest: int = IGNORE):
    """A (1, side, side) image whose first ``hard + easy`` pixels have class ``cls``: the first ``hard`` predicted
    as class ``cls + 1`` (hard), the next ``easy`` as ``cls`` (easy); the other pixels are ``rest``."""
    labels = torch.full((side * side,), rest, dtype=torch.int64)
    predictions = torch.zeros(side * side, dtype=torch.int64)
    labels[:hard + easy] = cls
    predictions[:hard] = cls + 1
    predictions[hard:hard + easy] = cls
    return labels.view(1, side, side), predictions.view(1, side, side)


def blocky_batch(batch: int = 2, height: int = 128, width: int = 256, num_classes: int = 19, block: int = 16,
                 error_rate: float = 0.3, seed: int = 0):
    """Random block labels with some ignore blocks and a prediction wrong on about ``error_rate`` of the pixels."""
    generator = seeded(seed)
    grid = torch.randint(0, num_classes, (batch, height // block, width // block), generator=generator)
    grid[torch.rand(grid.shape, generator=generator) < 0.1] = IGNORE
    labels = grid.repeat_interleave(block, 1).repeat_interleave(block, 2)
    noise = torch.randint(0, num_classes, labels.shape, generator=generator)
    predictions = torch.where(torch.rand(labels.shape, generator=generator) < error_rate, noise, labels)
    predictions[labels == IGNORE] = 0
    return labels, predictions


def loop_hard_anchor_sampling(labels, predictions, max_samples, max_views, ignore_index, generator):
    """The reference's per-image, per-class loop (``_hard_anchor_sampling``), as flat indices."""
    batch = labels.shape[0]
    flat_labels, flat_predictions = labels.reshape(batch, -1), predictions.reshape(batch, -1)
    pairs = []
    for image in range(batch):
        classes = [c for c in torch.unique(flat_labels[image]).tolist() if c != ignore_index]
        pairs += [(image, c) for c in classes if int((flat_labels[image] == c).sum()) > max_views]
    if not pairs:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool), 0
    views = min(max_samples // len(pairs), max_views)
    chosen, hardness = [], []
    for image, c in pairs:
        offset = image * flat_labels.shape[1]
        of_class = flat_labels[image] == c
        hard = torch.nonzero(of_class & (flat_predictions[image] != c)).squeeze(1)
        easy = torch.nonzero(of_class & (flat_predictions[image] == c)).squeeze(1)
        if len(hard) >= views / 2 and len(easy) >= views / 2:
            num_hard = views // 2
        elif len(hard) >= views / 2:
            num_hard = views - len(easy)
        else:
            num_hard = len(hard)
        hard = hard[torch.randperm(len(hard), generator=generator)[:num_hard]]
        easy = easy[torch.randperm(len(easy), generator=generator)[:views - num_hard]]
        chosen += [hard + offset, easy + offset]
        hardness += [torch.ones(len(hard), dtype=torch.bool), torch.zeros(len(easy), dtype=torch.bool)]
    return torch.cat(chosen), torch.cat(hardness), views


def check_sample_is_consistent(sample: AnchorSample, labels, predictions=None):
    flat = labels.reshape(-1)
    assert sample.indices.dtype == torch.int64 and sample.labels.dtype == torch.int64
    assert sample.is_hard.dtype == torch.bool
    assert len(sample.indices) == len(sample.labels) == len(sample.is_hard)
    assert torch.equal(flat[sample.indices], sample.labels), "indices point to pixels of the stated label"
    assert not (sample.labels == IGNORE).any()
    assert torch.unique(sample.indices).numel() == sample.indices.numel(), "no pixel twice"
    if predictions is not None:
        assert torch.equal(predictions.reshape(-1)[sample.indices] != sample.labels, sample.is_hard)


# ---------------------------------------------------------------------------------------------------------------
# hard anchor sampling


def test_few_hard_pixels_are_all_taken_and_easy_ones_fill_up():
    labels, predictions = one_class_image(hard=10, easy=300)
    sample = hard_anchor_sampling(labels, predictions, max_samples=1024, max_views=100, generator=seeded())
    check_sample_is_consistent(sample, labels, predictions)
    assert (sample.num_pairs, sample.views_per_pair) == (1, 100)
    assert int(sample.is_hard.sum()) == 10 and int((~sample.is_hard).sum()) == 90


def test_few_easy_pixels_are_all_taken_and_hard_ones_fill_up():
    labels, predictions = one_class_image(hard=300, easy=7)
    sample = hard_anchor_sampling(labels, predictions, max_samples=1024, max_views=100, generator=seeded())
    check_sample_is_consistent(sample, labels, predictions)
    assert int(sample.is_hard.sum()) == 93 and int((~sample.is_hard).sum()) == 7


@pytest.mark.parametrize("max_samples, views", [(200, 100), (99, 49)])
def test_plentiful_hard_and_easy_split_floor_half(max_samples, views):
    labels, predictions = one_class_image(hard=200, easy=200)
    other_labels, other_predictions = one_class_image(hard=150, easy=150, cls=3)
    labels, predictions = torch.cat([labels, other_labels]), torch.cat([predictions, other_predictions])
    sample = hard_anchor_sampling(labels, predictions, max_samples=max_samples, max_views=100, generator=seeded())
    check_sample_is_consistent(sample, labels, predictions)
    assert (sample.num_pairs, sample.views_per_pair) == (2, views)
    by_pair = sample.is_hard.view(2, views)
    assert by_pair.sum(1).tolist() == [views // 2] * 2
    assert by_pair[:, :views // 2].all(), "hard anchors come first within a pair"


def test_eligibility_is_strictly_more_than_max_views():
    labels = torch.full((1, 20, 20), IGNORE, dtype=torch.int64).view(-1)
    labels[:50], labels[50:101], labels[101:150] = 0, 1, 2  # 50, 51 and 49 pixels
    labels = labels.view(1, 20, 20)
    sample = hard_anchor_sampling(labels, labels.clone(), max_samples=1024, max_views=50, generator=seeded())
    assert sample.num_pairs == 1 and set(sample.labels.tolist()) == {1}
    assert sample.views_per_pair == 50


def test_budget_is_shared_between_pairs_and_capped_by_max_views():
    labels, predictions = blocky_batch()
    flat = labels.view(2, -1)
    expected_pairs = sum(int(((flat[b] == c).sum() > 100)) for b in range(2) for c in range(19))
    sample = hard_anchor_sampling(labels, predictions, max_samples=1024, max_views=100, generator=seeded())
    assert sample.num_pairs == expected_pairs
    assert sample.views_per_pair == min(1024 // expected_pairs, 100)
    assert sample.num_anchors == sample.num_pairs * sample.views_per_pair
    check_sample_is_consistent(sample, labels, predictions)
    # grouped pair by pair: each row of the (T, n) view is one image and one class
    images = sample.indices.div(labels[0].numel(), rounding_mode="floor").view(sample.num_pairs, -1)
    classes = sample.labels.view(sample.num_pairs, -1)
    assert (images == images[:, :1]).all() and (classes == classes[:, :1]).all()
    # few pairs: the cap max_views applies
    capped = hard_anchor_sampling(labels[:1], predictions[:1], max_samples=100_000, max_views=30, generator=seeded())
    assert capped.views_per_pair == 30


def test_counts_match_the_reference_loop_on_random_blocks():
    labels, predictions = blocky_batch(error_rate=0.45)
    sample = hard_anchor_sampling(labels, predictions, 1024, 100, generator=seeded())
    loop_indices, loop_hard, loop_views = loop_hard_anchor_sampling(labels, predictions, 1024, 100, IGNORE, seeded())
    assert sample.views_per_pair == loop_views and sample.num_anchors == len(loop_indices)

    def counts(indices, is_hard):
        key = (indices.div(labels[0].numel(), rounding_mode="floor") * 19 + labels.reshape(-1)[indices]) * 2
        return torch.bincount(key + is_hard.long(), minlength=2 * 2 * 19)

    assert torch.equal(counts(sample.indices, sample.is_hard), counts(loop_indices, loop_hard))


def test_no_eligible_pair_gives_an_empty_sample(monkeypatch):
    monkeypatch.setattr(hard_anchor, "_warned", set(), raising=False)
    labels, predictions = one_class_image(hard=5, easy=5)
    with pytest.warns(UserWarning, match="drew no anchor"):
        sample = hard_anchor_sampling(labels, predictions, max_views=100)
    assert sample.num_anchors == 0 and sample.num_pairs == 0 and sample.views_per_pair == 0
    all_ignored = torch.full((2, 8, 8), IGNORE, dtype=torch.int64)
    assert hard_anchor_sampling(all_ignored, torch.zeros_like(all_ignored)).num_anchors == 0


def test_ignore_pixels_are_never_sampled(monkeypatch):
    monkeypatch.setattr(hard_anchor, "_warned", set())
    labels, predictions = blocky_batch(batch=1, height=64, width=64, num_classes=3, block=8)
    with pytest.warns(UserWarning, match="drew no anchor"):
        sample = hard_anchor_sampling(labels, predictions, max_samples=10_000, max_views=10_000, generator=seeded())
    valid = labels != IGNORE
    # max_views above every class count: nothing eligible; a small cap takes every class
    assert sample.num_anchors == 0
    sample = hard_anchor_sampling(labels, predictions, max_samples=10_000, max_views=50, generator=seeded())
    assert valid.reshape(-1)[sample.indices].all()
    check_sample_is_consistent(sample, labels, predictions)


def test_seeded_generator_makes_the_sample_deterministic():
    labels, predictions = blocky_batch()
    first = hard_anchor_sampling(labels, predictions, generator=seeded(3))
    again = hard_anchor_sampling(labels, predictions, generator=seeded(3))
    other = hard_anchor_sampling(labels, predictions, generator=seeded(4))
    assert torch.equal(first.indices, again.indices) and torch.equal(first.is_hard, again.is_hard)
    assert not torch.equal(first.indices, other.indices)


def test_choice_within_a_set_is_uniform():
    labels, predictions = one_class_image(hard=40, easy=200)  # n = 20: 10 of 40 hard, 10 of 200 easy
    hits = torch.zeros(labels.numel())
    draws = 400
    generator = seeded()
    for _ in range(draws):
        sample = hard_anchor_sampling(labels, predictions, max_samples=20, max_views=100, generator=generator)
        hits[sample.indices] += 1
    hard_rate, easy_rate = hits[:40] / draws, hits[40:240] / draws
    assert hard_rate.mean() == pytest.approx(0.25) and easy_rate.mean() == pytest.approx(0.05)
    assert (hard_rate - 0.25).abs().max() < 0.11  # binomial(400, 0.25): sd 0.022
    assert (easy_rate - 0.05).abs().max() < 0.06  # binomial(400, 0.05): sd 0.011


def test_vectorised_sampling_is_at_least_3x_faster_than_the_loop():
    """Timed on one thread: on a shared machine a second OpenMP thread waits for a busy core and times only noise."""
    labels, predictions = blocky_batch()  # 2 images of 128 x 256 embeddings, 19 classes: ~38 pairs

    def vectorised():
        hard_anchor_sampling(labels, predictions, 1024, 100, generator=seeded())

    def loop():
        loop_hard_anchor_sampling(labels, predictions, 1024, 100, IGNORE, seeded())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = {vectorised: [], loop: []}
        for _ in range(12):  # interleaved, so that both see the same load; the best run of each counts
            for fn in times:
                start = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    vectorised, loop = min(times[vectorised][1:]), min(times[loop][1:])
    assert loop / vectorised >= 3, f"vectorised {vectorised * 1e3:.1f} ms, loop {loop * 1e3:.1f} ms"


def test_sample_within_groups_takes_quota_per_group_in_group_order():
    groups = torch.tensor([2, 0, 2, 1, 0, 2, 5, 2])
    quota = torch.tensor([5, 0, 2, 0, 0, 1])  # group 0: fewer elements than its quota; group 1: none wanted
    chosen = sample_within_groups(groups, quota, seeded())
    assert groups[chosen].tolist() == [0, 0, 2, 2, 5]
    assert set(chosen[:2].tolist()) == {1, 4} and set(chosen[2:4].tolist()) <= {0, 2, 5, 7}


def test_sample_within_groups_prefilter_and_its_fallback_change_nothing(monkeypatch):
    groups = torch.randint(0, 30, (20_000,), generator=seeded(5))
    quota = torch.randint(0, 60, (30,), generator=seeded(6))
    full_sort = sample_within_groups(groups, quota, seeded(7), prefilter=False)
    assert torch.equal(sample_within_groups(groups, quota, seeded(7)), full_sort)
    # every group short of candidates at first: all are redone whole, with the same keys
    monkeypatch.setattr(hard_anchor, "candidate_rates", lambda quota, sizes: torch.where(quota > 0, 1e-4, 0.0))
    assert torch.equal(sample_within_groups(groups, quota, seeded(7)), full_sort)
    assert torch.equal(torch.bincount(groups[full_sort], minlength=30),
                       torch.minimum(quota, torch.bincount(groups, minlength=30)))


def test_hard_anchor_sampling_checks_shapes():
    with pytest.raises(ValueError):
        hard_anchor_sampling(torch.zeros(2, 4, 4, dtype=torch.int64), torch.zeros(2, 4, 5, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------------------------
# random anchors, label downsampling, gathering


def test_random_anchor_sampling_is_uniform_over_labelled_pixels():
    labels, predictions = blocky_batch(batch=2, height=32, width=32, num_classes=4, block=8)
    sample = random_anchor_sampling(labels, 100, IGNORE, seeded(), predictions=predictions)
    assert sample.num_anchors == 100 and sample.views_per_pair == 0
    check_sample_is_consistent(sample, labels, predictions)
    assert torch.equal(sample.indices, sample.indices.sort().values)
    pairs = sample.indices.div(32 * 32, rounding_mode="floor") * 4 + sample.labels
    assert sample.num_pairs == torch.unique(pairs).numel()
    everything = random_anchor_sampling(labels, 10**6, IGNORE, seeded())
    assert everything.num_anchors == int((labels != IGNORE).sum()) and not everything.is_hard.any()
    assert random_anchor_sampling(torch.full((1, 4, 4), IGNORE), 10).num_anchors == 0


@pytest.mark.parametrize("factor", [4, 8])
def test_downsample_labels_equals_strided_slicing(factor):
    labels, _ = blocky_batch(batch=2, height=64, width=96, num_classes=7, block=1)
    small = downsample_labels(labels, (64 // factor, 96 // factor))
    assert small.dtype == torch.int64
    assert torch.equal(small, labels[:, ::factor, ::factor])
    assert torch.equal(downsample_labels(labels, labels.shape[-2:]), labels)


def test_gather_pixels_rows_and_gradient():
    embeddings = torch.randn(2, 5, 3, 4, requires_grad=True)
    indices = torch.tensor([0, 13, 23, 7])
    rows = gather_pixels(embeddings, indices)
    expected = embeddings.permute(0, 2, 3, 1).reshape(-1, 5)[indices]
    assert rows.shape == (4, 5) and torch.equal(rows, expected)
    rows.sum().backward()
    assert embeddings.grad.sum() == pytest.approx(4 * 5)


# ---------------------------------------------------------------------------------------------------------------
# memory selection


def unit(rows: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=seeded(seed)), dim=1)


@pytest.fixture
def bank():
    anchors, anchor_labels = unit(12, seed=1), torch.arange(12) % 3
    memory = unit(90, seed=2)
    memory_labels = torch.cat([torch.zeros(50), torch.ones(35), torch.full((5,), 2)]).long()  # class 2: 5 rows
    return anchors, anchor_labels, memory, memory_labels


def test_all_mode_keeps_every_row(bank):
    anchors, anchor_labels, memory, memory_labels = bank
    mask = select_contrast(anchors, anchor_labels, memory, memory_labels, "all")
    assert mask.shape == (12, 90) and mask.dtype == torch.bool and mask.all()
    positive = anchor_labels[:, None] == memory_labels[None]
    assert torch.equal(mask & positive, positive) and torch.equal(mask & ~positive, ~positive)


def test_random_mode_counts_per_anchor(bank):
    anchors, anchor_labels, memory, memory_labels = bank
    mask = select_contrast(anchors, anchor_labels, memory, memory_labels, "random", num_positives=10,
                           num_negatives=20, generator=seeded())
    positive = anchor_labels[:, None] == memory_labels[None]
    set_size = positive.sum(1)
    assert torch.equal((mask & positive).sum(1), torch.clamp(set_size, max=10))  # class 2: only 5, all taken
    assert ((mask & ~positive).sum(1) == 20).all()
    again = select_contrast(anchors, anchor_labels, memory, memory_labels, "random", 10, 20, generator=seeded())
    other = select_contrast(anchors, anchor_labels, memory, memory_labels, "random", 10, 20, generator=seeded(1))
    assert torch.equal(mask, again) and not torch.equal(mask, other)


@pytest.mark.parametrize("chunk_elements", [2**24, 100])
def test_hardest_mode_matches_brute_force_sort(bank, chunk_elements):
    anchors, anchor_labels, memory, memory_labels = bank
    mask = select_contrast(anchors, anchor_labels, memory, memory_labels, "hardest", num_positives=7,
                           num_negatives=11, chunk_elements=chunk_elements)
    similarity = anchors @ memory.T
    for i in range(len(anchors)):
        positives = torch.nonzero(memory_labels == anchor_labels[i]).squeeze(1).tolist()
        negatives = torch.nonzero(memory_labels != anchor_labels[i]).squeeze(1).tolist()
        hardest_positives = sorted(positives, key=lambda j: similarity[i, j].item())[:7]
        hardest_negatives = sorted(negatives, key=lambda j: -similarity[i, j].item())[:11]
        assert set(torch.nonzero(mask[i]).squeeze(1).tolist()) == set(hardest_positives) | set(hardest_negatives)


def test_semi_hard_mode_picks_within_the_hardest_fraction(bank):
    anchors, anchor_labels, memory, memory_labels = bank
    fraction, num_positives, num_negatives = 0.5, 4, 6
    generator = seeded()
    similarity = anchors @ memory.T
    union = torch.zeros(12, 90, dtype=torch.bool)
    for _ in range(20):
        mask = select_contrast(anchors, anchor_labels, memory, memory_labels, "semi_hard", num_positives,
                               num_negatives, semi_hard_fraction=fraction, generator=generator)
        union |= mask
        for i in range(len(anchors)):
            for in_set, k, harder_first in [(memory_labels == anchor_labels[i], num_positives, similarity[i]),
                                            (memory_labels != anchor_labels[i], num_negatives, -similarity[i])]:
                members = torch.nonzero(in_set).squeeze(1)
                pool_size = min(max(math.ceil(fraction * len(members)), k), len(members))
                pool = set(members[harder_first[members].argsort()[:pool_size]].tolist())
                picked = set(torch.nonzero(mask[i] & in_set).squeeze(1).tolist())
                assert len(picked) == min(k, len(members)) and picked <= pool
    # random within the pool: over 20 draws more than the hardest k rows are used
    assert ((union & (anchor_labels[:, None] != memory_labels[None])).sum(1) > num_negatives).all()


def test_selection_handles_empty_inputs_and_bad_modes(bank):
    anchors, anchor_labels, memory, memory_labels = bank
    assert select_contrast(anchors, anchor_labels, memory[:0], memory_labels[:0], "hardest").shape == (12, 0)
    assert select_contrast(anchors[:0], anchor_labels[:0], memory, memory_labels, "semi_hard").shape == (0, 90)
    with pytest.raises(ValueError, match="valid modes"):
        select_contrast(anchors, anchor_labels, memory, memory_labels, "hard")
    assert set(CONTRAST_MODES) == {"all", "random", "hardest", "semi_hard"}


def five_class_stripes(side: int = 16, num_classes: int = 5) -> torch.Tensor:
    """One image of ``side`` x ``side`` pixels in horizontal stripes of ``num_classes`` classes (about equal)."""
    rows = torch.arange(side) * num_classes // side
    return rows[None, :, None].expand(1, side, side).clone()


def test_no_eligible_pair_warns_once_and_names_max_views(monkeypatch):
    monkeypatch.setattr(hard_anchor, "_warned", set(), raising=False)
    labels = five_class_stripes()  # 16 x 16, 5 classes: at most 64 pixels per class
    with pytest.warns(UserWarning, match=r"max_views=100.*more than 100 pixels"):
        sample = hard_anchor_sampling(labels, labels.clone(), max_samples=1024, max_views=100)
    assert sample.num_anchors == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hard_anchor_sampling(labels, labels.clone(), max_samples=1024, max_views=100)  # once per process


def test_a_budget_below_one_view_per_pair_warns(monkeypatch):
    monkeypatch.setattr(hard_anchor, "_warned", set(), raising=False)
    labels = five_class_stripes()
    with pytest.warns(UserWarning, match=r"max_samples=3"):
        sample = hard_anchor_sampling(labels, labels.clone(), max_samples=3, max_views=10)
    assert sample.num_anchors == 0 and sample.num_pairs == 5


def test_no_warning_when_anchors_are_drawn_or_nothing_is_labelled(monkeypatch):
    monkeypatch.setattr(hard_anchor, "_warned", set(), raising=False)
    labels = five_class_stripes()
    all_ignored = torch.full((2, 8, 8), IGNORE, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hard_anchor_sampling(labels, labels.clone(), max_samples=1024, max_views=16).num_anchors > 0
        assert hard_anchor_sampling(all_ignored, torch.zeros_like(all_ignored)).num_anchors == 0
