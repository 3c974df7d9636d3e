"""The Contextrast objective against a slow reference written from the paper's formulas, its switches, its sampler."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastseg.config import smoke
from contrastseg.engine import read_log, train
from contrastseg.engine.train import build_model
from contrastseg.methods import build_objective
from contrastseg.methods.contextrast.bane import boundary_aware_negatives
from contrastseg.methods.contextrast.objective import MIN_PIXELS_PER_CLASS, ContextrastObjective, level_weights
from contrastseg.objectives import weighted_total
from contrastseg.samplers import class_balanced_sampling, downsample_labels

TAU = 0.1
EVERYTHING = {"max_pixels": 10**6, "max_pixels_per_class": 10**6}  # caps that keep every pixel: no randomness


def fake_outputs(batch=2, classes=4, dim=6, sizes=(8, 4, 4, 4), image=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    levels = tuple(F.normalize(torch.randn(batch, dim, size, size, generator=generator), dim=1).requires_grad_()
                   for size in sizes)
    logits = torch.randn(batch, classes, image, image, generator=generator)
    labels = torch.randint(0, classes, (batch, image, image), generator=generator)
    labels[0, :2, :5] = 255
    return {"logits": logits, "level_embeddings": levels}, labels


def pixels_of(level):
    """(B, D, h, w) -> (B * h * w, D), image-major and row-major like the samplers' flat indices."""
    return level.permute(0, 2, 3, 1).reshape(-1, level.shape[1])


def slow_level_loss(anchors, anchor_classes, pixels, pixel_labels, negatives_of):
    """Mean over anchors with positives of the mean over positives of -log(e^{a.p} / (e^{a.p} + sum_n e^{a.n}))."""
    per_anchor = []
    for anchor, cls in zip(anchors, anchor_classes.tolist()):
        positives = [p for p, label in zip(pixels, pixel_labels.tolist()) if label == cls]
        if not positives:
            continue
        negative_exp = sum((torch.exp(anchor @ n / TAU) for n in negatives_of(cls)), torch.tensor(0.0))
        terms = [-torch.log(torch.exp(anchor @ p / TAU) / (torch.exp(anchor @ p / TAU) + negative_exp))
                 for p in positives]
        per_anchor.append(torch.stack(terms).mean())
    return torch.stack(per_anchor).mean()


def slow_contextrast(outputs, labels, mixing=0.5, bane=None, weights=(0.1, 0.4, 0.7, 1.0)):
    """The paper's L_PA with every pixel sampled; ``bane(level_labels, predictions) -> (negative_for, mode)``."""
    levels = outputs["level_embeddings"]
    small = [downsample_labels(labels, level.shape[-2:]).reshape(-1) for level in levels]
    means = []
    for level, level_labels in zip(levels, small):
        rows = pixels_of(level)
        classes = sorted(set(level_labels.tolist()) - {255})
        means.append({c: rows[level_labels == c].mean(0) for c in classes})
    total = 0.0
    for index, (level, level_labels) in enumerate(zip(levels, small)):
        rows = pixels_of(level)
        is_last = index == len(levels) - 1
        classes = sorted(means[index])
        anchors = torch.stack([F.normalize(means[index][c] if is_last or c not in means[-1]
                                           else (1 - mixing) * means[index][c] + mixing * means[-1][c], dim=0)
                               for c in classes])
        present = level_labels[level_labels != 255]
        large = [c for c in classes if (present == c).sum() >= MIN_PIXELS_PER_CLASS]  # smaller ones are not sampled
        valid = torch.isin(level_labels, torch.tensor(large))
        if bane is None:
            def negatives_of(cls, rows=rows, level_labels=level_labels, valid=valid):
                return rows[valid & (level_labels != cls)]
            positives_labels = torch.where(valid, level_labels, -2)
        else:
            predictions = downsample_labels(outputs["logits"].argmax(1), level.shape[-2:]).reshape(-1)
            negative_for, mode = bane(level_labels.view(labels.shape[0], *level.shape[-2:]),
                                      predictions.view(labels.shape[0], *level.shape[-2:]))

            def negatives_of(cls, rows=rows, level_labels=level_labels, valid=valid, negative_for=negative_for,
                             mode=mode):
                hard = negative_for == cls
                if mode == "replace":
                    return rows[hard]
                return rows[(valid & (level_labels != cls)) | hard]
            positives_labels = torch.where(valid, level_labels, -2)
        total = total + weights[index] * slow_level_loss(anchors, torch.tensor(classes), rows, positives_labels,
                                                         negatives_of)
    return total


