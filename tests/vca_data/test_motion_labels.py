"""motion_labels.json: schema, validation messages, atomic save, frame ranges, and the three exports."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from vca_data.formats import kitti_mots
from vca_data.formats.folders import open_sequence
from vca_data.formats.motion_labels import (
    MotionLabels,
    MotionLabelsError,
    export_coco,
    export_color_pngs,
    export_kitti_motion,
)
from vca_data.synthetic import make_cityscapes_vps, make_kitti_mots_sequence


def test_round_trip_and_schema(tmp_path: Path):
    labels = MotionLabels.new("kitti-mots")
    labels.set("0002", 1003, "moving", source="proposal", score=0.75)
    labels.set("0002", 2001, "static")
    labels.add_range("0002", 1003, 4, 9, "static")
    labels.set("0003", 1001, "ignore")
    path = tmp_path / "motion_labels.json"
    labels.save(path)
    raw = json.loads(path.read_text())
    assert raw["format"] == "vca-motion-labels" and raw["version"] == 1 and raw["dataset"] == "kitti-mots"
    assert raw["sequences"]["0002"]["1003"] == {"label": "moving", "source": "proposal", "score": 0.75,
                                                "ranges": [{"start": 4, "end": 9, "label": "static"}]}
    assert MotionLabels.load(path) == labels
    assert [p.name for p in tmp_path.iterdir()] == ["motion_labels.json"]  # no temporary left behind


def test_label_at_set_and_remove():
    labels = MotionLabels.new("kitti-mots")
    labels.set("s", 7, "moving")
    labels.add_range("s", 7, 2, 5, "static")
    labels.add_range("s", 7, 4, 4, "ignore")
    assert [labels.label_at("s", 7, f) for f in range(7)] == [
        "moving", "moving", "static", "static", "ignore", "static", "moving"]
    labels.set("s", 7, "static", source="manual")
    assert labels.get("s", 7).label == "static" and len(labels.get("s", 7).ranges) == 2
    assert labels.label_at("s", 8, 0) is None
    labels.remove("s", 7)
    assert labels.get("s", 7) is None and labels.sequences == {}
    with pytest.raises(MotionLabelsError, match="s/7: label the track before"):
        labels.add_range("s", 7, 0, 1, "moving")
    with pytest.raises(MotionLabelsError, match=r"s/1: label: expected one of moving, static, ignore, got 'fast'"):
        labels.set("s", 1, "fast")
    with pytest.raises(MotionLabelsError, match="source: expected one of manual, proposal, simulator"):
        labels.set("s", 1, "moving", source="guess")
    with pytest.raises(MotionLabelsError, match="score: expected a finite number"):
        labels.set("s", 1, "moving", score=float("nan"))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), r"labels\.json: format: expected 'vca-motion-labels'"),
    (lambda d: d.update(version=2), r"labels\.json: version: expected 1, got 2"),
    (lambda d: d["sequences"]["a"]["5"].update(label="fast"), r"labels\.json: sequences\.a\.5\.label: expected one of"),
    (lambda d: d["sequences"]["a"]["5"].pop("source"), r"sequences\.a\.5: missing field 'source'"),
    (lambda d: d["sequences"]["a"].update({"x": {}}), r"sequences\.a\.x: track id is not an integer"),
    (lambda d: d["sequences"]["a"]["5"]["ranges"].append({"start": 3, "end": 1, "label": "moving"}),
     r"sequences\.a\.5\.ranges\[0\]: end 1 before start 3"),
    (lambda d: d["sequences"]["a"]["5"].update(score="high"), r"sequences\.a\.5\.score: expected a finite number"),
])
def test_load_rejects_with_file_and_field(tmp_path: Path, mutate, message):
    doc = {"format": "vca-motion-labels", "version": 1, "dataset": "d",
           "sequences": {"a": {"5": {"label": "moving", "source": "manual", "score": None, "ranges": []}}}}
    mutate(doc)
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MotionLabelsError, match=message):
        MotionLabels.load(path)


def test_load_rejects_broken_json(tmp_path: Path):
    path = tmp_path / "labels.json"
    path.write_text('{"format": ')
    with pytest.raises(MotionLabelsError, match=r"labels\.json: not JSON"):
        MotionLabels.load(path)


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = make_kitti_mots_sequence(tmp_path_factory.mktemp("k"), "0000", num_frames=5, height=32, width=48,
                                    num_objects=4, seed=3, moving_fraction=0.5)
    labels = MotionLabels.load(root / "motion_truth.json")
    return root, labels


def test_export_coco_is_read_by_pycocotools(kitti, tmp_path: Path):
    root, labels = kitti
    labels = MotionLabels.from_dict(labels.to_dict())
    tracks = sorted(labels.sequences["0000"])
    labels.set("0000", tracks[0], "ignore")
    labels.add_range("0000", tracks[1], 3, 4, "moving" if labels.get("0000", tracks[1]).label == "static"
                     else "static")
    out = export_coco(labels, root, tmp_path / "coco.json")
    api = COCO(str(out))
    assert {c["id"]: c["name"] for c in api.loadCats(api.getCatIds())} == {1: "moving", 2: "static"}
    seq = open_sequence(root, "0000")
    assert len(api.getImgIds()) == seq.num_frames
    count = 0
    for img in api.loadImgs(api.getImgIds()):
        i = img["frame"]
        assert (root / img["file_name"]) == seq.image_path(i)
        ids = seq.id_map(i)
        for ann in api.loadAnns(api.getAnnIds(imgIds=img["id"])):
            count += 1
            track = ann["track_id"]
            assert track != tracks[0]  # labelled ignore: left out
            np.testing.assert_array_equal(api.annToMask(ann) > 0, ids == track)
            assert ann["category_id"] == {"moving": 1, "static": 2}[labels.label_at("0000", track, i)]
            assert ann["area"] == int((ids == track).sum())
    expected = sum(1 for i in range(seq.num_frames) for x in seq.instances(i)
                   if not x.crowd and x.track_id != tracks[0])
    assert count == expected > 0


def test_export_kitti_motion_round_trip(kitti, tmp_path: Path):
    root, labels = kitti
    labels = MotionLabels.from_dict(labels.to_dict())
    tracks = sorted(labels.sequences["0000"])
    labels.set("0000", tracks[-1], "ignore")
    (txt,) = export_kitti_motion(labels, root, tmp_path / "motion")
    mapping = json.loads((tmp_path / "motion" / "0000.tracks.json").read_text())["instances"]
    frames = kitti_mots.read_txt(txt)
    seq = open_sequence(root, "0000")
    for i in range(seq.num_frames):
        ids = seq.id_map(i)
        motion = kitti_mots.decode_id_map(frames.get(i, []), seq.height, seq.width)
        ignore = (motion == 10000)
        np.testing.assert_array_equal(ignore, seq.crowd_mask(i) | (ids == tracks[-1]))
        for obj_id in set(np.unique(motion)) - {0, 10000}:
            track = mapping[str(obj_id % 1000)]
            np.testing.assert_array_equal(motion == obj_id, ids == track)
            assert obj_id // 1000 == {"moving": 1, "static": 2}[labels.label_at("0000", track, i)]


def test_export_color_pngs(kitti, tmp_path: Path):
    root, labels = kitti
    n = export_color_pngs(labels, root, tmp_path / "png")
    seq = open_sequence(root, "0000")
    assert n == seq.num_frames
    out = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "0000" / "000002.png")), cv2.COLOR_BGR2RGB).astype(int)
    image = seq.read_image(2).astype(int)
    ids = seq.id_map(2)
    for track, label in labels.sequences["0000"].items():
        m = ids == track
        if not m.any():
            continue
        np.testing.assert_allclose(out[m], (image[m] + np.array({"moving": (255, 0, 0), "static": (0, 0, 255)}
                                                                [label.label])) / 2, atol=1)
    np.testing.assert_array_equal(out[ids == 0], image[ids == 0])


def test_exports_on_cityscapes(tmp_path: Path):
    root = make_cityscapes_vps(tmp_path / "c", num_videos=2, frames_per_video=5, height=24, width=40)
    labels = MotionLabels.load(root / "motion_truth.json")
    api = COCO(str(export_coco(labels, root, tmp_path / "c.json", sequences=["val/0002"])))
    assert len(api.getImgIds()) == 1 and {a["sequence"] for a in api.loadAnns(api.getAnnIds())} == {"val/0002"}
    paths = export_kitti_motion(labels, root, tmp_path / "m")
    assert [p.name for p in paths] == ["val_0001.txt", "val_0002.txt"]
    assert all(kitti_mots.read_txt(p) for p in paths)
    assert export_color_pngs(labels, root, tmp_path / "p") == 2
    with pytest.raises(MotionLabelsError, match="no sequence 'val/0009'"):
        export_coco(labels, root, tmp_path / "x.json", sequences=["val/0009"])
