import itertools

import pytest
import torch
import torch.nn.functional as F

from contrastseg.samplers.region_matching import (hungarian_match, label_regions, matching_cost, semantic_targets,
                                                  teacher_regions)


def test_hungarian_match_on_hand_built_costs():
    cost = torch.tensor([[4.0, 1.0, 3.0],
                         [2.0, 0.0, 5.0],
                         [3.0, 2.0, 2.0]])
    queries, targets = hungarian_match(cost)  # optimum 1 + 2 + 2 = 5: (0, 1), (1, 0), (2, 2)
    assert targets.tolist() == [0, 1, 2] and queries.tolist() == [1, 0, 2]
    assert queries.dtype == targets.dtype == torch.int64


def test_hungarian_match_with_more_queries_than_targets_sorts_by_target():
    cost = torch.tensor([[9.0, 9.0],
                         [9.0, 0.0],
                         [9.0, 9.0],
                         [0.0, 9.0]])
    queries, targets = hungarian_match(cost)
    assert targets.tolist() == [0, 1] and queries.tolist() == [3, 1]


def test_hungarian_match_with_no_target_or_a_bad_cost():
    queries, targets = hungarian_match(torch.zeros(4, 0))
    assert queries.shape == targets.shape == (0,) and queries.dtype == targets.dtype == torch.int64
    with pytest.raises(ValueError, match="1 NaN"):
        hungarian_match(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="1 infinite"):
        hungarian_match(torch.tensor([[0.0, float("inf")], [1.0, 2.0]]))


@pytest.mark.parametrize("num_queries, num_targets", [(3, 3), (5, 2), (4, 4), (5, 5), (2, 4)])
def test_hungarian_match_equals_brute_force(num_queries, num_targets):
    generator = torch.Generator().manual_seed(10 * num_queries + num_targets)
    for _ in range(5):
        cost = torch.rand(num_queries, num_targets, generator=generator, dtype=torch.float64)
        queries, targets = hungarian_match(cost)
        assert len(queries) == min(num_queries, num_targets) and torch.all(targets.diff() > 0)
        if num_queries >= num_targets:
            best = min(sum(cost[rows[t], t] for t in range(num_targets))
                       for rows in itertools.permutations(range(num_queries), num_targets))
        else:
            best = min(sum(cost[q, columns[q]] for q in range(num_queries))
                       for columns in itertools.permutations(range(num_targets), num_queries))
        assert torch.isclose(cost[queries, targets].sum(), torch.as_tensor(best))


def slow_matching_cost(class_logits, mask_logits, target_classes, target_masks, valid):
    cost = torch.zeros(len(class_logits), len(target_classes))
    probabilities = class_logits.softmax(dim=-1)
    for q in range(len(class_logits)):
        for t in range(len(target_classes)):
            x, m = mask_logits[q][valid], target_masks[t][valid]
            bce = F.binary_cross_entropy_with_logits(x, m)
            dice = 1 - (2 * (x.sigmoid() * m).sum() + 1) / (x.sigmoid().sum() + m.sum() + 1)
            cost[q, t] = -2 * probabilities[q, target_classes[t]] + 5 * bce + 5 * dice
    return cost


@pytest.mark.parametrize("with_valid", [False, True])
def test_matching_cost_equals_a_loop_over_pairs(with_valid):
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(6, 4, generator=generator)
    mask_logits = 3 * torch.randn(6, 50, generator=generator)
    target_classes = torch.tensor([2, 0, 2])
    target_masks = (torch.rand(3, 50, generator=generator) > 0.5).float()
    valid = torch.rand(50, generator=generator) > 0.3 if with_valid else torch.ones(50, dtype=torch.bool)
    cost = matching_cost(class_logits, mask_logits, target_classes, target_masks, valid if with_valid else None)
    assert cost.shape == (6, 3)
    assert torch.allclose(cost, slow_matching_cost(class_logits, mask_logits, target_classes, target_masks, valid),
                          atol=1e-5)
    assert matching_cost(class_logits, mask_logits, target_classes[:0], target_masks[:0]).shape == (6, 0)


