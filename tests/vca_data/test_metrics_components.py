"""SegmentMeIfYouCan component metrics on hand-worked frames and against a per-instance reference
written from the benchmark's definition."""

import numpy as np
import pytest
from scipy import ndimage

from vca_data.metrics.components import SIOU_THRESHOLDS, ComponentMetrics, component_scores


def hand_worked_frame():
    """Instance A (16 px) inside component P1 (28 px): sIoU = PPV = 16/28. Instance B (16 px) with P2
    (6 px) inside: sIoU 6/16, PPV 1. P3 (4 px) touches nothing: PPV 0. A prediction on void vanishes."""
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6] = 1
    labels[2:6, 12:16] = 1
    labels[19] = 255
    pred = np.zeros((20, 20), bool)
    pred[2:6, 2:9] = True
    pred[3:5, 13:16] = True
    pred[10:12, 0:2] = True
    pred[19, 10:16] = True
    return pred, labels


def test_hand_worked_frame():
    metric = ComponentMetrics(min_component_size=1, min_instance_size=1)
    metric.update(*hand_worked_frame())
    result = metric.compute()
    assert result["num_instances"] == 2 and result["num_components"] == 3
    assert result["siou"] == pytest.approx((16 / 28 + 6 / 16) / 2)
    assert result["ppv"] == pytest.approx((16 / 28 + 1 + 0) / 3)
    # TP/FN/FP per threshold 0.25, 0.30, ..., 0.75 (A: sIoU 0.571, B: 0.375; PPVs 0.571, 1, 0)
    assert result["tp"] == [2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0]
    assert result["fn"] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert result["fp"] == [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert result["mean_f1"] == pytest.approx((3 * 0.8 + 4 * 0.5) / 11)


def test_component_across_two_instances_is_adjusted():
    labels = np.zeros((6, 10), np.uint8)
    labels[:4, :4] = 1
    labels[:4, 5:9] = 1
    pred = np.zeros((6, 10), bool)
    pred[:4, :9] = True  # 36 px: both instances and the 4 background pixels between them
    scores = component_scores(pred, labels, min_component_size=1, min_instance_size=1)
    # union of A with K: 36 + 16 - 16 - 16 (pixels of K on the other instance) = 20
    assert scores["siou_gt"] == pytest.approx([16 / 20, 16 / 20])
    assert scores["ppv"] == pytest.approx([32 / 36])


def test_size_filters():
    labels = np.zeros((12, 12), np.uint8)
    labels[0:3, 0:3] = 1  # 9 px instance: kept with min 5
    labels[8, 8:10] = 1  # 2 px instance: becomes void
    pred = np.zeros((12, 12), bool)
    pred[8, 8:10] = True  # only on the voided instance: not evaluated
    pred[5, 5] = True  # 1 px component: dropped
    pred[0:3, 0:3] = True
    metric = ComponentMetrics(min_component_size=3, min_instance_size=5)
    metric.update(pred, labels)
    result = metric.compute()
    assert result["num_instances"] == 1 and result["num_components"] == 1
    assert result["siou"] == 1.0 and result["mean_f1"] == 1.0


def reference_frame(pred, labels, min_seg, min_inst):
    """The benchmark's per-instance loops: sIoU per instance and precision per component."""
    pred = pred & (labels != 255)
    structure = np.ones((3, 3))
    gt_cc, n_gt = ndimage.label(labels == 1, structure)
    pred_cc, n_pred = ndimage.label(pred, structure)
    for c in range(1, n_pred + 1):
        if np.sum(pred_cc == c) < min_seg:
            pred_cc[pred_cc == c] = 0
    labels = labels.copy()
    for c in range(1, n_gt + 1):
        if np.sum(gt_cc == c) < min_inst:
            labels[gt_cc == c] = 255
    roi = labels != 255
    gt_cc, pred_cc = gt_cc[roi], pred_cc[roi]
    siou, ppv = [], []
    for i in np.unique(gt_cc[gt_cc > 0]):
        ks = np.unique(pred_cc[(gt_cc == i) & (pred_cc > 0)])
        in_k = np.isin(pred_cc, ks)
        inter = np.sum((gt_cc == i) & in_k)
        adjust = np.sum(in_k & ~np.isin(gt_cc, [0, i]))
        siou.append(inter / (np.sum(in_k) + np.sum(gt_cc == i) - inter - adjust))
    for j in np.unique(pred_cc[pred_cc > 0]):
        ppv.append(np.sum((pred_cc == j) & (gt_cc > 0)) / np.sum(pred_cc == j))
    return siou, ppv


def test_random_frames_match_the_benchmark_definition():
    rng = np.random.default_rng(0)
    metric = ComponentMetrics(threshold=0.6, min_component_size=4, min_instance_size=6)
    halves = [ComponentMetrics(threshold=0.6, min_component_size=4, min_instance_size=6) for _ in range(2)]
    all_siou, all_ppv = [], []
    for k in range(6):
        labels = (ndimage.uniform_filter(rng.random((40, 50)), 5) > 0.55).astype(np.uint8)
        labels[rng.random(labels.shape) < 0.03] = 255
        scores = ndimage.uniform_filter(rng.random((40, 50)), 4) + 0.1 * (labels == 1)
        metric.update(scores, labels)
        halves[k % 2].update(scores, labels)
        siou, ppv = reference_frame(scores >= 0.6, labels, 4, 6)
        all_siou += siou
        all_ppv += ppv
    result = metric.compute()
    assert result["num_instances"] == len(all_siou) > 0 and result["num_components"] == len(all_ppv) > 0
    assert result["siou"] == pytest.approx(np.mean(all_siou))
    assert result["ppv"] == pytest.approx(np.mean(all_ppv))
    t = np.array(SIOU_THRESHOLDS)[:, None]
    tp = (np.array(all_siou)[None] >= t).sum(1)
    fn = (np.array(all_siou)[None] < t).sum(1)
    fp = (np.array(all_ppv)[None] < t).sum(1)
    assert result["mean_f1"] == pytest.approx(np.mean(2 * tp / (2 * tp + fn + fp)))
    merged = halves[0].merge(halves[1]).compute()
    assert merged.keys() == result.keys()
    for key, value in result.items():
        np.testing.assert_allclose(merged[key], value, err_msg=key)


def test_empty_and_errors():
    metric = ComponentMetrics(min_component_size=1, min_instance_size=1)
    metric.update(np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8))
    result = metric.compute()
    assert np.isnan(result["siou"]) and np.isnan(result["ppv"]) and np.isnan(result["mean_f1"])
    with pytest.raises(ValueError, match="needs ComponentMetrics"):
        metric.update(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"image 1: labels must be 0, 1 or 255; found \[3\]"):
        metric.update(np.zeros((4, 4), bool), np.full((4, 4), 3, np.uint8))
    scores = np.zeros((4, 4), np.float32)
    scores[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ComponentMetrics(threshold=0.5).update(scores, np.zeros((4, 4), np.uint8))
