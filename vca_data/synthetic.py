"""Small synthetic motion sequences written to disk in the KITTI-MOTS and Cityscapes-VPS layouts, with
their true moving/static state, for tests, benchmarks and demos (nothing is downloaded).

A scene is a static textured background seen by a static camera, with textured cars (rectangles)
and pedestrians (ellipses); moving objects translate at a constant image velocity, static ones stay
put. Objects are drawn far to near, so the instance masks are the visible parts and never overlap.
The true state of every track is written to `ROOT/motion_truth.json` (motion labels schema, source
"simulator").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from vca_data.formats import kitti_mots
from vca_data.formats.cityscapes_vps import write_panoptic_png
from vca_data.formats.coco import mask_to_rle, rle_bbox
from vca_data.formats.motion_labels import MotionLabels
from vca_data.io import atomic_path, atomic_write_json, atomic_write_text
from vca_data.labels import THING_TRAIN_IDS, TRAIN_NAMES

TRUTH_FILE = "motion_truth.json"


@dataclass
class SceneObject:
    track_id: int
    kind: str  # "car" (rectangle) or "pedestrian" (ellipse)
    x: float  # top-left corner in frame 0
    y: float
    w: int
    h: int
    vx: float
    vy: float
    depth: float
    texture: np.ndarray  # h x w x 3 uint8

    @property
    def moving(self) -> bool:
        return self.vx != 0 or self.vy != 0


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """Colour + blotchy noise, so that optical flow has something to track."""
    coarse = rng.uniform(-60, 60, size=(max(h // 4, 2), max(w // 4, 2), 3)).astype(np.float32)
    noise = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR) + rng.uniform(-20, 20, (h, w, 3))
    return np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)


def _make_objects(rng: np.random.Generator, num_objects: int, num_frames: int, height: int, width: int,
                  moving_fraction: float, kinds: tuple[int, int]) -> list[SceneObject]:
    """`kinds` = (track id base of cars, of pedestrians): ids are base + running instance."""
    num_moving = int(round(moving_fraction * num_objects))
    moving = set(rng.permutation(num_objects)[:num_moving].tolist())
    counters = {"car": 0, "pedestrian": 0}
    objects = []
    for k in range(num_objects):
        kind = "car" if rng.random() < 0.6 else "pedestrian"
        counters[kind] += 1
        base = kinds[0] if kind == "car" else kinds[1]
        if kind == "car":
            w = int(rng.integers(max(width // 8, 4), max(width // 4, 5)))
            h = int(rng.integers(max(height // 6, 3), max(height // 3, 4)))
        else:
            w = int(rng.integers(max(width // 20, 3), max(width // 10, 4)))
            h = int(rng.integers(max(height // 4, 4), max(height // 2, 5)))
        vx = vy = 0.0
        if k in moving:
            span = max(num_frames - 1, 1)
            vx = float(rng.choice([-1, 1]) * rng.uniform(1.5, 3.0))
            vx = float(np.clip(vx, -(width - w) * 0.8 / span, (width - w) * 0.8 / span)) or 1.0
            vy = float(rng.uniform(-0.5, 0.5))
        x_lo, x_hi = max(0.0, -vx * (num_frames - 1)), (width - w) - max(0.0, vx * (num_frames - 1))
        x = float(rng.uniform(x_lo, max(x_lo, x_hi)))
        y_lo, y_hi = height * 0.3, height - h - abs(vy) * num_frames
        y = float(rng.uniform(min(y_lo, max(y_hi, 0)), max(y_lo, y_hi)))
        colour = rng.uniform(40, 215, size=3).astype(np.float32)
        objects.append(SceneObject(base + counters[kind], kind, x, y, w, h, vx, vy,
                                   float(rng.uniform(5, 40)), _texture(rng, h, w, colour)))
    return objects


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Static textured background (RGB) and its depth (a ground plane: nearer towards the bottom)."""
    rgb = _texture(rng, height, width, np.array([110, 110, 110], np.float32))
    rows = np.arange(height, dtype=np.float32)[:, None]
    depth = np.broadcast_to(80.0 - 70.0 * rows / max(height - 1, 1), (height, width)).astype(np.float32)
    return rgb, depth.copy()


