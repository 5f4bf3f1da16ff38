"""Panoptic quality (PQ, SQ, RQ) per class and for things and stuff, with the COCO panoptic rules.

Input form, per image: an integer **id map** (HxW, 0 = void / unlabelled) and its **segments**, a list of
`{"id", "category_id", "iscrowd"}` dicts (COCO `segments_info`; `iscrowd` is read for the ground truth
only and defaults to 0), for the prediction and for the ground truth. Two adapters produce this form:
`from_category_instance` for `category * label_divisor + instance` maps (Cityscapes, KITTI-STEP style)
and `read_coco_panoptic` / `evaluate_coco_panoptic` for COCO panoptic JSON + PNG folders.

Rules (those of the COCO panoptic evaluation, `panopticapi`):

- a predicted and a ground-truth segment of the same category match when IoU > 0.5, where the union
  leaves out the predicted pixels that fall on void (id 0) ground truth; such matches are unique;
- crowd ground-truth segments are never matched; an unmatched predicted segment is not a false positive
  when more than half of it lies on void or on crowd regions of its category;
- unmatched non-crowd ground-truth segments are false negatives;
- per category: PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2);
  the averages over all / thing / stuff categories skip the categories with TP + FP + FN = 0, whose
  per-class values are NaN.

Differences from `panopticapi`, none of which changes the numbers on well-formed inputs: segment areas
are counted from the id maps (not read from the JSON `area` field); the pixels of all crowd segments of
a category count towards ignoring a prediction (panopticapi keeps the last crowd segment listed per
category; COCO has at most one); a predicted segment listed but absent from its id map is skipped
(panopticapi raises); a non-zero id in a map that its segments do not list is an error (panopticapi
ignores it for the ground truth).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vca_data.metrics.accumulate import add_counts
from vca_data.metrics.loading import read_ahead
from vca_data.metrics.table import format_table
from vca_data.png import read_panoptic_png

IOU_THRESHOLD = 0.5
_LOOKUP_LIMIT = 1 << 25  # ids below this are indexed through a lookup table, others by binary search


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool


def _categories(categories: Sequence[Mapping] | Mapping[int, Mapping]) -> list[Category]:
    items = categories.values() if isinstance(categories, Mapping) else categories
    out = []
    for c in items:
        try:
            out.append(Category(int(c["id"]), str(c.get("name", c["id"])), bool(c.get("isthing", 0))))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"category entries need 'id' (and 'name', 'isthing'); got {c!r}") from err
    if len({c.id for c in out}) != len(out):
        raise ValueError("category ids must be unique")
    return out


class PanopticQuality:
    """PQ/SQ/RQ accumulated over images. `categories`: the COCO `categories` list (dicts with `id`,
    `name`, `isthing`), or a mapping from id to such dicts."""

    def __init__(self, categories: Sequence[Mapping] | Mapping[int, Mapping]):
        self.categories = _categories(categories)
        self._position = {c.id: i for i, c in enumerate(self.categories)}
        self._table = np.zeros(0, dtype=np.intp)
        self._buffers: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        k = len(self.categories)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.iou_sum = np.zeros(k, dtype=np.float64)
        self.num_images = 0

    # ---------------------------------------------------------------------------------------- update
    def _segment_table(self, segments: Sequence[Mapping], what: str, where: str) -> tuple[np.ndarray, ...]:
        ids, cats, crowd = [], [], []
        for seg in segments:
            try:
                seg_id, cat_id = int(seg["id"]), int(seg["category_id"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: {what} segment needs 'id' and 'category_id', got {seg!r}") from err
            if seg_id <= 0:
                raise ValueError(f"{where}: {what} segment id {seg_id} must be positive (0 is void)")
            if cat_id not in self._position:
                raise ValueError(f"{where}: {what} segment {seg_id} has unknown category_id {cat_id}")
            ids.append(seg_id)
            cats.append(self._position[cat_id])
            crowd.append(bool(seg.get("iscrowd", 0)))
        ids_arr = np.array(ids, dtype=np.int64)
        if len(np.unique(ids_arr)) != len(ids_arr):
            raise ValueError(f"{where}: {what} segments list an id twice")
        return ids_arr, np.array(cats, dtype=np.int64), np.array(crowd, dtype=bool)

    def _buffer(self, name: str, size: int, dtype) -> np.ndarray:
        """A work array of `size` elements kept between images: fresh arrays of a frame's size would come
        from the system each time and cost as much in page faults as the counting itself."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(size, dtype=dtype)
        return buffer[:size]

    def _segment_index(self, id_map: np.ndarray, ids: np.ndarray, scale: int, out: np.ndarray) -> np.ndarray:
        """Per pixel into `out` (intp, the id map's size): `scale` for void (id 0), (k + 2) * `scale` for
        the k-th listed segment, 0 for an unlisted id. With `scale` = the number of prediction codes, the
        ground truth's codes plus the prediction's index the joint histogram directly."""
        flat = id_map.ravel()
        codes = np.arange(2, len(ids) + 2, dtype=np.intp) * scale
        top = int(ids.max()) if ids.size else 0
        if top < _LOOKUP_LIMIT:
            # A lookup table by id, kept between images (a fresh one would fault in its pages each time)
            # and zero except for this image's ids: ids past the table are clipped onto its last entry,
            # which no listed id reaches, and so are negative ids once read as unsigned.
            if len(self._table) < top + 2:
                # a power of two plus the clip entry: 24-bit PNG ids get one table of 2^24 + 1 at once
                self._table = np.zeros((1 << top.bit_length()) + 1, dtype=np.intp)
            table = self._table
            if flat.dtype.kind == "i":
                flat = flat.view(flat.dtype.str.replace("i", "u"))
            index = self._buffer("index", flat.size, np.intp)
            if flat.dtype.itemsize > 4:
                np.minimum(flat, len(table) - 1, out=index, casting="unsafe")
            else:
                index[...] = flat  # take() would convert to intp itself, more slowly
            table[ids] = codes
            table[0] = scale
            try:
                return np.take(table, index, mode="clip", out=out)
            finally:
                table[ids] = 0
                table[0] = 0
        order = np.argsort(ids)
        sorted_ids = ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, flat), len(ids) - 1)
        out[...] = np.where(sorted_ids[pos] == flat, codes[order][pos], np.where(flat == 0, scale, 0))
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_table"] = np.zeros(0, dtype=np.intp)  # caches, not worth sending to other processes
        state["_buffers"] = {}
        return state

    def update(
        self,
        pred_ids,
        pred_segments: Sequence[Mapping],
        gt_ids,
        gt_segments: Sequence[Mapping],
        name: str | None = None,
    ) -> None:
        """Add one image: predicted id map and segments, ground-truth id map and segments."""
        where = f"image {self.num_images}" + (f" ({name})" if name else "")
        pred_ids, gt_ids = np.asarray(pred_ids), np.asarray(gt_ids)
        if pred_ids.shape != gt_ids.shape:
            raise ValueError(f"{where}: prediction id map shape {pred_ids.shape} differs from ground truth {gt_ids.shape}")
        for arr, what in ((pred_ids, "prediction"), (gt_ids, "ground truth")):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{where}: {what} id map must hold integers, got dtype {arr.dtype}")
        p_ids, p_cat, _ = self._segment_table(pred_segments, "prediction", where)
        g_ids, g_cat, g_crowd = self._segment_table(gt_segments, "ground truth", where)
        num_p, num_g = len(p_ids), len(g_ids)
        # counts[g, p]: pixels of ground-truth code g and predicted code p (0 unlisted, 1 void, k + 2
        # segment k); intersection drops the unlisted row and column, leaving 0 = void
        cols = num_p + 2
        size = gt_ids.size
        joint = self._segment_index(gt_ids, g_ids, cols, self._buffer("joint", size, np.intp))
        p_index = self._segment_index(pred_ids, p_ids, 1, self._buffer("prediction", size, np.intp))
        np.add(joint, p_index, out=joint)
        counts = np.bincount(joint, minlength=(num_g + 2) * cols).reshape(num_g + 2, cols)
        for unlisted, id_map, ids, what in ((counts[0].sum(), gt_ids, g_ids, "ground truth"),
                                            (counts[:, 0].sum(), pred_ids, p_ids, "prediction")):
            if unlisted:
                values = np.unique(id_map[~np.isin(id_map, ids) & (id_map != 0)])[:10].tolist()
                raise ValueError(f"{where}: {what} id map contains ids {values} that its segments do not list")
        intersection = counts[1:, 1:]
        g_area = intersection.sum(axis=1)[1:]
        p_area = intersection.sum(axis=0)[1:]
        p_on_void = intersection[0, 1:]
        inter = intersection[1:, 1:]

        same = (g_cat[:, None] == p_cat[None, :]) & ~g_crowd[:, None] & (inter > 0)
        gi, pi = np.nonzero(same)
        overlap = inter[gi, pi]
        union = p_area[pi] + g_area[gi] - overlap - p_on_void[pi]
        iou = overlap / union
        hit = iou > IOU_THRESHOLD
        gi, pi, iou = gi[hit], pi[hit], iou[hit]
        np.add.at(self.tp, g_cat[gi], 1)
        np.add.at(self.iou_sum, g_cat[gi], iou)

        g_matched = np.zeros(num_g, dtype=bool)
        g_matched[gi] = True
        missed = ~g_matched & ~g_crowd
        np.add.at(self.fn, g_cat[missed], 1)

        p_matched = np.zeros(num_p, dtype=bool)
        p_matched[pi] = True
        on_crowd = ((g_cat[:, None] == p_cat[None, :]) & g_crowd[:, None]) * inter
        ignored = p_on_void + on_crowd.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mostly_ignored = ignored / p_area > 0.5
        false_pos = ~p_matched & (p_area > 0) & ~mostly_ignored
        np.add.at(self.fp, p_cat[false_pos], 1)
        self.num_images += 1

    def merge(self, other: PanopticQuality) -> PanopticQuality:
        if other.categories != self.categories:
            raise ValueError("cannot merge panoptic accumulators with different categories")
        return add_counts(self, other, "tp", "fp", "fn", "iou_sum")

    # --------------------------------------------------------------------------------------- compute
    def compute(self) -> dict:
        """{'all' | 'things' | 'stuff': {'pq', 'sq', 'rq', 'n'}, 'per_class': {name: {'pq', 'sq', 'rq',
        'tp', 'fp', 'fn'}}, 'num_images'}; n is the number of categories averaged."""
        tp, fp, fn = self.tp.astype(np.float64), self.fp.astype(np.float64), self.fn.astype(np.float64)
        counted = (self.tp + self.fp + self.fn) > 0
        denominator = tp + 0.5 * fp + 0.5 * fn
        with np.errstate(invalid="ignore", divide="ignore"):
            pq = np.where(counted, self.iou_sum / denominator, np.nan)
            sq = np.where(counted, np.where(self.tp > 0, self.iou_sum / np.maximum(tp, 1), 0.0), np.nan)
            rq = np.where(counted, tp / denominator, np.nan)
        is_thing = np.array([c.isthing for c in self.categories], dtype=bool)
        result: dict = {}
        for group, members in (("all", np.ones_like(is_thing)), ("things", is_thing), ("stuff", ~is_thing)):
            chosen = members & counted
            n = int(chosen.sum())
            result[group] = {
                "pq": float(pq[chosen].mean()) if n else float("nan"),
                "sq": float(sq[chosen].mean()) if n else float("nan"),
                "rq": float(rq[chosen].mean()) if n else float("nan"),
                "n": n,
            }
        result["per_class"] = {
            c.name: {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i]),
                     "tp": int(self.tp[i]), "fp": int(self.fp[i]), "fn": int(self.fn[i])}
            for i, c in enumerate(self.categories)
        }
        result["num_images"] = self.num_images
        return result

    def table(self, result: dict | None = None) -> str:
        result = self.compute() if result is None else result
        rows = {name: {"PQ": r["pq"], "SQ": r["sq"], "RQ": r["rq"], "TP": r["tp"], "FP": r["fp"], "FN": r["fn"]}
                for name, r in result["per_class"].items()}
        for group in ("all", "things", "stuff"):
            r = result[group]
            rows[group.capitalize()] = {"PQ": r["pq"], "SQ": r["sq"], "RQ": r["rq"], "N": r["n"]}
        return format_table(rows, columns=["PQ", "SQ", "RQ", "TP", "FP", "FN", "N"], percent=("PQ", "SQ", "RQ"),
                            title=f"Panoptic quality ({result['num_images']} images)")


