"""Semantic metrics against scikit-learn's confusion matrix and IoU, and CA-IoU on hand-worked maps."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, jaccard_score

from vca_data.metrics.semantic import SemanticMetrics, UnknownIoU


def random_pair(seed, shape=(30, 40), num_classes=5):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, num_classes, shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.7, gt, rng.integers(0, num_classes, shape)).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    return pred, gt


def test_confusion_and_iou_match_sklearn():
    pairs = [random_pair(s) for s in range(3)]
    metric = SemanticMetrics(num_classes=5)
    for pred, gt in pairs:
        metric.update(pred, gt)
    result = metric.compute()
    pred_all = np.concatenate([p[g != 255] for p, g in pairs])
    gt_all = np.concatenate([g[g != 255] for p, g in pairs])
    assert np.array_equal(metric.confusion[:, :5], confusion_matrix(gt_all, pred_all, labels=range(5)))
    expected = jaccard_score(gt_all, pred_all, labels=range(5), average=None)
    assert np.allclose(result["iou"], expected)
    assert result["miou"] == pytest.approx(expected.mean())
    assert result["pixel_accuracy"] == pytest.approx((gt_all == pred_all).mean())


def test_absent_class_is_nan_and_left_out_of_miou():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    metric = SemanticMetrics(num_classes=3)
    metric.update(pred, gt)
    result = metric.compute()
    assert result["iou"][0] == pytest.approx(1 / 2) and result["iou"][1] == pytest.approx(2 / 3)
    assert np.isnan(result["iou"][2])
    assert result["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_single_class_and_empty():
    metric = SemanticMetrics(num_classes=1, class_names=["road"])
    metric.update(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert metric.compute()["miou"] == 1.0
    empty = SemanticMetrics(num_classes=2).compute()
    assert np.isnan(empty["miou"]) and np.isnan(empty["ca_iou"]) and np.isnan(empty["pixel_accuracy"])


def test_unknown_prediction_is_a_miss_and_ca_iou_is_hand_worked():
    # ground truth: 2 known road pixels, 3 unknown pixels, 1 void pixel
    gt = np.array([[0, 0, 254, 254, 254, 255]], np.uint8)
    pred = np.array([[0, 254, 254, 254, 1, 254]], np.uint8)
    metric = SemanticMetrics(num_classes=2)
    metric.update(pred, gt)
    result = metric.compute()
    assert result["per_class"]["0"] == {"iou": 0.5, "tp": 1, "fp": 0, "fn": 1}
    assert np.isnan(result["iou"][1])  # the unknown pixel predicted as class 1 is not counted
    # unknown: intersection 2 (pixels 2, 3), union 4 (pixels 1-4; pixel 5 is void)
    assert result["ca_iou"] == pytest.approx(2 / 4)
    mask_form = UnknownIoU()
    mask_form.update(pred == 254, gt)
    assert mask_form.compute() == {"ca_iou": 0.5, "intersection": 2, "union": 4, "num_images": 1}


def test_torch_and_merge_give_the_same_numbers():
    pairs = [random_pair(s, num_classes=19) for s in range(4)]
    for pred, gt in pairs:
        gt[:2, :3] = 254
        pred[5:7, :3] = 254
    whole = SemanticMetrics()
    for pred, gt in pairs:
        whole.update(pred, gt)
    first, second = SemanticMetrics(backend="torch"), SemanticMetrics()
    for pred, gt in pairs[:2]:
        first.update(torch.from_numpy(pred), torch.from_numpy(gt))
    for pred, gt in pairs[2:]:
        second.update(pred.astype(np.int64), gt)
    merged = first.merge(second).compute()
    expected = whole.compute()
    assert merged["iou"] == pytest.approx(expected["iou"], nan_ok=True)
    assert merged["ca_iou"] == expected["ca_iou"] and merged["num_images"] == 4
    assert "road" in whole.table() and "CA-IoU" in whole.table()


def test_invalid_input_names_the_image():
    metric = SemanticMetrics(num_classes=3)
    metric.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"image 1 \(b\): ground truth values \[7\]"):
        metric.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8), name="b")
    with pytest.raises(ValueError, match=r"image 1: prediction shape \(2, 3\) differs"):
        metric.update(np.zeros((2, 3), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="integer label map"):
        metric.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="collides"):
        SemanticMetrics(num_classes=300)
