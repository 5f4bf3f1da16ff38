"""Cityscapes-VPS panoptic JSON + PNG: encoding round trip, frame matching, validation messages."""

import json
from pathlib import Path

import numpy as np
import pytest

from vca_data.formats import cityscapes_vps as vps
from vca_data.formats.cityscapes_vps import CityscapesVpsFormatError
from vca_data.formats.folders import open_sequence
from vca_data.synthetic import make_cityscapes_vps


def test_panoptic_png_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1 << 24, (7, 9))
    vps.write_panoptic_png(tmp_path / "p.png", ids)
    np.testing.assert_array_equal(vps.read_panoptic_png(tmp_path / "p.png"), ids)
    with pytest.raises(CityscapesVpsFormatError, match="0..2\\*\\*24-1"):
        vps.write_panoptic_png(tmp_path / "q.png", np.full((2, 2), 1 << 24))


def test_frame_key():
    assert vps.frame_key("0005_0025_frankfurt_000000_001736_newImg8bit.png") == ("0005", 25)
    assert vps.frame_key("val/img/0500_3000_munster_000170_000019_leftImg8bit.png") == ("0500", 3000)
    assert vps.frame_key("frankfurt_000000_001736_leftImg8bit.png") is None


def test_video_frames_and_segments_match_the_json(tmp_path: Path):
    root = make_cityscapes_vps(tmp_path, num_videos=1, frames_per_video=20, label_every=5, height=24, width=40)
    seq = open_sequence(root, "val/0001")
    assert seq.image_folder == "img_all" and seq.num_frames == 20 and seq.labelled_frames == [4, 9, 14, 19]
    assert seq.frame_names[19].endswith("_leftImg8bit.png")  # the original Cityscapes frame
    panoptic = json.loads((root / "panoptic_gt_val_city_vps.json").read_text())
    ann = panoptic["annotations"][1]
    ids = vps.read_panoptic_png(root / "val" / "panoptic_video" / ann["file_name"])
    things = {s["id"]: s for s in ann["segments_info"] if s["category_id"] >= 11}
    instances = seq.instances(9)
    assert sorted(x.track_id for x in instances) == sorted(things)
    for inst in instances:
        np.testing.assert_array_equal(inst.mask(), ids == inst.track_id)
        assert inst.crowd == bool(things[inst.track_id]["iscrowd"])
        assert int(inst.mask().sum()) == things[inst.track_id]["area"]
    # Track ids are stable through the video.
    tracks = seq.tracks()
    assert any(len(t.frames) == 4 for t in tracks.values())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("categories"), r"panoptic_gt_val_city_vps\.json: missing field 'categories'"),
    (lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99),
     r"annotations\[0\]\.segments_info\[0\]\.category_id: 99 is not among the categories"),
    (lambda d: d["annotations"][0]["segments_info"][0].pop("id"),
     r"annotations\[0\]\.segments_info\[0\]: missing field 'id'"),
    (lambda d: d["annotations"][0].update(segments_info="none"), r"annotations\[0\]\.segments_info: expected list"),
])
def test_json_rejections(tmp_path: Path, mutate, message):
    root = make_cityscapes_vps(tmp_path, num_videos=1, frames_per_video=5, height=16, width=24)
    path = root / "panoptic_gt_val_city_vps.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CityscapesVpsFormatError, match=message):
        open_sequence(root)


def test_listed_segment_missing_from_png(tmp_path: Path):
    root = make_cityscapes_vps(tmp_path, num_videos=1, frames_per_video=5, height=16, width=24)
    path = root / "panoptic_gt_val_city_vps.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segments_info"].append({"id": 12345, "category_id": 13, "iscrowd": 0})
    path.write_text(json.dumps(doc))
    with pytest.raises(CityscapesVpsFormatError, match=r"segment id\(s\) \[12345\] .* have no pixels"):
        open_sequence(root).instances(4)


def test_split_without_labels_opens_unlabelled(tmp_path: Path):
    root = make_cityscapes_vps(tmp_path, num_videos=1, frames_per_video=5, height=16, width=24, split="test")
    (root / "panoptic_gt_test_city_vps.json").unlink()
    seq = open_sequence(root, "0001")
    assert seq.name == "test/0001" and seq.labelled_frames == [] and seq.tracks() == {}
