"""Class-agnostic quality on hand-worked frames, in both counting rules."""

import numpy as np
import pytest
import torch

from vca_data.metrics.caq import ClassAgnosticQuality, mask_intersections


def hand_worked_frame():
    """GT: A (20 px), B (16 px), C (6 px). Pred 1 covers 16 px of A (IoU 0.8), pred 2 touches nothing,
    pred 3 covers half of B (IoU exactly 0.5, not a match)."""
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:5] = 1
    gt[6:10, 6:10] = 2
    gt[0:2, 7:10] = 3
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:4] = 1
    pred[5:10, 0:3] = 2
    pred[6:10, 8:10] = 3
    return pred, gt


def test_default_counting_is_one_to_one():
    metric = ClassAgnosticQuality()
    metric.update(*hand_worked_frame())
    result = metric.compute()
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 2)
    assert result["sq"] == pytest.approx(0.8)
    assert result["rq"] == pytest.approx(1 / 3)
    assert result["caq"] == pytest.approx(0.8 / 3)


def test_authors_counting():
    metric = ClassAgnosticQuality(count_unmatched_pred_as_fn=True)
    metric.update(*hand_worked_frame())
    result = metric.compute()
    # preds 2 and 3 are FP and FN each; C is no prediction's best match (pred 2's argmax is A): FN
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 3)
    assert result["rq"] == pytest.approx(1 / 3.5)
    assert result["caq"] == pytest.approx(0.8 / 3.5)


def test_frames_without_ground_truth_and_duplicate_predictions():
    gt = np.zeros((1, 8, 8), bool)
    gt[0, :4, :4] = True
    first = np.zeros((8, 8), bool)
    first[:4, :3] = True  # IoU 12/16
    second = np.zeros((8, 8), bool)
    second[:3, :4] = True  # IoU 12/16, overlaps the first prediction
    stack = np.stack([first, second])
    empty_gt = np.zeros((0, 8, 8), bool)
    default, authors = ClassAgnosticQuality(), ClassAgnosticQuality(count_unmatched_pred_as_fn=True)
    for metric in (default, authors):
        metric.update(stack, gt)
        metric.update(stack[:1], empty_gt)
    assert (default.tp, default.fp, default.fn) == (1, 2, 0)  # duplicate and false alarm are FPs
    assert (authors.tp, authors.fp, authors.fn) == (2, 0, 0)  # the script counts both, ignores empty frames
    assert default.compute()["sq"] == pytest.approx(0.75)


def test_void_leaves_the_union_and_excuses_predictions():
    gt = np.zeros((6, 6), np.int32)
    gt[:3, :3] = 1
    void = np.zeros((6, 6), bool)
    void[:3, 3:5] = True
    void[4:, :] = True
    pred = np.zeros((6, 6), np.int32)
    pred[:3, :5] = 1  # 9 px on the object, 6 on void: IoU 9 / (15 + 9 - 9 - 6) = 1
    pred[4:, :4] = 2  # wholly on void: not a FP
    metric = ClassAgnosticQuality()
    metric.update(pred, gt, void=void)
    assert (metric.tp, metric.fp, metric.fn) == (1, 0, 0)
    assert metric.compute()["sq"] == pytest.approx(1.0)
    plain = ClassAgnosticQuality()
    plain.update(pred, gt)
    assert (plain.tp, plain.fp, plain.fn) == (1, 1, 0)
    assert plain.compute()["sq"] == pytest.approx(9 / 15)


def test_inputs_forms_merge_and_errors():
    pred, gt = hand_worked_frame()
    stack = np.stack([pred == k for k in (1, 2, 3)])
    tensors = ClassAgnosticQuality()
    tensors.update(torch.from_numpy(stack), torch.from_numpy(gt))
    maps = ClassAgnosticQuality()
    maps.update(pred, gt)
    assert tensors.compute() == maps.compute()
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 7, 9)) < 0.5, rng.random((4, 7, 9)) < 0.5
    expected = [[np.sum(x & y) for y in b] for x in a]
    assert np.array_equal(mask_intersections(a, b), expected)
    assert maps.merge(tensors).compute()["tp"] == 2
    with pytest.raises(ValueError, match="different counting rules"):
        maps.merge(ClassAgnosticQuality(count_unmatched_pred_as_fn=True))
    with pytest.raises(ValueError, match=r"image 0 \(f\): prediction size \(2, 2\) differs"):
        ClassAgnosticQuality().update(np.zeros((2, 2), int), gt, name="f")
    empty = ClassAgnosticQuality().compute()
    assert np.isnan(empty["caq"]) and np.isnan(empty["sq"])
    assert "CAQ (%)" in maps.table()
