import math

import numpy as np
import pytest
import torch

from contrastseg.feature_metrics import feature_metrics


def reference_feature_metrics(embeddings: np.ndarray, labels: np.ndarray, neighbours: int, normalize: bool) -> dict:
    """The supplement's formulas written out with plain loops over classes, samples and pairs."""
    embeddings = embeddings.astype(np.float64)
    if normalize:
        embeddings = np.stack([vector / np.linalg.norm(vector) for vector in embeddings])
    classes = sorted(set(labels.tolist()))
    members = {cls: [vector for vector, label in zip(embeddings, labels) if label == cls] for cls in classes}

    alignment = 0.0
    for cls in classes:
        pair_sum = sum(np.linalg.norm(first - second) for first in members[cls] for second in members[cls])
        alignment += pair_sum / len(members[cls]) ** 2
    alignment /= len(classes)

    centroids = {cls: sum(members[cls]) / len(members[cls]) for cls in classes}
    between = {(i, j): np.linalg.norm(centroids[i] - centroids[j]) for i in classes for j in classes if i != j}
    uniformity = sum(between.values()) / (len(classes) * (len(classes) - 1)) if len(classes) > 1 else math.nan
    if len(classes) > 1:
        nearest_means = []
        for i in classes:
            nearest = sorted(between[i, j] for j in classes if j != i)[:min(neighbours, len(classes) - 1)]
            nearest_means.append(sum(nearest) / len(nearest))
        neighbourhood = sum(nearest_means) / len(nearest_means)
    else:
        neighbourhood = math.nan
    return {"alignment": alignment, "uniformity": uniformity, "neighbourhood_uniformity": neighbourhood,
            "num_classes": len(classes)}


def random_features(seed: int, count: int = 90, dim: int = 6, num_classes: int = 5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count) * 3 + 1  # class ids need not be 0..N_c-1
    embeddings = rng.normal(size=(count, dim)) + 2 * rng.normal(size=(num_classes * 3 + 1, dim))[labels]
    return embeddings.astype(np.float32), labels


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("neighbours", [1, 3, 10])
@pytest.mark.parametrize("chunk_size", [7, 2048])
def test_feature_metrics_match_a_loop_reference(normalize, neighbours, chunk_size):
    embeddings, labels = random_features(seed=neighbours)
    expected = reference_feature_metrics(embeddings, labels, neighbours, normalize)
    result = feature_metrics(embeddings, labels, neighbours=neighbours, normalize=normalize, chunk_size=chunk_size)
    assert result["num_classes"] == expected["num_classes"] == 5
    assert result["num_samples"] == len(labels)
    for name in ("alignment", "uniformity", "neighbourhood_uniformity"):
        assert result[name] == pytest.approx(expected[name], rel=1e-9), name


def test_two_classes_of_identical_points_at_distance_d():
    distance = 2.5
    embeddings = torch.zeros(7, 3)
    embeddings[4:, 1] = distance
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    result = feature_metrics(embeddings, labels, normalize=False)
    assert result == {"alignment": 0.0, "uniformity": pytest.approx(distance),
                      "neighbourhood_uniformity": pytest.approx(distance), "num_classes": 2, "num_samples": 7}


def test_alignment_counts_the_pairs_of_a_point_with_itself():
    # one class of two points at distance 1: 2 ordered pairs at distance 1 among 2² = 4, so A = 1/2
    result = feature_metrics(torch.tensor([[0.0], [1.0]]), torch.tensor([3, 3]), normalize=False)
    assert result["alignment"] == pytest.approx(0.5)
    assert math.isnan(result["uniformity"]) and math.isnan(result["neighbourhood_uniformity"])
    assert result["num_classes"] == 1


def test_normalize_compares_directions_only():
    embeddings = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    normalized = feature_metrics(embeddings, labels, normalize=True)
    assert normalized["alignment"] == 0.0  # both class-0 vectors point the same way
    assert normalized["uniformity"] == pytest.approx(math.sqrt(2))
    raw = feature_metrics(embeddings, labels, normalize=False)
    assert raw["alignment"] == pytest.approx(2 * 4 / 4 / 2)  # class 0: 2 pairs at distance 4 over 4; class 1: 0
    assert raw["uniformity"] == pytest.approx(math.hypot(3, 2))


def test_torch_and_numpy_inputs_give_the_same_numbers():
    embeddings, labels = random_features(seed=7)
    from_numpy = feature_metrics(embeddings, labels)
    from_torch = feature_metrics(torch.from_numpy(embeddings), torch.from_numpy(labels))
    from_int32_labels = feature_metrics(embeddings, labels.astype(np.int32))
    assert from_numpy == from_torch == from_int32_labels


def test_subsampling_keeps_at_most_max_per_class_and_leaves_the_centroids_alone():
    embeddings, labels = random_features(seed=3, count=200, num_classes=4)
    counts = np.unique(labels, return_counts=True)[1]
    full = feature_metrics(embeddings, labels)
    sampled = feature_metrics(embeddings, labels, max_per_class=20, generator=torch.Generator().manual_seed(0))
    assert sampled["num_samples"] == np.minimum(counts, 20).sum() < len(labels)
    assert sampled["uniformity"] == full["uniformity"]
    assert sampled["neighbourhood_uniformity"] == full["neighbourhood_uniformity"]
    assert sampled["alignment"] != full["alignment"]
    assert sampled["alignment"] == pytest.approx(full["alignment"], rel=0.2)
    again = feature_metrics(embeddings, labels, max_per_class=20, generator=torch.Generator().manual_seed(0))
    assert again == sampled  # the generator decides the subsample
    # a small class stays whole; max_per_class >= every class size changes nothing
    small = feature_metrics(embeddings, labels, max_per_class=int(counts.max()))
    assert small == full


def test_subsampling_draws_from_the_class_only():
    # class 0 holds points at 0 and 10 on a line, class 1 one point (alignment 0): a 2-sample subsample of class 0
    # is either one place twice (alignment 0) or both places (2 of 4 ordered pairs at 10: 5), so A is 0 or 5 / 2
    embeddings = torch.tensor([[0.0], [0.0], [10.0], [10.0], [99.0]])
    labels = torch.tensor([0, 0, 0, 0, 1])
    seen = set()
    for seed in range(20):
        result = feature_metrics(embeddings, labels, normalize=False, max_per_class=2,
                                 generator=torch.Generator().manual_seed(seed))
        assert result["num_samples"] == 3
        seen.add(round(result["alignment"], 9))
    assert seen == {0.0, 2.5}


@pytest.mark.parametrize(("arguments", "bad"), [
    ({"embeddings": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}, "empty"),
    ({"embeddings": torch.zeros(4), "labels": torch.zeros(4, dtype=torch.long)}, "embeddings"),
    ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(3, dtype=torch.long)}, "labels"),
    ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(4)}, "labels"),
    ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(4, dtype=torch.long), "neighbours": 0}, "neighbours"),
    ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(4, dtype=torch.long), "max_per_class": 0},
     "max_per_class"),
])
def test_bad_input_is_a_value_error_naming_the_argument(arguments, bad):
    embeddings, labels = arguments.pop("embeddings"), arguments.pop("labels")
    with pytest.raises(ValueError, match=bad):
        feature_metrics(embeddings, labels, **arguments)
