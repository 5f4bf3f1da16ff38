"""Component-level anomaly metrics of SegmentMeIfYouCan: sIoU of the ground-truth anomaly instances,
positive predictive value (PPV) of the predicted components, and the F1 of instance detection averaged
over sIoU thresholds 0.25, 0.30, ..., 0.75.

Per image (labels: 0 in-distribution, 1 anomaly, `void_label` void):

1. the prediction is `score >= threshold` (or a boolean mask), cleared on void pixels; its connected
   components (8-connectivity) smaller than `min_component_size` pixels are dropped;
2. ground-truth instances are the 8-connected components of the anomaly pixels; instances smaller than
   `min_instance_size` pixels become void;
3. everything is then restricted to the non-void pixels. For a ground-truth instance A with the set K of
   predicted components touching it, sIoU(A) = |A & K| / (|A| + |K| - |A & K| - |K on other instances|);
   for a predicted component P with the set of instances G it touches, PPV(P) = |P & G| / |P|;
4. at threshold t an instance with sIoU >= t is a TP, else a FN; a component with PPV < t is a FP;
   F1(t) = 2 TP / (2 TP + FN + FP) with counts summed over the dataset.

The defaults (min sizes 500 / 100) are the benchmark's anomaly track; its obstacle track uses 50 / 10.
The benchmark thresholds the scores at the pixel-level best-F1 threshold of the same dataset
(`AnomalyPixelMetrics.compute()["best_f1_threshold"]`, a ">=" threshold; the benchmark's code applies
it with ">", which differs only on pixels scoring exactly the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from vca_data.metrics.accumulate import add_counts
from vca_data.metrics.anomaly import to_numpy
from vca_data.metrics.table import format_table

SIOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.25, 0.75, 11))
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _drop_small(components: np.ndarray, count: int, min_size: int) -> tuple[np.ndarray, int]:
    """Relabel `components` (0 background, 1..count) without those smaller than `min_size` pixels."""
    if count == 0 or min_size <= 1:
        return components, count
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    kept = sizes >= min_size
    kept[0] = False
    relabel = np.zeros(count + 1, dtype=np.int64)
    relabel[kept] = np.arange(1, int(kept.sum()) + 1)
    return relabel[components], int(kept.sum())


def component_scores(
    prediction: np.ndarray,
    labels: np.ndarray,
    void_label: int = 255,
    min_component_size: int = 500,
    min_instance_size: int = 100,
) -> dict:
    """Per-image instance sIoU and component PPV: {'siou_gt', 'siou_pred', 'ppv', 'size_gt', 'size_pred'}
    (arrays, one entry per ground-truth instance / predicted component) from a boolean prediction."""
    prediction = prediction & (labels != void_label)
    pred_cc, num_pred = ndimage.label(prediction, structure=_EIGHT_CONNECTED)
    pred_cc, num_pred = _drop_small(pred_cc, num_pred, min_component_size)
    gt_cc, num_gt = ndimage.label(labels == 1, structure=_EIGHT_CONNECTED)
    gt_cc, num_gt = _drop_small(gt_cc, num_gt, min_instance_size)
    # a dropped (too small) instance becomes void: its pixels leave the evaluated region
    roi = (labels != void_label) & ~((labels == 1) & (gt_cc == 0))
    g, p = gt_cc[roi], pred_cc[roi]
    m = np.bincount(g * (num_pred + 1) + p, minlength=(num_gt + 1) * (num_pred + 1)).reshape(
        num_gt + 1, num_pred + 1).astype(np.float64)
    gt_size = m.sum(axis=1)  # per instance, within the region
    pred_size = m.sum(axis=0)  # per component, within the region
    inter = m[1:, 1:]  # instance x component
    touch = inter > 0

    # instance view: K = components touching the instance
    k_size = touch @ pred_size[1:]
    a_and_k = inter.sum(axis=1)
    k_on_other = touch @ (pred_size[1:] - m[0, 1:]) - a_and_k
    siou_gt = a_and_k / (gt_size[1:] + k_size - a_and_k - k_on_other)

    # component view: G = instances touching the component
    g_size = touch.T @ gt_size[1:]
    p_and_g = inter.sum(axis=0)
    g_on_other = touch.T @ (gt_size[1:] - m[1:, 0]) - p_and_g
    with np.errstate(invalid="ignore", divide="ignore"):
        siou_pred = np.where(p_and_g > 0, p_and_g / (g_size + pred_size[1:] - p_and_g - g_on_other), 0.0)
        ppv = p_and_g / pred_size[1:]
    seen = pred_size[1:] > 0  # a component lying wholly on voided small instances is not evaluated
    return {"siou_gt": siou_gt, "siou_pred": siou_pred[seen], "ppv": ppv[seen],
            "size_gt": gt_size[1:], "size_pred": pred_size[1:][seen]}


class ComponentMetrics:
    """Mean sIoU, mean PPV and mean F1 over a dataset (see the module docs). `threshold` applies to
    score maps (`score >= threshold`); boolean predictions are used as they are."""

    def __init__(
        self,
        threshold: float | None = None,
        void_label: int = 255,
        min_component_size: int = 500,
        min_instance_size: int = 100,
        siou_thresholds: Sequence[float] = SIOU_THRESHOLDS,
    ):
        self.threshold = threshold
        self.void_label = int(void_label)
        self.min_component_size = int(min_component_size)
        self.min_instance_size = int(min_instance_size)
        self.siou_thresholds = np.asarray(siou_thresholds, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        k = len(self.siou_thresholds)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.siou_gt_sum = self.siou_pred_sum = self.ppv_sum = 0.0
        self.num_instances = self.num_components = 0
        self.num_images = 0

    def update(self, prediction, labels, name: str | None = None) -> None:
        """Add one image: `prediction` a score map (thresholded at `threshold`) or a boolean mask,
        `labels` the HxW anomaly labels."""
        where = f"image {self.num_images}" + (f" ({name})" if name else "")
        prediction = to_numpy(prediction)
        labels = to_numpy(labels)
        if prediction.shape != labels.shape or labels.ndim != 2:
            raise ValueError(f"{where}: prediction shape {prediction.shape} and labels shape {labels.shape} "
                             "must be the same HxW")
        if prediction.dtype != np.bool_:
            if self.threshold is None:
                raise ValueError(f"{where}: a score map needs ComponentMetrics(threshold=...), "
                                 "e.g. the pixel-level best_f1_threshold")
            if not np.isfinite(prediction[labels != self.void_label]).all():
                raise ValueError(f"{where}: non-finite (NaN or inf) scores on valid pixels")
            prediction = prediction >= self.threshold
        bad = (labels != 0) & (labels != 1) & (labels != self.void_label)
        if bad.any():
            raise ValueError(f"{where}: labels must be 0, 1 or {self.void_label}; found {np.unique(labels[bad])[:10].tolist()}")
        scores = component_scores(prediction, labels, self.void_label, self.min_component_size,
                                  self.min_instance_size)
        siou, ppv = scores["siou_gt"], scores["ppv"]
        t = self.siou_thresholds[:, None]
        self.tp += (siou[None, :] >= t).sum(axis=1)
        self.fn += (siou[None, :] < t).sum(axis=1)
        self.fp += (ppv[None, :] < t).sum(axis=1)
        self.siou_gt_sum += float(siou.sum())
        self.siou_pred_sum += float(scores["siou_pred"].sum())
        self.ppv_sum += float(ppv.sum())
        self.num_instances += len(siou)
        self.num_components += len(ppv)
        self.num_images += 1

    def merge(self, other: ComponentMetrics) -> ComponentMetrics:
        if not np.array_equal(other.siou_thresholds, self.siou_thresholds):
            raise ValueError("cannot merge component metrics with different sIoU thresholds")
        return add_counts(self, other, "tp", "fn", "fp", "siou_gt_sum", "siou_pred_sum", "ppv_sum",
                          "num_instances", "num_components")

    def compute(self) -> dict:
        """{'siou', 'siou_pred', 'ppv', 'mean_f1', 'f1' (list per threshold), 'thresholds', 'tp', 'fn',
        'fp' (lists), 'num_instances', 'num_components', 'num_images'}; means over no items are NaN."""
        nan = float("nan")
        denominator = 2 * self.tp + self.fn + self.fp
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denominator > 0, 2 * self.tp / np.maximum(denominator, 1), np.nan)
        return {
            "siou": self.siou_gt_sum / self.num_instances if self.num_instances else nan,
            "siou_pred": self.siou_pred_sum / self.num_components if self.num_components else nan,
            "ppv": self.ppv_sum / self.num_components if self.num_components else nan,
            "mean_f1": float(np.mean(f1)),
            "f1": [float(v) for v in f1],
            "thresholds": [float(v) for v in self.siou_thresholds],
            "tp": self.tp.tolist(), "fn": self.fn.tolist(), "fp": self.fp.tolist(),
            "num_instances": self.num_instances, "num_components": self.num_components,
            "num_images": self.num_images,
        }

    def table(self, result: dict | None = None) -> str:
        result = self.compute() if result is None else result
        row = {"sIoU": result["siou"], "PPV": result["ppv"], "mean F1": result["mean_f1"],
               "instances": result["num_instances"], "components": result["num_components"]}
        return format_table({"components": row}, percent=("sIoU", "PPV", "mean F1"),
                            title=f"Anomaly, component level (threshold {self._threshold_text()})")

    def _threshold_text(self) -> str:
        return "boolean masks" if self.threshold is None else f"score >= {self.threshold:.6g}"