def test_matching_recovers_a_planted_assignment():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (6, 7), generator=generator)
    labels[0, :4] = torch.tensor([0, 1, 2, 3])  # every class present
    classes, masks = label_regions(labels, num_classes=4)
    num_queries = 6
    class_logits = torch.full((num_queries, 5), -10.0)
    class_logits[:, 4] = 10.0  # the spare queries say "no object"
    mask_logits = torch.full((num_queries, 42), -20.0)
    for t, (k, mask) in enumerate(zip(classes, masks)):
        class_logits[t, k] = 10.0
        class_logits[t, 4] = -10.0
        mask_logits[t] = 20.0 * (2 * mask.flatten() - 1)
    shuffle = torch.randperm(num_queries, generator=generator)
    queries, targets = hungarian_match(matching_cost(class_logits[shuffle], mask_logits[shuffle], classes,
                                                     masks.flatten(1)))
    assert targets.tolist() == list(range(len(classes)))
    assert shuffle[queries].tolist() == list(range(len(classes)))


def test_label_regions_on_a_hand_built_map():
    labels = torch.tensor([[3, 3, 255],
                           [0, 3, 255]])
    classes, masks = label_regions(labels, num_classes=4)
    assert classes.tolist() == [0, 3] and classes.dtype == torch.int64
    assert masks.dtype == torch.float32
    assert masks.tolist() == [[[0, 0, 0], [1, 0, 0]], [[1, 1, 0], [0, 1, 0]]]
    empty_classes, empty_masks = label_regions(torch.full((2, 3), 255), num_classes=4)
    assert empty_classes.shape == (0,) and empty_masks.shape == (0, 2, 3)
    with pytest.raises(ValueError, match="label 7"):
        label_regions(torch.tensor([[0, 7], [255, 1]]), num_classes=4)
    with pytest.raises(ValueError, match="label -1"):
        label_regions(torch.tensor([[0, -1]]), num_classes=4)


def test_teacher_regions_keep_only_confident_non_empty_queries():
    confident, unsure, big = 8.0, 0.5, 8.0
    class_logits = torch.tensor([
        [confident, 0.0, 0.0, 0.0],  # kept: class 0, p ~ 0.999
        [0.0, unsure, 0.0, 0.0],  # dropped: top class probability below 0.7
        [0.0, 0.0, confident, 0.0],  # dropped: confident but its mask is empty
        [0.0, 0.0, 0.0, confident],  # dropped: "no object"
        [0.0, confident, 0.0, 0.0],  # kept: class 1
    ])
    mask_logits = torch.full((5, 2, 3), -big)
    mask_logits[0, 0, :2] = big
    mask_logits[1] = big
    mask_logits[3] = big
    mask_logits[4, 1, 2] = big
    classes, masks, query_index = teacher_regions(class_logits, mask_logits)
    assert query_index.tolist() == [0, 4] and classes.tolist() == [0, 1]
    assert masks.dtype == torch.float32
    assert masks.tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]]]


def test_teacher_regions_can_be_empty():
    classes, masks, query_index = teacher_regions(torch.zeros(3, 4), torch.ones(3, 5, 6))
    assert classes.shape == (0,) and masks.shape == (0, 5, 6) and query_index.shape == (0,)
    assert classes.dtype == query_index.dtype == torch.int64 and masks.dtype == torch.float32


def test_semantic_targets_take_the_union_per_class():
    classes = torch.tensor([1, 1, 0])
    masks = torch.tensor([[[1, 0], [0, 0]],
                          [[1, 1], [0, 0]],
                          [[0, 0], [0, 1]]], dtype=torch.float32)
    class_masks, present = semantic_targets(classes, masks, num_classes=3)
    assert class_masks.tolist() == [[[0, 0], [0, 1]], [[1, 1], [0, 0]], [[0, 0], [0, 0]]]
    assert present.tolist() == [True, True, False]
    empty_masks, empty_present = semantic_targets(classes[:0], masks[:0], num_classes=3)
    assert empty_masks.shape == (3, 2, 2) and not empty_present.any()
