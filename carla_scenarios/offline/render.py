"""Rendering of the offline world: PyBullet's CPU (TINY) renderer draws the 3D boxes (buildings, trees,
poles, signs, vehicles, walkers, props) in one `getCameraImage` call per rig, giving colour, z-buffer
and a body/link mask; the flat ground (terrain, roads, lane markings, sidewalks) is ray-cast in numpy
against a raster of the town's ground plan and fills the pixels no box covers. From these come the RGB
(lit by the weather, fogged, wet), depth (metres), CARLA semantic tag and actor id images, and CARLA's
BGRA encodings.

Why the ground is not drawn by PyBullet: the TINY renderer shades every pixel of every triangle's screen
rectangle at a high per-pixel cost, and the ground planes cover most of the image (measured here: the
ground took about two thirds of a 640x360 frame). Static boxes are merged into multi-link bodies (one
fixed link per box) because PyBullet's per-body cost dominates its per-triangle cost.
"""

from __future__ import annotations

import math

import carla
import cv2
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
        self.ground = Ground([b for b in boxes if b.tag in GROUND_TAGS])
        solid = [b for b in boxes if b.tag not in GROUND_TAGS]
        for start in range(0, len(solid), LINKS_PER_BODY):
            self.add_body(solid[start:start + LINKS_PER_BODY], 0, carla.Transform())
        self._rays: dict[tuple, np.ndarray] = {}

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
        visuals = [self._visual(b) for b in boxes]
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

    def _visual(self, b: Box) -> int:
        return pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=list(b.half), rgbaColor=list(b.rgba),
                                          specularColor=[0.05, 0.05, 0.05], physicsClientId=self.client)

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
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3].copy()
        zbuf = np.asarray(zbuf, dtype=np.float32).reshape(height, width)
        mask = np.asarray(mask, dtype=np.int32).reshape(height, width)
        background = mask < 0
        body = mask & 0xFFFFFF
        link = mask >> 24
        body[background] = 0
        link[background] = 0
        tag = self._tags[body, link]
        ids = self._ids[body, link]
        depth = np.float32(FAR * NEAR) / (np.float32(FAR) - np.float32(FAR - NEAR) * zbuf)
        # the ground and the sky fill what no box covers
        flat = np.flatnonzero(background.ravel())
        cam_rays = self._camera_rays(width, height, fov)[flat]
        rot32 = rot.astype(np.float32)
        # elementwise rather than a matrix product: BLAS threads stall on a busy machine
        rays = cam_rays[:, :1] * rot32[:, 0] + cam_rays[:, 1:2] * rot32[:, 1] + cam_rays[:, 2:] * rot32[:, 2]
        g_depth, g_tag, g_rgb = self.ground.cast(camera.location, rays, light)
        depth.ravel()[flat] = g_depth
        tag.ravel()[flat] = g_tag
        rgb.reshape(-1, 3)[flat] = g_rgb
        sky = depth >= FAR
        depth[sky] = FAR
        tag[sky] = TAG["Sky"]
        rgb = apply_weather(rgb, depth, tag, sky, weather, light, frame)
        return {"rgb": rgb, "depth": depth, "tag": tag, "id": ids}

    def _camera_rays(self, width: int, height: int, fov: float) -> np.ndarray:
        """Per pixel, the ray (forward component 1, so a hit's ray parameter is its planar depth) in the
        camera's CARLA axes (x forward, y right, z up), shape (H*W, 3)."""
        key = (width, height, fov)
        if key not in self._rays:
            f = width / (2 * math.tan(math.radians(fov) / 2))
            u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
            rays = np.stack([np.ones_like(u), (u - width / 2) / f, -(v - height / 2) / f], -1)
            self._rays[key] = rays.reshape(-1, 3).astype(np.float32)
        return self._rays[key]


GROUND_TAGS = (TAG["Terrain"], TAG["Roads"], TAG["SideWalks"], TAG["RoadLine"])
GROUND_RES = 0.125  # metres per ground-plan cell


