"""Rendering of the offline world: PyBullet's CPU (TINY) renderer draws the 3D boxes (buildings, trees,
poles, signs, vehicles, walkers, props) in one `getCameraImage` call per rig, giving colour, z-buffer
and a body/link mask; the flat ground (terrain, roads, lane markings, sidewalks) is ray-cast in numpy
against a raster of the town's ground plan and fills the pixels no box covers. From these come the RGB
(lit by the weather, fogged, wet), depth (metres), CARLA semantic tag and actor id images, and CARLA's
BGRA encodings.

The boxes that are large on screen (facades beside the road, a bus just ahead, the ego's own body
under the camera) are drawn instead by `Raster`, a numpy/OpenCV z-buffer rasteriser, and merged by depth
with PyBullet's image: the TINY renderer's cost grows with each triangle's screen area, hidden or not
(measured: about 20 ms for one face that fills a 640x360 image, under 1 ms here), so those few boxes
cost most of its time. Tags, ids and depth are PyBullet's to the pixel but at edges; the colour is its
shading (flat faces), the facades' windows mapped by homography.

Why the ground is not drawn by PyBullet: the TINY renderer shades every pixel of every triangle's screen
rectangle at a high per-pixel cost, and the ground planes cover most of the image (measured here: the
ground took about two thirds of a 640x360 frame). Static boxes are merged into multi-link bodies (one
fixed link per box) because PyBullet's per-body cost dominates its per-triangle cost.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import carla
import cv2
import numpy as np

from vca_data.labels import TAG

from ._quiet import quiet_fds

with quiet_fds():  # PyBullet prints a build-time banner on import; the CLI's first line is its own
    import pybullet

from .shapes import (
    Box,
    box_corners,
    bullet_quaternion,
    rotation_matrix,
    to_bullet_position,
    to_bullet_rotation,
)

NEAR = 0.1
FAR = 1000.0  # CARLA's depth camera saturates at 1000 m; the sky lies there
LINKS_PER_BODY = 120
_MAX_LINKS = 256
OCCLUDER_VOLUME = 2.0  # m^3: an actor's largest box from this size up hides the buildings behind it
# boxes whose projected bounding rectangle covers at least this fraction of the image are drawn by `Raster`
# instead of PyBullet (buildings, and the actors' parts with a face of at least HYBRID_FACE square metres)
HYBRID_AREA = 0.01
HYBRID_FACE = 0.5
GLASS_RGB = (55, 60, 70)  # the facade texture's windows


class Renderer:
    """A PyBullet DIRECT connection holding the town's boxes and the actors' bodies, with lookup tables
    from (body, link) to CARLA semantic tag and actor id."""

    def __init__(self, boxes: list[Box]) -> None:
        self.client = pybullet.connect(pybullet.DIRECT)
        self._textures: dict[tuple[int, int], int] = {}
        self._texture_dir: str | None = None
        self._tags = np.zeros((64, _MAX_LINKS), dtype=np.uint8)
        self._ids = np.zeros((64, _MAX_LINKS), dtype=np.uint16)
        # body -> corners (8x4, homogeneous, body frame) of an actor's largest box, and their world corners
        self._occluder_corners: dict[int, np.ndarray] = {}
        self._occluder_world: dict[int, np.ndarray] = {}
        # the actors' large parts, drawn by `Raster` when large on screen: body -> links, their corners in
        # the body frame (Kx8x4, homogeneous) and looks; their world corners; whether PyBullet hides them
        self._actor_parts: dict[int, tuple[list[int], np.ndarray, list[tuple]]] = {}
        self._actor_world: dict[int, np.ndarray] = {}
        self._actor_hidden: dict[int, np.ndarray] = {}
        self.ground = Ground([b for b in boxes if b.tag in GROUND_TAGS])
        solid = [b for b in boxes if b.tag not in GROUND_TAGS]
        occluders = []
        # like 0.9.16's engine-internal ids, scenery pixels carry arbitrary non-zero 16-bit instance ids
        scenery_ids = np.random.default_rng(len(solid)).integers(1, 1 << 16, len(solid))
        for start in range(0, len(solid), LINKS_PER_BODY):
            chunk = solid[start:start + LINKS_PER_BODY]
            body = self.add_body(chunk, 0, carla.Transform())
            self._ids[body, 1:len(chunk) + 1] = scenery_ids[start:start + len(chunk)]
            occluders.extend((body, link, b) for link, b in enumerate(chunk) if b.tag == TAG["Building"])
        self.occlusion = Occlusion(occluders)
        # the buildings (in the occlusion test's order), drawn by `Raster` when large on screen
        self.hybrid_area: float | None = HYBRID_AREA  # None: PyBullet draws every box
        self.raster = Raster()
        self._static_links = [(body, link) for body, link, _ in occluders]
        self._static_looks = [(b.rgba, b.tag, int(self._ids[body, link + 1]), b.windows) for body, link, b in occluders]

    def close(self) -> None:
        if self.client is not None and pybullet.isConnected(self.client):
            pybullet.disconnect(self.client)
        self.client = None
        if self._texture_dir is not None:
            shutil.rmtree(self._texture_dir, ignore_errors=True)
            self._texture_dir = None

    def add_body(self, boxes: list[Box], actor_id: int, transform: carla.Transform) -> int:
        """A body made of the boxes (in the transform's frame, CARLA axes); pixels carry each box's tag and
        the actor id (scenery gets its own ids after this)."""
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
        for link, b in enumerate(boxes):
            if b.windows is not None:
                pybullet.changeVisualShape(body, link, textureUniqueId=self._texture(b.windows), physicsClientId=c)
        largest = max(boxes, key=lambda b: b.half[0] * b.half[1] * b.half[2])
        if actor_id and 8 * largest.half[0] * largest.half[1] * largest.half[2] >= OCCLUDER_VOLUME:
            self._occluder_corners[body] = np.hstack([box_corners(largest), np.ones((8, 1))])
        if actor_id:
            parts = [link for link, b in enumerate(boxes) if 4 * max(b.half[0] * b.half[1], b.half[0] * b.half[2],
                                                                      b.half[1] * b.half[2]) >= HYBRID_FACE]
            if parts:
                local = np.array([np.hstack([box_corners(boxes[k]), np.ones((8, 1))]) for k in parts])
                looks = [(boxes[k].rgba, boxes[k].tag, actor_id & 0xFFFF, boxes[k].windows) for k in parts]
                self._actor_parts[body] = (parts, local, looks)
                self._actor_hidden[body] = np.zeros(len(parts), dtype=bool)
        self.move(body, transform)
        return body

    def _texture(self, windows: tuple[int, int]) -> int:
        """A facade texture with a grid of windows, white walls (the box colour tints them). PyBullet maps
        each face of a box onto one cell of a 4x4 atlas, so the pattern is repeated in all 16 cells."""
        if windows not in self._textures:
            cols, rows = windows
            cell = 64
            tile = np.full((cell, cell, 3), 255, dtype=np.uint8)
            for i in range(rows):
                for j in range(cols):
                    y0, y1 = int((i + 0.25) * cell / rows), int((i + 0.75) * cell / rows)
                    x0, x1 = int((j + 0.2) * cell / cols), int((j + 0.8) * cell / cols)
                    tile[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = (70, 60, 55)  # BGR, dark glass
            if self._texture_dir is None:
                self._texture_dir = tempfile.mkdtemp(prefix="vca-offline-")
            path = Path(self._texture_dir) / f"facade_{cols}x{rows}.png"
            cv2.imwrite(str(path), np.tile(tile, (4, 4, 1)))
            self._textures[windows] = pybullet.loadTexture(str(path), physicsClientId=self.client)
        return self._textures[windows]

    def _visual(self, b: Box) -> int:
        return pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=list(b.half), rgbaColor=list(b.rgba),
                                          specularColor=[0.05, 0.05, 0.05], physicsClientId=self.client)

    def remove_body(self, body: int) -> None:
        pybullet.removeBody(body, physicsClientId=self.client)
        self._tags[body] = 0
        self._ids[body] = 0
        self._occluder_corners.pop(body, None)
        self._occluder_world.pop(body, None)
        self._actor_parts.pop(body, None)
        self._actor_world.pop(body, None)
        self._actor_hidden.pop(body, None)

    def move(self, body: int, transform: carla.Transform) -> None:
        loc, rot = transform.location, transform.rotation
        pybullet.resetBasePositionAndOrientation(
            body, to_bullet_position(loc.x, loc.y, loc.z), bullet_quaternion(rot.pitch, rot.yaw, rot.roll),
            physicsClientId=self.client,
        )
        if body in self._occluder_corners or body in self._actor_parts:
            matrix = np.array(transform.get_matrix()).T
            if body in self._occluder_corners:
                self._occluder_world[body] = (self._occluder_corners[body] @ matrix)[:, :3]
            if body in self._actor_parts:
                self._actor_world[body] = (self._actor_parts[body][1] @ matrix)[..., :3]

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
        actors = np.array(list(self._occluder_world.values())).reshape(-1, 8, 3)
        show = self.occlusion.cull(camera.location, rot, width, height, fov, actors)
        drawn = self._hybrid(show, camera.location, rot, width, height, fov, light)
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
        # mask = body + ((link + 1) << 24): rotated by a byte it is the index body * _MAX_LINKS + link + 1
        # of the (body, link) tables, _MAX_LINKS being 256
        key = mask.view(np.uint32)
        lut = (key << 8) | (key >> 24)
        lut[background] = 0
        tag = np.take(self._tags.ravel(), lut)
        ids = np.take(self._ids.ravel(), lut)
        depth = np.float32(FAR * NEAR) / (np.float32(FAR) - np.float32(FAR - NEAR) * zbuf)
        if drawn is not None:  # the large boxes, nearer than what PyBullet drew or where it drew nothing
            inv, code, palette = drawn
            own = np.divide(np.float32(1), inv, out=np.full_like(inv, np.inf), where=inv > 0)
            near = own < depth  # PyBullet's background lies at FAR
            np.copyto(depth, own, where=near)
            label = np.take(palette["label"], code).view(np.uint16).reshape(height, width, 2)  # tag, id
            np.copyto(tag, label[..., 0], where=near, casting="unsafe")
            np.copyto(ids, label[..., 1], where=near)
            colour = np.take(palette["rgb"], code).view(np.uint8).reshape(height, width, 4)
            rgb = cv2.copyTo(cv2.cvtColor(colour, cv2.COLOR_RGBA2RGB), near.view(np.uint8), rgb)
            background &= ~near
        # the ground and the sky fill what no box covers
        g_depth, g_tag, g_rgb = self.ground.render(camera.location, rot, width, height, fov, light)
        np.copyto(depth, g_depth, where=background)
        np.copyto(tag, g_tag, where=background)
        rgb = cv2.copyTo(g_rgb, background.view(np.uint8), rgb)  # np.copyto is slow on three channels
        rgb = apply_weather(rgb, depth, tag, tag == TAG["Sky"], weather, light, frame)
        return {"rgb": rgb, "depth": depth, "tag": tag, "id": ids}

    def _hybrid(self, show: np.ndarray, eye: carla.Location, rot: np.ndarray, width: int, height: int, fov: float,
                light: dict) -> tuple[np.ndarray, np.ndarray, dict] | None:
        """Take the boxes that are large on screen from PyBullet (alpha 0, which the TINY renderer skips;
        the others get their colour back) and draw them with `Raster`; `show` is the occlusion test's
        verdict on the buildings (all shown when it has none). Returns Raster.draw's images, or None."""
        n = len(self._static_links)
        if len(show) != n:
            show = np.ones(n, dtype=bool)
        bodies = [body for body in self._actor_parts if body in self._actor_world]
        actor_corners = (np.concatenate([self._actor_world[body] for body in bodies]) if bodies
                         else np.zeros((0, 8, 3)))
        if self.hybrid_area is None:
            large = np.zeros(n + len(actor_corners), dtype=bool)
        else:
            static_corners = self.occlusion.corners
            corners = np.concatenate([static_corners, actor_corners]) if len(actor_corners) else static_corners
            large = Raster.large(corners.reshape(-1, 8, 3), eye, rot, width, height, fov, self.hybrid_area)
        static = large[:n] & show
        want = show & ~large[:n]
        shown = self.occlusion.shown
        for i in np.flatnonzero(want != shown):
            body, link = self._static_links[i]
            rgba = self.occlusion.rgba[i] if want[i] else self.occlusion.rgba[i][:3] + [0.0]
            pybullet.changeVisualShape(body, link, rgbaColor=rgba, physicsClientId=self.client)
        self.occlusion.shown = want
        pick = [self.occlusion.corners[static]]
        looks = [self._static_looks[i] for i in np.flatnonzero(static)]
        start = n
        for body in bodies:
            links, _, body_looks = self._actor_parts[body]
            mine = large[start:start + len(links)]
            start += len(links)
            hidden = self._actor_hidden[body]
            for k in np.flatnonzero(mine != hidden):
                rgba = list(body_looks[k][0][:3]) + [0.0 if mine[k] else float(body_looks[k][0][3])]
                pybullet.changeVisualShape(body, links[k], rgbaColor=rgba, physicsClientId=self.client)
            self._actor_hidden[body] = mine
            if mine.any():
                pick.append(self._actor_world[body][mine])
                looks.extend(body_looks[k] for k in np.flatnonzero(mine))
        if not looks:
            return None
        return self.raster.draw(np.concatenate(pick), looks, eye, rot, width, height, fov, light)


class Occlusion:
    """Hides buildings that other buildings or large actors hide, before PyBullet draws: the TINY renderer
    pays for every covered pixel of every triangle, even one the depth test then rejects (measured: a
    hidden full-screen layer costs about a third of a visible one), streets of tall buildings stack many
    such layers, and a bus just ahead hides most of the street.

    Conservative test on a quarter-resolution depth buffer, boxes taken nearest first: a building is
    hidden when its silhouette, grown by one cell, lies wholly on cells that nearer boxes cover (cell
    centre inside their silhouette) at a depth below its own nearest point; a visible box then covers
    its cells at its farthest point's depth (a ray through a convex box meets it no farther). The
    renderer gives hidden links alpha 0, which the TINY renderer skips; `shown` is what PyBullet shows
    (neither hidden nor drawn by `Raster`)."""

    SCALE = 4

    def __init__(self, buildings: list[tuple[int, int, Box]]) -> None:
        self.links = [(body, link) for body, link, _ in buildings]
        self.rgba = [list(b.rgba) for _, _, b in buildings]
        self.corners = np.array([box_corners(b) for _, _, b in buildings]).reshape(-1, 8, 3)
        self.shown = np.ones(len(buildings), dtype=bool)

    def cull(self, eye: carla.Location, rot: np.ndarray, width: int, height: int, fov: float,
             actors: np.ndarray) -> np.ndarray:
        """Which buildings this camera may see (the others are hidden: the renderer gives them alpha 0);
        `actors` (Nx8x3, world corners) are the large boxes of actors (a bus right ahead hides whole
        blocks), occluders that are themselves always drawn. All shown when the test has no buildings."""
        if not self.links:
            return np.ones(len(self.shown), dtype=bool)
        w, h = max(1, width // self.SCALE), max(1, height // self.SCALE)
        f = w / (2 * math.tan(math.radians(fov) / 2))
        n = len(self.links)
        corners = np.concatenate([self.corners, actors]) if len(actors) else self.corners
        cam = (corners - np.array([eye.x, eye.y, eye.z])) @ rot  # camera axes: x forward, y right, z up
        depth = cam[..., 0]
        near, far = depth.min(axis=1), depth.max(axis=1)
        safe = np.maximum(depth, NEAR)
        u = w / 2 + f * cam[..., 1] / safe
        v = h / 2 - f * cam[..., 2] / safe
        straddles = near < NEAR  # partly behind the camera: drawn, and never an occluder
        outside = (far < NEAR) | (u.max(axis=1) < 0) | (u.min(axis=1) > w) | (v.max(axis=1) < 0) | (v.min(axis=1) > h)
        show = ~outside[:n]
        buffer = np.full((h + 2, w + 2), np.inf, dtype=np.float32)  # one cell of margin all round
        scratch = np.zeros((h + 2, w + 2), dtype=np.uint8)
        for i in np.argsort(near):
            if outside[i] or straddles[i]:
                continue
            pts = np.round(np.stack([u[i], v[i]], 1) + 1).astype(np.int32)
            pts = np.clip(pts, -4 * w, 5 * w)
            hull = cv2.convexHull(pts)
            x0, y0 = np.clip(pts.min(axis=0) - 1, 0, None)
            x1, y1 = np.minimum(pts.max(axis=0) + 2, [w + 2, h + 2])
            if x1 <= x0 or y1 <= y0:
                if i < n:
                    show[i] = False
                continue
            cv2.fillConvexPoly(scratch, hull, 1)
            cv2.polylines(scratch, [hull], True, 1, thickness=3)  # grown by a cell for the test
            region = scratch[y0:y1, x0:x1].astype(bool)
            visible = bool((buffer[y0:y1, x0:x1][region] > near[i]).any())
            scratch[y0:y1, x0:x1] = 0
            if i < n:
                show[i] = visible
            if visible:
                cv2.fillConvexPoly(scratch, hull, 1)
                cover = scratch[y0:y1, x0:x1].astype(bool)
                patch = buffer[y0:y1, x0:x1]
                patch[cover] = np.minimum(patch[cover], far[i])
                scratch[y0:y1, x0:x1] = 0
        return show


# corner index 4 * (x > 0) + 2 * (y > 0) + (z > 0) in a box's frame, as `box_corners` orders them
_FACES = np.array([[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]])
# per face, the corners at the texture's origin, along its rows and down its columns: storeys run level
_TEXTURE_AXES = np.array([[1, 3, 0], [5, 7, 4], [1, 5, 0], [3, 7, 2], [0, 4, 2], [1, 5, 3]])
# PyBullet's pixel (i, j) samples the image plane at (i + PIXEL_OFFSET[0], j + PIXEL_OFFSET[1]) from its corner
PIXEL_OFFSET = (0.0, 1.0)
FILL_INSET = 0.5  # pixels


class Raster:
    """A z-buffer rasteriser for the boxes that are large on screen, where PyBullet's TINY renderer is
    slowest: it pays for every pixel of each triangle's screen rectangle, hidden or not (measured: about
    20 ms for one face filling a 640x360 image, where this takes under 1 ms).

    Each face of a box that faces the camera is a convex polygon: clipped against the near plane,
    projected and filled (OpenCV, sub-pixel vertices); a plane's inverse depth is affine in the image,
    so the depth test needs one add per pixel. Faces are lit once (flat, as PyBullet's boxes are) with
    TINY's shading; a facade's windows come from its texture tile mapped onto the face by a homography
    (one window grid per face, like PyBullet's atlas cell)."""

    CELL = 64

    def __init__(self) -> None:
        self._tiles: dict[tuple[int, int], np.ndarray] = {}

    def _tile(self, windows: tuple[int, int]) -> np.ndarray:
        """1 on the windows of the facade texture (`Renderer._texture`'s pattern), 0 on the walls."""
        if windows not in self._tiles:
            cols, rows = windows
            cell = self.CELL
            tile = np.zeros((cell, cell), dtype=np.uint8)
            for i in range(rows):
                for j in range(cols):
                    y0, y1 = int((i + 0.25) * cell / rows), int((i + 0.75) * cell / rows)
                    x0, x1 = int((j + 0.2) * cell / cols), int((j + 0.8) * cell / cols)
                    tile[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1
            self._tiles[windows] = tile
        return self._tiles[windows]

    @staticmethod
    def large(corners: np.ndarray, eye: carla.Location, rot: np.ndarray, width: int, height: int, fov: float,
              area: float) -> np.ndarray:
        """Which boxes (Nx8x3 world corners) have a projected bounding rectangle, clipped to the image,
        of at least `area` of it (corners behind the near plane are pulled onto it: a box around the
        camera counts as large)."""
        if len(corners) == 0:
            return np.zeros(0, dtype=bool)
        f = width / (2 * math.tan(math.radians(fov) / 2))
        cam = (corners - np.array([eye.x, eye.y, eye.z])) @ rot
        depth = cam[..., 0]
        safe = np.maximum(depth, NEAR)
        u = f * cam[..., 1] / safe
        v = f * cam[..., 2] / safe
        du = np.clip(u.max(axis=1), -width / 2, width / 2) - np.clip(u.min(axis=1), -width / 2, width / 2)
        dv = np.clip(v.max(axis=1), -height / 2, height / 2) - np.clip(v.min(axis=1), -height / 2, height / 2)
        return (depth.max(axis=1) > NEAR) & (du * dv >= area * width * height)

    def draw(self, corners: np.ndarray, looks: list[tuple], eye: carla.Location, rot: np.ndarray, width: int,
             height: int, fov: float, light: dict) -> tuple[np.ndarray, np.ndarray, dict]:
        """Draw boxes (Nx8x3 world corners, CARLA axes; looks: (rgba, tag, id, windows) each) seen from a
        camera at `eye` with world-from-camera rotation `rot`. Returns the inverse planar depth per pixel
        (0 where no box), a palette code per pixel and the palettes the codes index: "rgb" (RGBA bytes as
        uint32) and "label" (tag and id as two uint16, as uint32)."""
        f = width / (2 * math.tan(math.radians(fov) / 2))
        cx, cy = width / 2 - PIXEL_OFFSET[0], height / 2 - PIXEL_OFFSET[1]  # image plane -> OpenCV pixel coordinates
        inv = np.zeros((height, width), dtype=np.float32)
        code = np.zeros((height, width), dtype=np.uint16)
        cam = (corners - np.array([eye.x, eye.y, eye.z])) @ rot  # camera axes: x forward, y right, z up
        quads = cam[:, _FACES]  # N x 6 faces x 4 corners x 3
        centres = quads.mean(axis=2)
        normals = centres - cam.mean(axis=1)[:, None]
        normals /= np.maximum(np.linalg.norm(normals, axis=2, keepdims=True), 1e-9)
        offsets = np.sum(normals * centres, axis=2)  # plane: normal . p = offset; the camera sees a face with offset < 0
        # TINY's flat shading (world normals, PyBullet axes): ambient + (diffuse n.l + specular r_z^2) * light colour
        world = normals @ rot.T * np.array([1.0, -1.0, 1.0])
        sun = np.asarray(light["direction"], dtype=float)
        sun = sun / np.linalg.norm(sun)
        lambert = world @ sun
        reflect_z = 2 * lambert * world[..., 2] - sun[2]
        lit = light["diffuse"] * np.maximum(lambert, 0) + light["specular"] * np.maximum(reflect_z, 0) ** 2
        shade = light["ambient"] + lit[..., None] * np.asarray(light["color"])  # N x 6 x 3
        rgb_palette = [np.zeros(3), np.zeros(3)]
        tag_palette = [0, 0]
        id_palette = [0, 0]
        # inverse depth at pixel (i, j): (n0 + n1 (i - cx) / f - n2 (j - cy) / f) / offset
        cols = np.arange(width, dtype=np.float64) - cx
        rows = np.arange(height, dtype=np.float64) - cy
        bound = np.array([[-2, -2], [width + 1, -2], [width + 1, height + 1], [-2, height + 1]], dtype=np.float32)
        for i, k in zip(*np.nonzero(offsets < -1e-6), strict=True):
            poly = quads[i, k]
            if poly[:, 0].min() < NEAR:
                poly = _clip_near(poly)
                if len(poly) < 3:
                    continue
            pts = np.stack([cx + f * poly[:, 1] / poly[:, 0], cy - f * poly[:, 2] / poly[:, 0]], 1)
            if np.abs(pts).max() > 4 * (width + height):  # keep OpenCV's fixed-point coordinates small
                _, clipped = cv2.intersectConvexConvex(pts.astype(np.float32), bound)
                if clipped is None or len(clipped) < 3:
                    continue
                pts = clipped.reshape(-1, 2).astype(np.float64)
            pts = _inset(pts, FILL_INSET)
            if pts is None:
                continue
            x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int), 0)
            x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 1, [width, height])
            if x1 <= x0 or y1 <= y0:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            cv2.fillConvexPoly(mask, np.round((pts - [x0, y0]) * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
            n0, n1, n2 = normals[i, k] / offsets[i, k]
            face = ((n1 / f) * cols[x0:x1] + n0).astype(np.float32)[None, :] - ((n2 / f) * rows[y0:y1]).astype(np.float32)[:, None]
            patch = inv[y0:y1, x0:x1]
            nearer = face > patch
            nearer &= mask.view(bool)
            np.copyto(patch, face, where=nearer)
            rgba, tag, actor, windows = looks[i]
            entry = np.uint16(len(tag_palette))
            base = np.floor(np.asarray(rgba[:3]) * 255)
            rgb_palette += [np.minimum(np.floor(base * shade[i, k]), 255),
                            np.minimum(np.floor(np.floor(base * np.array(GLASS_RGB) / 255) * shade[i, k]), 255)]
            tag_palette += [tag, tag]
            id_palette += [actor, actor]
            if windows is None:
                np.copyto(code[y0:y1, x0:x1], entry, where=nearer)
                continue
            o, a, b = cam[i, _TEXTURE_AXES[k]]
            to_image = np.array([[cx - x0, f, 0.0], [cy - y0, 0.0, -f], [1.0, 0.0, 0.0]]) @ np.stack(
                [(a - o) / self.CELL, (b - o) / self.CELL, o], 1)
            glass = cv2.warpPerspective(self._tile(windows), to_image, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_REPLICATE)
            np.copyto(code[y0:y1, x0:x1], entry + glass.astype(np.uint16), where=nearer)
        colours = np.zeros((len(rgb_palette), 4), dtype=np.uint8)
        colours[:, :3] = rgb_palette
        labels = np.stack([np.array(tag_palette, dtype=np.uint16), np.array(id_palette, dtype=np.uint16)], 1)
        return inv, code, {"rgb": colours.view(np.uint32).ravel(), "label": labels.view(np.uint32).ravel()}


def _inset(pts: np.ndarray, d: float) -> np.ndarray | None:
    """A convex polygon (Kx2) with each edge moved `d` inwards (None when it vanishes): OpenCV fills
    every pixel an edge touches, PyBullet only those whose sample point lies inside. Plain Python: the
    polygons have a handful of corners."""
    p = [(float(x), float(y)) for x, y in pts]
    k = len(p)
    area2 = sum(p[j][0] * p[(j + 1) % k][1] - p[(j + 1) % k][0] * p[j][1] for j in range(k))
    if abs(area2) < 1e-9:
        return None
    sign = 1.0 if area2 > 0 else -1.0
    lines = []  # inward unit normal and offset of each edge: n . x = c
    for j in range(k):
        ex, ey = p[(j + 1) % k][0] - p[j][0], p[(j + 1) % k][1] - p[j][1]
        length = math.hypot(ex, ey)
        if length > 1e-6:
            nx, ny = -ey / length * sign, ex / length * sign
            lines.append((nx, ny, nx * p[j][0] + ny * p[j][1] + d))
    if len(lines) < 3:
        return None
    out = []
    for j in range(len(lines)):
        ax, ay, ac = lines[j - 1]
        bx, by, bc = lines[j]
        det = ax * by - ay * bx
        if abs(det) < 1e-3:  # nearly parallel neighbours: leave the polygon as it is
            return pts
        out.append(((ac * by - bc * ay) / det, (ax * bc - bx * ac) / det))
    new2 = sum(out[j][0] * out[(j + 1) % len(out)][1] - out[(j + 1) % len(out)][0] * out[j][1] for j in range(len(out)))
    return np.array(out) if new2 * area2 > 0 else None


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """The part of a convex polygon (Kx3, camera axes) in front of the near plane (x >= NEAR)."""
    out = []
    k = len(poly)
    for j in range(k):
        p, q = poly[j], poly[(j + 1) % k]
        if p[0] >= NEAR:
            out.append(p)
        if (p[0] >= NEAR) != (q[0] >= NEAR):
            t = (NEAR - p[0]) / (q[0] - p[0])
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 3)


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
        raised = np.zeros((ny, nx), dtype=np.uint8)
        self.raised = 0.0
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
                cv2.fillConvexPoly(raised, cells, 1, lineType=cv2.LINE_8, shift=4)
                self.raised = max(self.raised, float(b.center[2] + b.half[2]))
        # a fixed grain keeps large surfaces from looking like flat paint
        grain = np.random.default_rng(7).integers(-6, 7, size=(ny, nx, 1), dtype=np.int16)
        self.rgb = np.clip(self.rgb.astype(np.int16) + grain, 0, 255).astype(np.uint8)
        self.raised_mask = raised if self.raised > 0 else None  # sidewalks, all with their top at self.raised
        self.terrain_u8 = tuple(int(v) for v in np.round(self.terrain_rgb * 255))

    def render(self, eye: carla.Location, rot: np.ndarray, width: int, height: int, fov: float,
               light: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Planar depth (FAR above the horizon), tag (Sky above it) and lit colour of the ground seen
        from a camera at `eye` with world-from-camera rotation `rot` (CARLA axes). The ground plane maps
        to the image by a homography, so each layer is one `cv2.warpPerspective` of the raster: the
        plane z = 0, then the raised sidewalk tops over it."""
        f = width / (2 * math.tan(math.radians(fov) / 2))
        u = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / np.float32(f)
        v = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / np.float32(f)
        # world z of each pixel's ray (x forward = 1, y right = u, z up = -v)
        rz = np.float32(rot[2, 0]) + np.float32(rot[2, 1]) * u[None, :] - np.float32(rot[2, 2]) * v[:, None]
        down = rz < -1e-6
        depth = np.full((height, width), FAR, dtype=np.float32)
        tag = np.full((height, width), TAG["Sky"], dtype=np.uint8)
        rgb = np.zeros((height, width, 3), dtype=np.uint8)  # the sky's colour comes with the weather
        rows = np.flatnonzero(down.any(axis=1))
        if len(rows) == 0:
            return depth, tag, rgb
        # only the rows that see the ground are warped: above the horizon (half the image when level)
        # every pixel is sky
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        band = slice(y0, y1)
        size = (width, y1 - y0)
        shift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        down = down[band]
        np.divide(np.float32(-eye.z), rz[band], out=depth[band], where=down)
        plane = shift @ self._homography(eye, rot, f, width, height, 0.0)
        ground_tag = cv2.warpPerspective(self.tag, plane, size, flags=cv2.INTER_NEAREST,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=TAG["Terrain"])
        ground_rgb = cv2.warpPerspective(self.rgb, plane, size, flags=cv2.INTER_NEAREST,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=self.terrain_u8)
        if self.raised_mask is not None and eye.z > self.raised:
            top_plane = shift @ self._homography(eye, rot, f, width, height, self.raised)
            top = cv2.warpPerspective(self.raised_mask, top_plane, size, flags=cv2.INTER_NEAREST,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool) & down
            top_rgb = cv2.warpPerspective(self.rgb, top_plane, size, flags=cv2.INTER_NEAREST,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=self.terrain_u8)
            np.copyto(ground_rgb, top_rgb, where=top[..., None])
            ground_tag[top] = TAG["SideWalks"]
            np.divide(np.float32(self.raised - eye.z), rz[band], out=depth[band], where=top)
        lit = (light["ambient"] + light["diffuse"] * max(light["direction"][2], 0.0)) * np.asarray(light["color"])
        rgb[band] = cv2.multiply(ground_rgb, tuple(float(c) for c in lit) + (0.0,))
        tag[band] = ground_tag
        sky = depth >= FAR
        depth[sky] = FAR
        tag[sky] = TAG["Sky"]
        return depth, tag, rgb

    def _homography(self, eye: carla.Location, rot: np.ndarray, f: float, width: int, height: int, z: float) -> np.ndarray:
        """Raster cell -> image pixel for the plane at height z: cell (i, j) is the world point
        origin + res * (i, j); camera coordinates are rot^T (point - eye); the image has
        u = cx + f y / x, v = cy - f z / x (pixel centres at integer coordinates, OpenCV's convention)."""
        to_world = np.array([[GROUND_RES, 0, self.origin[0] - eye.x],
                             [0, GROUND_RES, self.origin[1] - eye.y],
                             [0, 0, z - eye.z]])
        project = np.array([[width / 2 - 0.5, f, 0], [height / 2 - 0.5, 0, -f], [1, 0, 0]])
        return project @ rot.T @ to_world


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
    """Sky colour, wet roads (darker, with a sheen of the sky), rain streaks and distance fog; the image
    is modified in place and returned."""
    sky_rgb = np.asarray(light["sky"], dtype=np.float32) * 255
    np.copyto(rgb, np.round(sky_rgb).astype(np.uint8), where=sky[..., None])
    wet = max(weather.wetness, weather.precipitation_deposits, 0.6 * weather.precipitation) / 100.0
    if wet > 0:
        road = (tag == TAG["Roads"]) | (tag == TAG["RoadLine"])
        shade = rgb[road].astype(np.float32) * np.float32(1 - 0.45 * wet) + sky_rgb * np.float32(0.18 * wet)
        rgb[road] = np.clip(shade, 0, 255).astype(np.uint8)
    rain = weather.precipitation / 100.0
    if rain > 0:
        h, w = depth.shape
        rng = np.random.default_rng(frame)
        n = int(rain * h * w / 250)
        ys = rng.integers(0, h, n)
        xs = rng.integers(0, w, n)
        drop = np.array([0.8, 0.82, 0.85], dtype=np.float32) * 255
        for k in range(max(2, h // 40)):
            yy = np.clip(ys + k, 0, h - 1)
            xx = np.clip(xs + k // 3, 0, w - 1)
            rgb[yy, xx] = (rgb[yy, xx] * np.float32(0.6) + np.float32(0.4) * drop).astype(np.uint8)
    density = weather.fog_density / 100.0 * 0.05 + rain * 0.006
    if density > 0:
        # fog saturates by 200 m, so a light haze tints the sky instead of replacing it; a fog_falloff of
        # 0 (no thinning with height, as a server renders it) fogs the sky and the far scene all the way
        reach = 200.0 if weather.fog_falloff > 0 else FAR
        path = np.clip(depth - np.float32(max(weather.fog_distance, 0.0)), np.float32(0), np.float32(reach))
        keep = np.exp(np.float32(-density) * path)
        fog = sky_rgb * np.float32(0.6) + np.float32(0.4 * 255 * 0.75 * (0.1 + 0.9 * light["day"]))
        fog_image = np.empty_like(rgb)
        fog_image[:] = np.round(np.clip(fog, 0, 255)).astype(np.uint8)
        rgb = cv2.blendLinear(rgb, fog_image, keep, np.float32(1) - keep)
    return rgb


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

