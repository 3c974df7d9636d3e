import math

import pytest
import torch

from contrastseg.metrics import (SegmentationMetrics, confusion_matrix, inner_boundary, mean_iou, per_class_iou,
                                 pixel_accuracy)


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
