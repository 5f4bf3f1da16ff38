"""Rendering of the offline world on PyBullet's CPU (TINY) renderer: one `getCameraImage` call per rig
gives colour, z-buffer and a body/link mask, from which the RGB (lit by the weather, fogged, wet),
depth (metres), CARLA semantic tag and actor id images are derived, and CARLA's BGRA encodings.

Static scenery is merged into multi-link bodies (one fixed link per box): PyBullet's per-body cost
dominates the per-triangle cost, so a few hundred-link bodies render several times faster than the
same boxes as separate bodies.
"""

from __future__ import annotations

import math

import carla
import numpy as np
import pybullet

from vca_data.labels import TAG

from .shapes import Box, bullet_quaternion, rotation_matrix, to_bullet_position, to_bullet_rotation

NEAR = 0.1
FAR = 1000.0  # CARLA's depth camera saturates at 1000 m; the sky lies there
LINKS_PER_BODY = 120
_MAX_LINKS = 256
_ROAD_TAGS = (TAG["Roads"], TAG["RoadLine"])


class Renderer:
    """A PyBullet DIRECT connection holding the town's boxes and the actors' bodies, with lookup tables
    from (body, link) to CARLA semantic tag and actor id."""

    def __init__(self, boxes: list[Box]) -> None:
        self.client = pybullet.connect(pybullet.DIRECT)
        self._tags = np.zeros((64, _MAX_LINKS), dtype=np.uint8)
        self._ids = np.zeros((64, _MAX_LINKS), dtype=np.uint16)
        for start in range(0, len(boxes), LINKS_PER_BODY):
            self.add_body(boxes[start:start + LINKS_PER_BODY], 0, carla.Transform())

    def close(self) -> None:
        if self.client is not None and pybullet.isConnected(self.client):
            pybullet.disconnect(self.client)
        self.client = None

    def add_body(self, boxes: list[Box], actor_id: int, transform: carla.Transform) -> int:
        """A body made of the boxes (in the transform's frame, CARLA axes); pixels carry each box's tag and
        the actor id (0 for scenery)."""
        if not boxes or len(boxes) >= _MAX_LINKS:
            raise ValueError(f"a body needs 1..{_MAX_LINKS - 1} boxes, got {len(boxes)}")
        c = self.client
        visuals = [
            pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=list(b.half), rgbaColor=list(b.rgba),
                                       specularColor=[0.05, 0.05, 0.05], physicsClientId=c)
            for b in boxes
        ]
        n = len(boxes)
        body = pybullet.createMultiBody(
            0, -1, -1, [0, 0, 0], [0, 0, 0, 1],
            linkMasses=[0] * n,
            linkCollisionShapeIndices=[-1] * n,
            linkVisualShapeIndices=visuals,
            linkPositions=[to_bullet_position(*b.center) for b in boxes],
            linkOrientations=[bullet_quaternion(0, b.yaw, 0) for b in boxes],
            linkInertialFramePositions=[[0, 0, 0]] * n,
            linkInertialFrameOrientations=[[0, 0, 0, 1]] * n,
            linkParentIndices=[0] * n,
            linkJointTypes=[pybullet.JOINT_FIXED] * n,
            linkJointAxis=[[0, 0, 1]] * n,
            physicsClientId=c,
        )
        if body >= len(self._tags):
            grow = max(body + 1, 2 * len(self._tags))
            self._tags = np.pad(self._tags, ((0, grow - len(self._tags)), (0, 0)))
            self._ids = np.pad(self._ids, ((0, grow - len(self._ids)), (0, 0)))
        self._tags[body] = 0
        self._ids[body] = 0
        self._tags[body, 1:n + 1] = [b.tag for b in boxes]
        self._ids[body, 1:n + 1] = actor_id & 0xFFFF
        self.move(body, transform)
        return body

    def remove_body(self, body: int) -> None:
        pybullet.removeBody(body, physicsClientId=self.client)
        self._tags[body] = 0
        self._ids[body] = 0

    def move(self, body: int, transform: carla.Transform) -> None:
        loc, rot = transform.location, transform.rotation
        pybullet.resetBasePositionAndOrientation(
            body, to_bullet_position(loc.x, loc.y, loc.z), bullet_quaternion(rot.pitch, rot.yaw, rot.roll),
            physicsClientId=self.client,
        )

    def render(self, camera: carla.Transform, width: int, height: int, fov: float, weather: carla.WeatherParameters,
               frame: int) -> dict[str, np.ndarray]:
        """Images seen from a camera (world transform, CARLA axes): rgb HxWx3 uint8, depth HxW float32
        metres (planar, like CARLA's depth camera; 1000 on the sky), tag HxW uint8, actor id HxW uint16."""
        rot = rotation_matrix(camera.rotation.pitch, camera.rotation.yaw, camera.rotation.roll)
        rb = to_bullet_rotation(rot)
        eye = np.array(to_bullet_position(camera.location.x, camera.location.y, camera.location.z))
        view = pybullet.computeViewMatrix(eye.tolist(), (eye + rb[:, 0]).tolist(), rb[:, 2].tolist(), physicsClientId=self.client)
        vfov = 2 * math.degrees(math.atan(math.tan(math.radians(fov) / 2) * height / width))
        proj = pybullet.computeProjectionMatrixFOV(vfov, width / height, NEAR, FAR, physicsClientId=self.client)
        light = lighting(weather)
        _, _, rgba, zbuf, mask = pybullet.getCameraImage(
            width, height, view, proj,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
            lightDirection=light["direction"], lightColor=light["color"], lightDistance=100.0, shadow=0,
            lightAmbientCoeff=light["ambient"], lightDiffuseCoeff=light["diffuse"], lightSpecularCoeff=light["specular"],
            physicsClientId=self.client,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)
        zbuf = np.asarray(zbuf, dtype=np.float32).reshape(height, width)
        mask = np.asarray(mask, dtype=np.int64).reshape(height, width)
        sky = mask < 0
        body = np.where(sky, 0, mask & 0xFFFFFF)
        link = np.where(sky, 0, mask >> 24)
        tag = self._tags[body, link]
        tag[sky] = TAG["Sky"]
        ids = self._ids[body, link]
        ids[sky] = 0
        depth = (FAR * NEAR / (FAR - (FAR - NEAR) * zbuf.astype(np.float64))).astype(np.float32)
        depth[sky] = FAR
        np.minimum(depth, FAR, out=depth)
        rgb = apply_weather(rgba[..., :3], depth, tag, sky, weather, light, frame)
        return {"rgb": rgb, "depth": depth, "tag": tag, "id": ids}