def test_loss_and_gradient_match_the_slow_reference_without_bane():
    outputs, labels = fake_outputs()
    objective = ContextrastObjective(4, bane="off", temperature=TAU, **EVERYTHING)
    got = objective(outputs, labels, step=0)["contrast"]
    (got_grad,) = torch.autograd.grad(got, outputs["level_embeddings"][0])
    expected = slow_contextrast(outputs, labels)
    (expected_grad,) = torch.autograd.grad(expected, outputs["level_embeddings"][0])
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(got_grad, expected_grad, atol=1e-6)  # through anchors, mixing and pixels


@pytest.mark.parametrize("mode", ["union", "replace"])
def test_bane_negatives_match_the_slow_reference(mode):
    outputs, labels = fake_outputs(seed=1)

    def bane(level_labels, predictions):
        sample = boundary_aware_negatives(level_labels, predictions, fraction=1.0, max_per_class=1024)
        return sample.negative_for.reshape(-1), mode

    # every error pixel is taken (fraction 1): BANE's random tie order plays no part; test_bane covers the ranking
    objective = ContextrastObjective(4, bane=mode, bane_fraction=1.0, temperature=TAU, **EVERYTHING)
    got = objective(outputs, labels, step=0)["contrast"]
    expected = slow_contextrast(outputs, labels, bane=bane)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    if mode == "union":  # every pixel is sampled, so BANE's pixels are negatives already: counted once
        off = ContextrastObjective(4, bane="off", temperature=TAU, **EVERYTHING)(outputs, labels, step=0)
        assert got.item() == pytest.approx(off["contrast"].item(), rel=1e-6)


def test_union_bane_adds_hard_negatives_when_the_sample_leaves_pixels_out():
    outputs, labels = fake_outputs(seed=2, sizes=(8,))
    losses = {}
    for mode in ("off", "union"):
        torch.manual_seed(0)  # the same class-balanced sample in both (one level: BANE draws after it)
        objective = ContextrastObjective(4, levels=1, bane=mode, max_pixels=16, max_pixels_per_class=4)
        losses[mode] = objective(outputs, labels, step=0)["contrast"].item()
    assert losses["union"] > losses["off"]  # more negatives, larger InfoNCE


