"""Decoding of CARLA image encodings and the camera geometry recorded in episodes."""

from types import SimpleNamespace

import carla
import numpy as np
import pytest

from carla_scenarios import decode


def _image(px: np.ndarray, frame: int = 3):
    h, w = px.shape[:2]
    return SimpleNamespace(width=w, height=h, frame=frame, raw_data=px.astype(np.uint8).tobytes())


def test_depth_round_trip_and_known_value():
    metres = np.array([[0.0, 1.0, 12.345], [100.0, 999.0, 1000.0]], np.float32)
    out = decode.decode_depth(_image(decode.depth_to_bgra(metres)))
    # CARLA's 24-bit code has a resolution of 1000 / (2^24 - 1) m
    np.testing.assert_allclose(out, metres, atol=1000 / (2**24 - 1))
    # R=255, G=0, B=0 is 1000 * 255 / (2^24 - 1) metres
    px = np.zeros((1, 1, 4), np.uint8)
    px[0, 0, 2] = 255
    assert decode.decode_depth(_image(px))[0, 0] == pytest.approx(1000 * 255 / (2**24 - 1), rel=1e-6)


def test_rgb_semantic_instance_channels():
    px = np.zeros((2, 3, 4), np.uint8)
    px[..., 0], px[..., 1], px[..., 2] = 10, 20, 30  # B, G, R
    px[1, 2] = (0x12, 0x34, 14, 255)  # instance: actor id 0x1234, tag 14 (Car)
    img = _image(px)
    assert decode.decode_rgb(img)[0, 0].tolist() == [30, 20, 10]
    assert decode.decode_semantic(img)[1, 2] == 14
    ids = decode.decode_instance_ids(img)
    assert ids.dtype == np.uint32 and ids[1, 2] == 0x34 + 256 * 0x12


def test_bad_buffer_size_names_sensor_and_frame():
    img = SimpleNamespace(width=4, height=4, frame=77, raw_data=b"\0" * 10)
    with pytest.raises(decode.DecodeError, match="depth frame 77.*expected 4x4x4"):
        decode.decode_depth(img, "depth")


def test_fine_map_uses_16_bit_actor_keys():
    lut = decode.fine_lookup({70000: 3, 12: 5})
    ids = np.array([[70000 & 0xFFFF, 12, 13]], np.uint32)
    assert decode.fine_map(ids, lut).tolist() == [[3, 5, 0]]
    with pytest.raises(ValueError, match="fine id"):
        decode.fine_lookup({1: 300})


def test_intrinsics_from_fov():
    k = decode.intrinsics(200, 100, 90.0)
    assert k[0, 0] == pytest.approx(100.0) and k[1, 1] == pytest.approx(100.0)
    assert (k[0, 2], k[1, 2]) == (100.0, 50.0)


def test_camera_pose_is_proper_and_projects_world_points():
    cam = carla.Transform(carla.Location(x=10, y=5, z=2), carla.Rotation(yaw=30, pitch=-5))
    pose = decode.camera_pose(cam.get_matrix())
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    # a point 20 m ahead of the camera and 3 m to its right (CARLA axes) ...
    p_ue = cam.transform(carla.Location(x=20, y=3, z=-1))
    p_rh = np.array([p_ue.x, -p_ue.y, p_ue.z, 1.0])  # right-handed world: y negated
    p_cv = np.linalg.inv(pose) @ p_rh
    # ... is at x=3 (right), y=1 (down), z=20 (forward) in OpenCV camera axes
    np.testing.assert_allclose(p_cv[:3], [3.0, 1.0, 20.0], atol=1e-4)


def test_encoded_image_decodes_like_the_image():
    metres = np.linspace(0.5, 900.0, 24, dtype=np.float32).reshape(4, 6)
    img = _image(decode.depth_to_bgra(metres), frame=9)
    enc = decode.EncodedImage.of("depth", img)
    assert enc.frame == 9 and (enc.width, enc.height) == (6, 4)
    np.testing.assert_array_equal(enc.decode(), decode.decode_depth(img))
    with pytest.raises(ValueError, match="unknown image kind"):
        decode.EncodedImage.of("lidar", img)
