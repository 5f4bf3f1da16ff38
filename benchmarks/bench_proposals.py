"""Benchmark of the automatic moving/static proposals (annotator.propose) against the true state of every
track, with depth + pose ("ego" mode) and from flow alone ("flow" mode).

Data: motion sequences exported from the offline world (`vca-carla collect` + `vca-carla export --format
kitti-mots`, true states in motion_truth.json) when `--source carla` (or `auto` and the command works);
otherwise driving scenes rendered here by ray casting: a camera driving along a street (forward speed,
slow yaw and pitch), textured road, facades and sky, parked cars and standing pedestrians (static), and
cars ahead in the same lane (moving along the epipolar lines), oncoming and crossing cars, and walking
pedestrians (moving); written in the KITTI-MOTS layout with depth, calib, poses and motion_truth.json.
The reference is the truth; targets: ego >= 95% track accuracy and >= 90% recall of each class, flow-only
>= 85% accuracy. Unsure tracks (no proposal) count as errors in the accuracy.

    .venv/bin/python benchmarks/bench_proposals.py [--sequences 8 --frames 16 --source auto]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from annotator.propose import PROPOSAL_PRESET, run_proposals
from vca_data.formats import kitti_mots
from vca_data.formats.motion_labels import MotionLabels
from vca_data.formats.sequence import list_sequences, open_sequence
from vca_data.io import atomic_path, atomic_write_json, atomic_write_text

GROUND_Y = 1.6  # camera height: world y points down, the road is the plane y = GROUND_Y
MIN_AREA = 60   # visible pixels for an instance to be labelled in a frame


@dataclass
class Box:
    lo: np.ndarray          # min corner at frame 0 (world, metres)
    hi: np.ndarray
    velocity: np.ndarray    # metres per frame
    track_id: int           # 0 for buildings (background)
    texture: int
    tint: np.ndarray        # RGB gain


def make_textures(rng: np.random.Generator, count: int = 4, size: int = 256) -> list[np.ndarray]:
    textures = []
    for _ in range(count):
        tex = np.zeros((size, size), np.float32)
        for sigma, weight in ((1.0, 0.4), (3.0, 1.0), (9.0, 1.4)):
            layer = gaussian_filter(rng.random((size, size)).astype(np.float32), sigma, mode="wrap")
            tex += weight * (layer - layer.mean()) / (layer.std() + 1e-6)
        textures.append(np.clip(0.5 + 0.16 * tex, 0.05, 1.0).astype(np.float32))
    return textures


def _sample(tex: np.ndarray, a: np.ndarray, b: np.ndarray, per_metre: float) -> np.ndarray:
    """Bilinear texture lookup at surface coordinates (a, b) in metres, any array shape."""
    size = tex.shape[0]
    shape = np.shape(a)
    flat_a, flat_b = np.ravel(a), np.ravel(b)
    pad = -len(flat_a) % 1024  # remap wants 2-D maps below 32767 per side
    maps = [np.pad(np.mod(v * per_metre, size).astype(np.float32), (0, pad)).reshape(-1, 1024)
            for v in (flat_a, flat_b)]
    out = cv2.remap(tex, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.ravel()[: len(flat_a)].reshape(shape)


def _screen_region(cam: np.ndarray, K: np.ndarray, ss: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Pixel rows/columns (at `ss` samples per pixel) a box covers, from its 8 corners in camera
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


def cast(boxes: list[Box], t: int, world_from_camera: np.ndarray, K: np.ndarray, height: int, width: int,
         ss: int, textures: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast one frame at `ss` samples per pixel side: RGB float (0..1), depth (0 = sky), ids."""
    h, w = height * ss, width * ss
    ys, xs = (np.mgrid[0:h, 0:w].astype(np.float32) + 0.5) / ss - 0.5
    rays_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    R, origin = world_from_camera[:3, :3], world_from_camera[:3, 3]
    rays = (rays_cam @ R.T.astype(np.float32)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_best = (GROUND_Y - origin[1]) / rays[..., 1]
    t_best[~(t_best > 0) | (t_best > 400)] = np.inf
    rgb = np.zeros((h, w, 3), np.float32)
    ids = np.zeros((h, w), np.int32)
    ground = np.isfinite(t_best)
    hit = origin + rays[ground] * t_best[ground][:, None]
    road = _sample(textures[0], hit[:, 0], hit[:, 2], 10.0)
    lane = (np.abs(hit[:, 0]) < 0.08) & (np.mod(hit[:, 2], 6.0) < 3.0)
    shade = np.where(np.abs(hit[:, 0]) > 5.0, 1.25, 0.8) * road + lane * 0.5
    rgb[ground] = shade[:, None] * np.array([0.55, 0.55, 0.58], np.float32)
    for box in boxes:
        lo, hi = box.lo + box.velocity * t, box.hi + box.velocity * t
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        cam = (corners - origin) @ R
        region = _screen_region(cam, K, ss, h, w)
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
        a = np.where(axis == 0, p[..., 2], p[..., 0])
        b = np.where(axis == 1, p[..., 2], p[..., 1])
        per_metre = 10.0 if box.track_id == 0 else 24.0
        value = _sample(textures[box.texture], a, b, per_metre) * np.array([0.8, 1.0, 1.15])[axis]
        rgb[r0:r1, c0:c1][inside] = (value[..., None] * box.tint)[inside]
    sky = ~np.isfinite(t_best)
    sky_rays = rays[sky]
    azimuth = np.arctan2(sky_rays[:, 0], sky_rays[:, 2])
    elevation = -sky_rays[:, 1] / np.linalg.norm(sky_rays, axis=-1)
    clouds = _sample(textures[3], azimuth, elevation, 60.0)
    rgb[sky] = np.array([0.55, 0.7, 0.95], np.float32) * (0.7 + 0.3 * clouds[:, None])
    depth = np.where(np.isfinite(t_best), t_best, 0.0).astype(np.float32)  # rays have camera z = 1
    return rgb, depth, ids


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _swept(box: Box, frames: int) -> tuple[np.ndarray, np.ndarray]:
    end = box.velocity * (frames - 1)
    return box.lo + np.minimum(end, 0), box.hi + np.maximum(end, 0)


def make_scene(rng: np.random.Generator, ego_speed: float, frames: int) -> list[Box]:
    """Buildings along a straight street, parked cars and standing pedestrians (static), and moving
    cars and pedestrians that never collide; track ids in the KITTI way (cars 1000+k, pedestrians
    2000+k)."""
    boxes: list[Box] = []
    for side in (-1, 1):
        z = -10.0
        while z < 160:
            length = rng.uniform(8, 22)
            setback = rng.uniform(8.5, 12)
            x_in, x_out = side * setback, side * (setback + 10)
            tall = rng.uniform(5, 18)
            boxes.append(Box(np.array([min(x_in, x_out), GROUND_Y - tall, z]),
                             np.array([max(x_in, x_out), GROUND_Y, z + length]), np.zeros(3), 0,
                             int(rng.integers(1, 3)), rng.uniform(0.7, 1.2, 3).astype(np.float32)))
            z += length + rng.uniform(0, 4)
    counters = {"car": 0, "pedestrian": 0}

    def add(kind: str, centre_x: float, z: float, velocity: tuple[float, float, float]) -> None:
        if kind == "car":
            size = np.array([1.8, 1.5, 4.3]) if velocity[0] == 0 else np.array([4.3, 1.5, 1.8])
        else:
            size = np.array([0.6, rng.uniform(1.6, 1.9), 0.5])
        lo = np.array([centre_x - size[0] / 2, GROUND_Y - size[1], z])
        tint = rng.uniform(0.4, 1.5, 3).astype(np.float32)
        box = Box(lo, lo + size, np.array(velocity, float), 0, int(rng.integers(1, 3)), tint)
        lo_b, hi_b = _swept(box, frames)
        for other in boxes:
            lo_o, hi_o = _swept(other, frames)
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
    return boxes


def render_sequence(root: Path, seq: str, seed: int, frames: int, height: int, width: int) -> None:
    """Render one driving sequence into the KITTI-MOTS layout under `root` with depth, calib, poses and
    the true track states in motion_truth.json."""
    rng = np.random.default_rng(seed)
    textures = make_textures(rng)
    focal = 0.58 * width
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    ego_speed = float(rng.uniform(0.4, 1.3))
    yaw_rate, pitch_amplitude = float(rng.uniform(-0.006, 0.006)), float(rng.uniform(0, 0.006))
    boxes = make_scene(rng, ego_speed, frames)
    position, yaw = np.array([1.75, 0.0, 0.0]), 0.0
    poses, seen = [], set()
    for t in range(frames):
        pose = np.eye(4)
        pose[:3, :3] = _rotation(yaw, pitch_amplitude * np.sin(0.9 * t))
        pose[:3, 3] = position
        poses.append(pose)
        fine, _, _ = cast(boxes, t, pose, K, height, width, 2, textures)
        _, depth, ids = cast(boxes, t, pose, K, height, width, 1, textures)
        image = cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA)
        image = np.clip(image * 255 + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)
        for track in np.unique(ids).tolist():
            if track and (ids == track).sum() < MIN_AREA:
                ids[ids == track] = 0
        seen.update(int(v) for v in np.unique(ids) if v)
        name = f"{t:06d}.png"
        with atomic_path(root / "image_02" / seq / name, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        with atomic_path(root / "depth" / seq / name, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), np.clip(np.rint(depth * 256), 0, 65535).astype(np.uint16))
        kitti_mots.write_png(root / "instances" / seq / name, ids)
        position = position + ego_speed * pose[:3, 2]
        yaw += yaw_rate
    atomic_write_json(root / "calib" / f"{seq}.json", {"K": K.tolist()})
    atomic_write_text(root / "poses" / f"{seq}.txt",
                      "".join(" ".join(f"{v:.9g}" for v in p[:3].ravel()) + "\n" for p in poses))
    truth_path = root / "motion_truth.json"
    truth = MotionLabels.load(truth_path) if truth_path.exists() else MotionLabels.new("kitti-mots")
    for box in boxes:
        if box.track_id in seen:
            truth.set(seq, box.track_id, "moving" if np.any(box.velocity) else "static", source="simulator")
    truth.save(truth_path)


