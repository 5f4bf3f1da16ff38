"""Pixel-level anomaly metrics against scikit-learn on the same pixels, plus the edge cases."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from vca_data.metrics.anomaly import (
    FPR_AT_TPR_RULES,
    AnomalyPixelMetrics,
    bin_lower_edges,
    float_order_keys,
)


def make_images(seed=0, n=4, shape=(60, 80), void=255, decimals=None, outliers=False):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        labels = (rng.random(shape) < 0.15).astype(np.uint8)
        scores = rng.normal(size=shape) + 1.2 * labels
        if decimals is not None:
            scores = np.round(scores, decimals)  # many ties
        if outliers:
            scores[rng.random(shape) < 0.001] = 1e6
        labels[rng.random(shape) < 0.1] = void
        images.append((scores.astype(np.float32), labels))
    return images


def sklearn_reference(images, void=255, tpr=0.95):
    scores = np.concatenate([s[y != void] for s, y in images]).astype(np.float64)
    labels = np.concatenate([y[y != void] for s, y in images])
    fpr_c, tpr_c, _ = roc_curve(labels, scores, drop_intermediate=False)
    i_ge, i_gt = np.argmax(tpr_c >= tpr), np.argmax(tpr_c > tpr)
    if tpr_c[i_ge] > tpr and i_ge > 0:
        t0, t1, f0, f1 = tpr_c[i_ge - 1], tpr_c[i_ge], fpr_c[i_ge - 1], fpr_c[i_ge]
        interp = f0 + (f1 - f0) * (tpr - t0) / (t1 - t0)
    else:
        interp = fpr_c[i_ge]
    return {
        "ap": average_precision_score(labels, scores),
        "auroc": roc_auc_score(labels, scores),
        "first_ge": fpr_c[i_ge],
        "first_gt": fpr_c[i_gt],
        "nearest": fpr_c[np.argmin(np.abs(tpr_c - tpr))],
        "interp": interp,
    }


def run(images, **options):
    metric = AnomalyPixelMetrics(**options)
    for scores, labels in images:
        metric.update(scores, labels)
    return metric.compute()


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("rule", FPR_AT_TPR_RULES)
def test_exact_mode_equals_sklearn(decimals, rule):
    images = make_images(decimals=decimals)
    ref = sklearn_reference(images)
    result = run(images, exact=True, fpr_at_tpr_rule=rule)
    assert result["ap"] == pytest.approx(ref["ap"], abs=1e-9)
    assert result["auroc"] == pytest.approx(ref["auroc"], abs=1e-9)
    assert result["fpr_at_tpr"] == pytest.approx(ref[rule], abs=1e-9)


def test_fpr_rules_differ_where_the_curve_steps():
    # 20 anomaly pixels, 19 reach TPR 0.95 exactly at one threshold: ">=" stops there, ">" goes on
    scores = np.r_[np.arange(20, 0, -1), np.arange(20, 0, -1) - 0.5].astype(np.float32)
    labels = np.r_[np.ones(20), np.zeros(20)].astype(np.uint8)
    results = {rule: run([(scores, labels)], exact=True, fpr_at_tpr_rule=rule)["fpr_at_tpr"]
               for rule in FPR_AT_TPR_RULES}
    # at TPR 19/20 the 18 negatives scoring 19.5..2.5 are above the threshold 2
    assert results["first_ge"] == pytest.approx(18 / 20)
    assert results["first_gt"] == pytest.approx(19 / 20)
    assert results["nearest"] == pytest.approx(18 / 20)
    assert results["interp"] == pytest.approx(18 / 20)


@pytest.mark.parametrize("outliers", [False, True])
def test_binned_mode_within_1e3_of_sklearn(outliers):
    images = make_images(seed=1, outliers=outliers)
    ref = sklearn_reference(images)
    result = run(images)
    assert abs(result["ap"] - ref["ap"]) < 1e-3
    assert abs(result["auroc"] - ref["auroc"]) < 1e-3
    assert abs(result["fpr_at_tpr"] - ref["first_ge"]) < 1e-3


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([-2.0, -0.0, 0.0, 0.25, 0.5, 3.0, 1e-30]), st.booleans()),
             min_size=2, max_size=40)
)
def test_exact_mode_property_against_sklearn(pixels):
    scores = np.array([p[0] for p in pixels], dtype=np.float32)
    labels = np.array([p[1] for p in pixels], dtype=np.uint8)
    result = run([(scores, labels)], exact=True)
    if 0 < labels.sum() < labels.size:
        assert result["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
        assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
        binned = run([(scores, labels)])  # these values sit in distinct bins
        assert binned["ap"] == pytest.approx(result["ap"], abs=1e-12)
        assert binned["auroc"] == pytest.approx(result["auroc"], abs=1e-12)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_torch_tensors_give_the_numpy_result(backend):
    # backend "torch" runs the torch-ops histogram (the GPU path) on CPU tensors
    images = make_images(seed=2)
    for exact in (False, True):
        expected = run(images, exact=exact)
        tensors = [(torch.from_numpy(s), torch.from_numpy(y)) for s, y in images]
        assert run(tensors, exact=exact, backend=backend) == expected
    mixed = [(torch.from_numpy(s).double(), y.astype(np.int64)) for s, y in images]
    assert run(mixed, backend=backend) == run(images)
    half = [(torch.from_numpy(s).bfloat16(), y) for s, y in images]
    assert run(half, backend=backend) == run([(s.float().numpy(), y) for s, y in half])


def test_merge_equals_one_accumulator():
    images = make_images(seed=3, n=6)
    for exact in (False, True):
        first, second = AnomalyPixelMetrics(exact=exact), AnomalyPixelMetrics(exact=exact, backend="torch")
        for scores, labels in images[:2]:
            first.update(scores, labels)
        for scores, labels in images[2:]:
            second.update(torch.from_numpy(scores), labels)
        assert first.merge(second).compute() == run(images, exact=exact)
    with pytest.raises(ValueError, match="cannot merge"):
        AnomalyPixelMetrics().merge(AnomalyPixelMetrics(bins_bits=16))


def test_void_label_parameter():
    images = make_images(seed=4, void=2)
    ref = sklearn_reference(images, void=2)
    assert run(images, exact=True, void_label=2)["ap"] == pytest.approx(ref["ap"], abs=1e-9)
    with pytest.raises(ValueError, match=r"image 0: labels must be 0 .* or 255"):
        run(images, exact=True)


def test_no_positives_all_void_single_class_and_ties():
    rng = np.random.default_rng(5)
    scores = rng.random((10, 10)).astype(np.float32)
    for exact in (True, False):
        none = run([(scores, np.zeros((10, 10), np.uint8))], exact=exact)
        assert np.isnan(none["ap"]) and np.isnan(none["auroc"]) and np.isnan(none["fpr_at_tpr"])
        assert none["num_pixels"] == 100 and none["num_anomaly_pixels"] == 0
        void = run([(scores, np.full((10, 10), 255, np.uint8))], exact=exact)
        assert void["num_pixels"] == 0 and np.isnan(void["ap"]) and np.isnan(void["best_f1_threshold"])
        only = run([(scores, np.ones((10, 10), np.uint8))], exact=exact)
        assert only["ap"] == pytest.approx(1.0) and np.isnan(only["auroc"])
        labels = (rng.random((10, 10)) < 0.3).astype(np.uint8)
        tied = run([(np.full((10, 10), 0.7, np.float32), labels)], exact=exact)
        assert tied["ap"] == pytest.approx(labels.mean())
        assert tied["auroc"] == pytest.approx(0.5)
        assert tied["fpr_at_tpr"] == pytest.approx(1.0)
        assert AnomalyPixelMetrics(exact=exact).compute()["num_images"] == 0
        huge = run([(np.array([1e300, 1.0, -1e300]), np.array([1, 0, 0]))], exact=exact)
        assert huge["ap"] == 1.0 and huge["auroc"] == 1.0


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_rejected_with_image_index(exact, bad):
    metric = AnomalyPixelMetrics(exact=exact)
    scores = np.zeros((4, 4), np.float32)
    labels = np.zeros((4, 4), np.uint8)
    metric.update(scores, labels)
    scores[1, 1] = bad
    with pytest.raises(ValueError, match=r"image 1 \(frame_b\): 1 non-finite"):
        metric.update(scores, labels, name="frame_b")
    with pytest.raises(ValueError, match=r"image 1: 1 non-finite"):
        metric.update(torch.from_numpy(scores), torch.from_numpy(labels))
    with pytest.raises(ValueError, match=r"image 0: 1 non-finite"):
        AnomalyPixelMetrics(backend="torch").update(torch.from_numpy(scores), torch.from_numpy(labels))
    labels[1, 1] = 255  # a NaN under void is harmless
    metric.update(scores, labels)
    assert metric.compute()["num_pixels"] == 31


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match=r"image 0: scores shape \(4, 4\) differs from labels shape \(4, 5\)"):
        AnomalyPixelMetrics().update(np.zeros((4, 4)), np.zeros((4, 5), np.uint8))


def test_best_f1_threshold_reproduces_best_f1():
    images = make_images(seed=6, decimals=2)
    for exact in (True, False):
        result = run(images, exact=exact)
        threshold = result["best_f1_threshold"]
        tp = sum(int(((s >= threshold) & (y == 1)).sum()) for s, y in images)
        fp = sum(int(((s >= threshold) & (y == 0)).sum()) for s, y in images)
        positives = sum(int((y == 1).sum()) for _, y in images)
        assert 2 * tp / (tp + fp + positives) == pytest.approx(result["best_f1"], abs=1e-12)


def test_float_order_keys_are_monotone_and_bin_edges_bracket_values():
    values = np.array([-np.inf, -3e38, -1.0, -1e-40, -0.0, 0.0, 1e-45, 1e-40, 0.5, 1.0, 3e38, np.inf],
                      dtype=np.float32)
    keys = float_order_keys(values)
    assert keys[4] == keys[5]  # -0.0 == 0.0
    assert np.all(np.diff(np.delete(keys, 4).astype(np.int64)) > 0)
    rng = np.random.default_rng(7)
    scores = (rng.standard_cauchy(1000) * 10.0 ** rng.integers(-10, 10, 1000)).astype(np.float32)
    bits = 16
    bins = (float_order_keys(scores) >> (32 - bits)).astype(np.int64) + (1 << (bits - 1))
    assert np.all(bin_lower_edges(bins, bits) <= scores)
    upper = bin_lower_edges(np.minimum(bins + 1, (1 << bits) - 1), bits)
    assert np.all((upper > scores) | (bins == (1 << bits) - 1))


def test_parameters_validated():
    with pytest.raises(ValueError, match="bins_bits"):
        AnomalyPixelMetrics(bins_bits=30)
    with pytest.raises(ValueError, match="fpr_at_tpr_rule"):
        AnomalyPixelMetrics(fpr_at_tpr_rule="closest")
    with pytest.raises(ValueError, match="void_label"):
        AnomalyPixelMetrics(void_label=1)


def test_table_lists_the_metrics():
    text = AnomalyPixelMetrics(exact=True, fpr_at_tpr_rule="first_gt").table(run(make_images(seed=8), exact=True))
    assert "AP (%)" in text and "FPR@95 (%)" in text and "first_gt" in text
