"""Benchmark: the metrics of vca_data.metrics against reference implementations, in one run.

1. Pixel-level anomaly metrics: the streaming histogram (AnomalyPixelMetrics, 2^20 bins) against
   scikit-learn (average_precision_score, and roc_curve for AUROC and FPR95) on all valid pixels at
   once, on N images of 640x640 (default 100: 41M pixels, 40.4M of them valid). Scores are sigmoid outputs of a noisy
   detector, so many sit near 0 and 1 where float32 resolution and binning matter. Targets (issue 3):
   >= 20x faster, |difference| <= 1e-3 for AP, AUROC and FPR95, and peak memory of the streaming pass
   that does not grow with the number of images (tracemalloc peak, 10 vs N images, images generated
   inside the loop; target ratio <= 1.1).
2. Panoptic quality: PanopticQuality over COCO panoptic JSON + PNG folders against `panopticapi`
   (pq_compute_single_core, one process) when it is importable; panopticapi is not on PyPI, so
   otherwise against a separate naive reference written below from the COCO panoptic definition (the
   panopticapi algorithm: np.unique over combined ids, per-pair loops; PNGs read with PIL). Frames are
   synthetic street scenes (stuff bands, things as ellipses, a crowd region, void boundaries) with a
   perturbed prediction. Targets: identical numbers (per-class TP/FP/FN equal, PQ/SQ/RQ within 1e-12),
   >= 3x faster, checked both end to end from the PNG files in one thread (decoding the PNGs, the same
   libpng/zlib work for both, takes most of that time) and on the decoded frames; the run with 4
   reader threads (evaluate_coco_panoptic's default) is reported too.

Speeds are given in wall and CPU seconds (the machine may be shared; a speed target passes on either).

    .venv/bin/python benchmarks/bench_metrics.py [--images 100] [--frames 60]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import auc, average_precision_score, roc_curve

from vca_data.metrics.anomaly import AnomalyPixelMetrics
from vca_data.metrics.panoptic import PanopticQuality, evaluate_coco_panoptic, read_coco_panoptic

TARGET_SPEEDUP_ANOMALY = 20.0
TARGET_DIFF = 1e-3
TARGET_MEMORY_RATIO = 1.1
TARGET_SPEEDUP_PQ = 3.0
SIZE = 640


# ------------------------------------------------------------------------------------------ anomaly
def anomaly_image(index: int) -> tuple[np.ndarray, np.ndarray]:
    """One 640x640 frame: a road scene label map (a few anomaly blobs, void at the top) and detector
    scores, deterministic in `index`."""
    rng = np.random.default_rng(index)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    yy, xx = np.ogrid[:SIZE, :SIZE]
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.integers(200, SIZE, 2)
        ry, rx = rng.integers(10, 60, 2)
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    labels[:8] = 255  # a void band (ego vehicle / unlabelled): 40.4M valid pixels in 100 images
    logits = rng.normal(-2.0, 1.5, (SIZE, SIZE)).astype(np.float32)
    logits += (labels == 1) * np.float32(rng.uniform(2.0, 4.0))
    scores = 1.0 / (1.0 + np.exp(-logits))
    return scores.astype(np.float32), labels


def sklearn_reference(labels: np.ndarray, scores: np.ndarray) -> dict:
    """AP, AUROC and FPR at the first TPR >= 0.95 with scikit-learn (one ROC curve for the last two;
    roc_auc_score would sort the pixels a third time for the same area)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {"ap": average_precision_score(labels, scores), "auroc": auc(fpr, tpr),
            "fpr_at_tpr": float(fpr[np.argmax(tpr >= 0.95)])}


def streaming_peak(num_images: int) -> int:
    gc.collect()
    tracemalloc.start()
    metric = AnomalyPixelMetrics()
    for i in range(num_images):
        metric.update(*anomaly_image(i))
    metric.compute()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