def carla_sequences(out: Path, towns: str, frames: int, width: int, height: int) -> Path | None:
    """Collect one offline-world episode per town and scenario with `vca-carla collect` and export them
    with `vca-carla export --format kitti-mots`; None when the command is unavailable or fails (the
    reason is printed)."""
    exe = shutil.which("vca-carla") or str(Path(sys.executable).with_name("vca-carla"))
    data, export = out / "carla_data", out / "carla_kitti"
    try:
        subprocess.run([exe, "collect", "--town", towns, "--scenario", "all", "--backend", "offline",
                        "--episodes", "1", "--frames", str(frames), "--seed", "0", "--out", str(data),
                        "--width", str(width), "--height", str(height)],
                       check=True, capture_output=True, text=True, timeout=900)
        subprocess.run([exe, "export", str(data), "--format", "kitti-mots", "--out", str(export)],
                       check=True, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()
        print(f"vca-carla collect/export unavailable: {detail.splitlines()[-1] if detail else exc}")
        return None
    if not (export / "motion_truth.json").exists():
        print(f"vca-carla export wrote no motion_truth.json under {export}")
        return None
    return export


def largest_areas(root: Path) -> dict[tuple[str, int], int]:
    """Largest visible area (pixels) of every track of every sequence under `root`."""
    areas: dict[tuple[str, int], int] = {}
    for name in list_sequences(root):
        seq = open_sequence(root, name)
        for i in range(seq.num_frames):
            ids, counts = np.unique(seq.id_map(i), return_counts=True)
            for track, count in zip(ids.tolist(), counts.tolist()):
                if track:
                    areas[name, track] = max(areas.get((name, track), 0), count)
    return areas


def evaluate(truth: MotionLabels, proposed: MotionLabels, areas: dict[tuple[str, int], int], min_area: int) -> dict:
    """Confusion counts truth x proposal (moving, static, unsure) over every true track whose largest
    visible area reaches `min_area` pixels."""
    confusion = {(t, p): 0 for t in ("moving", "static") for p in ("moving", "static", "unsure")}
    for seq, tracks in truth.sequences.items():
        for track, entry in tracks.items():
            if entry.label not in ("moving", "static") or areas.get((seq, track), 0) < min_area:
                continue
            got = proposed.get(seq, track)
            confusion[entry.label, got.label if got is not None and got.label != "ignore" else "unsure"] += 1
    total = sum(confusion.values())
    correct = confusion["moving", "moving"] + confusion["static", "static"]
    recall = {c: confusion[c, c] / max(sum(confusion[c, p] for p in ("moving", "static", "unsure")), 1)
              for c in ("moving", "static")}
    decided = total - confusion["moving", "unsure"] - confusion["static", "unsure"]
    return {"confusion": confusion, "tracks": total, "accuracy": correct / max(total, 1),
            "accuracy_decided": correct / max(decided, 1), "coverage": decided / max(total, 1), "recall": recall}


def print_confusion(name: str, result: dict) -> None:
    c = result["confusion"]
    print(f"\n{name}: confusion matrix (rows truth, columns proposal)")
    print(f"  {'':8s} {'moving':>7s} {'static':>7s} {'unsure':>7s}")
    for t in ("moving", "static"):
        print(f"  {t:8s} {c[t, 'moving']:7d} {c[t, 'static']:7d} {c[t, 'unsure']:7d}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100,
                        help="seed of the first rendered sequence (the thresholds were tuned on seeds 0-7)")
    parser.add_argument("--width", type=int, default=621)
    parser.add_argument("--height", type=int, default=188)
    parser.add_argument("--source", choices=("auto", "carla", "render"), default="auto",
                        help="offline-world export (carla), the renderer here (render), or carla when it works "
                             "(auto, default)")
    parser.add_argument("--towns", default="Town01,Town02,Town03",
                        help="towns collected with --source carla (one episode per town and scenario)")
    parser.add_argument("--min-area", type=int, default=0,
                        help="evaluate only tracks whose largest visible area reaches this many pixels")
    parser.add_argument("--out", type=Path, help="keep the data here (default: a temporary folder)")
    parser.add_argument("--preset", default=PROPOSAL_PRESET, help=f"DIS preset of the proposals (default {PROPOSAL_PRESET})")
    parser.add_argument("--modes", default="ego,flow", help="modes to evaluate, comma separated")
    parser.add_argument("--reuse", action="store_true", help="use the sequences already made under --out")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_proposals_"))
    start = time.perf_counter()
    root = None
    if args.source != "render":
        if args.reuse and (out / "carla_kitti" / "motion_truth.json").exists():
            root = out / "carla_kitti"
        else:
            root = carla_sequences(out, args.towns, args.frames, args.width, args.height)
        if root is None and args.source == "carla":
            return 1
    source = "offline world (vca-carla collect + export)" if root is not None else "ray-cast driving scenes"
    if root is None:
        root = out / "rendered"
        if root.exists() and not args.reuse:
            shutil.rmtree(root)
        for k in range(args.sequences if not (args.reuse and root.exists()) else 0):
            render_sequence(root, f"{k:04d}", seed=args.seed + k, frames=args.frames, height=args.height, width=args.width)
    made = time.perf_counter() - start
    truth = MotionLabels.load(root / "motion_truth.json")
    areas = largest_areas(root)
    results, timings = {}, {}
    for mode in args.modes.split(","):
        labels_path = out / f"proposals_{mode}.json"
        labels_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        run_proposals(root, labels_path=labels_path, mode=mode, preset=args.preset, progress=False)
        timings[mode] = time.perf_counter() - t0
        results[mode] = evaluate(truth, MotionLabels.load(labels_path), areas, args.min_area)
    tracks = next(iter(results.values()))["tracks"]
    total = sum(1 for entries in truth.sequences.values() for _ in entries)
    print(f"data: {source}, {len(truth.sequences)} sequences x {args.frames} frames, {args.width}x{args.height}, "
          f"made in {made:.0f} s, at {root}; DIS preset {args.preset}")
    print(f"tracks evaluated: {tracks} of {total} (largest visible area >= {args.min_area} px)")
    for mode, result in results.items():
        print_confusion(f"{mode} mode", result)
    rows = []
    if "ego" in results:
        rows += [("ego: track accuracy (unsure = wrong)", results["ego"]["accuracy"], 0.95),
                 ("ego: recall moving", results["ego"]["recall"]["moving"], 0.90),
                 ("ego: recall static", results["ego"]["recall"]["static"], 0.90)]
    if "flow" in results:
        rows.append(("flow: track accuracy (unsure = wrong)", results["flow"]["accuracy"], 0.85))
    print(f"\n{'measure':42s} {'value':>7s} {'target':>7s}  result")
    for name, value, target in rows:
        print(f"{name:42s} {value:7.3f} {target:7.2f}  {'PASS' if value >= target else 'FAIL'}")
    for mode, r in results.items():
        print(f"{mode}: accuracy on proposed tracks {r['accuracy_decided']:.3f}, coverage {r['coverage']:.3f}, "
              f"proposals took {timings[mode]:.1f} s")
    return 0 if all(value >= target for _, value, target in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