# ---------------------------------------------------------------------------------------------
# Weather: light, sky, fog, wetness, rain
# ---------------------------------------------------------------------------------------------

def lighting(weather: carla.WeatherParameters) -> dict:
    """Light direction/colour/coefficients and sky colour for the weather's sun and clouds."""
    altitude = weather.sun_altitude_angle
    azimuth = weather.sun_azimuth_angle
    cloud = min(max(weather.cloudiness, 0.0), 100.0) / 100.0
    rain = min(max(weather.precipitation, 0.0), 100.0) / 100.0
    day = float(np.clip((altitude + 10.0) / 40.0, 0.0, 1.0))  # 0 at night, 1 from 30 degrees up
    low_sun = float(np.clip(1.0 - abs(altitude - 8.0) / 22.0, 0.0, 1.0)) * day  # warm light near the horizon
    alt = math.radians(max(altitude, 5.0))
    az = math.radians(azimuth)
    # direction towards the sun, CARLA axes then PyBullet's (y negated)
    direction = [math.cos(alt) * math.cos(az), -math.cos(alt) * math.sin(az), math.sin(alt)]
    colour = np.array([1.0, 1.0 - 0.25 * low_sun, 1.0 - 0.5 * low_sun])
    clear_sky = np.array([0.45, 0.66, 0.92]) * (1 - low_sun) + np.array([0.95, 0.6, 0.35]) * low_sun
    grey = np.array([0.68, 0.7, 0.73]) * (1 - 0.35 * rain)
    sky = (clear_sky * (1 - cloud) + grey * cloud) * (0.08 + 0.92 * day)
    night_glow = np.array([0.03, 0.04, 0.08]) * (1 - day)
    return {
        "direction": direction,
        "color": colour.tolist(),
        "ambient": 0.12 + 0.4 * day * (0.6 + 0.4 * cloud),
        "diffuse": (0.85 * (1 - 0.65 * cloud) * day) + 0.05,
        "specular": 0.05 + 0.4 * (1 - cloud) * day,
        "sky": np.clip(sky + night_glow, 0, 1),
        "day": day,
    }


