"""Semantic segmentation metrics: confusion matrix, per-class IoU and mIoU over the known classes, and
the class-agnostic IoU (CA-IoU) of the predicted "unknown" region against the ground-truth unknown
pixels of the open-set track.

Conventions (those of the Cityscapes evaluation):

- a class's IoU is TP / (TP + FP + FN) summed over the whole dataset (not averaged per image); a class
  with an empty union (absent from both ground truth and prediction) has IoU NaN and mIoU is the mean over
  the other classes, i.e. over the classes present in the ground truth or the prediction;
- ground-truth pixels equal to `ignore_index` (255) or to `unknown_label` (254) do not enter the
  confusion matrix; a predicted value outside 0..num_classes-1 (e.g. the unknown label) on a known
  ground-truth pixel is a false negative of that class and a false positive of no class;
- CA-IoU = |pred unknown AND gt unknown| / |(pred unknown OR gt unknown) minus void|, summed over the
  dataset. The ground truth marks as `unknown_label` only the unknown objects of the evaluated split
  (`vca_data.labels.episode_labels`), the others are void, so the number follows the paper's "unknown
  objects of the test split".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vca_data.labels import TRAIN_NAMES, UNKNOWN, VOID
from vca_data.metrics.accumulate import add_counts
from vca_data.metrics.anomaly import BACKENDS, is_tensor, to_numpy, use_torch_ops
from vca_data.metrics.table import format_table


def _describe(index: int, name: str | None) -> str:
    return f"image {index}" + (f" ({name})" if name else "")


def _paired(pred, gt, where: str):
    """Tensors stay tensors (to count on their device), anything else becomes an array; shapes must agree."""
    pred = pred if is_tensor(pred) else np.asarray(pred)
    gt = gt if is_tensor(gt) else np.asarray(gt)
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"{where}: prediction shape {tuple(pred.shape)} differs from ground truth shape {tuple(gt.shape)}")
    return pred, gt


def _check_integer(x: np.ndarray, what: str, where: str) -> None:
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise ValueError(f"{where}: {what} must be an integer label map, got dtype {x.dtype}")


class UnknownIoU:
    """CA-IoU: IoU of a predicted unknown mask against the ground-truth unknown pixels, accumulated over
    images. `update(pred_unknown, gt_labels)`: a boolean mask (or a label map, where `unknown_label`
    marks unknown) and the ground-truth label map (`unknown_label` unknown, `ignore_index` void);
    `backend` as for `SemanticMetrics`."""

    def __init__(self, unknown_label: int = UNKNOWN, ignore_index: int = VOID, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.unknown_label = int(unknown_label)
        self.ignore_index = int(ignore_index)
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self.intersection = 0
        self.union = 0
        self.num_images = 0

    def update(self, pred, gt, name: str | None = None) -> None:
        where = _describe(self.num_images, name)
        pred, gt = _paired(pred, gt, where)
        if is_tensor(gt) and use_torch_ops(pred, self.backend):  # count on the tensors' device
            pred = pred.detach().to(gt.device)
            gt = gt.detach()
        else:
            pred, gt = to_numpy(pred), to_numpy(gt)
            _check_integer(gt, "ground truth", where)
        pred_unknown = pred if str(pred.dtype) in ("bool", "torch.bool") else pred == self.unknown_label
        gt_unknown = gt == self.unknown_label
        valid = gt != self.ignore_index
        self.intersection += int((pred_unknown & gt_unknown).sum())
        self.union += int(((pred_unknown | gt_unknown) & valid).sum())
        self.num_images += 1

    def merge(self, other: UnknownIoU) -> UnknownIoU:
        return add_counts(self, other, "intersection", "union")

    def compute(self) -> dict:
        """{'ca_iou', 'intersection', 'union', 'num_images'}; ca_iou is NaN when the union is empty."""
        ca_iou = self.intersection / self.union if self.union else float("nan")
        return {"ca_iou": ca_iou, "intersection": self.intersection, "union": self.union,
                "num_images": self.num_images}

    def table(self, result: dict | None = None) -> str:
        result = self.compute() if result is None else result
        return format_table({"unknown": {"CA-IoU": result["ca_iou"], "intersection": result["intersection"],
                                         "union": result["union"]}},
                            title="Class-agnostic IoU of the unknown objects", percent=("CA-IoU",))


class SemanticMetrics:
    """Confusion matrix, per-class IoU, mIoU, pixel accuracy and CA-IoU over a dataset.

    `update(pred, gt)` takes two integer label maps of equal shape (numpy arrays or torch tensors; with
    `backend="auto"` a pair of GPU tensors is counted with torch ops on its device, CPU tensors as numpy
    arrays; "torch" uses torch ops for any tensor pair, "numpy" never). Set `unknown_label=None` for a
    closed-set evaluation where 254 is an ordinary (invalid) value."""

    def __init__(
        self,
        num_classes: int = len(TRAIN_NAMES),
        ignore_index: int = VOID,
        unknown_label: int | None = UNKNOWN,
        class_names: Sequence[str] | None = None,
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is None:
            class_names = TRAIN_NAMES if num_classes == len(TRAIN_NAMES) else [str(c) for c in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        for label, what in ((ignore_index, "ignore_index"), (unknown_label, "unknown_label")):
            if label is not None and 0 <= label < num_classes:
                raise ValueError(f"{what} {label} collides with a class id (0..{num_classes - 1})")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.unknown_label = None if unknown_label is None else int(unknown_label)
        self.class_names = list(class_names)
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        # rows: ground truth class; columns: predicted class, the last column "no known class"
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.unknown = UnknownIoU(self.unknown_label, self.ignore_index, self.backend) if self.unknown_label is not None else None
        self.num_images = 0

    def update(self, pred, gt, name: str | None = None) -> None:
        where = _describe(self.num_images, name)
        pred, gt = _paired(pred, gt, where)
        n = self.num_classes
        if is_tensor(gt) and use_torch_ops(pred, self.backend):
            self.confusion += self._confusion_torch(pred, gt, where)
        else:
            pred_np, gt_np = to_numpy(pred), to_numpy(gt)
            _check_integer(pred_np, "prediction", where)
            _check_integer(gt_np, "ground truth", where)
            known = (gt_np >= 0) & (gt_np < n)
            self._check_gt(gt_np, known, where)
            pred_known = pred_np[known].astype(np.int64)
            pred_known[(pred_known < 0) | (pred_known >= n)] = n
            index = gt_np[known].astype(np.int64) * (n + 1) + pred_known
            self.confusion += np.bincount(index, minlength=n * (n + 1)).reshape(n, n + 1)
        if self.unknown is not None:
            self.unknown.update(pred, gt, name)
        self.num_images += 1

    def _check_gt(self, gt: np.ndarray, known: np.ndarray, where: str) -> None:
        allowed = known | (gt == self.ignore_index)
        if self.unknown_label is not None:
            allowed |= gt == self.unknown_label
        if not allowed.all():
            values = np.unique(gt[~allowed])[:10].tolist()
            raise ValueError(
                f"{where}: ground truth values {values} are neither classes 0..{self.num_classes - 1}, "
                f"ignore_index {self.ignore_index} nor unknown_label {self.unknown_label}"
            )

    def _confusion_torch(self, pred, gt, where: str) -> np.ndarray:
        import torch

        n = self.num_classes
        gt = gt.detach().to(torch.int64)
        pred = pred.detach().to(gt.device, torch.int64)
        known = (gt >= 0) & (gt < n)
        allowed = known | (gt == self.ignore_index)
        if self.unknown_label is not None:
            allowed |= gt == self.unknown_label
        if not bool(allowed.all()):
            self._check_gt(gt.cpu().numpy(), known.cpu().numpy(), where)
        pred_known = pred[known]
        pred_known = torch.where((pred_known < 0) | (pred_known >= n), n, pred_known)
        counts = torch.bincount(gt[known] * (n + 1) + pred_known, minlength=n * (n + 1))
        return counts.view(n, n + 1).cpu().numpy()

    def merge(self, other: SemanticMetrics) -> SemanticMetrics:
        if other.confusion.shape != self.confusion.shape:
            raise ValueError(f"cannot merge a {other.num_classes}-class confusion into a {self.num_classes}-class one")
        self.confusion += other.confusion
        if self.unknown is not None and other.unknown is not None:
            self.unknown.merge(other.unknown)
        self.num_images += other.num_images
        return self

    def compute(self) -> dict:
        """{'miou', 'iou' (list per class, NaN where the union is empty), 'pixel_accuracy',
        'mean_accuracy', 'per_class' ({name: {iou, tp, fp, fn}}), 'ca_iou', 'num_images'}."""
        n = self.num_classes
        tp = np.diag(self.confusion[:, :n]).astype(np.float64)
        fn = self.confusion.sum(axis=1) - tp
        fp = self.confusion[:, :n].sum(axis=0) - tp
        union = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            accuracy = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        total = self.confusion.sum()
        nan = float("nan")
        return {
            "miou": float(np.nanmean(iou)) if np.any(union > 0) else nan,
            "iou": [float(v) for v in iou],
            "pixel_accuracy": float(tp.sum() / total) if total else nan,
            "mean_accuracy": float(np.nanmean(accuracy)) if np.any(tp + fn > 0) else nan,
            "per_class": {
                name: {"iou": float(iou[c]), "tp": int(tp[c]), "fp": int(fp[c]), "fn": int(fn[c])}
                for c, name in enumerate(self.class_names)
            },
            "ca_iou": self.unknown.compute()["ca_iou"] if self.unknown is not None else nan,
            "num_images": self.num_images,
        }

    def table(self, result: dict | None = None) -> str:
        result = self.compute() if result is None else result
        rows = {name: {"IoU": row["iou"], "TP": row["tp"], "FP": row["fp"], "FN": row["fn"]}
                for name, row in result["per_class"].items()}
        rows["mean"] = {"IoU": result["miou"]}
        if self.unknown is not None:
            rows["unknown (CA-IoU)"] = {"IoU": result["ca_iou"]}
        return format_table(rows, columns=["IoU", "TP", "FP", "FN"], percent=("IoU",),
                            title=f"Semantic segmentation ({result['num_images']} images)")