def _render(objects: list[SceneObject], t: int, background: np.ndarray,
            bg_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB, visible track-id map (int32) and depth of frame t."""
    height, width = bg_depth.shape
    rgb, depth = background.copy(), bg_depth.copy()
    ids = np.zeros((height, width), dtype=np.int32)
    for obj in sorted(objects, key=lambda o: -o.depth):
        x0, y0 = int(round(obj.x + obj.vx * t)), int(round(obj.y + obj.vy * t))
        if obj.kind == "car":
            shape = np.ones((obj.h, obj.w), dtype=bool)
        else:
            shape = np.zeros((obj.h, obj.w), dtype=np.uint8)
            cv2.ellipse(shape, (obj.w // 2, obj.h // 2), (max(obj.w // 2, 1), max(obj.h // 2, 1)), 0, 0, 360, 1, -1)
            shape = shape.astype(bool)
        ys, xs = slice(max(y0, 0), min(y0 + obj.h, height)), slice(max(x0, 0), min(x0 + obj.w, width))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        local = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        m = shape[local]
        rgb[ys, xs][m] = obj.texture[local][m]
        ids[ys, xs][m] = obj.track_id
        depth[ys, xs][m] = obj.depth
    return rgb, ids, depth


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path, suffix=path.suffix) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: cannot write image")


def _add_truth(root: Path, dataset: str, seq: str, objects: list[SceneObject]) -> None:
    path = root / TRUTH_FILE
    truth = MotionLabels.load(path) if path.is_file() else MotionLabels.new(dataset)
    for obj in objects:
        truth.set(seq, obj.track_id, "moving" if obj.moving else "static", source="simulator")
    truth.save(path)


def make_kitti_mots_sequence(root: Path, seq: str = "0000", num_frames: int = 12, height: int = 96,
                             width: int = 160, num_objects: int = 4, seed: int = 0, form: str = "txt",
                             moving_fraction: float = 0.5, ignore_region: bool = True,
                             training: bool = False) -> Path:
    """Write one synthetic KITTI-MOTS sequence under `root` and return `root`.

    Writes `image_02/<seq>/<frame:06d>.png` (under `training/` when `training`), labels as
    `instances_txt/<seq>.txt` (form "txt") or `instances/<seq>/` (form "png"), `calib/<seq>.json`,
    `poses/<seq>.txt` (identity: the camera is static), `depth/<seq>/` and adds the true state of
    every track to `motion_truth.json`. Ids: cars 1001, 1002, ..., pedestrians 2001, ...; an ignore
    region (10000) covers the top-left corner when `ignore_region`."""
    if form not in ("txt", "png"):
        raise ValueError(f"form must be 'txt' or 'png', got {form!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    objects = _make_objects(rng, num_objects, num_frames, height, width, moving_fraction, (1000, 2000))
    background, bg_depth = _background(rng, height, width)
    base = root / "training" if training else root
    frames = {}
    for t in range(num_frames):
        rgb, ids, depth = _render(objects, t, background, bg_depth)
        if ignore_region:
            ids[: max(height // 8, 1), : max(width // 8, 1)] = kitti_mots.IGNORE_ID
        name = f"{t:06d}"
        _write_rgb(base / "image_02" / seq / f"{name}.png", rgb)
        with atomic_path(root / "depth" / seq / f"{name}.png", suffix=".png") as tmp:
            cv2.imwrite(str(tmp), np.clip(depth * 256.0, 0, 65535).astype(np.uint16))
        if form == "png":
            kitti_mots.write_png(base / "instances" / seq / f"{name}.png", ids)
        else:
            frames[t] = kitti_mots.objects_from_id_map(ids, t)
    if form == "txt":
        kitti_mots.write_txt(base / "instances_txt" / f"{seq}.txt", {t: o for t, o in frames.items() if o})
    k = [[float(width), 0.0, width / 2.0], [0.0, float(width), height / 2.0], [0.0, 0.0, 1.0]]
    atomic_write_json(root / "calib" / f"{seq}.json", {"K": k})
    atomic_write_text(root / "poses" / f"{seq}.txt", "1 0 0 0 0 1 0 0 0 0 1 0\n" * num_frames)
    _add_truth(root, "kitti-mots", seq, objects)
    return root


def make_cityscapes_vps(root: Path, num_videos: int = 2, frames_per_video: int = 10, label_every: int = 5,
                        height: int = 64, width: int = 128, num_objects: int = 3, seed: int = 0,
                        split: str = "val", moving_fraction: float = 0.5, all_frames: bool = True,
                        crowd: bool = True) -> Path:
    """Write a synthetic Cityscapes-VPS split under `root` (the `cityscapes_vps` folder) and return `root`.

    Writes `<split>/img/` (every `label_every`-th frame), `<split>/img_all/` (all frames, when
    `all_frames`), `<split>/panoptic_video/` PNGs and `panoptic_gt_<split>_city_vps.json` with the 19
    Cityscapes categories (things 11-18). Stuff: road (segment id 1) below the horizon, sky (11) above.
    Thing segment ids are category*1000 + instance (cars 13001, ..., persons 11001, ...) and stay the
    same across a video; with `crowd`, a crowd of cars (iscrowd 1, id 13900) sits in the top-right
    corner. The true states go to `motion_truth.json` under sequence names `<split>/<video:04d>`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{"id": i, "name": n, "isthing": int(i in THING_TRAIN_IDS)} for i, n in enumerate(TRAIN_NAMES)]
    road, sky, car, person = 0, 10, 13, 11
    images, annotations = [], []
    global_frame = 0
    for v in range(1, num_videos + 1):
        video = f"{v:04d}"
        objects = _make_objects(rng, num_objects, frames_per_video, height, width, moving_fraction,
                                (car * 1000, person * 1000))
        background, bg_depth = _background(rng, height, width)
        for t in range(frames_per_video):
            global_frame += 1
            rgb, ids, _ = _render(objects, t, background, bg_depth)
            suffix = "leftImg8bit" if t == 19 else "newImg8bit"
            stem = f"{video}_{global_frame:04d}_frankfurt_{v:06d}_{t:06d}"
            labelled = (t + 1) % label_every == 0
            if all_frames:
                _write_rgb(root / split / "img_all" / f"{stem}_{suffix}.png", rgb)
            if not labelled:
                continue
            _write_rgb(root / split / "img" / f"{stem}_{suffix}.png", rgb)
            segments = np.where(ids != 0, ids, 0)
            horizon = height // 3
            stuff = np.zeros_like(segments)
            stuff[:horizon] = sky + 1
            stuff[horizon:] = road + 1
            if crowd:
                stuff[: max(height // 6, 1), -max(width // 6, 1):] = car * 1000 + 900
            segments = np.where(segments != 0, segments, stuff)
            png_name = f"{stem}_gtFine_panoptic.png"
            write_panoptic_png(root / split / "panoptic_video" / png_name, segments)
            info = []
            for sid in np.unique(segments).tolist():
                cat = sid - 1 if sid < 1000 else sid // 1000
                rle = mask_to_rle(segments == sid)
                info.append({"id": sid, "category_id": cat, "iscrowd": int(sid % 1000 == 900),
                             "area": int((segments == sid).sum()), "bbox": rle_bbox(rle)})
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"{stem}_{suffix}.png", "height": height, "width": width})
            annotations.append({"image_id": image_id, "file_name": png_name, "segments_info": info})
        _add_truth(root, "cityscapes-vps", f"{split}/{video}", objects)
    panoptic = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(root / f"panoptic_gt_{split}_city_vps.json", json.dumps(panoptic))
    return root


