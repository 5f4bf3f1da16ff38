"""Decode CARLA camera images (BGRA `raw_data`) into arrays, and the camera geometry the episodes record.

One decoder serves both backends: the offline world delivers images in CARLA's exact encodings.

Pose convention (written into every episode's attrs as `pose_convention`): CARLA's world is Unreal's
left-handed frame (x forward, y right, z up). Episodes store `ego_pose` = world_from_camera where the
world frame is CARLA's with y negated (x, -y, z: right-handed, z up) and the camera frame is OpenCV's
(x right, y down, z forward). Both frames are right-handed, so the pose is a proper rigid transform
and depth back-projection with the intrinsics composes with it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# OpenCV camera axes expressed in Unreal camera axes: UE (x fwd, y right, z up) = [z_cv, x_cv, -y_cv].
UE_FROM_CV = np.array(
    [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
# Right-handed world from CARLA's left-handed world: negate y.
RH_FROM_UE = np.diag([1.0, -1.0, 1.0, 1.0])

DEPTH_FAR_M = 1000.0


class DecodeError(ValueError):
    """An image does not have the size or encoding expected; the message names the sensor and frame."""


def bgra(image, name: str = "camera") -> np.ndarray:
    """HxWx4 uint8 view of a CARLA image's BGRA `raw_data`."""
    width, height = int(image.width), int(image.height)
    buf = np.frombuffer(image.raw_data, dtype=np.uint8)
    if buf.size != width * height * 4:
        raise DecodeError(
            f"{name} frame {getattr(image, 'frame', '?')}: raw_data has {buf.size} bytes, "
            f"expected {width}x{height}x4 = {width * height * 4} (BGRA)"
        )
    return buf.reshape(height, width, 4)


def decode_rgb(image, name: str = "rgb") -> np.ndarray:
    """HxWx3 uint8 RGB from a `sensor.camera.rgb` image."""
    return np.ascontiguousarray(bgra(image, name)[:, :, 2::-1])


def depth_from_bgra(px: np.ndarray) -> np.ndarray:
    """Metres from CARLA's depth encoding: 1000 * (R + 256 G + 256^2 B) / (256^3 - 1)."""
    # the 24-bit code is exact in uint32; one float64 scale keeps full precision
    code = px[..., 2].astype(np.uint32) | (px[..., 1].astype(np.uint32) << 8) | (px[..., 0].astype(np.uint32) << 16)
    return (code * (DEPTH_FAR_M / (256.0**3 - 1.0))).astype(np.float32)


def depth_to_bgra(metres: np.ndarray) -> np.ndarray:
    """Inverse of `depth_from_bgra` (BGRA, alpha 255): CARLA's depth encoding of a metric depth map."""
    code = np.clip(np.rint(np.asarray(metres, np.float64) / DEPTH_FAR_M * (256.0**3 - 1.0)), 0, 256**3 - 1)
    code = code.astype(np.uint32)
    out = np.empty(code.shape + (4,), np.uint8)
    out[..., 2] = code & 0xFF
    out[..., 1] = (code >> 8) & 0xFF
    out[..., 0] = (code >> 16) & 0xFF
    out[..., 3] = 255
    return out


@dataclass(frozen=True)
class EncodedImage:
    """A camera image kept in CARLA's BGRA encoding, to be decoded later (in the recorder's writer
    process, off the simulation loop). `kind` is 'rgb', 'depth', 'semantic' or 'instance'."""

    kind: str
    width: int
    height: int
    frame: int
    raw_data: bytes

    @classmethod
    def of(cls, kind: str, image) -> EncodedImage:
        if kind not in _DECODERS:
            raise ValueError(f"unknown image kind {kind!r}; expected one of {sorted(_DECODERS)}")
        return cls(kind, int(image.width), int(image.height), int(image.frame), bytes(image.raw_data))

    def decode(self) -> np.ndarray:
        return _DECODERS[self.kind](self, self.kind)


def decode_depth(image, name: str = "depth") -> np.ndarray:
    """HxW float32 metres from a `sensor.camera.depth` image."""
    return depth_from_bgra(bgra(image, name))


def decode_semantic(image, name: str = "semantic") -> np.ndarray:
    """HxW uint8 CARLA tags from a `sensor.camera.semantic_segmentation` image (tag in R)."""
    return np.ascontiguousarray(bgra(image, name)[:, :, 2])


