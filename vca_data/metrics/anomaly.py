"""Pixel-level anomaly segmentation metrics: average precision, AUROC and the false positive rate at
a true positive rate (FPR95), accumulated image by image.

Labels follow the anomaly benchmarks (Fishyscapes, SegmentMeIfYouCan, Road Anomaly): 0 in-distribution,
1 anomaly, and a void label (default 255, some datasets use 2) that is left out. Scores are "higher means
more anomalous".

Two modes:

- **binned** (default, constant memory): every valid pixel's float32 score is mapped to a signed 32-bit
  integer that orders exactly like the float (the IEEE-754 bit pattern with the magnitude bits flipped for
  negative numbers), and its top `bins_bits` bits pick a histogram bin. Anomaly and in-distribution
  pixels are counted in two int64 histograms; reverse cumulative sums give TP and FP at every bin edge.
  No score range is needed, outliers do not squeeze the other scores into a few bins, and the result is
  the exact curve of the scores rounded down to their bin. With 2^20 bins a bin spans 2^-11 of a
  value's magnitude (0.5 and 0.50024 share a bin) and AP/AUROC/FPR differ from the exact values by about
  1e-4 or less on natural score maps. Torch tensors are histogrammed with torch ops on their own device
  (a GPU when the tensors are there); only the histogram is moved at `compute()`.
- **exact** (`exact=True`): keeps all valid scores and sorts them at `compute()`, like scikit-learn;
  memory grows with the number of pixels (about 9 bytes per pixel), so use it for small sets.

Definitions (identical to scikit-learn on the same pixels): AP is the step-form area under the
precision-recall curve, sum over thresholds of (R_n - R_{n-1}) P_n; AUROC is the trapezoid area under
the ROC curve; FPR at `tpr` (default 0.95) is read off the ROC curve by the rule `fpr_at_tpr_rule`:

- ``"first_ge"`` (default): FPR at the highest threshold whose TPR >= target; the rule of the Fishyscapes
  and SegmentMeIfYouCan benchmark code, whose numbers the anomaly literature reports;
- ``"first_gt"``: first threshold whose TPR > target (the SLEEG, DenseHybrid and RbA code);
- ``"nearest"``: the ROC point whose TPR is nearest to the target (first one on ties);
- ``"interp"``: linear interpolation of FPR between the two ROC points around the target.

Undefined values are NaN: AP, FPR and AUROC without anomaly pixels, AUROC and FPR without in-distribution
pixels. Non-finite scores on valid pixels raise `ValueError` naming the image.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from vca_data.metrics.table import format_table

FPR_AT_TPR_RULES: tuple[str, ...] = ("first_ge", "first_gt", "nearest", "interp")

_IN, _ANOMALY, _VOID, _INVALID = 0, 1, 2, 3


def _torch():
    """The torch module if the caller already imported it (a tensor can only exist then)."""
    return sys.modules.get("torch")


def is_tensor(x: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


BACKENDS: tuple[str, ...] = ("auto", "numpy", "torch")


def use_torch_ops(x: object, backend: str) -> bool:
    """Whether to count `x` with torch ops on its device: "auto" does so for tensors off the CPU (a CPU
    tensor is read as a numpy array without a copy, which is faster there), "torch" for every tensor,
    "numpy" never."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not is_tensor(x) or backend == "numpy":
        return False
    return backend == "torch" or x.device.type != "cpu"


def to_numpy(x) -> np.ndarray:
    """A tensor (any device; bfloat16 widened to float32, which numpy lacks) or array-like as an array."""
    if not is_tensor(x):
        return np.asarray(x)
    x = x.detach()
    if x.dtype == _torch().bfloat16:
        x = x.float()
    return x.cpu().numpy()


def _describe(index: int, name: str | None) -> str:
    return f"image {index}" + (f" ({name})" if name else "")


def float_order_keys(scores: np.ndarray) -> np.ndarray:
    """Signed int32 keys that sort exactly like the float32 `scores`: positive floats keep their bit
    pattern, negative floats get their 31 magnitude bits flipped; -0.0 is first turned into +0.0 so
    that equal scores get equal keys."""
    with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes +-inf, still in order
        bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.int32)
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


