"""Exports of collected episodes: the Cityscapes-style PNG tree and KITTI-MOTS-style motion sequences with
the simulator's true moving/static labels, read back with the toolkit's own format readers."""

import json

import cv2
import numpy as np

from carla_scenarios import cli
from carla_scenarios.export import instance_ids, motion_state
from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.motion_labels import MotionLabels


def test_export_cityscapes_and_kitti_mots(collected, tmp_path):
    out = collected.out
    assert collected.rc == 0
    assert cli.main(["export", str(out), "--format", "cityscapes", "--out", str(tmp_path / "cs")]) == 0
    labels = sorted((tmp_path / "cs" / "gtFine").rglob("*_gtFine_labelTrainIds.png"))
    assert len(labels) == 30
    fine_pngs = sorted((tmp_path / "cs" / "gtFine").rglob("*_gtFine_fineIds.png"))
    any_unknown = False
    for lab, fin in zip(labels, fine_pngs, strict=True):
        lab_img = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
        fin_img = cv2.imread(str(fin), cv2.IMREAD_UNCHANGED)
        assert lab_img.dtype == np.uint8 and np.all((lab_img < 19) | (lab_img >= 254))
        np.testing.assert_array_equal(lab_img == 254, fin_img > 0)  # each split's own unknowns are 254
        any_unknown |= bool((lab_img == 254).any())
    assert any_unknown

    root = tmp_path / "km"
    assert cli.main(["export", str(out), "--format", "kitti-mots", "--out", str(root)]) == 0
    seqs = list_sequences(root)
    assert len(seqs) == 6
    truth = MotionLabels.load(root / "motion_truth.json")
    for name in seqs:
        seq = open_sequence(root, name)
        assert seq.num_frames == 5 and seq.intrinsics is not None and seq.pose(0) is not None
        assert seq.depth(0).dtype == np.float32
        for track_id in seq.tracks():
            assert track_id // 1000 in (1, 2)
            assert truth.get(name, track_id) is not None and truth.get(name, track_id).source == "simulator"
    # semantic train ids beside the export: the Cityscapes export's labels with the unknown objects void
    for name in seqs:
        seq = open_sequence(root, name)
        episode = json.loads((root / "sequences.json").read_text())[name]
        for i in (0, seq.num_frames - 1):
            semantic = seq.semantic(i)
            stem = episode[:-3] + f"_{i:06d}"
            cs = next((tmp_path / "cs" / "gtFine").rglob(f"{stem}_gtFine_labelTrainIds.png"))
            expected = cv2.imread(str(cs), cv2.IMREAD_UNCHANGED)
            expected[expected == 254] = 255
            np.testing.assert_array_equal(semantic, expected)


def test_motion_truth_from_actor_states():
    still = [[5.0, 5.0, 0, 0, 0, 0, 0]] * 4
    moving = [[5.0 + 0.3 * i, 5.0, 0, 0, 3.0, 0, 0] for i in range(4)]
    assert motion_state(still)[0] == "static" and motion_state(moving)[0] == "moving"
    stops = [[5.0 + 0.3 * min(i, 3), 5.0, 0, 0, 3.0 if i < 3 else 0.0, 0, 0] for i in range(6)]
    label, flags = motion_state(stops)
    assert label == "moving" and flags == [True, True, True, False, False, False]
    # a walker seen for three frames covers only 0.3 m but walks in each of them
    brief = [[5.0 + 0.15 * i, 5.0, 0, 0, 1.5, 0, 0] for i in range(3)]
    assert motion_state(brief)[0] == "moving"
    # one frame with speed among many without (a nudge) is not motion
    nudge = [[5.0, 5.0, 0, 0, 1.0 if i == 2 else 0.0, 0, 0] for i in range(5)]
    assert motion_state(nudge)[0] == "static"


def test_cityscapes_instance_ids():
    train = np.array([[13, 13, 0, 11], [13, 254, 254, 11]], np.uint8)
    inst = np.array([[7, 8, 0, 9], [7, 5, 5, 9]], np.uint32)
    fine = np.array([[0, 0, 0, 0], [0, 3, 3, 0]], np.uint8)
    out = instance_ids(train, inst, fine)
    assert out.dtype == np.uint16
    # car pixels of actors 7 and 8 get two car instances, the person its own, road keeps its train id
    assert out.tolist() == [[13001, 13002, 0, 11001], [13001, 60001, 60001, 11001]]


def test_kitti_mots_small_objects_become_ignore_regions(collected, tmp_path):
    """--min-pixels N: an object under N pixels in a frame is written as an ignore region (10000) there,
    so it is neither a track of that frame nor background; 0 keeps every object as a track."""
    every, none = tmp_path / "every", tmp_path / "none"
    assert cli.main(["export", str(collected.out), "--format", "kitti-mots", "--min-pixels", "0", "--out", str(every)]) == 0
    assert cli.main(["export", str(collected.out), "--format", "kitti-mots", "--min-pixels", "100000000",
                     "--out", str(none)]) == 0
    kept = 0
    for name in list_sequences(every):
        a, b = open_sequence(every, name), open_sequence(none, name)
        assert b.tracks() == {}
        for i in range(a.num_frames):
            ids = a.id_map(i)
            assert not a.crowd_mask(i).any()
            np.testing.assert_array_equal(b.crowd_mask(i), ids > 0)   # every object pixel is ignore
            kept += int((ids > 0).sum())
    assert kept > 0
    # the default threshold keeps exactly the objects of at least MIN_PIXELS pixels in each frame
    default = tmp_path / "default"
    assert cli.main(["export", str(collected.out), "--format", "kitti-mots", "--out", str(default)]) == 0
    from carla_scenarios.export import MIN_PIXELS

    for name in list_sequences(every):
        a, d = open_sequence(every, name), open_sequence(default, name)
        for i in range(a.num_frames):
            ids, kept_ids = a.id_map(i), d.id_map(i)
            for t in np.unique(ids[ids > 0]):
                small = (ids == t).sum() < MIN_PIXELS
                assert (kept_ids == t).any() != small
                assert d.crowd_mask(i)[ids == t].all() == small
    assert cli.main(["export", str(collected.out), "--format", "kitti-mots", "--min-pixels", "-1",
                     "--out", str(tmp_path / "bad")]) != 0