# --------------------------------------------------------------------------------------------------
# Driving scenes: a moving camera ray casting a street (depth, poses and true motion known)

DRIVING_GROUND_Y = 1.6  # camera height: world y points down, the road is the plane y = DRIVING_GROUND_Y
DRIVING_MIN_AREA = 60   # visible pixels for an instance to be labelled in a frame


@dataclass
class DrivingBox:
    """An axis-aligned box of a driving scene in world coordinates (those of the first camera: x right,
    y down, z forward, metres), moving at a constant velocity (metres per frame). Track id 0 marks
    background (facades); cars are 1000+k and pedestrians 2000+k, as in KITTI-MOTS."""

    lo: np.ndarray
    hi: np.ndarray
    velocity: np.ndarray
    track_id: int
    texture: int = 1          # index into the scene's textures (0 is the road's, 3 the sky's)
    tint: np.ndarray | None = None  # RGB gain, default grey

    @property
    def moving(self) -> bool:
        return bool(np.any(self.velocity))

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(min corner, max corner) at frame t."""
        return self.lo + self.velocity * t, self.hi + self.velocity * t


def driving_textures(seed: int, count: int = 4, size: int = 256) -> list[np.ndarray]:
    """Grey multi-scale noise textures (float32 in 0.05..1, tileable) for road, facades, cars and sky."""
    rng = np.random.default_rng(seed)
    textures = []
    for _ in range(count):
        tex = np.zeros((size, size), np.float32)
        for sigma, weight in ((1.0, 0.4), (3.0, 1.0), (9.0, 1.4)):
            blurred = gaussian_filter(rng.random((size, size)).astype(np.float32), sigma, mode="wrap")
            tex += weight * (blurred - blurred.mean()) / (blurred.std() + 1e-6)
        textures.append(np.clip(0.5 + 0.16 * tex, 0.05, 1.0).astype(np.float32))
    return textures


def _sample_texture(tex: np.ndarray, a: np.ndarray, b: np.ndarray, per_metre: float) -> np.ndarray:
    """Bilinear, wrapping texture lookup at surface coordinates (a, b) in metres, any array shape."""
    size = tex.shape[0]
    shape = np.shape(a)
    flat_a, flat_b = np.ravel(a), np.ravel(b)
    pad = -len(flat_a) % 1024  # remap wants 2-D maps below 32767 per side
    maps = [np.pad(np.mod(v * per_metre, size).astype(np.float32), (0, pad)).reshape(-1, 1024)
            for v in (flat_a, flat_b)]
    out = cv2.remap(tex, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.ravel()[: len(flat_a)].reshape(shape)


def _screen_region(cam: np.ndarray, K: np.ndarray, ss: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Sample rows/columns (at `ss` samples per pixel) a box covers, from its 8 corners in camera
    coordinates clipped to the near plane; None when it is behind the camera or off screen."""
    near = 0.2
    points = [c for c in cam if c[2] >= near]
    for a in range(8):
        for b in range(a + 1, 8):
            za, zb = cam[a, 2], cam[b, 2]
            if np.count_nonzero(cam[a] != cam[b]) == 1 and (za - near) * (zb - near) < 0:
                points.append(cam[a] + (near - za) / (zb - za) * (cam[b] - cam[a]))
    if not points:
        return None
    pts = np.array(points)
    u = (K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2] + 0.5) * ss
    v = (K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2] + 0.5) * ss
    c0, c1 = max(int(u.min()) - 1, 0), min(int(u.max()) + 2, w)
    r0, r1 = max(int(v.min()) - 1, 0), min(int(v.max()) + 2, h)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _cast_driving(boxes: list[DrivingBox], t: float, world_from_camera: np.ndarray, K: np.ndarray, height: int,
                  width: int, ss: int, textures: list[np.ndarray], ground_y: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast one frame at `ss` samples per pixel side: RGB float (0..1), depth (0 = sky), ids."""
    h, w = height * ss, width * ss
    ys, xs = (np.mgrid[0:h, 0:w].astype(np.float32) + 0.5) / ss - 0.5
    rays_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    R, origin = world_from_camera[:3, :3], world_from_camera[:3, 3]
    rays = (rays_cam @ R.T.astype(np.float32)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_best = (ground_y - origin[1]) / rays[..., 1]
    t_best[~(t_best > 0) | (t_best > 400)] = np.inf
    rgb = np.zeros((h, w, 3), np.float32)
    ids = np.zeros((h, w), np.int32)
    ground = np.isfinite(t_best)
    hit = origin + rays[ground] * t_best[ground][:, None]
    road = _sample_texture(textures[0], hit[:, 0], hit[:, 2], 10.0)
    lane = (np.abs(hit[:, 0]) < 0.08) & (np.mod(hit[:, 2], 6.0) < 3.0)
    shade = np.where(np.abs(hit[:, 0]) > 5.0, 1.25, 0.8) * road + lane * 0.5
    rgb[ground] = shade[:, None] * np.array([0.55, 0.55, 0.58], np.float32)
    for box in boxes:
        lo, hi = box.at(t)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        region = _screen_region((corners - origin) @ R, K, ss, h, w)
        if region is None:
            continue
        r0, r1, c0, c1 = region
        ray = rays[r0:r1, c0:c1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (lo - origin) / ray
            t2 = (hi - origin) / ray
        near = np.minimum(t1, t2)
        near = np.where(np.isnan(near), -np.inf, near)
        far = np.maximum(t1, t2)
        far = np.where(np.isnan(far), np.inf, far)
        t_near = near.max(axis=-1)
        axis = near.argmax(axis=-1)
        inside = (t_near <= far.min(axis=-1)) & (t_near > 0) & (t_near < t_best[r0:r1, c0:c1])
        if not inside.any():
            continue
        t_best[r0:r1, c0:c1][inside] = t_near[inside]
        ids[r0:r1, c0:c1][inside] = box.track_id
        p = origin + ray * np.where(inside, t_near, 0)[..., None] - lo
        # Each face is textured by its two in-plane coordinates; faces get a little shading by axis.
        a = np.where(axis == 0, p[..., 2], p[..., 0])
        b = np.where(axis == 1, p[..., 2], p[..., 1])
        per_metre = 10.0 if box.track_id == 0 else 24.0
        value = _sample_texture(textures[box.texture], a, b, per_metre) * np.array([0.8, 1.0, 1.15])[axis]
        tint = np.ones(3, np.float32) if box.tint is None else box.tint
        rgb[r0:r1, c0:c1][inside] = (value[..., None] * tint)[inside]
    sky = ~np.isfinite(t_best)
    sky_rays = rays[sky]
    azimuth = np.arctan2(sky_rays[:, 0], sky_rays[:, 2])
    elevation = -sky_rays[:, 1] / np.linalg.norm(sky_rays, axis=-1)
    clouds = _sample_texture(textures[3], azimuth, elevation, 60.0)
    rgb[sky] = np.array([0.55, 0.7, 0.95], np.float32) * (0.7 + 0.3 * clouds[:, None])
    depth = np.where(np.isfinite(t_best), t_best, 0.0).astype(np.float32)  # camera rays have z = 1
    return rgb, depth, ids


def render_driving_frame(boxes: list[DrivingBox], t: float, world_from_camera: np.ndarray, K: np.ndarray,
                         height: int, width: int, textures: list[np.ndarray], ground_y: float = DRIVING_GROUND_Y,
                         supersample: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame of a driving scene seen by a camera at `world_from_camera` (4x4, OpenCV axes) with
    intrinsics K: RGB HxWx3 uint8 (`supersample`^2 rays per pixel), depth HxW float32 (z in metres,
    0 on the sky) and track ids HxW int32 (0 for road, facades and sky), both from one ray per pixel."""
    fine, _, _ = _cast_driving(boxes, t, world_from_camera, K, height, width, supersample, textures, ground_y)
    _, depth, ids = _cast_driving(boxes, t, world_from_camera, K, height, width, 1, textures, ground_y)
    image = cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), depth, ids