def bin_lower_edges(bins: np.ndarray, bins_bits: int) -> np.ndarray:
    """Smallest float32 whose key falls in each bin of `bins` (indices into 2**bins_bits bins), as
    float64; `score >= edge` selects exactly the pixels of that bin and above. Edges that are not finite
    floats (the bins of -inf and NaN patterns) are clamped to the finite float32 range."""
    offset = np.int64(1 << (bins_bits - 1))
    keys = ((np.asarray(bins, dtype=np.int64) - offset) << (32 - bins_bits)).astype(np.int32)
    bits = keys ^ ((keys >> 31) & np.int32(0x7FFFFFFF))  # the key map is its own inverse
    finfo = np.finfo(np.float32)
    with np.errstate(invalid="ignore"):  # signalling-NaN patterns of the outermost bins
        edges = bits.view(np.float32).astype(np.float64)
    return np.nan_to_num(edges, nan=float(finfo.min), posinf=float(finfo.max), neginf=float(finfo.min))


def _label_lut(void_label: int) -> np.ndarray:
    lut = np.full(256, _INVALID, dtype=np.uint8)
    lut[0], lut[1] = _IN, _ANOMALY
    if 0 <= void_label <= 255:
        lut[void_label] = _VOID
    return lut


def _label_codes(labels: np.ndarray, void_label: int, lut: np.ndarray) -> np.ndarray:
    """Per-pixel code: 0 in-distribution, 1 anomaly, 2 void, 3 anything else."""
    if labels.dtype == np.uint8:
        return np.take(lut, labels)
    if labels.dtype == np.bool_:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.mod(labels, 1) == 0):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    codes = np.full(labels.shape, _INVALID, dtype=np.uint8)
    codes[labels == 0] = _IN
    codes[labels == 1] = _ANOMALY
    codes[labels == void_label] = _VOID
    return codes


def _invalid_label_error(labels, codes, void_label: int, where: str) -> ValueError:
    values = np.unique(np.asarray(labels)[np.asarray(codes) == _INVALID])[:10]
    return ValueError(
        f"{where}: labels must be 0 (in-distribution), 1 (anomaly) or {void_label} (void); "
        f"found {values.tolist()}"
    )


def curve_counts_exact(scores: np.ndarray, is_anomaly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tps, fps) at every distinct score, highest threshold first: tps[k]/fps[k] count the
    anomaly/in-distribution pixels with score >= thresholds[k] (scikit-learn's binary curve)."""
    if scores.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0), empty, empty
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores = scores[order]
    hits = is_anomaly[order]
    del order
    last_of_value = np.flatnonzero(np.diff(sorted_scores))
    ends = np.r_[last_of_value, sorted_scores.size - 1]
    tps = np.cumsum(hits, dtype=np.int64)[ends]
    fps = ends + 1 - tps
    return sorted_scores[ends], tps, fps


def metrics_from_curve(
    tps: np.ndarray, fps: np.ndarray, tpr: float = 0.95, fpr_at_tpr_rule: str = "first_ge"
) -> dict:
    """AP, AUROC, FPR at `tpr` and the best pixel F1 from cumulative counts at decreasing thresholds
    (`tps[-1]`, `fps[-1]`: all anomaly / in-distribution pixels). Also returns the index of the
    best-F1 threshold under the key 'best_f1_index' (-1 when undefined)."""
    if fpr_at_tpr_rule not in FPR_AT_TPR_RULES:
        raise ValueError(f"fpr_at_tpr_rule must be one of {FPR_AT_TPR_RULES}, got {fpr_at_tpr_rule!r}")
    nan = float("nan")
    out = {"ap": nan, "auroc": nan, "fpr_at_tpr": nan, "best_f1": nan, "best_f1_index": -1}
    if tps.size == 0:
        return out
    positives, negatives = int(tps[-1]), int(fps[-1])
    tps = tps.astype(np.float64)
    fps = fps.astype(np.float64)
    if positives > 0:
        recall = tps / positives
        precision = tps / (tps + fps)
        out["ap"] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
        f1 = 2.0 * tps / (tps + fps + positives)
        best = int(np.argmax(f1))
        out["best_f1"], out["best_f1_index"] = float(f1[best]), best
    if positives > 0 and negatives > 0:
        tpr_curve = np.r_[0.0, tps / positives]
        fpr_curve = np.r_[0.0, fps / negatives]
        out["auroc"] = float(np.sum(np.diff(fpr_curve) * (tpr_curve[1:] + tpr_curve[:-1]) / 2.0))
        out["fpr_at_tpr"] = _fpr_at_tpr(tpr_curve, fpr_curve, tpr, fpr_at_tpr_rule)
    return out


