"""Tests of vca_data.flow: flow files, colour coding, DIS flow, ego flow, background fit and Sampson
distance, on small scenes ray cast by vca_data.synthetic (textured ground plane and boxes) so that the
true flow, depth and pose are known."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from vca_data import flow as vf
from vca_data.synthetic import DrivingBox, driving_textures, render_driving_frame

H, W = 120, 200
K = np.array([[150.0, 0.0, 100.0], [0.0, 150.0, 60.0], [0.0, 0.0, 1.0]])
CAMERA_HEIGHT = 1.5  # world frame = first camera frame: y down, ground plane at y = CAMERA_HEIGHT


TEXTURES = driving_textures(seed=1)
GROUND_TEXTURE = TEXTURES[0] * 255  # 0..255 grey levels for the hand-made DIS pair


def _sample(tex: np.ndarray, a: np.ndarray, b: np.ndarray, pixels_per_metre: float) -> np.ndarray:
    size = tex.shape[0]
    x = np.mod(a * pixels_per_metre, size).astype(np.float32)
    y = np.mod(b * pixels_per_metre, size).astype(np.float32)
    return cv2.remap(tex, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def translation(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def render(world_from_camera: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray image (2x2 supersampled), depth (z, metres) and box index map (0 ground, i+1 box i) of a
    textured ground plane and static axis-aligned boxes given as (min corner, max corner) in world
    coordinates (vca_data.synthetic's driving-scene ray caster)."""
    scene = [DrivingBox(np.asarray(lo, float), np.asarray(hi, float), np.zeros(3), k + 1, 2)
             for k, (lo, hi) in enumerate(boxes)]
    rgb, depth, ids = render_driving_frame(scene, 0, world_from_camera, K, H, W, TEXTURES, ground_y=CAMERA_HEIGHT)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), depth, ids


# -------------------------------------------------------------------------------------------- files


def test_flo_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    flow = (rng.standard_normal((7, 11, 2)) * 100).astype(np.float32)
    flow[0, 0] = (np.float32(1e-7), np.float32(-3.4e38))
    vf.write_flo(tmp_path / "a.flo", flow)
    back = vf.read_flo(tmp_path / "a.flo")
    assert back.dtype == np.float32 and back.shape == (7, 11, 2)
    np.testing.assert_array_equal(back, flow)
    np.testing.assert_array_equal(vf.read_flow(tmp_path / "a.flo"), flow)
    # Layout check against the format definition: tag, width, height, then u,v interleaved by row.
    raw = (tmp_path / "a.flo").read_bytes()
    assert raw[:4] == b"PIEH" and np.frombuffer(raw[4:12], "<i4").tolist() == [11, 7]
    assert np.frombuffer(raw[12:20], "<f4").tolist() == flow[0, 0].tolist()


def test_flo_rejects_truncated_and_foreign_files(tmp_path):
    vf.write_flo(tmp_path / "a.flo", np.zeros((4, 5, 2), np.float32))
    data = (tmp_path / "a.flo").read_bytes()
    (tmp_path / "short.flo").write_bytes(data[:-4])
    with pytest.raises(vf.FlowFileError, match="short.flo"):
        vf.read_flo(tmp_path / "short.flo")
    (tmp_path / "foreign.flo").write_bytes(b"XXXX" + data[4:])
    with pytest.raises(vf.FlowFileError, match="PIEH"):
        vf.read_flo(tmp_path / "foreign.flo")


def test_kitti_png_round_trip_is_exact_on_the_64th_pixel_grid(tmp_path):
    rng = np.random.default_rng(1)
    flow = (rng.integers(-500 * 64, 500 * 64, size=(9, 13, 2)) / 64.0).astype(np.float32)
    flow[0, 0] = (vf.KITTI_FLOW_MAX, -512.0)
    valid = rng.random((9, 13)) > 0.3
    vf.write_kitti_flow_png(tmp_path / "f.png", flow, valid)
    back, back_valid = vf.read_kitti_flow_png(tmp_path / "f.png")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])
    assert (back[~valid] == 0).all()
    # KITTI convention checked on the raw 16-bit channels (R = u*64 + 2^15 in RGB order).
    raw = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    i, j = np.argwhere(valid)[0]
    assert raw[i, j, 2] == flow[i, j, 0] * 64 + 32768 and raw[i, j, 0] == 1


