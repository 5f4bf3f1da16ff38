"""The `metrics` command on small generated folders: the JSON it writes equals the library's numbers,
and unpaired or mismatched files give clear errors."""

import argparse
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vca_data.metrics import AnomalyPixelMetrics, ClassAgnosticQuality, SemanticMetrics
from vca_data.metrics.cli import main, register
from vca_data.metrics.loading import read_ahead


def write_anomaly(tmp_path, n=3):
    rng = np.random.default_rng(0)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt" / "city"
    pred_dir.mkdir()
    gt_dir.mkdir(parents=True)
    frames = []
    for k in range(n):
        labels = np.zeros((40, 50), np.uint8)
        labels[5:25, 10:30] = 1
        labels[-3:] = 255
        scores = (rng.random((40, 50)) + 0.8 * (labels == 1)).astype(np.float32)
        np.save(pred_dir / f"img{k}_scores.npy", scores)
        cv2.imwrite(str(gt_dir / f"img{k}.png"), labels)
        frames.append((scores, labels))
    return pred_dir, tmp_path / "gt", frames


def test_anomaly_json_matches_the_library(tmp_path, capsys):
    pred_dir, gt_dir, frames = write_anomaly(tmp_path)
    out = tmp_path / "out" / "anomaly.json"
    argv = ["--kind", "anomaly", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out),
            "--pred-suffix", "_scores", "--exact", "--components", "--min-component-size", "10",
            "--min-instance-size", "10", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    expected = AnomalyPixelMetrics(exact=True)
    for scores, labels in frames:
        expected.update(scores, labels)
    assert report["results"]["pixel"]["ap"] == pytest.approx(expected.compute()["ap"], abs=1e-12)
    assert report["results"]["components"]["num_instances"] == 3
    printed = capsys.readouterr().out
    assert "AUROC (%)" in printed and "sIoU (%)" in printed
    assert printed.strip().splitlines()[-1].startswith("anomaly: 3 images, AP ")


