"""open_sequence / list_sequences: layout detection, the MotionSequence view, and clear errors."""

from pathlib import Path

import numpy as np
import pytest

from vca_data.formats import coco
from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.sequence import SequenceError
from vca_data.synthetic import make_cityscapes_vps, make_kitti_mots_sequence


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    make_kitti_mots_sequence(root, "0002", num_frames=6, height=40, width=64, num_objects=4, seed=1)
    make_kitti_mots_sequence(root, "0005", num_frames=3, height=40, width=64, num_objects=2, seed=2, form="png")
    return root


@pytest.fixture(scope="module")
def city_root(tmp_path_factory) -> Path:
    return make_cityscapes_vps(tmp_path_factory.mktemp("city"), num_videos=2, frames_per_video=10, height=32, width=48)


def test_kitti_detection_and_names(kitti_root: Path, tmp_path: Path):
    assert list_sequences(kitti_root) == ["0002", "0005"]
    seq = open_sequence(kitti_root, "0002")
    assert (seq.dataset, seq.name, seq.num_frames, seq.height, seq.width) == ("kitti-mots", "0002", 6, 40, 64)
    assert seq.frame_names[0] == "000000.png" and seq.labelled_frames == list(range(6))
    by_folder = open_sequence(kitti_root / "image_02" / "0005")
    assert (by_folder.name, by_folder.label_form, by_folder.root) == ("0005", "png", kitti_root)
    training = make_kitti_mots_sequence(tmp_path / "t", "0007", num_frames=2, height=16, width=16, training=True)
    assert list_sequences(training) == ["0007"]
    assert open_sequence(training).image_path(1) == training / "training" / "image_02" / "0007" / "000001.png"
    assert open_sequence(training / "training" / "image_02" / "0007").name == "0007"


def test_kitti_sequence_view_is_consistent(kitti_root: Path):
    seq = open_sequence(kitti_root, "0002")
    tracks = seq.tracks()
    assert tracks and all(t // 1000 in (1, 2) for t in tracks)
    for i in range(seq.num_frames):
        ids = seq.id_map(i)
        assert ids.dtype == np.int32 and ids.shape == (40, 64)
        insts = seq.instances(i)
        crowd = [x for x in insts if x.crowd]
        assert [x.track_id for x in crowd] == [10000] and crowd[0].category == "ignore"
        assert not (ids == 10000).any()
        np.testing.assert_array_equal(seq.crowd_mask(i), crowd[0].mask())
        for inst in insts:
            if not inst.crowd:
                np.testing.assert_array_equal(ids == inst.track_id, coco.rle_to_mask(inst.rle))
                assert i in tracks[inst.track_id].frames
        assert set(np.unique(ids)) - {0} == {t for t, tr in tracks.items() if i in tr.frames}
    image = seq.read_image(0)
    assert image.shape == (40, 64, 3) and image.dtype == np.uint8


def test_kitti_extras(kitti_root: Path):
    seq = open_sequence(kitti_root, "0002")
    np.testing.assert_array_equal(seq.pose(3), np.eye(4))
    assert seq.intrinsics is not None and seq.intrinsics[0, 0] == 64 and seq.intrinsics[1, 2] == 20
    depth = seq.depth(1)
    assert depth.dtype == np.float32 and depth.shape == (40, 64) and 0 < depth.min() <= depth.max() <= 80
    with pytest.raises(IndexError):
        seq.id_map(6)


def test_kitti_bad_poses_named(tmp_path: Path):
    root = make_kitti_mots_sequence(tmp_path, num_frames=3, height=16, width=16, num_objects=1)
    (root / "poses" / "0000.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0\n1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(SequenceError, match=r"0000\.txt:2: expected 12 numbers"):
        open_sequence(root).pose(0)


def test_cityscapes_detection_and_view(city_root: Path):
    assert list_sequences(city_root) == ["val/0001", "val/0002"]
    assert list_sequences(city_root / "val") == ["val/0001", "val/0002"]
    seq = open_sequence(city_root, "val/0002")
    assert open_sequence(city_root / "val", "0002").frame_names == seq.frame_names
    assert (seq.dataset, seq.num_frames, seq.labelled_frames) == ("cityscapes-vps", 10, [4, 9])
    assert seq.frame_names[0].startswith("0002_0011_")
    assert seq.instances(0) == [] and not seq.id_map(0).any()
    insts = seq.instances(4)
    crowd = [x for x in insts if x.crowd]
    assert [x.track_id for x in crowd] == [13900] and crowd[0].category == "car"
    ids = seq.id_map(4)
    for inst in insts:
        if not inst.crowd:
            np.testing.assert_array_equal(ids == inst.track_id, inst.mask())
            assert inst.category == {11: "person", 13: "car"}[inst.track_id // 1000]
    assert not np.isin(ids, [1, 11, 13900]).any()  # stuff and crowd are not track ids
    tracks = seq.tracks()
    assert all(set(t.frames) <= {4, 9} for t in tracks.values())


def test_cityscapes_labelled_only_folder(tmp_path: Path):
    root = make_cityscapes_vps(tmp_path, num_videos=1, frames_per_video=10, height=24, width=32, all_frames=False)
    seq = open_sequence(root)
    assert (seq.name, seq.num_frames, seq.labelled_frames) == ("val/0001", 2, [0, 1])
    assert seq.instances(1)


def test_cityscapes_png_not_matching_json(tmp_path: Path):
    from vca_data.formats.cityscapes_vps import CityscapesVpsFormatError, write_panoptic_png

    root = make_cityscapes_vps(tmp_path, num_videos=1, frames_per_video=5, height=24, width=32)
    png = next((root / "val" / "panoptic_video").glob("*.png"))
    write_panoptic_png(png, np.full((24, 32), 4242))
    with pytest.raises(CityscapesVpsFormatError, match=r"_gtFine_panoptic\.png: segment id\(s\) \[4242\] in the PNG"):
        open_sequence(root).instances(4)


def test_errors_are_clear(kitti_root: Path, tmp_path: Path):
    with pytest.raises(SequenceError, match="not a motion sequence folder. Expected KITTI-MOTS"):
        open_sequence(tmp_path)
    with pytest.raises(SequenceError, match="no such folder"):
        open_sequence(tmp_path / "missing")
    with pytest.raises(SequenceError, match=r"holds 2 KITTI-MOTS sequences \(0002, 0005\); name one"):
        open_sequence(kitti_root)
    with pytest.raises(SequenceError, match=r"no KITTI-MOTS sequence '0009'"):
        open_sequence(kitti_root, "0009")
    assert list_sequences(tmp_path) == []