def test_kitti_png_rounds_off_grid_values_and_rejects_out_of_range(tmp_path):
    flow = np.full((2, 2, 2), 0.3, np.float32)
    vf.write_flow(tmp_path / "f.png", flow)
    back = vf.read_flow(tmp_path / "f.png")
    assert np.abs(back - flow).max() <= 1 / 128 + 1e-7
    with pytest.raises(ValueError, match="KITTI PNG range"):
        vf.write_kitti_flow_png(tmp_path / "g.png", np.full((2, 2, 2), 600.0, np.float32))


# --------------------------------------------------------------------------------------- colour coding


def _reference_color(u: float, v: float) -> tuple[int, int, int]:
    """Per-pixel transcription of the Middlebury computeColor: normalised (u, v) -> RGB."""
    wheel = []
    for i in range(15):
        wheel.append((255, math.floor(255 * i / 15), 0))
    for i in range(6):
        wheel.append((255 - math.floor(255 * i / 6), 255, 0))
    for i in range(4):
        wheel.append((0, 255, math.floor(255 * i / 4)))
    for i in range(11):
        wheel.append((0, 255 - math.floor(255 * i / 11), 255))
    for i in range(13):
        wheel.append((math.floor(255 * i / 13), 0, 255))
    for i in range(6):
        wheel.append((255, 0, 255 - math.floor(255 * i / 6)))
    rad = math.hypot(u, v)
    fk = (math.atan2(-v, -u) / math.pi + 1) / 2 * (len(wheel) - 1)
    k0 = int(fk)
    k1 = (k0 + 1) % len(wheel)
    f = fk - k0
    out = []
    for c in range(3):
        col = ((1 - f) * wheel[k0][c] + f * wheel[k1][c]) / 255
        col = 1 - rad * (1 - col) if rad <= 1 else col * 0.75
        out.append(math.floor(255 * col))
    return tuple(out)


def test_color_coding_matches_the_middlebury_reference():
    rng = np.random.default_rng(2)
    flow = (rng.standard_normal((6, 8, 2)) * 0.7).astype(np.float32)
    rgb = vf.flow_to_color(flow, max_magnitude=1.0)
    for i in range(6):
        for j in range(8):
            expected = _reference_color(float(flow[i, j, 0]), float(flow[i, j, 1]))
            assert np.abs(rgb[i, j].astype(int) - expected).max() <= 1, (i, j, rgb[i, j], expected)
    # Known hues: right is red, down is yellowish, left is cyan-blue, zero flow is white.
    coded = vf.flow_to_color(np.array([[[1, 0], [0, 1], [-1, 0], [0, 0]]], np.float32), 1.0)[0]
    assert coded[0].tolist() == [255, 0, 0] and coded[3].tolist() == [255, 255, 255]
    assert coded[1, 0] == 255 and coded[1, 2] == 0 and coded[2, 2] == 255 and coded[2, 0] == 0


def test_color_coding_round_trips_direction_and_magnitude():
    rng = np.random.default_rng(3)
    angle = rng.uniform(-np.pi, np.pi, (40, 40))
    magnitude = rng.uniform(1.0, 5.0, (40, 40))
    flow = np.stack([np.cos(angle) * magnitude, np.sin(angle) * magnitude], -1).astype(np.float32)
    decoded = vf.color_to_flow(vf.flow_to_color(flow, max_magnitude=5.0), max_magnitude=5.0)
    error = np.angle(np.exp(1j * (np.arctan2(decoded[..., 1], decoded[..., 0]) - angle)))
    assert np.abs(error).max() < np.radians(3.0)
    assert np.abs(np.linalg.norm(decoded, axis=2) - magnitude).max() < 0.05


def test_fixed_normaliser_keeps_one_scale_and_per_frame_saturates():
    flow = np.zeros((1, 2, 2), np.float32)
    flow[0, 0] = (2.0, 0.0)
    weak, strong = flow.copy(), flow * 2
    fixed = [vf.flow_to_color(f, max_magnitude=8.0) for f in (weak, strong)]
    assert not np.array_equal(fixed[0], fixed[1])  # magnitude stays visible across frames
    per_frame = [vf.flow_to_color(f) for f in (weak, strong)]
    np.testing.assert_array_equal(per_frame[0], per_frame[1])  # each frame stretched to full saturation
    assert per_frame[0][0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="max_magnitude"):
        vf.flow_to_color(flow, max_magnitude=0)


# ------------------------------------------------------------------------------------------ DIS flow


