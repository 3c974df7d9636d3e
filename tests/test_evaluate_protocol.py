"""Tests of the papers' test-time protocol in contrastseg.engine.evaluate: multi-scale, flip and sliding windows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastseg.config import smoke
from contrastseg.engine.evaluate import evaluate, multiscale_probabilities, predict, window_probabilities, \
    window_starts

NUM_CLASSES = 4


class PointwiseModel(nn.Module):
    """Logits from a 1x1 convolution: each pixel's logits depend on that pixel only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.classifier = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, images):
        return {"logits": self.classifier(images)}


class PositionModel(nn.Module):
    """Logits that depend on the pixel's column within the input: flips and windows change them."""

    def forward(self, images):
        columns = torch.linspace(0, 1, images.shape[-1]).expand_as(images[:, 0])
        logits = torch.stack([columns, 1 - columns, images[:, 0], images[:, 1]], dim=1)
        return {"logits": logits * 3}


@pytest.mark.parametrize("length, window", [(10, 4), (9, 3), (7, 7), (5, 8), (100, 33)])
def test_windows_cover_every_pixel_and_end_flush(length, window):
    starts = window_starts(length, window)
    covered = torch.zeros(length, dtype=torch.bool)
    for start in starts:
        covered[start:start + window] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == max(length - window, 0)
    assert starts == sorted(set(starts))


def test_sliding_windows_of_a_pointwise_model_equal_the_whole_image():
    model, images = PointwiseModel(), torch.rand(2, 3, 37, 53)
    whole = window_probabilities(model, images, False, None)
    windowed = window_probabilities(model, images, False, (16, 24))
    torch.testing.assert_close(windowed, whole)


def test_sliding_windows_average_overlaps_like_a_loop():
    model, images = PositionModel(), torch.rand(1, 3, 20, 30)
    expected, counts = torch.zeros(1, NUM_CLASSES, 20, 30), torch.zeros(20, 30)
    for top in window_starts(20, 12):
        for left in window_starts(30, 12):
            crop = images[..., top:top + 12, left:left + 12]
            expected[..., top:top + 12, left:left + 12] += model(crop)["logits"].softmax(1)
            counts[top:top + 12, left:left + 12] += 1
    torch.testing.assert_close(window_probabilities(model, images, False, (12, 12)), expected / counts)


def test_multiscale_and_flip_sum_probabilities_like_a_loop():
    model, images = PositionModel(), torch.rand(2, 3, 24, 32)
    scales = (0.5, 1.0, 1.5)
    expected = torch.zeros(2, NUM_CLASSES, 24, 32)
    for scale in scales:
        resized = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True):
            view = resized.flip(-1) if flipped else resized
            probabilities = model(view)["logits"].softmax(1)
            probabilities = probabilities.flip(-1) if flipped else probabilities
            expected += F.interpolate(probabilities, size=(24, 32), mode="bilinear", align_corners=False)
    actual = multiscale_probabilities(model, images, False, scales, True, None)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(predict(model, images, False, scales, True), expected.argmax(1))


def test_flip_changes_a_position_dependent_prediction_and_not_a_pointwise_one():
    images = torch.rand(1, 3, 16, 16)
    pointwise = PointwiseModel()
    assert torch.equal(predict(pointwise, images, False, flip=True), predict(pointwise, images, False))
    position = PositionModel()
    flipped = predict(position, images, False, flip=True)
    # the two column classes swap under the flip, so their summed probabilities tie and the image channels decide
    assert not torch.equal(flipped, predict(position, images, False))


def test_evaluate_handles_images_of_different_sizes():
    samples = [(torch.rand(3, h, w), torch.randint(0, NUM_CLASSES, (h, w))) for h, w in [(16, 20), (24, 18), (16, 20)]]
    model = PointwiseModel()
    metrics = evaluate(model, samples, NUM_CLASSES, batch_size=3, amp=False, progress=False)
    one_by_one = evaluate(model, samples, NUM_CLASSES, batch_size=1, amp=False, progress=False)
    assert metrics["miou"] == pytest.approx(one_by_one["miou"])
    protocol = evaluate(model, samples, NUM_CLASSES, batch_size=3, amp=False, progress=False, scales=(1.0,),
                        window=(8, 8))
    assert protocol["miou"] == pytest.approx(metrics["miou"], abs=1e-6)


def test_config_parses_the_protocol():
    cfg = smoke(eval_scales="0.75,1,1.25", eval_flip=True, eval_window="512x1024")
    assert cfg.evaluation_scales() == (0.75, 1.0, 1.25) and cfg.evaluation_window() == (512, 1024)
    assert smoke().evaluation_scales() == (1.0,) and smoke().evaluation_window() is None
    assert smoke(eval_scales="1").hash() == smoke().hash()  # defaults stay out of the hash
    with pytest.raises(ValueError, match="eval_window"):
        smoke(eval_window="512")


def test_training_with_rectangular_crops_an_aux_head_and_the_test_protocol(tmp_path):
    from contrastseg.engine.train import read_log, train

    cfg = smoke(steps=2, num_train=8, num_val=4, batch_size=2, crop_width=96, aux_weight=0.4, device="cpu",
                eval_scales="0.75,1", eval_flip=True, eval_window="48x48")
    metrics = train(cfg, tmp_path, progress=False)
    log = read_log(tmp_path)
    assert len(log) == 2 and all(step["aux"] > 0 for step in log)
    assert 0 <= metrics["val"]["miou"] <= 1


def tiny_mask_classification_model():
    from contrastseg.models import build_segmentor

    torch.manual_seed(0)
    return build_segmentor("tiny", "mask_classification", NUM_CLASSES, num_queries=4, mask_dim=16,
                           decoder_layers=1).eval()


def test_mask_classification_scores_are_summed_as_they_are_over_flips():
    model, images = tiny_mask_classification_model(), torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        scores = model(images)["logits"]
        flipped_scores = model(images.flip(-1))["logits"].flip(-1)
        actual = multiscale_probabilities(model, images, False, (1.0,), True, None)
    expected = torch.zeros_like(scores)
    for view in (scores, flipped_scores):  # the semantic scores, per pixel and class, of each view
        for b, k, y, x in torch.cartesian_prod(*(torch.arange(n) for n in scores.shape)).tolist():
            expected[b, k, y, x] += view[b, k, y, x]
    torch.testing.assert_close(actual, expected)
    assert not torch.allclose(actual, scores.softmax(1) + flipped_scores.softmax(1))
    torch.testing.assert_close(predict(model, images, False, (1.0,), True), expected.argmax(1))


def test_mask_classification_scores_are_averaged_as_they_are_over_windows():
    model, images = tiny_mask_classification_model(), torch.rand(1, 3, 24, 36)
    expected = torch.zeros(1, NUM_CLASSES, 24, 36)
    counts = torch.zeros(24, 36)
    with torch.no_grad():
        for top in window_starts(24, 16):
            for left in window_starts(36, 16):
                crop = images[..., top:top + 16, left:left + 16]
                expected[..., top:top + 16, left:left + 16] += model(crop)["logits"]
                counts[top:top + 16, left:left + 16] += 1
        actual = window_probabilities(model, images, False, (16, 16))
    torch.testing.assert_close(actual, expected / counts)