def camera_rotation(yaw: float, pitch: float) -> np.ndarray:
    """3x3 world_from_camera rotation of a camera turned by `yaw` (about y, radians) and `pitch` (about x)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _swept(box: DrivingBox, frames: int) -> tuple[np.ndarray, np.ndarray]:
    end = box.velocity * (frames - 1)
    return box.lo + np.minimum(end, 0), box.hi + np.maximum(end, 0)


def driving_scene(rng: np.random.Generator, ego_speed: float, num_frames: int,
                  ground_y: float = DRIVING_GROUND_Y) -> list[DrivingBox]:
    """A random street: facades on both sides, parked cars and standing pedestrians (static), and
    moving ones that never collide over `num_frames`: a car ahead in the ego lane (its motion stays on
    the epipolar lines), oncoming and crossing cars, pedestrians walking along or across the street;
    and far traffic (70-140 m): parked cars, and a car keeping pace with the camera 45-120 m ahead."""
    boxes: list[DrivingBox] = []
    for side in (-1, 1):
        z = -10.0
        while z < 160:
            length = rng.uniform(8, 22)
            setback = rng.uniform(8.5, 12)
            x_in, x_out = side * setback, side * (setback + 10)
            tall = rng.uniform(5, 18)
            boxes.append(DrivingBox(np.array([min(x_in, x_out), ground_y - tall, z]),
                                    np.array([max(x_in, x_out), ground_y, z + length]), np.zeros(3), 0,
                                    int(rng.integers(1, 3)), rng.uniform(0.7, 1.2, 3).astype(np.float32)))
            z += length + rng.uniform(0, 4)
    counters = {"car": 0, "pedestrian": 0}

    def add(kind: str, centre_x: float, z: float, velocity: tuple[float, float, float]) -> None:
        if kind == "car":
            size = np.array([1.8, 1.5, 4.3]) if velocity[0] == 0 else np.array([4.3, 1.5, 1.8])
        else:
            size = np.array([0.6, rng.uniform(1.6, 1.9), 0.5])
        lo = np.array([centre_x - size[0] / 2, ground_y - size[1], z])
        tint = rng.uniform(0.4, 1.5, 3).astype(np.float32)
        box = DrivingBox(lo, lo + size, np.array(velocity, float), 0, int(rng.integers(1, 3)), tint)
        lo_b, hi_b = _swept(box, num_frames)
        for other in boxes:
            lo_o, hi_o = _swept(other, num_frames)
            if (lo_b < hi_o + 0.2).all() and (lo_o < hi_b + 0.2).all():
                return  # would collide: leave it out
        counters[kind] += 1
        box.track_id = (1000 if kind == "car" else 2000) + counters[kind]
        boxes.append(box)

    for _ in range(int(rng.integers(3, 7))):                       # parked cars
        add("car", float(rng.choice([-1, 1]) * rng.uniform(4.0, 4.4)), rng.uniform(8, 70), (0, 0, 0))
    for _ in range(int(rng.integers(1, 4))):                       # standing pedestrians
        add("pedestrian", float(rng.choice([-1, 1]) * rng.uniform(5.5, 7.5)), rng.uniform(7, 40), (0, 0, 0))
    if rng.random() < 0.8:                                         # car ahead in the ego lane
        speed = ego_speed + float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.6))
        add("car", 1.75, rng.uniform(10, 22), (0, 0, max(speed, 0.25)))
    for _ in range(int(rng.integers(1, 3))):                       # oncoming cars
        add("car", -1.75, rng.uniform(25, 80), (0, 0, -rng.uniform(0.5, 1.3)))
    if rng.random() < 0.6:                                         # crossing car
        direction = float(rng.choice([-1, 1]))
        add("car", -direction * 5.8, rng.uniform(18, 40), (direction * rng.uniform(0.4, 0.8), 0, 0))
    for _ in range(int(rng.integers(1, 4))):                       # walking pedestrians
        if rng.random() < 0.5:
            add("pedestrian", float(rng.choice([-1, 1]) * rng.uniform(5.5, 7.5)), rng.uniform(7, 35),
                (0, 0, float(rng.choice([-1, 1]) * rng.uniform(0.12, 0.2))))
        else:
            add("pedestrian", float(rng.uniform(-4, 4)), rng.uniform(8, 30),
                (float(rng.choice([-1, 1]) * rng.uniform(0.12, 0.2)), 0, 0))
    # Far traffic, where a frame pair shows a fraction of a pixel of motion: parked cars far down the
    # street, and a car far ahead keeping pace with the camera, which differs from a parked one only in
    # that it does not come closer over the sequence.
    for _ in range(int(rng.integers(2, 5))):                       # far parked cars
        add("car", float(rng.choice([-1, 1]) * rng.uniform(4.0, 4.4)), rng.uniform(70, 140), (0, 0, 0))
    if rng.random() < 0.8:                                         # far car keeping pace, either lane
        add("car", float(rng.choice([-1, 1]) * 1.75), rng.uniform(45, 120),
            (0, 0, ego_speed * rng.uniform(0.85, 1.15)))
    return boxes


def make_driving_sequence(root: Path, seq: str = "0000", num_frames: int = 16, height: int = 188,
                          width: int = 621, seed: int = 0, boxes: list[DrivingBox] | None = None,
                          ego_speed: float | None = None, yaw_rate: float | None = None,
                          pitch_amplitude: float | None = None, focal_ratio: float = 0.58,
                          start_x: float = 1.75, noise: float = 1.5, min_area: int = DRIVING_MIN_AREA,
                          ground_y: float = DRIVING_GROUND_Y) -> dict[int, str]:
    """Write one driving sequence under `root` in the KITTI-MOTS layout and return the true state
    ("moving"/"static") of every labelled track.

    A camera at height `ground_y` drives along +z from x = `start_x` at `ego_speed` metres per frame,
    turning by `yaw_rate` radians per frame and pitching by up to `pitch_amplitude` (a slow sine);
    unset values are drawn from `seed` (0.4..1.3 m, +-0.006 rad, 0..0.006 rad). The scene is `boxes`
    or, when None, a random street (`driving_scene`). Writes `image_02/<seq>/` (RGB with Gaussian
    noise of `noise` levels), `instances/<seq>/` PNGs (an instance is labelled in a frame when at least
    `min_area` pixels of it are visible), `depth/<seq>/` (metres*256), `calib/<seq>.json` (focal length
    `focal_ratio` x width, principal point at the centre), `poses/<seq>.txt` and adds the labelled
    tracks' true states to `motion_truth.json` (source "simulator")."""
    if num_frames < 1 or height < 8 or width < 8:
        raise ValueError(f"need at least one frame of 8x8 pixels, got {num_frames} frames of {width}x{height}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    textures = driving_textures(int(rng.integers(1 << 31)))
    focal = focal_ratio * width
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    ego_speed = float(rng.uniform(0.4, 1.3)) if ego_speed is None else float(ego_speed)
    drawn_yaw, drawn_pitch = float(rng.uniform(-0.006, 0.006)), float(rng.uniform(0, 0.006))
    yaw_rate = drawn_yaw if yaw_rate is None else float(yaw_rate)
    pitch_amplitude = drawn_pitch if pitch_amplitude is None else float(pitch_amplitude)
    if boxes is None:
        boxes = driving_scene(rng, ego_speed, num_frames, ground_y)
    position, yaw = np.array([start_x, 0.0, 0.0]), 0.0
    poses, seen = [], set()
    for t in range(num_frames):
        pose = np.eye(4)
        pose[:3, :3] = camera_rotation(yaw, pitch_amplitude * np.sin(0.9 * t))
        pose[:3, 3] = position
        poses.append(pose)
        image, depth, ids = render_driving_frame(boxes, t, pose, K, height, width, textures, ground_y)
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
        tracks, counts = np.unique(ids, return_counts=True)
        for track, count in zip(tracks.tolist(), counts.tolist(), strict=True):
            if track and count < min_area:
                ids[ids == track] = 0
        seen.update(int(v) for v in np.unique(ids) if v)
        name = f"{t:06d}.png"
        _write_rgb(root / "image_02" / seq / name, image)
        with atomic_path(root / "depth" / seq / name, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), np.clip(np.rint(depth * 256), 0, 65535).astype(np.uint16))
        kitti_mots.write_png(root / "instances" / seq / name, ids)
        position = position + ego_speed * pose[:3, 2]
        yaw += yaw_rate
    atomic_write_json(root / "calib" / f"{seq}.json", {"K": K.tolist()})
    atomic_write_text(root / "poses" / f"{seq}.txt",
                      "".join(" ".join(f"{v:.9g}" for v in p[:3].ravel()) + "\n" for p in poses))
    truth = {box.track_id: ("moving" if box.moving else "static") for box in boxes if box.track_id in seen}
    path = root / TRUTH_FILE
    labels = MotionLabels.load(path) if path.is_file() else MotionLabels.new("kitti-mots")
    for track, state in truth.items():
        labels.set(seq, track, state, source="simulator")
    labels.save(path)
    return truth