class Ground:
    """The town's flat ground as a raster of tags and colours (terrain everywhere outside it), with the
    sidewalks raised to their top surface."""

    def __init__(self, boxes: list[Box]) -> None:
        terrain = [b for b in boxes if b.tag == TAG["Terrain"]]
        self.terrain_rgb = np.array(terrain[0].rgba[:3] if terrain else (0.4, 0.45, 0.3), dtype=np.float32)
        painted = [b for b in boxes if b.tag != TAG["Terrain"]]
        if painted:
            lo = np.min([np.subtract(b.center[:2], np.hypot(*b.half[:2])) for b in painted], axis=0) - 5
            hi = np.max([np.add(b.center[:2], np.hypot(*b.half[:2])) for b in painted], axis=0) + 5
        else:
            lo, hi = np.zeros(2), np.full(2, GROUND_RES)
        self.origin = lo
        nx, ny = (np.ceil((hi - lo) / GROUND_RES)).astype(int)
        self.tag = np.full((ny, nx), TAG["Terrain"], dtype=np.uint8)
        self.rgb = np.empty((ny, nx, 3), dtype=np.uint8)
        self.rgb[:] = np.round(self.terrain_rgb * 255).astype(np.uint8)
        self.height = np.zeros((ny, nx), dtype=np.float32)
        order = {TAG["Roads"]: 0, TAG["SideWalks"]: 1, TAG["RoadLine"]: 2}
        for b in sorted(painted, key=lambda b: order[b.tag]):
            c, s = math.cos(math.radians(b.yaw)), math.sin(math.radians(b.yaw))
            hx, hy = b.half[:2]
            corners = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
            world = corners @ np.array([[c, s], [-s, c]]) + np.array(b.center[:2])
            cells = np.round((world - lo) / GROUND_RES * 16).astype(np.int32)  # 4 bits of sub-cell precision
            colour = tuple(int(round(255 * v)) for v in b.rgba[:3])
            cv2.fillConvexPoly(self.tag, cells, int(b.tag), lineType=cv2.LINE_8, shift=4)
            cv2.fillConvexPoly(self.rgb, cells, colour, lineType=cv2.LINE_8, shift=4)
            if b.tag == TAG["SideWalks"]:
                cv2.fillConvexPoly(self.height, cells, float(b.center[2] + b.half[2]), lineType=cv2.LINE_8, shift=4)
        # a fixed grain keeps large surfaces from looking like flat paint
        grain = np.random.default_rng(7).integers(-6, 7, size=(ny, nx, 1), dtype=np.int16)
        self.rgb = np.clip(self.rgb.astype(np.int16) + grain, 0, 255).astype(np.uint8)
        self.raised = float(self.height.max())
        self.terrain_u8 = np.round(self.terrain_rgb * 255).astype(np.uint8)

    def cast(self, eye: carla.Location, rays: np.ndarray, light: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Planar depth (FAR where the ray never meets the ground), tag and lit colour where rays from the
        eye meet the ground: first the raised sidewalk tops, else the ground plane z = 0."""
        n = len(rays)
        depth = np.full(n, FAR, dtype=np.float32)
        tag = np.full(n, TAG["Sky"], dtype=np.uint8)
        rgb = np.zeros((n, 3), dtype=np.uint8)
        down = np.flatnonzero(rays[:, 2] < -1e-6)
        if len(down) == 0 or eye.z <= 0:
            return depth, tag, rgb
        r = rays[down]
        t = np.float32(-eye.z) / r[:, 2]
        if self.raised > 0 and eye.z > self.raised:
            t_top = np.float32(self.raised - eye.z) / r[:, 2]
            cell, inside = self._cells(eye, r, t_top)
            on_top = inside & (np.take(self.height.ravel(), cell) >= self.raised - 1e-3)
            t[on_top] = t_top[on_top]
        cell, inside = self._cells(eye, r, t)
        g_tag = np.take(self.tag.ravel(), cell)
        g_rgb = np.take(self.rgb.reshape(-1, 3), cell, axis=0)
        outside = ~inside
        g_tag[outside] = TAG["Terrain"]
        g_rgb[outside] = self.terrain_u8
        lit = ((light["ambient"] + light["diffuse"] * max(light["direction"][2], 0.0)) * np.asarray(light["color"]))
        g_rgb = np.minimum(g_rgb * lit.astype(np.float32), 255).astype(np.uint8)
        near = t < FAR
        depth[down] = np.minimum(t, FAR)
        tag[down] = np.where(near, g_tag, TAG["Sky"])
        rgb[down] = g_rgb
        return depth, tag, rgb

    def _cells(self, eye: carla.Location, rays: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat raster index of each hit point and whether it lies on the raster."""
        ny, nx = self.tag.shape
        fx = (np.float32(eye.x - self.origin[0]) + t * rays[:, 0]) * np.float32(1 / GROUND_RES)
        fy = (np.float32(eye.y - self.origin[1]) + t * rays[:, 1]) * np.float32(1 / GROUND_RES)
        inside = (fx >= 0) & (fx < nx) & (fy >= 0) & (fy < ny)
        ix = fx.astype(np.int32)
        iy = fy.astype(np.int32)
        cell = np.where(inside, iy * nx + ix, 0)
        return cell, inside


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
    low_sun = float(np.clip((30.0 - altitude) / 20.0, 0.0, 1.0)) * float(altitude > -5.0)  # warm light, low sun
    alt = math.radians(max(altitude, 5.0))
    az = math.radians(azimuth)
    # direction towards the sun, CARLA axes then PyBullet's (y negated)
    direction = [math.cos(alt) * math.cos(az), -math.cos(alt) * math.sin(az), math.sin(alt)]
    colour = np.array([1.0, 1.0 - 0.25 * low_sun, 1.0 - 0.5 * low_sun])
    clear_sky = np.array([0.45, 0.66, 0.92]) * (1 - low_sun) + np.array([1.0, 0.55, 0.3]) * low_sun
    grey = np.array([0.68, 0.7, 0.73]) * (1 - 0.35 * rain)
    sky = (clear_sky * (1 - cloud) + grey * cloud) * (0.08 + 0.92 * max(day, 0.8 * low_sun))
    night_glow = np.array([0.03, 0.04, 0.08]) * (1 - day)
    return {
        "direction": direction,
        "color": colour.tolist(),
        "ambient": 0.1 + 0.4 * day * (0.8 + 0.2 * cloud),
        "diffuse": (0.85 * (1 - 0.65 * cloud) * day) + 0.05,
        "specular": 0.05 + 0.4 * (1 - cloud) * day,
        "sky": np.clip(sky + night_glow, 0, 1),
        "day": day,
    }


def apply_weather(rgb: np.ndarray, depth: np.ndarray, tag: np.ndarray, sky: np.ndarray, weather: carla.WeatherParameters,
                  light: dict, frame: int) -> np.ndarray:
    """Sky colour, wet roads (darker, with a sheen of the sky), rain streaks and distance fog."""
    out = rgb.astype(np.float32)
    sky_rgb = np.asarray(light["sky"], dtype=np.float32) * 255
    out[sky] = sky_rgb
    wet = max(weather.wetness, weather.precipitation_deposits, 0.6 * weather.precipitation) / 100.0
    if wet > 0:
        road = (tag == TAG["Roads"]) | (tag == TAG["RoadLine"])
        out[road] = out[road] * np.float32(1 - 0.45 * wet) + sky_rgb * np.float32(0.18 * wet)
    rain = weather.precipitation / 100.0
    if rain > 0:
        h, w = depth.shape
        rng = np.random.default_rng(frame)
        n = int(rain * h * w / 250)
        ys = rng.integers(0, h, n)
        xs = rng.integers(0, w, n)
        streak = max(2, h // 40)
        drop = np.array([0.8, 0.82, 0.85], dtype=np.float32) * 255
        for k in range(streak):
            yy = np.clip(ys + k, 0, h - 1)
            xx = np.clip(xs + k // 3, 0, w - 1)
            out[yy, xx] = out[yy, xx] * np.float32(0.6) + np.float32(0.4) * drop
    density = weather.fog_density / 100.0 * 0.05 + rain * 0.006
    if density > 0:
        start = max(weather.fog_distance, 0.0)
        # fog saturates by 200 m, so a light haze tints the sky instead of replacing it
        path = np.clip(depth - np.float32(start), np.float32(0), np.float32(200))
        keep = np.exp(np.float32(-density) * path)
        fog = sky_rgb * np.float32(0.6) + np.float32(0.4 * 255 * 0.75 * (0.1 + 0.9 * light["day"]))
        out -= fog
        out *= keep[..., None]
        out += fog
    np.clip(out, 0, 255, out=out)
    out += np.float32(0.5)
    return out.astype(np.uint8)


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

