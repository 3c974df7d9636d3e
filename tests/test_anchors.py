"""Contextrast's class anchors and anchor mixing, against slow loops; the pixel-to-anchor InfoNCE of the paper."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastseg.methods.contextrast.anchors import class_anchors, mix_anchors
from contrastseg.losses.functional import pixel_contrast


def random_level(batch=2, dim=6, size=5, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(batch, dim, size, size, generator=generator), dim=1)
    labels = torch.randint(0, classes, (batch, size, size), generator=generator)
    labels[0, 0, :3] = 255
    return embeddings.requires_grad_(), labels


def test_class_anchors_are_the_means_of_valid_pixels():
    embeddings, labels = random_level()
    anchors, classes = class_anchors(embeddings, labels, num_classes=6)
    assert classes.tolist() == sorted(set(labels[labels != 255].tolist()))
    for anchor, cls in zip(anchors, classes.tolist()):
        members = [embeddings[b, :, y, x] for b in range(2) for y in range(5) for x in range(5)
                   if labels[b, y, x] == cls]
        assert torch.allclose(anchor, torch.stack(members).mean(0), atol=1e-6)


def test_anchors_keep_their_gradient_unless_detached():
    embeddings, labels = random_level()
    anchors, _ = class_anchors(embeddings, labels, num_classes=4)
    anchors.sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    detached, _ = class_anchors(embeddings, labels, num_classes=4, detach=True)
    assert not detached.requires_grad


def test_mixing_formula_renormalises_and_keeps_classes_without_a_global_anchor():
    level = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    level_classes = torch.tensor([0, 2, 5])
    last = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    last_classes = torch.tensor([2, 0])
    mixed = mix_anchors(level, level_classes, last, last_classes, low_weight=0.3, high_weight=0.7)
    expected = [F.normalize(0.3 * level[0] + 0.7 * last[1], dim=0),   # class 0 mixes with the last level's class 0
                F.normalize(0.3 * level[1] + 0.7 * last[0], dim=0),   # class 2 with the last level's class 2
                F.normalize(level[2], dim=0)]                          # class 5 has no global anchor
    assert torch.allclose(mixed, torch.stack(expected), atol=1e-6)
    assert torch.allclose(mix_anchors(level, level_classes, last[:0], last_classes[:0]), F.normalize(level, dim=1))


def slow_pixel_anchor_loss(anchors, anchor_classes, pixels, pixel_labels, temperature):
    """The paper's L_i: mean over anchors of the mean over positives of -log(e^{a.v+} / (e^{a.v+} + sum e^{a.v-}))."""
    per_anchor = []
    for anchor, cls in zip(anchors.tolist(), anchor_classes.tolist()):
        sims = [sum(a * v for a, v in zip(anchor, pixel)) / temperature for pixel in pixels.tolist()]
        positives = [s for s, label in zip(sims, pixel_labels.tolist()) if label == cls]
        negatives = [s for s, label in zip(sims, pixel_labels.tolist()) if label != cls]
        if not positives:
            continue
        terms = [-math.log(math.exp(p) / (math.exp(p) + sum(math.exp(n) for n in negatives))) for p in positives]
        per_anchor.append(sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_anchor_infonce_is_pixel_contrast_with_anchor_queries(seed):
    embeddings, labels = random_level(seed=seed)
    anchors, classes = class_anchors(embeddings, labels, num_classes=4)
    anchors = F.normalize(anchors, dim=1)
    pixels = embeddings.permute(0, 2, 3, 1).reshape(-1, 6)
    flat = labels.reshape(-1)
    pixels, flat = pixels[flat != 255], flat[flat != 255]
    ours = pixel_contrast(anchors, classes, pixels, flat, temperature=0.1, base_temperature=0.1)
    assert ours.item() == pytest.approx(slow_pixel_anchor_loss(anchors, classes, pixels, flat, 0.1), rel=1e-5)
    ours.backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0
