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