class Clock:
    """Wall and CPU seconds (all threads of this process) of a `with` block: the machine may be shared,
    so CPU time is the fairer speed measure and both are reported."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def __str__(self) -> str:
        return f"{self.wall:.2f} s ({self.cpu:.2f} cpu-s)"


def same_numbers(a: dict, b: dict) -> bool:
    """Equal results, NaN included."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def speed_row(measure: str, ours: Clock, reference: Clock, target: float | None) -> tuple:
    wall, cpu = reference.wall / ours.wall, reference.cpu / ours.cpu
    ok = None if target is None else max(wall, cpu) >= target
    return (measure, f"{ours} vs {reference}", f"{wall:.1f}x wall, {cpu:.1f}x cpu",
            "(info)" if target is None else f">= {target:g}x", ok)


def bench_anomaly(num_images: int) -> list[tuple]:
    print(f"anomaly: generating {num_images} images of {SIZE}x{SIZE} ...", flush=True)
    images = [anomaly_image(i) for i in range(num_images)]

    with Clock() as t_ours:
        metric = AnomalyPixelMetrics()
        for scores, labels in images:
            metric.update(scores, labels)
        ours = metric.compute()

    import torch

    with Clock() as t_torch:
        torch_metric = AnomalyPixelMetrics()
        for scores, labels in images:
            torch_metric.update(torch.from_numpy(scores), torch.from_numpy(labels))
        ours_torch = torch_metric.compute()

    sweep = {}
    for bits in (12, 16, 22):
        print(f"anomaly: 2^{bits} bins ...", flush=True)
        coarse = AnomalyPixelMetrics(bins_bits=bits)
        for scores, labels in images:
            coarse.update(scores, labels)
        sweep[bits] = coarse.compute()
    sweep[20] = ours

    print("anomaly: scikit-learn on all pixels ...", flush=True)
    with Clock() as t_ref:
        valid = [labels != 255 for _, labels in images]
        all_scores = np.concatenate([s[v] for (s, _), v in zip(images, valid, strict=True)])
        all_labels = np.concatenate([y[v] for (_, y), v in zip(images, valid, strict=True)])
        del valid
        ref = sklearn_reference(all_labels, all_scores)
    pixels = all_scores.size
    del all_scores, all_labels, images
    gc.collect()

    print("anomaly: measuring peak memory (tracemalloc) ...", flush=True)
    peak_small, peak_large = streaming_peak(10), streaming_peak(num_images)

    rows = [speed_row(f"anomaly speed ({pixels / 1e6:.1f}M valid px)", t_ours, t_ref, TARGET_SPEEDUP_ANOMALY),
            speed_row("anomaly speed, torch CPU tensors (read as numpy)", t_torch, t_ref, None)]
    for key in ("ap", "auroc", "fpr_at_tpr"):
        diff = abs(ours[key] - ref[key])
        same_torch = ours_torch[key] == ours[key]
        rows.append((f"anomaly {key} (2^20 bins)", f"{ours[key]:.6f} vs {ref[key]:.6f}", f"diff {diff:.1e}",
                     f"<= {TARGET_DIFF:g}", diff <= TARGET_DIFF and same_torch))
    for bits in sorted(sweep):
        worst = max(abs(sweep[bits][k] - ref[k]) for k in ("ap", "auroc", "fpr_at_tpr"))
        rows.append((f"anomaly accuracy with 2^{bits} bins", "max |diff| of AP, AUROC, FPR95", f"{worst:.1e}",
                     "(info)", None))
    ratio = peak_large / peak_small
    rows.append((f"anomaly peak memory 10 vs {num_images} images",
                 f"{peak_small / 2**20:.1f} MiB vs {peak_large / 2**20:.1f} MiB", f"{ratio:.2f}x",
                 f"<= {TARGET_MEMORY_RATIO:g}x", ratio <= TARGET_MEMORY_RATIO))
    return rows


# ----------------------------------------------------------------------------------------- panoptic
CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0}, {"id": 8, "name": "sidewalk", "isthing": 0},
    {"id": 11, "name": "building", "isthing": 0}, {"id": 21, "name": "vegetation", "isthing": 0},
    {"id": 23, "name": "sky", "isthing": 0}, {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1}, {"id": 27, "name": "truck", "isthing": 1},
]
THINGS = (24, 26, 27)


