import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from contrastseg.metrics import (SegmentationMetrics, boundary_fscore, confusion_matrix, contour_match_counts,
                                 inner_boundary, inner_contour, mean_iou, per_class_iou, pixel_accuracy)


def test_mean_iou_matches_a_hand_computed_example():
    labels = torch.tensor([0, 0, 1, 1, 2, 255])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    confusion = confusion_matrix(preds, labels, num_classes=4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # IoU: class 0 = 1/3, class 1 = 2/3, class 2 = 0/1, class 3 absent from both and left out of the mean
    iou = per_class_iou(confusion)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])
    assert mean_iou(confusion) == pytest.approx(1 / 3)
    assert pixel_accuracy(confusion) == pytest.approx(3 / 5)


def test_mean_iou_public_contract_on_int64_confusion():
    confusion = torch.tensor([[5, 0], [0, 0]], dtype=torch.int64)
    assert mean_iou(confusion) == 1.0  # class 1 is absent from both, so only class 0 counts


def test_labels_out_of_range_are_an_error():
    with pytest.raises(ValueError, match=r"\[7\]"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 255]), num_classes=3)


def test_inner_boundary_is_a_ring_and_the_image_border_is_no_edge():
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 2:6] = True
    band = inner_boundary(mask, width=1)[0, 0]
    expected = mask[0, 0].clone()
    expected[3:5, 3:5] = False
    assert torch.equal(band, expected)
    full = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    assert not inner_boundary(full, width=2).any()


def test_boundary_iou_perfect_shifted_and_ignored():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    metrics = SegmentationMetrics(num_classes=2, boundary_width=1)
    metrics.update(labels.clone(), labels)
    result = metrics.compute()
    assert result["miou"] == 1.0 and result["boundary_iou"] == 1.0

    shifted = torch.roll(labels, shifts=1, dims=2)
    metrics = SegmentationMetrics(num_classes=2, boundary_width=1)
    metrics.update(shifted, labels)
    result = metrics.compute()
    assert result["boundary_iou"] < result["miou"] < 1.0

    ignored = labels.clone()
    ignored[:] = 255
    metrics = SegmentationMetrics(num_classes=2, boundary_width=1)
    metrics.update(shifted, ignored)
    assert metrics.compute()["per_class_iou"] == [None, None]


# ---- boundary F-score --------------------------------------------------------------------------------------------

