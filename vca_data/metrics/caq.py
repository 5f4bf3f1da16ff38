"""Class-agnostic quality (CAQ) of instance masks, the VCA benchmark's measure for moving-object and
unknown-object segmentation: SQ (mean IoU of the matches), RQ = TP / (TP + FP/2 + FN/2), CAQ = SQ * RQ,
accumulated over a dataset.

Default counting (the panoptic one, without classes): a predicted and a ground-truth mask match when
IoU > 0.5 (one-to-one; overlapping predictions are matched greedily by decreasing IoU); unmatched
predictions are FP, unmatched ground-truth masks FN. With an optional `void` mask, the predicted pixels on
void leave the union, and an unmatched prediction lying more than half on void is not a FP.

`count_unmatched_pred_as_fn=True` reproduces the counting of the VCA authors' CAQ evaluation, the script
their README runs as `tools/test_eval_caq.py` (its `evaluate_uq`; the version readable here is
`tools/test_eval_uq.py` of MSiam/video_class_agnostic_segmentation at 745c526): every prediction is
compared with its best-IoU ground truth; IoU > 0.5 is a TP (two predictions may both be TPs of one ground
truth), otherwise the prediction is counted as a FP *and* a FN; a ground-truth mask that is no
prediction's best match is a FN; predictions in an image without ground truth are not counted. This gives
the paper's numbers; it is not the default because it counts a missed object twice when a poor prediction
covers it and ignores false alarms in empty frames.
"""

from __future__ import annotations

import numpy as np

from vca_data.metrics.accumulate import add_counts
from vca_data.metrics.anomaly import to_numpy
from vca_data.metrics.table import format_table

IOU_THRESHOLD = 0.5


def _as_masks(x, what: str, where: str) -> np.ndarray:
    """(N, H, W) bool stack from a stack of masks or from an HxW instance id map (0 = background)."""
    x = to_numpy(x)
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{where}: {what} instance id map must hold integers, got dtype {x.dtype}")
        ids = np.unique(x)
        ids = ids[ids != 0]
        return x[None, :, :] == ids[:, None, None]
    if x.ndim == 3:
        return x.astype(bool, copy=False)
    raise ValueError(f"{where}: {what} must be an HxW instance id map or an NxHxW mask stack, got shape {x.shape}")