def scene(rng: np.random.Generator) -> dict:
    """Random scene parameters: stuff band boundaries and thing ellipses."""
    return {
        "sky": rng.uniform(0.2, 0.35), "road": rng.uniform(0.55, 0.7), "walk": rng.uniform(0.05, 0.1),
        "veg": rng.uniform(0.3, 0.7), "phase": rng.uniform(0, 6.28),
        "things": [(int(rng.choice(THINGS)), rng.uniform(0.45, 0.95), rng.uniform(0, 1), rng.uniform(0.02, 0.08),
                    rng.uniform(0.02, 0.12)) for _ in range(rng.integers(6, 16))],
        "crowd": rng.random() < 0.5,
    }


def perturb(params: dict, rng: np.random.Generator) -> dict:
    """A prediction's scene: moved boundaries and things, missed and invented things, some wrong classes."""
    out = dict(params, sky=params["sky"] + rng.normal(0, 0.01), road=params["road"] + rng.normal(0, 0.01),
               veg=params["veg"] + rng.normal(0, 0.03), crowd=False)
    things = []
    for cat, cy, cx, ry, rx in params["things"]:
        if rng.random() < 0.1:
            continue
        if rng.random() < 0.05:
            cat = int(rng.choice(THINGS))
        things.append((cat, cy + rng.normal(0, 0.01), cx + rng.normal(0, 0.01), ry * rng.uniform(0.8, 1.2),
                       rx * rng.uniform(0.8, 1.2)))
    things += [(int(rng.choice(THINGS)), rng.uniform(0.4, 0.9), rng.uniform(0, 1), 0.03, 0.03)
               for _ in range(rng.integers(0, 3))]
    out["things"] = things
    return out


def render(params: dict, height: int, width: int, rng: np.random.Generator, void: bool) -> tuple[np.ndarray, list]:
    """Id map (random 24-bit segment ids, like COCO colours) and segments_info of a scene."""
    yy, xx = np.mgrid[:height, :width]
    y, x = yy / height, xx / width
    cat = np.full((height, width), 11, np.int32)
    cat[y < params["sky"] + 0.03 * np.sin(6 * x + params["phase"])] = 23
    cat[(x > params["veg"]) & (y > params["sky"] + 0.1) & (y < params["road"])] = 21
    cat[y > params["road"]] = 8
    cat[y > params["road"] + params["walk"]] = 7
    stuff_ids = {c: int(i) for c, i in zip((7, 8, 11, 21, 23), rng.choice(1 << 24, 5, replace=False), strict=True)}
    ids = np.zeros((height, width), np.int64)
    for c, seg_id in stuff_ids.items():
        ids[cat == c] = seg_id
    segments = [{"id": seg_id, "category_id": c, "iscrowd": 0} for c, seg_id in stuff_ids.items()]
    used = set(stuff_ids.values())
    for c, cy, cx, ry, rx in params["things"]:
        seg_id = int(rng.integers(1, 1 << 24))
        while seg_id in used:
            seg_id = int(rng.integers(1, 1 << 24))
        used.add(seg_id)
        ids[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1] = seg_id
        segments.append({"id": seg_id, "category_id": c, "iscrowd": 0})
    if params["crowd"]:
        seg_id = int(rng.integers(1, 1 << 24))
        ids[int(0.5 * height):int(0.6 * height), int(0.1 * width):int(0.3 * width)] = seg_id
        segments.append({"id": seg_id, "category_id": 24, "iscrowd": 1})
    if void:  # annotators leave thin unlabelled gaps between segments
        edge = np.zeros_like(ids, dtype=bool)
        edge[1:] |= ids[1:] != ids[:-1]
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        ids[cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = 0
    present, areas = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), areas.tolist(), strict=True))
    segments = [dict(s, area=area[s["id"]]) for s in segments if s["id"] in area]
    return ids, segments


