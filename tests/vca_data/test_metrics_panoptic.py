"""Panoptic quality on hand-worked images, against a per-segment reference written from the COCO
definition, and through the COCO panoptic JSON + PNG adapter."""

import json
import pickle

import cv2
import numpy as np
import pytest

from vca_data.metrics.panoptic import (
    PanopticQuality,
    evaluate_coco_panoptic,
    from_category_instance,
    read_panoptic_png,
)

CATEGORIES = [{"id": 1, "name": "car", "isthing": 1}, {"id": 2, "name": "road", "isthing": 0}]


def flat(result, prefix=""):
    """Nested result dict as {"a/b": number} so that pytest.approx can compare it."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def hand_worked_images():
    """Image 1: three TPs (one with void inside the prediction). Image 2: a crowd region, predictions
    on crowd and void that are not FPs, one category confusion (road FP + car FN)."""
    gt1 = np.zeros((10, 10), np.int32)
    gt1[:5] = 1
    gt1[5:, :5] = 2
    gt1[5:9, 5:] = 3  # row 9, cols 5-9 stay void
    gt1_segments = [{"id": 1, "category_id": 2}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 1}]
    pred1 = np.zeros((10, 10), np.int32)
    pred1[:6] = 10
    pred1[6:, :5] = 11
    pred1[6:, 5:] = 12
    pred1_segments = [{"id": 10, "category_id": 2}, {"id": 11, "category_id": 1}, {"id": 12, "category_id": 1}]

    gt2 = np.zeros((10, 10), np.int32)
    gt2[:5] = 1
    gt2[5:, :2] = 2
    gt2_segments = [{"id": 1, "category_id": 1, "iscrowd": 1}, {"id": 2, "category_id": 1, "iscrowd": 0}]
    pred2 = np.zeros((10, 10), np.int32)
    pred2[:3] = 5
    pred2[3:5] = 7
    pred2[5:, 2:] = 6
    pred2[5:, :2] = 8
    pred2_segments = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 1}, {"id": 7, "category_id": 1},
                      {"id": 8, "category_id": 2}]
    return [(pred1, pred1_segments, gt1, gt1_segments), (pred2, pred2_segments, gt2, gt2_segments)]


def test_hand_worked_pq():
    metric = PanopticQuality(CATEGORIES)
    for frame in hand_worked_images():
        metric.update(*frame)
    result = metric.compute()
    road_iou = 50 / 60  # prediction rows 0-5 vs ground truth rows 0-4
    car_ious = 20 / 25 + 15 / 20  # second car: union 20 + 20 - 15 - 5 void pixels
    road, car = result["per_class"]["road"], result["per_class"]["car"]
    assert (road["tp"], road["fp"], road["fn"]) == (1, 1, 0)
    assert (car["tp"], car["fp"], car["fn"]) == (2, 0, 1)
    assert road["pq"] == pytest.approx(road_iou / 1.5)
    assert road["sq"] == pytest.approx(road_iou) and road["rq"] == pytest.approx(1 / 1.5)
    assert car["pq"] == pytest.approx(car_ious / 2.5)
    assert car["sq"] == pytest.approx(car_ious / 2) and car["rq"] == pytest.approx(2 / 2.5)
    assert result["all"]["pq"] == pytest.approx((road_iou / 1.5 + car_ious / 2.5) / 2)
    assert result["things"]["pq"] == pytest.approx(car["pq"]) and result["things"]["n"] == 1
    assert result["stuff"]["pq"] == pytest.approx(road["pq"])


def reference_pq(frames, categories):
    """Per-segment loops straight from the COCO panoptic definition."""
    stats = {c["id"]: [0, 0, 0, 0.0] for c in categories}  # tp, fp, fn, iou sum
    for pred, pred_segments, gt, gt_segments in frames:
        matched_gt, matched_pred = set(), set()
        for g in gt_segments:
            if g.get("iscrowd", 0):
                continue
            for p in pred_segments:
                if p["category_id"] != g["category_id"]:
                    continue
                gm, pm = gt == g["id"], pred == p["id"]
                inter = np.sum(gm & pm)
                union = np.sum(gm | pm) - np.sum(pm & (gt == 0))
                if inter and inter / union > 0.5:
                    stats[g["category_id"]][0] += 1
                    stats[g["category_id"]][3] += inter / union
                    matched_gt.add(g["id"])
                    matched_pred.add(p["id"])
        for g in gt_segments:
            if g["id"] not in matched_gt and not g.get("iscrowd", 0):
                stats[g["category_id"]][2] += 1
        for p in pred_segments:
            pm = pred == p["id"]
            if p["id"] in matched_pred or not pm.any():
                continue
            crowd = [g["id"] for g in gt_segments if g.get("iscrowd", 0) and g["category_id"] == p["category_id"]]
            ignored = np.sum(pm & ((gt == 0) | np.isin(gt, crowd)))
            if ignored / pm.sum() <= 0.5:
                stats[p["category_id"]][1] += 1
    return stats


def random_frame(rng, shape=(24, 32)):
    """Blocky random panoptic maps: ground truth in 4x4 cells, prediction a perturbed copy."""
    cells = rng.integers(0, 7, (shape[0] // 4, shape[1] // 4))
    gt = np.kron(cells, np.ones((4, 4), np.int64))
    pred = gt.copy()
    noise = rng.random(shape) < 0.2
    pred[noise] = rng.integers(0, 7, noise.sum())
    pred[rng.random(shape) < 0.05] = 9
    seg_cat = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 1, 9: 1}
    gt_segments = [{"id": i, "category_id": seg_cat[i], "iscrowd": int(i == 6)} for i in np.unique(gt) if i]
    pred_segments = [{"id": i, "category_id": seg_cat[i] if i != 3 else 2} for i in np.unique(pred) if i]
    return pred, pred_segments, gt, gt_segments


def test_random_frames_match_the_definition():
    rng = np.random.default_rng(0)
    frames = [random_frame(rng) for _ in range(15)]
    metric = PanopticQuality(CATEGORIES)
    for frame in frames:
        metric.update(*frame)
    stats = reference_pq(frames, CATEGORIES)
    for c in CATEGORIES:
        i = [k["id"] for k in CATEGORIES].index(c["id"])
        tp, fp, fn, iou = stats[c["id"]]
        assert (metric.tp[i], metric.fp[i], metric.fn[i]) == (tp, fp, fn)
        assert metric.iou_sum[i] == pytest.approx(iou)
    big = PanopticQuality(CATEGORIES)  # ids beyond the lookup-table range take the binary-search path
    for pred, pred_segments, gt, gt_segments in frames:
        shift = lambda ids: np.where(ids > 0, ids + (1 << 40), 0)  # noqa: E731
        big.update(shift(pred), [dict(s, id=s["id"] + (1 << 40)) for s in pred_segments],
                   shift(gt), [dict(s, id=s["id"] + (1 << 40)) for s in gt_segments])
    assert flat(big.compute()) == pytest.approx(flat(metric.compute()), nan_ok=True)
    halves = PanopticQuality(CATEGORIES), PanopticQuality(CATEGORIES)
    for k, frame in enumerate(frames):
        halves[k % 2].update(*frame)
    assert flat(halves[0].merge(halves[1]).compute()) == pytest.approx(flat(metric.compute()), nan_ok=True)
    shipped = pickle.loads(pickle.dumps(metric))  # as sent between processes; the id lookup cache stays behind
    assert len(shipped._table) == 0 and flat(shipped.compute()) == flat(metric.compute())


def test_category_instance_adapter():
    encoded = np.array([[13001, 13001, 13000, 0], [255000, 11002, 11002, 0]], np.int64)
    ids, segments = from_category_instance(encoded, thing_categories=range(11, 19))
    assert ids[1, 0] == 0 and ids[0, 0] == ids[0, 1] != ids[0, 2]
    by_id = {s["id"]: s for s in segments}
    assert by_id[ids[0, 2]] == {"id": int(ids[0, 2]), "category_id": 13, "iscrowd": 1}
    assert by_id[ids[0, 0]]["iscrowd"] == 0 and by_id[ids[1, 1]]["category_id"] == 11
    assert by_id[ids[0, 3]]["category_id"] == 0  # road (train id 0) is a segment, not void
    metric = PanopticQuality([{"id": c, "name": str(c), "isthing": c >= 11} for c in (0, 11, 13)])
    metric.update(ids, segments, ids, segments)
    result = metric.compute()
    assert result["all"]["pq"] == 1.0 and result["all"]["n"] == 3


def write_coco(folder, name, frames, categories):
    png_dir = folder / name
    png_dir.mkdir(parents=True)
    annotations = []
    for k, (ids, segments) in enumerate(frames):
        rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
        cv2.imwrite(str(png_dir / f"frame{k}.png"), rgb[..., ::-1])
        annotations.append({"image_id": f"f{k}", "file_name": f"frame{k}.png", "segments_info": segments})
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    return path


def test_coco_panoptic_folders_round_trip(tmp_path):
    frames = hand_worked_images()
    shift = 70000  # ids above 65535 use the blue channel
    gt_frames = [(gt + shift * (gt > 0), [dict(s, id=s["id"] + shift) for s in gs]) for _, _, gt, gs in frames]
    pred_frames = [(p, ps) for p, ps, _, _ in frames]
    gt_json = write_coco(tmp_path, "gt", gt_frames, CATEGORIES)
    pred_json = write_coco(tmp_path, "pred", pred_frames, CATEGORIES)
    assert np.array_equal(read_panoptic_png(tmp_path / "gt" / "frame0.png"), gt_frames[0][0])
    from_files = evaluate_coco_panoptic(gt_json, pred_json, progress=False).compute()
    direct = PanopticQuality(CATEGORIES)
    for frame in frames:
        direct.update(*frame)
    assert flat(from_files) == pytest.approx(flat(direct.compute()), nan_ok=True)
    assert "Things" in direct.table()


def test_invalid_inputs_are_named():
    metric = PanopticQuality(CATEGORIES)
    ids = np.array([[1, 2]], np.int32)
    with pytest.raises(ValueError, match=r"image 0 \(x\): ground truth id map contains ids \[2\]"):
        metric.update(ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}], ids,
                      [{"id": 1, "category_id": 1}], name="x")
    with pytest.raises(ValueError, match="unknown category_id 7"):
        metric.update(ids, [{"id": 1, "category_id": 7}], ids, [])
    with pytest.raises(ValueError, match="differs"):
        metric.update(ids, [], np.zeros((2, 2), np.int32), [])