def apply_weather(rgb: np.ndarray, depth: np.ndarray, tag: np.ndarray, sky: np.ndarray, weather: carla.WeatherParameters,
                  light: dict, frame: int) -> np.ndarray:
    """Sky colour, wet roads (darker, with a sheen of the sky), rain streaks and distance fog."""
    out = rgb.astype(np.float32) / 255.0
    out[sky] = light["sky"]
    wet = max(weather.wetness, weather.precipitation_deposits, 0.6 * weather.precipitation) / 100.0
    if wet > 0:
        road = np.isin(tag, _ROAD_TAGS)
        sheen = np.asarray(light["sky"], dtype=np.float32)
        out[road] = out[road] * (1 - 0.45 * wet) + sheen * 0.18 * wet
    rain = weather.precipitation / 100.0
    if rain > 0:
        h, w = depth.shape
        rng = np.random.default_rng(frame)
        n = int(rain * h * w / 250)
        ys = rng.integers(0, h, n)
        xs = rng.integers(0, w, n)
        streak = max(2, h // 40)
        for k in range(streak):
            yy = np.clip(ys + k, 0, h - 1)
            xx = np.clip(xs + k // 3, 0, w - 1)
            out[yy, xx] = out[yy, xx] * 0.6 + 0.4 * np.array([0.8, 0.82, 0.85], dtype=np.float32)
    density = weather.fog_density / 100.0 * 0.05 + rain * 0.006
    if density > 0:
        start = max(weather.fog_distance, 0.0)
        f = 1.0 - np.exp(-density * np.maximum(depth - start, 0.0))
        fog_colour = np.asarray(light["sky"], dtype=np.float32) * 0.6 + 0.4 * np.float32(0.75 * (0.1 + 0.9 * light["day"]))
        out = out * (1 - f[..., None]) + fog_colour * f[..., None]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# CARLA encodings
# ---------------------------------------------------------------------------------------------

def encode_rgb(rgb: np.ndarray) -> bytes:
    h, w, _ = rgb.shape
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., 0] = rgb[..., 2]
    out[..., 1] = rgb[..., 1]
    out[..., 2] = rgb[..., 0]
    out[..., 3] = 255
    return out.tobytes()


def encode_depth(depth: np.ndarray) -> bytes:
    """BGRA with metres = 1000 * (R + G*256 + B*256^2) / (256^3 - 1)."""
    v = np.round(np.clip(depth.astype(np.float64) / FAR, 0, 1) * (256**3 - 1)).astype(np.uint32)
    h, w = depth.shape
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., 2] = v & 0xFF
    out[..., 1] = (v >> 8) & 0xFF
    out[..., 0] = (v >> 16) & 0xFF
    out[..., 3] = 255
    return out.tobytes()


def encode_semantic(tag: np.ndarray) -> bytes:
    """BGRA with the tag in R."""
    h, w = tag.shape
    out = np.zeros((h, w, 4), dtype=np.uint8)
    out[..., 2] = tag
    out[..., 3] = 255
    return out.tobytes()


def encode_instance(tag: np.ndarray, ids: np.ndarray) -> bytes:
    """BGRA with the tag in R and the actor id in G (low byte) + 256 * B (high byte)."""
    h, w = tag.shape
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., 2] = tag
    out[..., 1] = ids & 0xFF
    out[..., 0] = (ids >> 8) & 0xFF
    out[..., 3] = 255
    return out.tobytes()


def camera_transform(parent: carla.Transform, relative: carla.Transform) -> carla.Transform:
    """World transform of a camera attached to a parent (rigid attachment)."""
    m = np.array(parent.get_matrix()) @ np.array(relative.get_matrix())
    rot = m[:3, :3]
    pitch = math.degrees(math.asin(np.clip(rot[2, 0], -1, 1)))
    yaw = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    roll = math.degrees(math.atan2(-rot[2, 1], rot[2, 2]))
    return carla.Transform(carla.Location(*m[:3, 3].tolist()), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))