def reference_contour(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; beyond the image border counts as inside."""
    cross = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=1)


def reference_matched(points: np.ndarray, targets: np.ndarray, width: int) -> int:
    """How many of ``points`` (n, 2) lie within chessboard distance ``width`` of one of ``targets`` (m, 2)."""
    if len(points) == 0 or len(targets) == 0:
        return 0
    chessboard = np.abs(points[:, None, :] - targets[None, :, :]).max(axis=2)
    return int((chessboard.min(axis=1) <= width).sum())


def reference_boundary_f(preds: np.ndarray, labels: np.ndarray, num_classes: int, width: int,
                         ignore_index: int = 255) -> list:
    """Per-class boundary F-score over a set of images, one image and one class at a time.

    Ignored pixels are taken out of both masks before their contours are traced (DAVIS's ``void_pixels``).
    """
    counts = np.zeros((num_classes, 4), dtype=np.int64)  # matched_pred, pred_total, matched_gt, gt_total
    for pred, label in zip(preds, labels):
        valid = label != ignore_index
        for cls in range(num_classes):
            gt_points = np.argwhere(reference_contour((label == cls) & valid))
            pred_points = np.argwhere(reference_contour((pred == cls) & valid))
            counts[cls] += [reference_matched(pred_points, gt_points, width), len(pred_points),
                            reference_matched(gt_points, pred_points, width), len(gt_points)]
    fscores = []
    for matched_pred, pred_total, matched_gt, gt_total in counts:
        if pred_total + gt_total == 0:
            fscores.append(None)
            continue
        precision = matched_pred / pred_total if pred_total else 0.0
        recall = matched_gt / gt_total if gt_total else 0.0
        fscores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return fscores


def random_label_maps(generator: torch.Generator, batch: int, num_classes: int, size: int = 24) -> torch.Tensor:
    """Blobby label maps: coarse random classes upsampled, so that regions have real contours."""
    coarse = torch.randint(0, num_classes, (batch, 1, size // 4, size // 4), generator=generator)
    return torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="nearest")[:, 0].long()


def test_inner_contour_is_a_thin_ring_and_the_image_border_is_no_edge():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 2:6] = True
    expected = mask.clone()
    expected[3:5, 3:5] = False
    assert torch.equal(inner_contour(mask), expected)
    diamond_corner = torch.zeros(5, 5, dtype=torch.bool)
    diamond_corner[1:, 1:] = True  # only the two inner sides are edges; a diagonal neighbour outside does not count
    contour = inner_contour(diamond_corner)
    assert contour[1, 1:].all() and contour[1:, 1].all() and contour.sum() == 7
    assert not inner_contour(torch.ones(1, 1, 6, 6, dtype=torch.bool)).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_f_matches_a_per_image_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    num_classes, widths = 6, (0, 1, 3)  # class 4 is only ever predicted, class 5 is absent everywhere
    labels = random_label_maps(generator, batch=4, num_classes=4)
    preds = torch.where(torch.rand(labels.shape, generator=generator) < 0.1,
                        torch.randint(0, 4, labels.shape, generator=generator), labels)
    preds = torch.roll(preds, shifts=(1, 0), dims=(1, 2))
    preds[2] = random_label_maps(generator, batch=1, num_classes=4)[0]
    preds[0, 10:15, 3:9] = 4
    labels[torch.rand(labels.shape, generator=generator) < 0.05] = 255
    labels[1, :8, :8] = 255
    labels[3][labels[3] == 3] = 0  # class 3 absent from one image's ground truth

    metrics = SegmentationMetrics(num_classes, boundary_width=1, fscore_widths=widths)
    metrics.update(preds[:2], labels[:2])  # two batches: counts accumulate over the data set
    metrics.update(preds[2:], labels[2:])
    result = metrics.compute()

    for width in widths:
        expected = reference_boundary_f(preds.numpy(), labels.numpy(), num_classes, width)
        got = boundary_fscore(**metrics.contour_counts)[metrics.contour_widths.index(width)].tolist()
        assert got == pytest.approx([math.nan if value is None else value for value in expected], nan_ok=True)
        assert expected[4] == 0.0 and expected[5] is None
        present = [value for value in expected if value is not None]
        assert result[f"boundary_f@{width}"] == pytest.approx(sum(present) / len(present))
    expected = reference_boundary_f(preds.numpy(), labels.numpy(), num_classes, width=1)
    assert result["per_class_boundary_f"] == pytest.approx(expected)
    assert result["boundary_f"] == pytest.approx(result["boundary_f@1"])


def test_boundary_f_perfect_shifted_empty_and_absent():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    metrics = SegmentationMetrics(num_classes=3, boundary_width=1, fscore_widths=(0, 2))
    metrics.update(labels.clone(), labels)
    result = metrics.compute()
    assert result["per_class_boundary_f"] == [1.0, 1.0, None]  # class 2 is absent everywhere: left out
    assert result["boundary_f"] == result["boundary_f@0"] == result["boundary_f@2"] == 1.0

    shifted = torch.roll(labels, shifts=1, dims=2)
    metrics = SegmentationMetrics(num_classes=3, boundary_width=1, fscore_widths=(0, 2))
    metrics.update(shifted, labels)
    result = metrics.compute()
    assert result["boundary_f"] == 1.0 and result["boundary_f@2"] == 1.0  # every contour pixel is 1 px off
    assert 0.0 < result["boundary_f@0"] < 1.0

    metrics = SegmentationMetrics(num_classes=3, boundary_width=1)
    metrics.update(torch.zeros_like(labels), labels)  # class 1 is never predicted; class 0 fills the image
    result = metrics.compute()
    assert result["per_class_boundary_f"] == [0.0, 0.0, None]
    assert result["boundary_f"] == 0.0


def test_boundary_f_leaves_out_contours_on_ignored_pixels():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    preds = labels.clone()
    preds[:, 0:3, 0:3] = 2  # a wrong region inside an ignored area
    labels[:, 0:4, 0:4] = 255
    metrics = SegmentationMetrics(num_classes=3, boundary_width=0)
    metrics.update(preds, labels)
    # class 0's contour along the ignored square is on both sides alike, so the prediction is perfect even at w = 0
    assert metrics.compute()["per_class_boundary_f"] == [1.0, 1.0, None]
    assert metrics.contour_counts["gt_total"].tolist() == metrics.contour_counts["pred_total"].tolist() == [38, 28, 0]
    # every pixel ignored: no contour anywhere, so every class is left out and the mean is NaN
    metrics = SegmentationMetrics(num_classes=3, boundary_width=1)
    metrics.update(preds, torch.full_like(labels, 255))
    result = metrics.compute()
    assert result["per_class_boundary_f"] == [None, None, None] and math.isnan(result["boundary_f"])


def test_boundary_f_keeps_the_existing_keys_and_checks_widths():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    metrics = SegmentationMetrics(num_classes=2, boundary_width=2, fscore_widths=(2, 4))
    metrics.update(labels.clone(), labels)
    assert set(metrics.compute()) == {"miou", "pixel_accuracy", "per_class_iou", "boundary_iou",
                                      "per_class_boundary_iou", "boundary_f", "per_class_boundary_f",
                                      "boundary_f@2", "boundary_f@4"}
    assert metrics.contour_widths == (2, 4)
    with pytest.raises(ValueError, match="fscore_widths"):
        SegmentationMetrics(num_classes=2, fscore_widths=(1, -1))
    with pytest.raises(ValueError, match="fscore_widths"):
        SegmentationMetrics(num_classes=2, fscore_widths=(1.5,))
    with pytest.raises(ValueError, match="widths"):
        contour_match_counts(labels, labels, num_classes=2, widths=(-1,))


def test_predicted_classes_equal_argmax_with_ties_and_nan():
    from contrastseg.metrics import predicted_classes

    generator = torch.Generator().manual_seed(0)
    scores = [torch.randn(4, 9, 20, 24, generator=generator), torch.zeros(2, 5, 7, 7),
              torch.randint(0, 3, (4, 9, 20, 20), generator=generator).float(),  # many ties
              torch.tensor([1.0, float("nan"), 1.0]).view(1, 3, 1, 1)]
    for score in scores:
        assert torch.equal(predicted_classes(score), score.argmax(1))
        assert torch.equal(predicted_classes(score, keepdim=True), score.argmax(1, keepdim=True))
    assert torch.equal(predicted_classes(scores[0], dim=-1), scores[0].argmax(-1))