# ------------------------------------------------------------------------------------------- adapters
def from_category_instance(
    encoded,
    label_divisor: int = 1000,
    void_category: int = 255,
    thing_categories: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Turn a `category * label_divisor + instance` map into the (id map, segments) form. Pixels of
    `void_category` (and negative values) become void. With `thing_categories` given, a thing pixel with
    instance 0 belongs to a crowd segment of its category (the Cityscapes convention: a group of objects
    labelled by class only)."""
    encoded = np.asarray(encoded)
    if not np.issubdtype(encoded.dtype, np.integer):
        raise ValueError(f"encoded panoptic map must hold integers, got dtype {encoded.dtype}")
    values, inverse = np.unique(encoded, return_inverse=True)
    categories = values // label_divisor
    keep = (values >= 0) & (categories != void_category)
    new_ids = np.zeros(len(values), dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    things = set(thing_categories or ())
    segments = [
        {"id": int(new_ids[i]), "category_id": int(categories[i]),
         "iscrowd": int(int(categories[i]) in things and values[i] % label_divisor == 0)}
        for i in np.flatnonzero(keep)
    ]
    return new_ids[inverse.reshape(encoded.shape)], segments


@dataclass
class CocoPanoptic:
    """A COCO panoptic annotation set: JSON file, PNG folder, categories, annotations by image_id."""

    json_path: Path
    png_dir: Path
    categories: list[dict]
    annotations: dict

    def frame(self, image_id, decoder: str = "auto") -> tuple[np.ndarray, list[dict]]:
        """Id map and segments of one image; `decoder` as in `vca_data.png.panoptic_ids`."""
        annotation = self.annotations[image_id]
        path = self.png_dir / annotation["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: PNG of image_id {image_id} listed in {self.json_path} is missing")
        return read_panoptic_png(path, decoder), annotation["segments_info"]


def read_coco_panoptic(json_path: Path, png_dir: Path | None = None) -> CocoPanoptic:
    """Read a COCO panoptic JSON; the PNGs lie in `png_dir`, by default the folder named like the JSON
    without `.json` (the panopticapi convention) or else the JSON's folder."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{json_path}: cannot read COCO panoptic JSON: {err}") from err
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"{json_path}: expected a COCO panoptic JSON object with 'annotations'")
    if png_dir is None:
        beside = json_path.with_suffix("")
        png_dir = beside if beside.is_dir() else json_path.parent
    annotations = {}
    for k, ann in enumerate(data["annotations"]):
        if not all(key in ann for key in ("image_id", "file_name", "segments_info")):
            raise ValueError(f"{json_path}: annotation {k} needs image_id, file_name and segments_info")
        annotations[ann["image_id"]] = ann
    return CocoPanoptic(json_path, Path(png_dir), list(data.get("categories", [])), annotations)