def test_literal_bane_moves_the_pixel_from_positive_to_negative_of_its_own_anchor():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :, 2:] = 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 0] = 1.0
    logits[0, 1, 0, 0] = 5.0  # pixel (0, 0) of class 0 predicted as 1: BANE's only error pixel of class 0
    logits[0, 1, :, 2:] = 5.0
    generator = torch.Generator().manual_seed(3)
    level = F.normalize(torch.randn(1, 3, 4, 4, generator=generator), dim=1)
    outputs = {"logits": logits, "level_embeddings": (level,)}
    got = ContextrastObjective(2, levels=1, bane="union", bane_fraction=1.0, bane_literal=True, temperature=TAU,
                               **EVERYTHING)(outputs, labels, step=0)["contrast"]
    rows, flat = pixels_of(level), labels.reshape(-1)
    anchors = F.normalize(torch.stack([rows[flat == 0].mean(0), rows[flat == 1].mean(0)]), dim=1)
    pixel_labels = flat.clone()
    pixel_labels[0] = -1  # no longer a positive of class 0 ...
    expected = slow_level_loss(anchors, torch.tensor([0, 1]), rows, pixel_labels,
                               lambda cls: rows[flat != cls] if cls == 1 else torch.cat([rows[flat == 1], rows[:1]]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)  # ... and a negative of class 0 instead


def test_detached_anchors_change_the_gradient_not_the_value():
    outputs, labels = fake_outputs(seed=4)
    values, grads = [], []
    for detach in (False, True):
        loss = ContextrastObjective(4, bane="off", detach_anchors=detach, **EVERYTHING)(outputs, labels, 0)["contrast"]
        values.append(loss.item())
        grads.append(torch.autograd.grad(loss, outputs["level_embeddings"][-1])[0])
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert not torch.allclose(grads[0], grads[1], atol=1e-6)


def test_level_weights_from_the_last_level_down_and_reversed():
    assert level_weights(4) == (0.1, 0.4, 0.7, 1.0)
    assert level_weights(4, reverse=True) == (1.0, 0.7, 0.4, 0.1)
    assert level_weights(1) == (1.0,)
    assert level_weights(2) == (0.7, 1.0)
    with pytest.raises(ValueError, match="levels"):
        level_weights(5)


def test_contrast_is_the_weighted_sum_of_logged_levels_and_only_it_is_weighted():
    outputs, labels = fake_outputs(seed=5)
    objective = ContextrastObjective(4, **EVERYTHING, warmup_steps=3)
    terms = objective(outputs, labels, step=0)
    per_level = [terms[f"contrast_level{i}"].item() for i in range(1, 5)]
    assert terms["contrast"].item() == pytest.approx(sum(w * v for w, v in zip(level_weights(4), per_level)))
    assert objective.weights(0)["contrast"] == 0.0 and objective.weights(3)["contrast"] == 0.1
    assert all(objective.weights(3)[f"contrast_level{i}"] == 0.0 for i in range(1, 5))
    weighted_total(terms, objective.weights(3)).backward()
    assert all(level.grad is not None for level in outputs["level_embeddings"])


def test_errors_name_the_problem():
    outputs, labels = fake_outputs()
    with pytest.raises(ValueError, match="proj_levels=2"):
        ContextrastObjective(4, levels=2)(outputs, labels, step=0)
    with pytest.raises(ValueError, match="union"):
        ContextrastObjective(4, bane="both")
    with pytest.raises(ValueError, match="anchor_mixing"):
        ContextrastObjective(4, anchor_mixing=1.5)
    with pytest.raises(ValueError, match="bane mode"):
        smoke(method="contextrast", bane="sometimes")


def test_model_projects_as_many_levels_as_the_config_asks():
    for levels in (1, 4):
        model = build_model(smoke(method="contextrast", contrast_levels=levels))
        assert len(model.projections) == levels
    outputs = model(torch.randn(2, 3, 64, 64))
    assert len(outputs["level_embeddings"]) == 4
    objective = build_objective(smoke(method="contextrast", bane="replace"), num_classes=9)
    assert isinstance(objective, ContextrastObjective) and objective.bane == "replace"


def test_training_runs_and_logs_every_level(tmp_path):
    cfg = smoke(method="contextrast", steps=4, num_train=16, num_val=8, batch_size=4)
    metrics = train(cfg, tmp_path, progress=False)
    log = read_log(tmp_path)
    assert len(log) == 4 and all(math.isfinite(row["contrast_level1"]) for row in log)
    assert 0.0 <= metrics["val"]["miou"] <= 1.0


class TestClassBalancedSampling:
    def test_caps_per_class_and_in_total_and_drops_small_classes(self):
        labels = torch.full((2, 10, 10), 255)
        labels[0, :5] = 0                # 50 pixels
        labels[1, :3] = 1                # 30 pixels
        labels[1, 5, :3] = 2             # 3 pixels: under min_per_class
        labels[0, 9] = 3                 # 10 pixels
        sample = class_balanced_sampling(labels, max_total=40, max_per_class=15, min_per_class=5)
        counts = torch.bincount(sample.labels, minlength=4).tolist()
        assert counts == [13, 13, 0, 10]  # 40 // 3 classes = 13 each, class 3 has only 10
        assert sample.labels.tolist() == sorted(sample.labels.tolist())
        assert torch.equal(labels.reshape(-1)[sample.indices], sample.labels)
        assert sample.indices.unique().numel() == sample.indices.numel()

    def test_every_pixel_of_a_class_is_equally_likely(self):
        labels = torch.zeros(1, 4, 5, dtype=torch.long)
        hits = torch.zeros(20)
        generator = torch.Generator().manual_seed(0)
        for _ in range(2000):
            hits[class_balanced_sampling(labels, max_total=5, max_per_class=5, generator=generator).indices] += 1
        assert torch.allclose(hits / 2000, torch.full((20,), 0.25), atol=0.05)

    def test_nothing_to_sample_and_bad_caps(self):
        assert class_balanced_sampling(torch.full((1, 3, 3), 255)).num_anchors == 0
        with pytest.raises(ValueError, match="max_total"):
            class_balanced_sampling(torch.zeros(1, 3, 3, dtype=torch.long), max_total=0)