def test_dis_flow_recovers_a_moving_box():
    background = _sample(GROUND_TEXTURE, *np.mgrid[0:H, 0:W][::-1].astype(np.float32), 1.0)
    patch = _sample(TEXTURES[2] * 255, *np.mgrid[0:30, 0:40][::-1].astype(np.float32), 1.0)
    first, second = background.copy(), background.copy()
    first[30:60, 50:90] = patch
    second[28:58, 54:94] = patch  # the box moves by (dx, dy) = (4, -2)
    flow = vf.compute_flow(first.astype(np.uint8), second.astype(np.uint8), preset="medium")
    box = flow[34:56, 56:86].reshape(-1, 2)
    np.testing.assert_allclose(np.median(box, axis=0), (4.0, -2.0), atol=0.3)
    assert np.abs(np.median(flow[70:, :].reshape(-1, 2), axis=0)).max() < 0.2
    with pytest.raises(ValueError, match="preset"):
        vf.FlowEstimator("slow")


# ----------------------------------------------------------------------------- ego flow and residuals


def test_ego_flow_of_a_plane_equals_its_homography():
    pose1 = translation(0.3, 0.0, 0.8)
    _, depth, _ = render(np.eye(4), [])
    camera1_from_camera0 = vf.relative_pose(np.eye(4), pose1)
    ego, valid = vf.ego_flow(depth, K, camera1_from_camera0)
    # Plane n.X = d in camera 0 (n = (0, 1, 0), d = height): H = K (R + t n^T / d) K^-1.
    R, t = camera1_from_camera0[:3, :3], camera1_from_camera0[:3, 3]
    plane_h = K @ (R + np.outer(t, (0.0, 1.0, 0.0)) / CAMERA_HEIGHT) @ np.linalg.inv(K)
    expected = vf.homography_flow(plane_h, H, W)
    assert valid[H // 2 + 2:].all() and not valid[: H // 2 - 1].any()  # ground below the horizon only
    np.testing.assert_allclose(ego[valid], expected[valid], atol=1e-3)


def test_camera_translation_over_a_plane_leaves_no_residual():
    pose1 = translation(0.05, 0.0, 0.3)
    first, depth0, _ = render(np.eye(4), [])
    second, depth1, _ = render(pose1, [])
    flow = vf.compute_flow(first, second, preset="medium")
    ego, valid = vf.ego_flow(depth0, K, vf.relative_pose(np.eye(4), pose1))
    road = valid.copy()
    # Near the horizon the texture is too fine to track; the nearest rows expand too fast for DIS.
    road[: H // 2 + 10] = road[-20:] = False
    road[:, :8] = road[:, -8:] = False
    residual = vf.suppress_ego_flow(flow, ego, valid)
    assert np.median(np.linalg.norm(flow[road], axis=1)) > 1.5  # the camera does move the image
    assert np.median(np.linalg.norm(residual[road], axis=1)) < 0.35
    assert (residual[~valid] == 0).all()
    # Flow-only: the background homography explains the same flow.
    background = vf.fit_background_motion(flow, exclude=~road)
    assert background.homography_inliers > 0.8
    h_residual = flow - vf.homography_flow(background.homography, H, W)
    assert np.median(np.linalg.norm(h_residual[road], axis=1)) < 0.35


def test_residual_flow_of_a_moving_box_is_its_own_motion():
    pose1 = translation(0.0, 0.0, 0.3)
    box0 = (np.array([-0.8, 0.5, 5.0]), np.array([0.4, CAMERA_HEIGHT, 6.0]))
    box_motion = np.array([0.3, 0.0, 0.0])
    box1 = (box0[0] + box_motion, box0[1] + box_motion)
    first, depth0, ids0 = render(np.eye(4), [box0])
    second, depth1, _ = render(pose1, [box1])
    flow = vf.compute_flow(first, second, preset="medium")
    T = vf.relative_pose(np.eye(4), pose1)
    ego, valid = vf.ego_flow(depth0, K, T)
    residual = vf.suppress_ego_flow(flow, ego, valid)
    box = cv2.erode((ids0 == 1).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    # The box front face sits at z = 5 in camera 0; its motion projects to f * dx / z in camera 1.
    expected_dx = K[0, 0] * box_motion[0] / (box0[0][2] - pose1[2, 3])
    np.testing.assert_allclose(np.median(residual[box], axis=0), (expected_dx, 0.0), atol=0.5)
    # DIS smooths the box's motion into its surroundings: judge the road away from it.
    road = valid & ~(cv2.dilate((ids0 > 0).astype(np.uint8), np.ones((21, 21), np.uint8)) > 0)
    road[: H // 2 + 10] = road[-20:] = False
    assert np.median(np.linalg.norm(residual[road], axis=1)) < 0.5
    motion, motion_valid = vf.scene_flow(depth0, depth1, flow, K, T)
    np.testing.assert_allclose(np.median(motion[box & motion_valid], axis=0), box_motion, atol=0.06)
    # On the road the depth lookup is as good as the flow is: a near, steep part of it.
    near_road = road & motion_valid
    near_road[: H // 2 + 25] = False
    assert np.median(np.linalg.norm(motion[near_road], axis=1)) < 0.06


def test_sampson_distance_known_values_and_background_fit():
    # Rectified pair (translation along x): epipolar lines are rows, F = [e']_x with e' = (1, 0, 0).
    F = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    x0 = np.array([[10.0, 20.0], [30.0, 5.0], [7.0, 7.0]])
    x1 = x0 + np.array([[5.0, 0.0], [-3.0, 2.0], [0.0, -4.0]])
    np.testing.assert_allclose(vf.sampson_distance(F, x0, x1), [0.0, 2 / math.sqrt(2), 4 / math.sqrt(2)])
    np.testing.assert_allclose(vf.epipole(F)[1:], 0.0, atol=1e-12)
    # A fitted F on a real translation explains static points and flags a box moving across rows.
    pose1 = translation(0.0, 0.0, 0.6)
    box0 = (np.array([1.0, 0.2, 6.0]), np.array([2.0, CAMERA_HEIGHT, 7.0]))
    box1 = (box0[0] + (0.0, -0.25, 0.0), box0[1] + (0.0, -0.25, 0.0))
    first, _, ids0 = render(np.eye(4), [box0])
    second, _, _ = render(pose1, [box1])
    flow = vf.compute_flow(first, second, preset="medium")
    boxes = cv2.dilate((ids0 > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    sky = np.zeros_like(boxes)
    sky[: H // 2 + 8] = True
    background = vf.fit_background_motion(flow, exclude=boxes | sky, step=4)
    assert background.fundamental is not None and background.num_points > 100
    distance = vf.sampson_map(background.fundamental, flow)
    inner = cv2.erode((ids0 == 1).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    road = ~(boxes | sky)
    road[-4:] = False
    assert np.median(distance[road]) < 0.2
    assert np.median(distance[inner]) > 5 * np.median(distance[road]) + 0.5


def test_road_motion_recovers_the_camera_motion_in_camera_heights_and_the_road_normal():
    # The camera pitched down by 2 degrees and turning slightly while it drives over the road plane.
    pitch, yaw = math.radians(2.0), math.radians(0.5)
    R_pitch = cv2.Rodrigues(np.array([pitch, 0.0, 0.0]))[0]
    normal = R_pitch @ np.array([0.0, 1.0, 0.0])          # the road's normal in the (pitched) camera
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array([0.0, yaw, 0.0]))[0]
    T[:3, 3] = (0.02, 0.0, -0.4)                           # camera heights: 0.6 m per frame at 1.5 m
    plane_h = K @ (T[:3, :3] + np.outer(T[:3, 3], normal)) @ np.linalg.inv(K)
    # Exact road flow: the decomposition gives back the motion, the normal and the homography.
    flow = vf.homography_flow(plane_h, H, W)
    reference = T.copy()
    reference[:3, 3] /= np.linalg.norm(reference[:3, 3])
    road = vf.road_motion(flow, K, reference=reference)
    assert road is not None and road.inliers > 0.99
    np.testing.assert_allclose(road.motion, T, atol=1e-4)
    np.testing.assert_allclose(road.normal, normal, atol=1e-4)
    np.testing.assert_allclose(road.homography / road.homography[2, 2], plane_h / plane_h[2, 2], rtol=1e-4, atol=1e-5)
    # Above the horizon there is no road: nothing to fit.
    assert vf.road_motion(flow, K, exclude=np.ones((H, W), bool)) is None
    # DIS flow of a rendered drive over the textured road (a small image): degrees of normal, per cents of speed.
    pose1 = translation(0.05, 0.0, 0.3)
    first, _, _ = render(np.eye(4), [])
    second, _, _ = render(pose1, [])
    flow = vf.compute_flow(first, second, preset="medium")
    road = vf.road_motion(flow, K)
    assert road is not None and road.inliers > 0.9
    true_t = -np.array([0.05, 0.0, 0.3]) / CAMERA_HEIGHT
    assert np.degrees(np.arccos(road.normal[1])) < 3.0
    assert np.linalg.norm(road.motion[:3, 3] - true_t) < 0.1 * np.linalg.norm(true_t)
    assert np.degrees(np.arccos(np.clip((np.trace(road.motion[:3, :3]) - 1) / 2, -1, 1))) < 0.3