def iter_coco_panoptic_pairs(
    gt: CocoPanoptic, pred: CocoPanoptic, workers: int = 1
) -> Iterator[tuple[str, tuple, tuple]]:
    """(file name, (pred ids, pred segments), (gt ids, gt segments)) for every ground-truth image,
    paired by image_id, the PNGs decoded by `workers` threads ahead (with OpenCV, which decodes without
    the GIL; in the calling thread with the fastest decoder installed); a ground-truth image without
    prediction is an error."""
    missing = [image_id for image_id in gt.annotations if image_id not in pred.annotations]
    if missing:
        raise ValueError(f"{pred.json_path}: no prediction for image_id {missing[:10]} of {gt.json_path}")

    decoder = "opencv" if workers > 1 else "auto"

    def load(image_id):
        return gt.annotations[image_id]["file_name"], pred.frame(image_id, decoder), gt.frame(image_id, decoder)

    return read_ahead(load, list(gt.annotations), workers)


def evaluate_coco_panoptic(
    gt_json: Path,
    pred_json: Path,
    gt_dir: Path | None = None,
    pred_dir: Path | None = None,
    progress: bool = True,
    workers: int = 4,
) -> PanopticQuality:
    """PQ of a COCO panoptic prediction set against its ground truth (categories from the ground truth);
    `workers` threads decode the PNGs ahead (1: no threads)."""
    from tqdm import tqdm

    gt, pred = read_coco_panoptic(gt_json, gt_dir), read_coco_panoptic(pred_json, pred_dir)
    if not gt.categories:
        raise ValueError(f"{gt.json_path}: the ground-truth JSON lists no categories")
    metric = PanopticQuality(gt.categories)
    pairs = iter_coco_panoptic_pairs(gt, pred, workers)
    for file_name, (p_ids, p_segments), (g_ids, g_segments) in tqdm(
        pairs, total=len(gt.annotations), desc="panoptic", disable=not progress
    ):
        metric.update(p_ids, p_segments, g_ids, g_segments, name=file_name)
    return metric