def write_panoptic_set(root: Path, frames: int, height: int, width: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    sides = {"gt": [], "pred": []}
    for side in sides:
        (root / side).mkdir(parents=True)
    for k in range(frames):
        params = scene(rng)
        for side, (p, void) in (("gt", (params, True)), ("pred", (perturb(params, rng), False))):
            ids, segments = render(p, height, width, rng, void)
            rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)
            cv2.imwrite(str(root / side / f"{k:04d}.png"), rgb[..., ::-1])
            sides[side].append({"image_id": k, "file_name": f"{k:04d}.png", "segments_info": segments})
    for side, entries in sides.items():
        (root / f"{side}.json").write_text(json.dumps({"annotations": entries, "categories": CATEGORIES}))
    return root / "gt.json", root / "pred.json"


def naive_reference_pq(gt_json: Path, pred_json: Path, preloaded: dict | None = None) -> dict:
    """COCO panoptic PQ, written from the definition the way panopticapi computes it."""
    from PIL import Image

    gt_data, pred_data = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt_data["categories"]}
    pred_by_image = {a["image_id"]: a for a in pred_data["annotations"]}
    stats = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    offset = 256 * 256 * 256

    def load(folder: Path, name: str) -> np.ndarray:
        rgb = np.array(Image.open(folder / name), dtype=np.uint32)
        return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]

    for gt_ann in gt_data["annotations"]:
        pred_ann = pred_by_image[gt_ann["image_id"]]
        if preloaded is not None:
            pan_gt, pan_pred = preloaded[gt_ann["image_id"]]
        else:
            pan_gt = load(gt_json.with_suffix(""), gt_ann["file_name"])
            pan_pred = load(pred_json.with_suffix(""), pred_ann["file_name"])
        gt_segs = {s["id"]: dict(s) for s in gt_ann["segments_info"]}
        pred_segs = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
        for label, count in zip(*np.unique(pan_pred, return_counts=True), strict=True):
            if label != 0:
                pred_segs[int(label)]["area"] = int(count)
        pairs = {}
        for label, count in zip(*np.unique(pan_gt.astype(np.uint64) * offset + pan_pred.astype(np.uint64),
                                           return_counts=True), strict=True):
            pairs[(int(label // offset), int(label % offset))] = int(count)
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in pairs.items():
            if g not in gt_segs or p not in pred_segs or gt_segs[g]["iscrowd"] == 1:
                continue
            if gt_segs[g]["category_id"] != pred_segs[p]["category_id"]:
                continue
            union = pred_segs[p]["area"] + gt_segs[g]["area"] - inter - pairs.get((0, p), 0)
            if inter / union > 0.5:
                stat = stats[gt_segs[g]["category_id"]]
                stat["tp"] += 1
                stat["iou"] += inter / union
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_of = {}
        for g, info in gt_segs.items():
            if g in gt_matched:
                continue
            if info["iscrowd"] == 1:
                crowd_of[info["category_id"]] = g
                continue
            stats[info["category_id"]]["fn"] += 1
        for p, info in pred_segs.items():
            if p in pred_matched:
                continue
            ignored = pairs.get((0, p), 0)
            if info["category_id"] in crowd_of:
                ignored += pairs.get((crowd_of[info["category_id"]], p), 0)
            if ignored / info["area"] > 0.5:
                continue
            stats[info["category_id"]]["fp"] += 1

    result = {}
    for group, want in (("all", None), ("things", True), ("stuff", False)):
        values, n = {"pq": 0.0, "sq": 0.0, "rq": 0.0}, 0
        for cat_id, cat in categories.items():
            if want is not None and bool(cat["isthing"]) != want:
                continue
            s = stats[cat_id]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            n += 1
            denominator = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
            values["pq"] += s["iou"] / denominator
            values["sq"] += s["iou"] / s["tp"] if s["tp"] else 0.0
            values["rq"] += s["tp"] / denominator
        result[group] = {k: v / n for k, v in values.items()} | {"n": n}
    result["per_class"] = {categories[c]["name"]: {"tp": s["tp"], "fp": s["fp"], "fn": s["fn"]}
                           for c, s in stats.items()}
    return result


def panopticapi_pq(gt_json: Path, pred_json: Path) -> dict | None:
    """The official evaluation in one process, if panopticapi is installed."""
    try:
        from panopticapi.evaluation import pq_compute_single_core
    except ImportError:
        return None
    gt_data, pred_data = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt_data["categories"]}
    pred_by_image = {a["image_id"]: a for a in pred_data["annotations"]}
    pairs = [(a, pred_by_image[a["image_id"]]) for a in gt_data["annotations"]]
    stat = pq_compute_single_core(0, pairs, str(gt_json.with_suffix("")), str(pred_json.with_suffix("")), categories)
    result = {}
    for group, want in (("all", None), ("things", True), ("stuff", False)):
        result[group], per_class = stat.pq_average(categories, isthing=want)
    result["per_class"] = {categories[c]["name"]: {"tp": s.tp, "fp": s.fp, "fn": s.fn}
                           for c, s in stat.pq_per_cat.items()}
    return result


def bench_panoptic(frames: int, height: int, width: int) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"panoptic: writing {frames} frames of {width}x{height} as COCO panoptic ...", flush=True)
        gt_json, pred_json = write_panoptic_set(Path(tmp), frames, height, width)

        print("panoptic: ours from files (1 thread, then 4 reader threads) ...", flush=True)
        with Clock() as t_ours:
            ours = evaluate_coco_panoptic(gt_json, pred_json, progress=False, workers=1).compute()
        with Clock() as t_threads:
            threaded = evaluate_coco_panoptic(gt_json, pred_json, progress=False, workers=4).compute()

        print("panoptic: reference from files ...", flush=True)
        with Clock() as t_ref:
            reference = panopticapi_pq(gt_json, pred_json)
            name = "panopticapi"
            if reference is None:
                reference = naive_reference_pq(gt_json, pred_json)
                name = "naive reference (panopticapi not installed)"

        print("panoptic: compute only, frames in memory ...", flush=True)
        gt, pred = read_coco_panoptic(gt_json), read_coco_panoptic(pred_json)
        loaded = {i: (gt.frame(i), pred.frame(i)) for i in gt.annotations}
        with Clock() as t_ours_mem:
            metric = PanopticQuality(gt.categories)
            for (g_ids, g_segments), (p_ids, p_segments) in loaded.values():
                metric.update(p_ids, p_segments, g_ids, g_segments)
        preloaded = {i: (g[0].astype(np.uint32), p[0].astype(np.uint32)) for i, (g, p) in loaded.items()}
        with Clock() as t_ref_mem:
            naive_reference_pq(gt_json, pred_json, preloaded)

    same_counts = all(ours["per_class"][c][k] == reference["per_class"].get(c, {}).get(k, 0)
                      for c in ours["per_class"] for k in ("tp", "fp", "fn"))
    worst = max(abs(ours[g][k] - reference[g][k]) for g in ("all", "things", "stuff") for k in ("pq", "sq", "rq"))
    rows.append((f"PQ vs {name}", f"PQ {ours['all']['pq']:.6f} vs {reference['all']['pq']:.6f}",
                 f"max diff {worst:.1e}", "identical", same_counts and worst <= 1e-12 and same_numbers(threaded, ours)))
    rows.append(speed_row(f"PQ speed, PNG files, 1 thread ({frames} frames {width}x{height})", t_ours, t_ref,
                          TARGET_SPEEDUP_PQ))
    rows.append(speed_row("PQ speed, PNG files, 4 reader threads", t_threads, t_ref, None))
    rows.append(speed_row("PQ speed, compute only (decoded frames)", t_ours_mem, t_ref_mem, TARGET_SPEEDUP_PQ))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="anomaly images of 640x640 (default 100)")
    parser.add_argument("--frames", type=int, default=60, help="panoptic frames (default 60)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    rows = bench_anomaly(args.images) + bench_panoptic(args.frames, args.height, args.width)
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    print()
    print(f"{'measure':<{widths[0]}}  {'value':<{widths[1]}}  {'result':<{widths[2]}}  {'target':<{widths[3]}}  status")
    for measure, value, result, target, ok in rows:
        status = "-" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{measure:<{widths[0]}}  {value:<{widths[1]}}  {result:<{widths[2]}}  {target:<{widths[3]}}  {status}")
    failed = sum(1 for r in rows if r[4] is False)
    print(f"\n{len(rows) - failed}/{len(rows)} rows pass or are informational; {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
