"""Tests of annotator.proposals: hysteresis aggregation, proposals on a rendered driving scene with known
moving/static tracks (ego and flow-only modes), the labels file (manual labels never overwritten), and
the `propose` command with its flow PNGs in the VCANet layout."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import cv2
import numpy as np
import pytest

from annotator.proposals import aggregation, command, ego_cues, flow_cues, long_baseline, sequences
from annotator.proposals.masks import landing_ids, track_masks
from annotator.proposals.settings import ProposalSettings
from vca_data import flow as vf
from vca_data.formats.folders import open_sequence
from vca_data.formats.motion_labels import MotionLabels
from vca_data.synthetic import (
    DrivingBox,
    driving_textures,
    make_driving_sequence,
    make_kitti_mots_sequence,
    render_driving_frame,
)

H, W = 150, 300
CAMERA_HEIGHT = 1.5  # world y points down; the road is the plane y = CAMERA_HEIGHT


def write_driving_sequence(root, frames: int = 6, speed: float = 0.4) -> dict[int, str]:
    """A camera driving straight along +z over a textured road between facades, with a parked car (1001,
    static), a car crossing the road (1002), a car ahead in the same lane driving away more slowly (1003:
    its motion stays on the epipolar lines) and a standing pedestrian (2001, static); returns the true
    state of every track."""
    boxes = []
    for track, (x, z, vx, vz) in {1001: (-2.6, 6.5, 0.0, 0.0), 1002: (1.2, 9.0, -0.35, 0.0),
                                  1003: (0.0, 8.0, 0.0, 0.25)}.items():
        centre, half = np.array([x, CAMERA_HEIGHT - 0.75, z]), np.array([0.9, 0.75, 2.0])
        boxes.append(DrivingBox(centre - half, centre + half, np.array([vx, 0.0, vz]), track, 1 + track % 2))
    boxes.append(DrivingBox(np.array([2.4, CAMERA_HEIGHT - 1.8, 7.0]), np.array([3.0, CAMERA_HEIGHT, 7.5]),
                            np.zeros(3), 2001, 2))
    # Facades (background, id 0): flow-only mode needs some structure off the road plane.
    for side in (-1, 1):
        boxes.append(DrivingBox(np.array([min(4.5 * side, 9 * side), CAMERA_HEIGHT - 6.0, 3.0]),
                                np.array([max(4.5 * side, 9 * side), CAMERA_HEIGHT, 60.0]), np.zeros(3), 0, 1))
    return make_driving_sequence(root, "0000", frames, H, W, seed=3, boxes=boxes, ego_speed=speed, yaw_rate=0.0,
                                 pitch_amplitude=0.0, focal_ratio=150 / W, start_x=0.0, min_area=20,
                                 ground_y=CAMERA_HEIGHT)


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    root = tmp_path_factory.mktemp("driving")
    return root, write_driving_sequence(root)


# ------------------------------------------------------------------------------------------ aggregation


def test_hysteresis_keeps_the_last_state_between_thresholds():
    states = aggregation.hysteresis_states([1.0, 1.1, 1.5, 1.0, 0.9, 0.2, 1.0], high=1.2, low=0.8)
    assert states == [None, None, "moving", "moving", "moving", "static", "static"]
    with pytest.raises(ValueError, match="low <= high"):
        aggregation.hysteresis_states([1.0], high=0.5, low=1.0)


def test_aggregation_labels_clear_tracks_and_leaves_split_ones_unsure():
    settings = ProposalSettings(high=1.2, low=0.8, min_frames=2, min_confidence=0.5)
    assert aggregation.aggregate_track({0: 2.0, 1: 3.0, 2: 0.1}, settings)[0] is None  # 2/3 moving: unsure
    label, score, confidence = aggregation.aggregate_track({0: 2.0, 1: 3.0, 2: 2.5, 3: 0.1}, settings)
    assert (label, score, confidence) == ("moving", 0.75, 0.5)
    assert aggregation.aggregate_track({0: 0.1, 1: 0.2, 2: 0.3}, settings)[:2] == ("static", 0.0)
    # One decided frame is enough only far from the decision line.
    assert aggregation.aggregate_track({5: 3.0}, settings)[0] == "moving"
    assert aggregation.aggregate_track({5: 1.3}, settings)[0] is None
    assert aggregation.aggregate_track({}, settings) == (None, 0.5, 0.0)


def test_a_run_of_moving_frames_makes_a_track_moving_whatever_the_fraction():
    settings = ProposalSettings(high=1.2, low=0.8, min_confidence=0.5, moving_run=3)
    # A car starting from rest: still for 5 frames, then moving for 3 -> 3/8 moving, but it moved.
    starting = {k: 0.3 for k in range(5)} | {5: 1.5, 6: 2.5, 7: 4.0}
    label, score, _ = aggregation.aggregate_track(starting, settings)
    assert (label, score) == ("moving", 3 / 8)
    # The same three high frames, not consecutive (a gap in the frames breaks the run): the fraction rules.
    scattered = {k: 0.3 for k in range(8)} | {1: 1.5, 4: 2.5, 7: 4.0}
    assert aggregation.aggregate_track(scattered, settings)[0] is None  # 3/8 moving: unsure
    gapped = {k: 0.3 for k in range(5)} | {5: 1.5, 6: 2.5, 8: 4.0}
    assert aggregation.aggregate_track(gapped, settings)[0] != "moving"
    assert aggregation.longest_run({0: 2.0, 1: 2.0, 3: 2.0, 4: 2.0, 5: 2.0, 6: 0.1}, 1.2) == 3
    assert aggregation.longest_run({}, 1.2) == 0


def test_median_vote_decides_by_the_median_and_leaves_even_splits_unsure():
    settings = ProposalSettings(flow_vote=1.2, flow_min_confidence=0.05)
    # One wild frame does not flip a static track (hysteresis would follow it until the next low frame).
    assert aggregation.median_vote({0: 0.3, 1: 9.0, 2: 0.5, 3: 0.4, 4: 0.2}, settings) == ("static", 0.2, 0.6)
    assert aggregation.median_vote({0: 1.5, 1: 2.0, 2: 0.9}, settings)[0] == "moving"
    assert aggregation.median_vote({0: 1.1, 1: 1.15, 2: 0.2}, settings)[0] == "static"  # median below flow_vote
    assert aggregation.median_vote({0: 0.5, 1: 3.0}, settings) == (None, 0.5, 0.0)
    assert aggregation.median_vote({}, settings) == (None, 0.5, 0.0)


# ------------------------------------------------------------------------------- known-answer scenes


def test_ego_mode_finds_the_moving_cars_including_the_one_driving_ahead(driving):
    root, truth = driving
    seq = open_sequence(root, "0000")
    assert sequences.sequence_mode(seq, "auto") == "ego"
    proposals = sequences.propose_sequence(seq, "auto")
    assert {t: p.label for t, p in proposals.items()} == truth
    assert all(p.mode == "ego" for p in proposals.values())
    assert proposals[1001].score == 0.0 and proposals[1002].score == 1.0


def test_flow_only_mode_combines_epipolar_and_ground_contact_cues(driving):
    root, truth = driving
    seq = open_sequence(root, "0000")
    proposals = sequences.propose_sequence(seq, "flow")
    assert proposals[1002].label == "moving" and proposals[2001].label == "static"
    # Without depth the near parked car's expected flow rests on a noisy road-plane estimate: it may be
    # left to the annotator, but must not be called moving.
    assert proposals[1001].label in ("static", None)
    assert proposals[1003].label == "moving"
    # The car ahead moves along its epipolar lines: the Sampson cue alone would call it static; its
    # scores come from the ground-contact prediction.
    assert min(proposals[1003].frame_scores.values()) > ProposalSettings().high


def test_ego_mode_needs_depth_and_auto_falls_back_to_flow(tmp_path, driving):
    root, _ = driving
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("depth"))
    seq = open_sequence(copy, "0000")
    assert sequences.sequence_mode(seq, "auto") == "flow"
    with pytest.raises(ValueError, match="depth"):
        sequences.sequence_mode(seq, "ego")
    with pytest.raises(ValueError, match="mode"):
        sequences.sequence_mode(seq, "lidar")


# ------------------------------------------------------------------------------ labels file and CLI


def test_run_proposals_never_overwrites_manual_labels(tmp_path, driving):
    root, truth = driving
    data = tmp_path / "data"
    shutil.copytree(root, data)
    labels = MotionLabels.new("kitti-mots")
    labels.set("0000", 1002, "static", source="manual")             # wrong on purpose: must stay
    labels.set("0000", 2001, "ignore", source="manual")
    labels.set("0000", 1003, "static", source="proposal", score=0.1)  # stale proposal: replaced
    labels.save(data / "motion_labels.json")
    calls = []
    summary = sequences.run_proposals(data, progress=False, on_progress=lambda done, total: calls.append((done, total)))
    result = MotionLabels.load(data / "motion_labels.json")
    assert result.get("0000", 1002).label == "static" and result.get("0000", 1002).source == "manual"
    assert result.get("0000", 2001).label == "ignore" and result.get("0000", 2001).source == "manual"
    for track in (1001, 1003):
        entry = result.get("0000", track)
        assert (entry.label, entry.source) == (truth[track], "proposal")
        assert entry.score == (1.0 if truth[track] == "moving" else 0.0)
    assert summary["kept"] == 2 and summary["moving"] == 1 and summary["static"] == 1
    assert summary["modes"] == {"0000": "ego"}
    assert calls[-1] == (6, 6) and [c[0] for c in calls] == list(range(1, 7))


def test_unsure_tracks_drop_a_stale_proposal_and_keep_others():
    labels = MotionLabels.new("kitti-mots")
    labels.set("s", 1, "moving", source="proposal", score=0.9)
    labels.set("s", 2, "static", source="simulator")
    unsure = sequences.Proposal(1, None, 0.5, 0.0, "flow")
    counts = sequences.apply_proposals(labels, "s", {1: unsure, 2: sequences.Proposal(2, "moving", 1.0, 1.0, "flow")})
    assert labels.get("s", 1) is None and labels.get("s", 2).label == "static"
    assert counts == {"moving": 0, "static": 0, "unsure": 1, "kept": 1}


def test_propose_command_writes_flow_pngs_in_the_vcanet_layout(tmp_path, capsys):
    root = make_kitti_mots_sequence(tmp_path / "ds", num_frames=4, height=64, width=96, num_objects=2, seed=1)
    parser = argparse.ArgumentParser(prog="vca-annotate")
    command.register(parser.add_subparsers(dest="command"))
    help_text = parser._subparsers._group_actions[0].choices["propose"].format_help()
    assert "FLOWDIR/flow/<seq>/<frame:06d>.png" in help_text and "flow_suppressed" in help_text
    args = parser.parse_args(["propose", str(root), "--mode", "flow", "--flow-dir", str(tmp_path / "fl"),
                              "--preset", "fast", "--flow-max", "8", "--suppressed-max", "2", "--quiet"])
    assert args.func(args) == 0
    assert "-> " in capsys.readouterr().out
    for kind, scale in (("flow", 8.0), ("flow_suppressed", 2.0)):
        names = sorted(p.name for p in (tmp_path / "fl" / kind / "0000").glob("*.png"))
        assert names == [f"{i:06d}.png" for i in range(4)]
        assert sequences.read_flow_scale(tmp_path / "fl" / kind / "0000") == scale
    # Frame 0's PNG is the colour coding of DIS flow 0 -> 1 at the fixed scale.
    seq = open_sequence(root, "0000")
    expected = vf.flow_to_color(vf.compute_flow(seq.read_image(0), seq.read_image(1), "fast"), 8.0)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "fl" / "flow" / "0000" / "000000.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(written, expected)
    labels = json.loads((root / "motion_labels.json").read_text())
    assert all(e["source"] == "proposal" for e in labels["sequences"].get("0000", {}).values())
    bad = parser.parse_args(["propose", str(tmp_path / "missing")])
    assert bad.func(bad) == 2
    bad = parser.parse_args(["propose", str(root), "--suppressed-max", "0"])
    assert bad.func(bad) == 2 and "--suppressed-max must be positive" in capsys.readouterr().out


def test_silhouette_cue_sees_a_textureless_box_move_and_nothing_on_a_static_one():
    textures = driving_textures(seed=5)
    K = np.array([[150.0, 0.0, W / 2], [0.0, 150.0, H / 2], [0.0, 0.0, 1.0]])
    still = DrivingBox(np.array([-2.5, 0.0, 8.0]), np.array([-1.0, CAMERA_HEIGHT, 10.0]), np.zeros(3), 1001)
    sliding = DrivingBox(np.array([1.0, 0.0, 10.0]), np.array([2.0, CAMERA_HEIGHT, 11.0]), np.array([0.3, 0, 0]), 1002)
    pose0, pose1 = np.eye(4), np.eye(4)
    pose1[2, 3] = 0.5
    _, depth0, ids0 = render_driving_frame([still, sliding], 0, pose0, K, H, W, textures, ground_y=CAMERA_HEIGHT)
    _, depth1, ids1 = render_driving_frame([still, sliding], 1, pose1, K, H, W, textures, ground_y=CAMERA_HEIGHT)
    settings = ProposalSettings()
    scores = ego_cues.silhouette_scores(ids0, depth0, ids1, depth1, K, vf.relative_pose(pose0, pose1), settings)
    assert scores[1001] < 0.1
    # 0.3 m at ~9.5 m is ~4.7 px on a 15 px wide box: a third of its pixels land up to 3.7 px (beyond the
    # 1 px tolerance) outside its real mask, about 0.5 px on average over the mask.
    assert 0.4 < scores[1002] * settings.silhouette_shift_px < 0.8
    assert scores[1002] > settings.high


def test_contact_depth_puts_an_upright_object_where_its_feet_touch_the_road():
    K = np.array([[100.0, 0.0, 20.0], [0.0, 100.0, 10.0], [0.0, 0.0, 1.0]])
    normal, offset = np.array([0.0, 1.0, 0.0]), 1.5  # the road 1.5 m below the camera
    id_map = np.zeros((80, 60), np.int32)
    id_map[20:61, 10:14] = 7  # a pedestrian: body and legs down to row 60 ...
    id_map[25:46, 7:10] = 7   # ... and arms ending far above the feet, with road below them
    id_map[25:46, 14:17] = 7
    depth = flow_cues.contact_depth(7, id_map, K, normal, offset)
    feet = offset / ((60.5 - K[1, 2]) / K[1, 1])
    assert np.allclose(depth[id_map == 7], feet)
    # A wide object (a car seen from the side) keeps one depth per column, from each column's bottom.
    id_map[:] = 0
    id_map[40:50, 5:45] = 3
    id_map[50, 25:45] = 3  # its right half reaches one row lower: nearer
    car = flow_cues.contact_depth(3, id_map, K, normal, offset)
    assert np.isclose(car[45, 10], offset / ((49.5 - 10.0) / 100.0))
    assert np.isclose(car[45, 30], offset / ((50.5 - 10.0) / 100.0))
    # Hidden bottoms (the image border) give no contact.
    id_map[:] = 0
    id_map[60:80, 10:14] = 7
    assert flow_cues.contact_depth(7, id_map, K, normal, offset) is None


def test_flow_only_cues_see_textureless_boxes_static_on_the_road_and_driving_ahead():
    """Flat-shaded boxes (no texture inside: DIS only sees their outlines) on a textured road between
    facades, camera driving forward at 0.45 m per frame: a parked box scores static; a box driving
    ahead at 0.3 m per frame (its motion stays on the epipolar lines) scores moving through the ground
    cue, which predicts its flow as if it were static where its bottom touches the road."""
    textures = driving_textures(seed=11) + [np.full((8, 8), 0.45, np.float32)]
    flat = len(textures) - 1
    K = np.array([[150.0, 0.0, W / 2], [0.0, 150.0, H / 2], [0.0, 0.0, 1.0]])
    boxes = [DrivingBox(np.array([-3.4, CAMERA_HEIGHT - 1.5, 9.0]), np.array([-1.6, CAMERA_HEIGHT, 13.0]),
                        np.zeros(3), 1001, flat),
             DrivingBox(np.array([-0.9, CAMERA_HEIGHT - 1.5, 10.0]), np.array([0.9, CAMERA_HEIGHT, 14.0]),
                        np.array([0.0, 0.0, 0.3]), 1002, flat)]
    for side in (-1, 1):
        boxes.append(DrivingBox(np.array([min(4.5 * side, 9 * side), CAMERA_HEIGHT - 6.0, 3.0]),
                                np.array([max(4.5 * side, 9 * side), CAMERA_HEIGHT, 60.0]), np.zeros(3), 0, 1))
    settings = ProposalSettings()
    frames = []
    for t in range(4):
        pose = np.eye(4)
        pose[2, 3] = 0.45 * t
        frames.append(render_driving_frame(boxes, t, pose, K, H, W, textures, ground_y=CAMERA_HEIGHT))
    scores: dict[int, list[float]] = {1001: [], 1002: []}
    for (rgb0, _, ids0), (rgb1, _, ids1) in zip(frames, frames[1:]):
        flow = vf.compute_flow(rgb0, rgb1, "medium")
        masks = track_masks(ids0, settings, landing_ids(ids1, flow))
        exclude = cv2.dilate((ids0 > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        cues, _, _ = flow_cues.flow_only_cues(flow, ids0, masks, exclude, K, settings)
        # Both stand on the road with their contact in view: the ground cue is measured on both, and
        # the epipolar cue alone sees neither move.
        for track in scores:
            assert cues[track].ground_residual is not None
            assert cues[track].sampson < settings.flow_noise_px + settings.flow_relative * cues[track].flow
            scores[track].append(flow_cues.flow_cue_score(cues[track], settings))
    assert max(scores[1001]) < 1.0
    assert np.median(scores[1002]) > settings.flow_vote


def test_a_road_homography_counts_only_when_level_and_moving_the_way_the_essential_matrix_says():
    essential = np.eye(4)
    essential[:3, 3] = (0.0, 0.0, -1.0)
    def road(normal, translation):
        motion = np.eye(4)
        motion[:3, 3] = translation
        normal = np.asarray(normal, float)
        return vf.RoadMotion(motion, normal / np.linalg.norm(normal), np.eye(3), 0.5)
    assert flow_cues.plausible_road(road((0.0, 1.0, 0.03), (0.01, 0.0, -0.3)), essential)     # 1.7 deg tilt
    assert not flow_cues.plausible_road(road((0.0, 1.0, 0.2), (0.0, 0.0, -0.3)), essential)   # 11 deg: a wall
    assert not flow_cues.plausible_road(road((0.0, 1.0, 0.0), (0.1, 0.0, -0.3)), essential)   # 18 deg apart
    assert not flow_cues.plausible_road(road((0.0, 1.0, 0.0), (0.0, 0.0, 0.3)), essential)    # backwards
    assert not flow_cues.plausible_road(road((0.0, 1.0, 0.0), (0.0, 0.0, 0.0)), essential)    # no translation


def test_flow_cue_score_divides_each_cue_by_its_expected_error_and_takes_the_larger():
    settings = ProposalSettings(flow_noise_px=0.3, flow_relative=0.05, ground_depth_error=0.1,
                                        flow_error=0.02)
    # Epipolar cue only: 1.6 px off the epipolar lines where 0.3 + 0.05 * 10 = 0.8 px is expected.
    assert flow_cues.flow_cue_score(flow_cues.FlowCues(flow=10.0, sampson=1.6), settings) == pytest.approx(2.0)
    # The ground cue's tolerance follows the translational part of the prediction (the guessed depth
    # only scales that part): 0.3 + 0.1 * 4 + 0.02 * 10 = 0.9 px expected, 2.7 px seen.
    cue = flow_cues.FlowCues(flow=10.0, sampson=0.4, ground_residual=2.7, ground_translational=4.0, ground_flow=10.0)
    assert flow_cues.flow_cue_score(cue, settings) == pytest.approx(3.0)
    cue.ground_residual = 0.45
    assert flow_cues.flow_cue_score(cue, settings) == pytest.approx(0.5)  # the epipolar cue, 0.4 / 0.8
    # A camera that does not translate: the residual to the background homography.
    assert flow_cues.flow_cue_score(flow_cues.FlowCues(flow=2.0, residual=0.8), settings) == pytest.approx(2.0)
    assert np.isnan(flow_cues.flow_cue_score(flow_cues.FlowCues(flow=2.0), settings))


def test_epipolar_cue_alone_shows_motion_but_not_stillness():
    # Without the ground cue a low score cannot tell a parked car from one driving ahead.
    assert not flow_cues.decisive(flow_cues.FlowCues(flow=5.0, sampson=0.1), 0.2)
    assert flow_cues.decisive(flow_cues.FlowCues(flow=5.0, sampson=3.0), 4.0)
    assert flow_cues.decisive(flow_cues.FlowCues(flow=5.0, sampson=0.1, ground_residual=0.1, ground_translational=1.0,
                                             ground_flow=5.0), 0.2)
    assert flow_cues.decisive(flow_cues.FlowCues(flow=5.0, residual=0.1), 0.2)  # camera not translating


# ------------------------------------------------------------------------------------------ long baseline


def _box_frame(boxes: dict[int, tuple[float, float]], K: np.ndarray, height: float = 1.5, size=(240, 640)
               ) -> np.ndarray:
    """Id map of upright boxes 1.8 m wide and 1.5 m tall standing on the road (y = `height` below the
    camera), each given by (lateral centre x, depth z) in metres of the camera frame."""
    ids = np.zeros(size, np.int32)
    for track, (x, z) in boxes.items():
        left, right = K[0, 2] + K[0, 0] * (x - 0.9) / z, K[0, 2] + K[0, 0] * (x + 0.9) / z
        top, bottom = K[1, 2] + K[1, 1] * (height - 1.5) / z, K[1, 2] + K[1, 1] * height / z
        ids[int(round(top)):int(round(bottom)), int(round(left)):int(round(right))] = track
    return ids


def test_footprints_show_the_contact_and_the_width_only_where_they_are_in_view():
    ids = np.zeros((40, 60), np.int32)
    ids[10:20, 5:15] = 1      # free: contact at the bottom edge of row 19, 10 px wide
    ids[10:20, 30:40] = 2     # a wider box standing in front of its lower part hides its contact
    ids[16:25, 26:44] = 3
    ids[2:8, 45:50] = 5       # side by side: neither shows its width
    ids[2:8, 50:55] = 6
    ids[30:40, 50:60] = 4     # cut by the bottom and right borders
    prints = long_baseline.footprints(ids)
    assert (prints[1].row, prints[1].column, prints[1].width, prints[1].grounded) == (20.0, 10.0, 10.0, True)
    assert not prints[2].grounded and prints[2].width == 10.0
    assert prints[3].grounded and prints[3].width == 18.0 and prints[3].row == 25.0
    assert prints[5].grounded and prints[6].grounded and np.isnan(prints[5].width) and np.isnan(prints[6].width)
    assert not prints[4].grounded and np.isnan(prints[4].width)
    # A car parked in front of another hides its lower right part: the far car's outline is cut where
    # the near one stands, though not at its widest rows; neither width counts.
    ids = np.zeros((40, 60), np.int32)
    ids[10:20, 5:16] = 7
    ids[14:26, 13:22] = 8
    ids[14:26, 40:50] = 9     # 1 px of road between it and the next: within reach, neither width counts
    ids[14:26, 51:58] = 10
    prints = long_baseline.footprints(ids)
    assert np.isnan(prints[7].width) and np.isnan(prints[8].width)
    assert np.isnan(prints[9].width) and np.isnan(prints[10].width)
    assert long_baseline.footprints(ids, reach=1)[9].width == 10.0


def test_height_scaled_steps_measure_translation_in_camera_heights():
    # The camera moves 0.75 m per frame 1.5 m above the road: the plane offset is 2 translations, the
    # step half a camera height; a wild offset in one pair is outvoted by its neighbours.
    motion = np.eye(4)
    motion[2, 3] = -1.0
    normal = np.array([0.0, 1.0, 0.0])
    geometry = {i: flow_cues.CameraGeometry(motion, normal, 2.0) for i in range(5)}
    geometry[2] = flow_cues.CameraGeometry(motion, normal, 3.0)
    geometry[8] = flow_cues.CameraGeometry(motion)   # no plane within two pairs: left out
    steps = long_baseline.height_scaled_steps(geometry)
    assert sorted(steps) == [0, 1, 2, 3, 4]
    assert all(steps[i][2, 3] == pytest.approx(-0.5) for i in steps)
    # A still camera needs no scale; one pair lost between two measured ones is bridged by their mean.
    still = {0: flow_cues.CameraGeometry(motion, normal, 2.0), 2: flow_cues.CameraGeometry(np.eye(4))}
    steps = long_baseline.height_scaled_steps(still)
    assert sorted(steps) == [0, 1, 2]
    assert steps[2][2, 3] == 0.0 and steps[1][2, 3] == pytest.approx(-0.25)


def _pitch(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def test_road_normals_average_the_per_frame_planes_and_follow_the_camera_pitch():
    """A camera 1 camera height above the road drives 0.3 heights per frame and pitches (a slow sine of
    0.01 rad); each frame pair's fitted plane is tilted at random by 0.01 rad. One plane moved along the
    chained steps errs by less than the fitted ones, follows the pitch, and a gap in the steps starts a
    new run."""
    rng = np.random.default_rng(0)
    pitch = 0.01 * np.sin(0.5 * np.arange(16))
    world_from_camera = []
    for i in range(16):
        pose = np.eye(4)
        pose[:3, :3] = _pitch(pitch[i])
        pose[2, 3] = 0.3 * i
        world_from_camera.append(pose)
    steps = {i: np.linalg.inv(world_from_camera[i + 1]) @ world_from_camera[i] for i in range(15) if i != 9}
    assert long_baseline.chained_runs(steps) == [list(range(10)), list(range(10, 16))]
    # the road y = 1 in the world; in camera i: n_i . X = 1 with n_i = R_i^T (0, 1, 0) (no vertical motion)
    truth = {i: world_from_camera[i][:3, :3].T @ np.array([0.0, 1.0, 0.0]) for i in range(16)}
    measured = {i: _pitch(rng.normal(0.0, 0.01)) @ truth[i] for i in range(16)}
    road = long_baseline.road_normals(measured, steps)
    assert sorted(road) == list(range(16))
    error = float(np.mean([np.linalg.norm(road[i] - truth[i]) for i in range(16)]))
    noise = float(np.mean([np.linalg.norm(measured[i] - truth[i]) for i in range(16)]))
    assert error < 0.6 * noise
    # the camera's own pitch, 0.02 rad from crest to trough, is kept
    assert abs((road[3][2] - road[0][2]) - (truth[3][2] - truth[0][2])) < 0.003
    # frames in no run of steps are left to the caller
    assert long_baseline.road_normals(measured, {}) == {}


def test_a_still_camera_keeps_its_geometry_for_the_long_baseline_cue():
    rng = np.random.default_rng(0)
    ids = np.zeros((120, 160), np.int32)
    ids[60:80, 70:90] = 5
    flow = rng.normal(0.0, 0.01, (120, 160, 2)).astype(np.float32)   # nothing moves (DIS noise)
    settings = ProposalSettings()
    masks = track_masks(ids, settings)
    K = flow_cues.default_intrinsics(120, 160)
    cues, _, geometry = flow_cues.flow_only_cues(flow, ids, masks, ids > 0, K, settings)
    assert cues[5].residual < 0.05 and cues[5].sampson is None
    assert not geometry.motion[:3, 3].any() and np.allclose(geometry.motion[:3, :3], np.eye(3), atol=1e-3)


@pytest.mark.parametrize("speed", [0.0, 1.0, -0.8])
def test_long_baseline_cue_tells_a_car_keeping_pace_far_ahead_from_a_static_one(speed):
    """Camera 1.5 m above the road, 1 m forward per frame for 16 frames; boxes 40 m ahead: one static,
    one driving at `speed` m per frame (1.0: keeping pace, the case per-pair flow cannot see; -0.8:
    oncoming). Per frame pair the one keeping pace differs from a static box by a tenth of a pixel;
    over the sequence the static one comes 15 m closer, the other keeps its place and size."""
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 120.0], [0.0, 0.0, 1.0]])
    settings = ProposalSettings()
    motion = np.eye(4)
    motion[2, 3] = -1.0   # camera_{i+1}_from_camera_i: the scene comes 1 m closer
    normal = np.array([0.0, 1.0, 0.0])
    geometry = {i: flow_cues.CameraGeometry(motion, normal, 1.5) for i in range(15)}
    steps = long_baseline.height_scaled_steps(geometry)
    normals = {i: normal for i in range(16)}
    prints: dict[int, dict[int, long_baseline.Footprint]] = {1: {}, 2: {}}
    for i in range(16):
        frame = long_baseline.footprints(_box_frame({1: (-3.0, 40.0 - i), 2: (1.0, 42.0 + (speed - 1.0) * i)}, K))
        for track in prints:
            prints[track][i] = frame[track]
    static = long_baseline.long_baseline_cue(prints[1], steps, normals, K, settings)
    other = long_baseline.long_baseline_cue(prints[2], steps, normals, K, settings)
    assert static.pairs == other.pairs == 36   # a in 0..7, b at least 8 frames later
    assert static.visible > 3.0                # the static box's approach shows clearly ...
    assert static.score < 1.0                  # ... and matches the prediction
    if speed == 0.0:
        assert other.score < 1.0
    elif speed > 0:
        # Keeping pace: farther than a static box would be, by three times the expected error (which
        # grows with the predicted approach: the score cannot exceed 1 / long_relative).
        assert other.depth > 3.0 and other.depth < 1.0 / settings.long_relative
    else:
        # Oncoming: nearer than a static box would be, a decisive vote.
        assert other.depth < 0.0 and other.score >= settings.long_vote


def test_long_baseline_cue_allows_an_oblique_object_to_narrow_as_the_camera_turns():
    """A camera standing at a junction and turning by 1 degree per frame; a parked car 20 camera heights
    ahead whose side is seen at 15 degrees to the image: its image narrows with the cosine of that angle
    as the view turns (8 % over 12 degrees), though its depth does not change. It stays static; the
    same narrowing with a camera that does not turn is motion."""
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 120.0], [0.0, 0.0, 1.0]])
    settings = ProposalSettings()
    normal = np.array([0.0, 1.0, 0.0])
    point = np.array([-2.0, 1.0, 20.0])   # the contact, camera heights
    face = math.radians(15.0)

    def cue(yaw_per_frame: float):
        step = np.eye(4)
        step[:3, :3] = cv2.Rodrigues(np.array([0.0, yaw_per_frame, 0.0]))[0]
        steps = {i: step for i in range(12)}
        prints = {}
        for i in range(13):
            seen = np.linalg.matrix_power(step[:3, :3], i) @ point
            x, y = K[0, 0] * seen[0] / seen[2] + K[0, 2], K[1, 1] * seen[1] / seen[2] + K[1, 2]
            turned = abs(math.radians(1.0)) * i
            width = 120.0 * math.cos(face + turned) / math.cos(face)
            prints[i] = long_baseline.Footprint(y, x, width, True)
        return long_baseline.long_baseline_cue(prints, steps, {i: normal for i in range(13)}, K, settings)

    turning = cue(math.radians(1.0))
    assert turning is not None and turning.score < settings.long_vote
    still = cue(0.0)   # the camera does not turn: the narrowing is the car driving away
    assert still is not None and still.score > settings.long_vote