def mask_intersections(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, G) pixel counts of pairwise intersections of two (N, H, W) boolean stacks."""
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros((len(pred), len(gt)), dtype=np.int64)
    pixels = pred.shape[1] * pred.shape[2]
    dtype = np.float32 if pixels < (1 << 24) else np.float64  # float32 counts exactly below 2^24
    p = pred.reshape(len(pred), -1).astype(dtype)
    g = gt.reshape(len(gt), -1).astype(dtype)
    return np.rint(p @ g.T).astype(np.int64)


class ClassAgnosticQuality:
    """SQ, RQ and CAQ over a dataset; `update(pred, gt, void=None)` per image (see the module docs)."""

    def __init__(self, count_unmatched_pred_as_fn: bool = False):
        self.count_unmatched_pred_as_fn = bool(count_unmatched_pred_as_fn)
        self.reset()

    def reset(self) -> None:
        self.tp = 0
        self.fp = 0
        self.fn = 0
        self.iou_sum = 0.0
        self.num_images = 0

    def update(self, pred, gt, void=None, name: str | None = None) -> None:
        """Add one image. `pred` and `gt`: an HxW instance id map (0 background) or an NxHxW boolean mask
        stack; `void`: optional HxW boolean mask of pixels to leave out (e.g. KITTI-MOTS ignore regions)."""
        where = f"image {self.num_images}" + (f" ({name})" if name else "")
        pred_masks = _as_masks(pred, "prediction", where)
        gt_masks = _as_masks(gt, "ground truth", where)
        if pred_masks.shape[1:] != gt_masks.shape[1:]:
            raise ValueError(f"{where}: prediction size {pred_masks.shape[1:]} differs from ground truth "
                             f"size {gt_masks.shape[1:]}")
        inter = mask_intersections(pred_masks, gt_masks).astype(np.float64)
        p_area = pred_masks.sum(axis=(1, 2)).astype(np.float64)
        g_area = gt_masks.sum(axis=(1, 2)).astype(np.float64)
        if void is not None:
            void = to_numpy(void)
            if void.shape != gt_masks.shape[1:]:
                raise ValueError(f"{where}: void mask shape {void.shape} differs from image size {gt_masks.shape[1:]}")
            p_void = (pred_masks & void.astype(bool)[None]).sum(axis=(1, 2))
        else:
            p_void = np.zeros(len(pred_masks))
        keep = p_area > 0
        inter, p_area, p_void = inter[keep], p_area[keep], p_void[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (p_area[:, None] + g_area[None, :] - inter - p_void[:, None])
            mostly_void = p_void / p_area > 0.5
        iou = np.nan_to_num(iou)
        if self.count_unmatched_pred_as_fn:
            self._count_authors(iou, mostly_void)
        else:
            self._count_matching(iou, mostly_void)
        self.num_images += 1

    def _count_matching(self, iou: np.ndarray, mostly_void: np.ndarray) -> None:
        num_p, num_g = iou.shape
        p_matched = np.zeros(num_p, dtype=bool)
        g_matched = np.zeros(num_g, dtype=bool)
        pi, gi = np.nonzero(iou > IOU_THRESHOLD)
        for k in np.argsort(-iou[pi, gi], kind="stable"):
            p, g = pi[k], gi[k]
            if not p_matched[p] and not g_matched[g]:
                p_matched[p] = g_matched[g] = True
                self.tp += 1
                self.iou_sum += float(iou[p, g])
        self.fn += int((~g_matched).sum())
        self.fp += int((~p_matched & ~mostly_void).sum())

    def _count_authors(self, iou: np.ndarray, mostly_void: np.ndarray) -> None:
        num_p, num_g = iou.shape
        if num_g == 0:
            return
        counted = ~mostly_void
        best_g = np.argmax(iou, axis=1)
        best_iou = iou[np.arange(num_p), best_g]
        hit = (best_iou > IOU_THRESHOLD) & counted
        miss = (best_iou <= IOU_THRESHOLD) & counted
        self.tp += int(hit.sum())
        self.iou_sum += float(best_iou[hit].sum())
        self.fp += int(miss.sum())
        self.fn += int(miss.sum())
        chosen = np.zeros(num_g, dtype=bool)
        chosen[best_g[counted]] = True
        self.fn += int((~chosen).sum())

    def merge(self, other: ClassAgnosticQuality) -> ClassAgnosticQuality:
        if other.count_unmatched_pred_as_fn != self.count_unmatched_pred_as_fn:
            raise ValueError("cannot merge CAQ accumulators with different counting rules")
        return add_counts(self, other, "tp", "fp", "fn", "iou_sum")

    def compute(self) -> dict:
        """{'sq', 'rq', 'caq', 'tp', 'fp', 'fn', 'num_images'}; SQ is NaN without matches, RQ and CAQ
        NaN when there is nothing to count."""
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        sq = self.iou_sum / self.tp if self.tp else float("nan")
        rq = self.tp / denominator if denominator else float("nan")
        caq = (sq if self.tp else 0.0) * rq if denominator else float("nan")
        return {"sq": sq, "rq": rq, "caq": caq, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "num_images": self.num_images}

    def table(self, result: dict | None = None) -> str:
        result = self.compute() if result is None else result
        rule = "authors' counting" if self.count_unmatched_pred_as_fn else "one-to-one matching"
        row = {"CAQ": result["caq"], "SQ": result["sq"], "RQ": result["rq"],
               "TP": result["tp"], "FP": result["fp"], "FN": result["fn"]}
        return format_table({"class-agnostic": row}, percent=("CAQ", "SQ", "RQ"),
                            title=f"Class-agnostic quality ({result['num_images']} images, {rule})")