def decode_instance_ids(image, name: str = "instance") -> np.ndarray:
    """HxW uint32 actor ids (G + 256 B, CARLA's 16-bit instance encoding) from an instance image.
    The R channel (a tag) is ignored: its edge pixels are unreliable, classes come from the semantic
    camera."""
    px = bgra(image, name)
    return px[:, :, 1].astype(np.uint32) | (px[:, :, 0].astype(np.uint32) << 8)


_DECODERS = {"rgb": decode_rgb, "depth": decode_depth, "semantic": decode_semantic, "instance": decode_instance_ids}


def instance_key(actor_id: int) -> int:
    """The value an actor's pixels carry in a decoded instance map (its id truncated to 16 bits)."""
    return int(actor_id) & 0xFFFF


def fine_lookup(actor_fine: dict[int, int]) -> np.ndarray:
    """Lookup table instance value -> fine class id (0 = none), for `fine_map`."""
    lut = np.zeros(1 << 16, dtype=np.uint8)
    for actor_id, fine_id in actor_fine.items():
        if not 0 < int(fine_id) < 256:
            raise ValueError(f"fine id of actor {actor_id} must be in 1..255, got {fine_id}")
        lut[instance_key(actor_id)] = int(fine_id)
    return lut


# Tags a spawned prop may carry when the server reports none for it (Static, Dynamic).
PROP_TAGS = (20, 21)


def tag_lookup(actor_tags: dict[int, list[int]]) -> np.ndarray:
    """Lookup table instance value -> bit mask of the semantic tags its spawned actor carries, for
    `fine_map` (an actor without tags gets the props' tags, Static and Dynamic)."""
    lut = np.zeros(1 << 16, dtype=np.uint32)
    for actor_id, tags in actor_tags.items():
        for tag in (list(tags) or PROP_TAGS):
            if not 0 <= int(tag) < 32:
                raise ValueError(f"semantic tag of actor {actor_id} must be in 0..31, got {tag}")
            lut[instance_key(actor_id)] |= np.uint32(1 << int(tag))
    return lut


def fine_map(instance_ids: np.ndarray, lut: np.ndarray, semantic: np.ndarray | None = None,
             tag_lut: np.ndarray | None = None) -> np.ndarray:
    """HxW uint8 fine class per pixel: the fine id of the spawned unknown object the pixel shows.

    In CARLA 0.9.16 a pixel without an actor carries an engine-internal 16-bit id (buildings, trees,
    cars placed in the level), which may equal a spawned object's id; with `semantic` (HxW tags) and
    `tag_lut` (`tag_lookup`), a pixel counts only where its tag is one of that object's tags too."""
    keys = np.asarray(instance_ids, dtype=np.uint32) & 0xFFFF
    fine = lut[keys]
    if semantic is not None and tag_lut is not None:
        tags = np.asarray(semantic, dtype=np.uint32)
        allowed = (tag_lut[keys] >> np.minimum(tags, 31)) & 1
        fine = np.where(allowed.astype(bool), fine, np.uint8(0))
    return fine


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """3x3 pinhole intrinsics of a CARLA camera from its horizontal field of view."""
    if width <= 0 or height <= 0 or not 0.0 < fov_deg < 180.0:
        raise ValueError(f"camera needs positive size and 0 < fov < 180, got {width}x{height}, fov {fov_deg}")
    f = width / (2.0 * math.tan(fov_deg * math.pi / 360.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def camera_pose(world_from_camera_ue) -> np.ndarray:
    """Episode pose (right-handed world from OpenCV camera, 4x4 float64) from CARLA's
    `camera_transform.get_matrix()` (left-handed world from Unreal camera axes)."""
    m = np.asarray(world_from_camera_ue, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4x4 transform matrix, got shape {m.shape}")
    return RH_FROM_UE @ m @ UE_FROM_CV


def vehicle_from_camera(vehicle_from_camera_ue) -> np.ndarray:
    """Camera extrinsics (right-handed vehicle frame x forward, y left, z up, from OpenCV camera) from
    the camera's relative CARLA transform matrix."""
    return camera_pose(vehicle_from_camera_ue)