def test_unpaired_and_mismatched_files_are_reported(tmp_path, capsys):
    pred_dir, gt_dir, _ = write_anomaly(tmp_path)
    assert main(["--kind", "anomaly", "--pred", str(pred_dir), "--gt", str(gt_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no prediction" in err and "img0" in err and "--pred-suffix" in err
    np.save(pred_dir / "img1_scores.npy", np.zeros((10, 10), np.float32))
    assert main(["--kind", "anomaly", "--pred", str(pred_dir), "--gt", str(gt_dir), "--pred-suffix", "_scores",
                 "--no-progress"]) == 2
    assert "'img1': prediction" in capsys.readouterr().err
    assert main(["--kind", "anomaly", "--pred", str(tmp_path / "nope"), "--gt", str(gt_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_anomaly_from_train_id_maps_beside_other_files(tmp_path, capsys):
    """Cityscapes-style ground truth: train ids with 254 for unknown objects, colour PNGs beside them."""
    rng = np.random.default_rng(2)
    gt_dir, pred_dir = tmp_path / "gtFine" / "test" / "Town02", tmp_path / "pred"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    expected = AnomalyPixelMetrics(exact=True)
    for k in range(2):
        train_ids = rng.integers(0, 19, (20, 30)).astype(np.uint8)
        train_ids[4:12, 5:15] = 254
        train_ids[-2:] = 255
        scores = (rng.random(train_ids.shape) + 0.7 * (train_ids == 254)).astype(np.float32)
        cv2.imwrite(str(gt_dir / f"ep_{k:06d}_gtFine_labelTrainIds.png"), train_ids)
        cv2.imwrite(str(gt_dir / f"ep_{k:06d}_gtFine_color.png"), np.zeros((20, 30, 3), np.uint8))
        np.save(pred_dir / f"ep_{k:06d}_unknownScore.npy", scores)
        expected.update(scores, np.where(train_ids == 255, 255, train_ids == 254).astype(np.uint8))
    out = tmp_path / "a.json"
    argv = ["--kind", "anomaly", "--pred", str(pred_dir), "--gt", str(tmp_path / "gtFine"), "--exact",
            "--pred-suffix", "_unknownScore", "--no-progress"]
    argv_train_ids = [*argv, "--gt-suffix", "_gtFine_labelTrainIds"]
    assert main([*argv_train_ids, "--anomaly-label", "254", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]["pixel"]
    assert results["ap"] == pytest.approx(expected.compute()["ap"], abs=1e-12) and results["ap"] < 1
    assert main([*argv_train_ids, "--anomaly-label", "255"]) == 2  # the void label cannot be the anomaly
    assert "--anomaly-label and --void are both 255" in capsys.readouterr().err
    assert main([*argv, "--gt-suffix", "_gtFine_instanceIds"]) == 2
    assert "no .png/.npy files whose name ends with _gtFine_instanceIds" in capsys.readouterr().err


def test_semantic_and_register(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    expected = SemanticMetrics()
    for k in range(2):
        gt = rng.integers(0, 19, (20, 30)).astype(np.uint8)
        gt[:3] = 254
        pred = np.where(rng.random(gt.shape) < 0.6, gt, 254).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "p" / f"{k}.png"), pred)
        cv2.imwrite(str(tmp_path / "g" / f"{k}.png"), gt)
        expected.update(pred, gt)
    parser = argparse.ArgumentParser(prog="vca-baseline")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["metrics", "--kind", "semantic", "--pred", str(tmp_path / "p"), "--gt",
                              str(tmp_path / "g"), "--out", str(tmp_path / "s.json"), "--no-progress"])
    assert args.func(args) == 0
    results = json.loads((tmp_path / "s.json").read_text())["results"]
    assert results["miou"] == pytest.approx(expected.compute()["miou"])
    assert results["ca_iou"] == pytest.approx(expected.compute()["ca_iou"])


def kitti_txt(path, frames):
    lines = []
    for frame, objects in frames.items():
        for obj_id, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            lines.append(f"{frame} {obj_id} {obj_id // 1000} {mask.shape[0]} {mask.shape[1]} {rle['counts'].decode()}")
    path.write_text("\n".join(lines) + "\n")


def test_caq_from_kitti_mots_txt_and_png(tmp_path):
    def box(r0, r1, c0, c1):
        m = np.zeros((12, 16), bool)
        m[r0:r1, c0:c1] = True
        return m

    gt_frames = {0: [(1001, box(0, 4, 0, 5)), (2001, box(6, 10, 6, 10)), (10000, box(0, 3, 12, 16))],
                 2: [(1002, box(0, 4, 0, 4))]}
    pred_frames = {0: [(1005, box(0, 4, 0, 4)), (1006, box(0, 3, 12, 16))], 1: [(1007, box(5, 9, 0, 3))]}
    (tmp_path / "gt" / "instances_txt").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    kitti_txt(tmp_path / "gt" / "instances_txt" / "0002.txt", gt_frames)
    kitti_txt(tmp_path / "pred" / "0002.txt", pred_frames)
    out = tmp_path / "caq.json"
    assert main(["--kind", "caq", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(out), "--no-progress"]) == 0
    # frame 0: A matched (IoU 16/20), B missed, the prediction on the ignore region excused;
    # frame 1: a prediction without ground truth (FP); frame 2: an object without prediction (FN)
    expected = ClassAgnosticQuality()
    expected.tp, expected.fp, expected.fn, expected.iou_sum, expected.num_images = 1, 1, 2, 16 / 20, 3
    results = json.loads(out.read_text())["results"]
    assert results == pytest.approx(expected.compute())

    png_root = tmp_path / "png"
    for side, frames in (("gt", gt_frames), ("pred", pred_frames)):
        for frame in range(3):
            ids = np.zeros((12, 16), np.uint16)
            for obj_id, mask in frames.get(frame, []):
                ids[mask] = obj_id
            (png_root / side / "0002").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(png_root / side / "0002" / f"{frame:06d}.png"), ids)
    assert main(["--kind", "caq", "--pred", str(png_root / "pred"), "--gt", str(png_root / "gt"),
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["results"] == pytest.approx(expected.compute())
    (png_root / "pred" / "0002" / "000002.png").unlink()
    assert main(["--kind", "caq", "--pred", str(png_root / "pred"), "--gt", str(png_root / "gt"),
                 "--no-progress"]) == 2


def test_read_ahead_keeps_order_and_raises_at_the_failing_item():
    def load(k):
        if k == 7:
            raise ValueError("frame 7 is broken")
        return k * k

    for workers in (1, 3):
        assert list(read_ahead(load, range(7), workers)) == [k * k for k in range(7)]
        seen = []
        with pytest.raises(ValueError, match="frame 7"):
            for value in read_ahead(load, range(10), workers):
                seen.append(value)
        assert seen == [k * k for k in range(7)]


def test_panoptic_from_coco_folders(tmp_path, capsys):
    ids = np.zeros((8, 10), np.int64)
    ids[:4] = 300  # road, id 300 = (44, 1, 0) in RGB
    ids[5:, 2:6] = 70000  # a car, id in the blue channel
    segments = [{"id": 300, "category_id": 2, "iscrowd": 0}, {"id": 70000, "category_id": 1, "iscrowd": 0}]
    categories = [{"id": 1, "name": "car", "isthing": 1}, {"id": 2, "name": "road", "isthing": 0}]
    for side in ("gt", "pred"):
        (tmp_path / side / "panoptic").mkdir(parents=True)
        rgb = np.stack([ids & 255, (ids >> 8) & 255, ids >> 16], axis=-1).astype(np.uint8)
        cv2.imwrite(str(tmp_path / side / "panoptic" / "a.png"), rgb[..., ::-1])
        entry = {"image_id": "a", "file_name": "a.png", "segments_info": segments}
        (tmp_path / side / "panoptic.json").write_text(json.dumps({"annotations": [entry], "categories": categories}))
    out = tmp_path / "pq.json"
    assert main(["--kind", "panoptic", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())["results"]
    assert results["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert "Things" in capsys.readouterr().out
    (tmp_path / "pred" / "other.json").write_text("{}")
    assert main(["--kind", "panoptic", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    assert "exactly one" in capsys.readouterr().err