def _fpr_at_tpr(tpr_curve: np.ndarray, fpr_curve: np.ndarray, target: float, rule: str) -> float:
    if rule == "nearest":
        return float(fpr_curve[int(np.argmin(np.abs(tpr_curve - target)))])
    reached = tpr_curve > target if rule == "first_gt" else tpr_curve >= target
    i = int(np.argmax(reached))  # tpr ends at 1, so `reached` has a True unless target >= 1 with ">"
    if not reached[i]:
        return float("nan")
    if rule == "interp" and i > 0 and tpr_curve[i] > target:
        t0, t1, f0, f1 = tpr_curve[i - 1], tpr_curve[i], fpr_curve[i - 1], fpr_curve[i]
        return float(f0 + (f1 - f0) * (target - t0) / (t1 - t0))
    return float(fpr_curve[i])


class AnomalyPixelMetrics:
    """Pixel AP, AUROC, FPR at a TPR and best F1 over a dataset, one `update()` per image (or batch).

    Parameters: `exact` (keep and sort all scores) or binned with 2**`bins_bits` bins (1-24, default
    20); `void_label` (default 255); `tpr` (default 0.95); `fpr_at_tpr_rule` (see the module docs,
    default "first_ge"); `backend` for tensors in binned mode: "auto" (torch ops on the tensor's device
    for GPU tensors, numpy for CPU tensors), "torch" (torch ops for every tensor) or "numpy"."""

    def __init__(
        self,
        exact: bool = False,
        bins_bits: int = 20,
        void_label: int = 255,
        tpr: float = 0.95,
        fpr_at_tpr_rule: str = "first_ge",
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not 1 <= int(bins_bits) <= 24:  # 2^24 bins: two 128 MiB histograms
            raise ValueError(f"bins_bits must lie in 1..24, got {bins_bits}")
        if fpr_at_tpr_rule not in FPR_AT_TPR_RULES:
            raise ValueError(f"fpr_at_tpr_rule must be one of {FPR_AT_TPR_RULES}, got {fpr_at_tpr_rule!r}")
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
        if int(void_label) in (0, 1):
            raise ValueError(f"void_label must differ from 0 and 1, got {void_label}")
        self.exact = bool(exact)
        self.bins_bits = int(bins_bits)
        self.void_label = int(void_label)
        self.tpr = float(tpr)
        self.fpr_at_tpr_rule = fpr_at_tpr_rule
        self.backend = backend
        self._lut = _label_lut(self.void_label)
        self._keep4, self._base4 = self._slot_tables(np.arange(4))
        self._keep256, self._base256 = self._slot_tables(self._lut)
        self.reset()

    @property
    def num_bins(self) -> int:
        return 1 << self.bins_bits

    def reset(self) -> None:
        self.num_images = 0
        self._counts = np.zeros((2, self.num_bins), dtype=np.int64) if not self.exact else None
        self._device_counts: dict = {}  # torch device -> (2, num_bins) int64 tensor
        self._scores: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []

    # ---------------------------------------------------------------------------------------- update
    def update(self, scores, labels, name: str | None = None) -> None:
        """Add one image (or a batch): `scores` float array/tensor, `labels` integer array/tensor of the
        same shape (0 in-distribution, 1 anomaly, `void_label` void). `name` appears in error messages."""
        where = _describe(self.num_images, name)
        scores = scores if is_tensor(scores) else np.asarray(scores)
        labels = labels if is_tensor(labels) else np.asarray(labels)
        if tuple(scores.shape) != tuple(labels.shape):
            raise ValueError(
                f"{where}: scores shape {tuple(scores.shape)} differs from labels shape {tuple(labels.shape)}"
            )
        if use_torch_ops(scores, self.backend) and not self.exact:
            self._update_torch(scores, labels, where)
        else:
            scores, labels = to_numpy(scores), to_numpy(labels)
            if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == np.bool_):
                raise ValueError(f"{where}: scores must be numeric, got dtype {scores.dtype}")
            if self.exact:
                self._update_exact(scores, labels, where)
            else:
                self._update_binned(scores, labels, where)
        self.num_images += 1

    def _update_exact(self, scores: np.ndarray, labels: np.ndarray, where: str) -> None:
        codes = _label_codes(labels, self.void_label, self._lut)
        if (codes == _INVALID).any():
            raise _invalid_label_error(labels, codes, self.void_label, where)
        valid = codes < _VOID
        valid_scores = scores[valid]
        if not np.issubdtype(valid_scores.dtype, np.floating):
            valid_scores = valid_scores.astype(np.float64)
        self._check_finite(valid_scores, where)
        self._scores.append(valid_scores)
        self._hits.append(codes[valid] == _ANOMALY)

    def _slot_tables(self, codes_lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per label code (or label byte, through `codes_lut`): a mask that keeps or zeroes the score
        bin, and the offset of the slot, so that `(bin & keep) + base` is the bin in the in-distribution
        histogram, the bin in the anomaly histogram, one void slot, or one invalid-label slot."""
        n = self.num_bins
        keep = np.array([-1, -1, 0, 0], dtype=np.int32)[codes_lut]
        base = np.array([0, n, 2 * n, 2 * n + 1], dtype=np.int32)[codes_lut]
        return keep, base

    def _update_binned(self, scores: np.ndarray, labels: np.ndarray, where: str) -> None:
        if labels.dtype == np.uint8:  # one table lookup per pixel, straight from the label byte
            keep, base = np.take(self._keep256, labels), np.take(self._base256, labels)
        else:
            codes = _label_codes(labels, self.void_label, self._lut)
            keep, base = np.take(self._keep4, codes), np.take(self._base4, codes)
        if np.issubdtype(scores.dtype, np.floating) and not np.isfinite(scores).all():
            self._check_finite(scores[keep != 0], where)
        index = float_order_keys(scores) >> (32 - self.bins_bits)
        index += np.int32(self.num_bins // 2)
        index &= keep
        index += base
        counts = np.bincount(index.ravel(), minlength=2 * self.num_bins + 2)
        if counts[2 * self.num_bins + 1]:
            raise _invalid_label_error(labels, _label_codes(labels, self.void_label, self._lut), self.void_label, where)
        self._counts += counts[: 2 * self.num_bins].reshape(2, self.num_bins)

    def _update_torch(self, scores, labels, where: str) -> None:
        torch = _torch()
        scores = scores.detach()
        device = scores.device
        if not torch.is_tensor(labels):
            labels = torch.from_numpy(np.asarray(labels))
        labels = labels.detach().to(device)
        if labels.dtype == torch.bool:
            codes = labels.to(torch.int64)
        else:
            if labels.is_floating_point() and not torch.equal(labels, labels.round()):
                raise ValueError(f"{where}: labels must be integers, got dtype {labels.dtype}")
            codes = torch.full(labels.shape, _INVALID, dtype=torch.int64, device=device)
            codes[labels == 0] = _IN
            codes[labels == 1] = _ANOMALY
            codes[labels == self.void_label] = _VOID
        keep = torch.as_tensor(self._keep4, device=device)[codes]
        base = torch.as_tensor(self._base4, device=device)[codes]
        finite = torch.isfinite(scores)
        if not bool(finite.all()):
            bad = int(((~finite) & (codes < _VOID)).sum())
            if bad:
                raise ValueError(f"{where}: {bad} non-finite (NaN or inf) scores on valid pixels")
        bits = (scores.to(torch.float32) + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
        keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        index = (((keys >> (32 - self.bins_bits)) + self.num_bins // 2) & keep) + base
        counts = torch.bincount(index.flatten().to(torch.int64), minlength=2 * self.num_bins + 2)
        if bool(counts[2 * self.num_bins + 1]):
            raise _invalid_label_error(labels.cpu().numpy(), codes.cpu().numpy(), self.void_label, where)
        counts = counts[: 2 * self.num_bins].view(2, self.num_bins)
        key = str(device)
        if key in self._device_counts:
            self._device_counts[key] += counts
        else:
            self._device_counts[key] = counts.clone()

    @staticmethod
    def _check_finite(valid_scores: np.ndarray, where: str) -> None:
        bad = int(valid_scores.size - np.count_nonzero(np.isfinite(valid_scores)))
        if bad:
            raise ValueError(f"{where}: {bad} non-finite (NaN or inf) scores on valid pixels")

    # ----------------------------------------------------------------------------------------- merge
    def _settings(self) -> tuple:
        return (self.exact, self.bins_bits, self.void_label)

    def merge(self, other: AnomalyPixelMetrics) -> AnomalyPixelMetrics:
        """Add the images accumulated by `other` (same mode, bins and void label) to this one, e.g. the
        shards of a parallel evaluation; returns self."""
        if other._settings() != self._settings():
            raise ValueError(f"cannot merge accumulators with settings {other._settings()} into {self._settings()}")
        if self.exact:
            self._scores.extend(other._scores)
            self._hits.extend(other._hits)
        else:
            self._counts += other.histograms()
        self.num_images += other.num_images
        return self

    def histograms(self) -> np.ndarray:
        """(2, num_bins) int64 counts of in-distribution (row 0) and anomaly (row 1) pixels per bin,
        device histograms included (binned mode)."""
        if self.exact:
            raise ValueError("histograms() is only defined in binned mode")
        total = self._counts.copy()
        for counts in self._device_counts.values():
            total += counts.cpu().numpy()
        return total

    # --------------------------------------------------------------------------------------- compute
    def curve_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, tps, fps), highest threshold first: the pixels with score >= thresholds[k]
        contain tps[k] anomaly and fps[k] in-distribution pixels. In binned mode the thresholds are the
        lower edges of the occupied bins."""
        if self.exact:
            scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
            hits = np.concatenate(self._hits) if self._hits else np.zeros(0, dtype=bool)
            return curve_counts_exact(scores, hits)
        counts = self.histograms()
        occupied = np.flatnonzero(counts.sum(axis=0))[::-1]
        tps = np.cumsum(counts[1, occupied])
        fps = np.cumsum(counts[0, occupied])
        thresholds = bin_lower_edges(occupied, self.bins_bits)
        return thresholds, tps, fps

    def compute(self) -> dict:
        """{'ap', 'auroc', 'fpr_at_tpr', 'tpr', 'best_f1', 'best_f1_threshold', 'num_images',
        'num_pixels', 'num_anomaly_pixels'}; 'best_f1_threshold' t means "anomaly where score >= t"."""
        thresholds, tps, fps = self.curve_counts()
        result = metrics_from_curve(tps, fps, self.tpr, self.fpr_at_tpr_rule)
        best = result.pop("best_f1_index")
        result["tpr"] = self.tpr
        result["best_f1_threshold"] = float(thresholds[best]) if best >= 0 else float("nan")
        result["num_images"] = self.num_images
        result["num_pixels"] = int(tps[-1] + fps[-1]) if tps.size else 0
        result["num_anomaly_pixels"] = int(tps[-1]) if tps.size else 0
        return result

    def table(self, result: dict | None = None) -> str:
        result = self.compute() if result is None else result
        name = f"FPR@{result['tpr'] * 100:g}"
        row = {"AP": result["ap"], "AUROC": result["auroc"], name: result["fpr_at_tpr"], "F1": result["best_f1"],
               "pixels": result["num_pixels"], "anomaly": result["num_anomaly_pixels"]}
        mode = "exact" if self.exact else f"2^{self.bins_bits} bins"
        return format_table({"all": row}, title=f"Anomaly, pixel level ({mode}, FPR rule {self.fpr_at_tpr_rule})",
                            percent=("AP", "AUROC", name, "F1"))


def anomaly_pixel_metrics(
    scores: Sequence | np.ndarray,
    labels: Sequence | np.ndarray,
    exact: bool = True,
    **options,
) -> dict:
    """One-call form: `scores` and `labels` are arrays (or lists of per-image arrays)."""
    metric = AnomalyPixelMetrics(exact=exact, **options)
    if isinstance(scores, (list, tuple)):
        for s, y in zip(scores, labels, strict=True):
            metric.update(s, y)
    else:
        metric.update(scores, labels)
    return metric.compute()
