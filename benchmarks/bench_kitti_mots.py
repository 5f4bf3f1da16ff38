"""Benchmark: read a KITTI-MOTS txt sequence and decode every frame to an obj_id map.

Ours: `kitti_mots.read_txt` (full validation: RLE, sizes, duplicate ids, overlaps) then
`kitti_mots.decode_id_map` per frame (RLE counts parsed with numpy, runs painted in one cumulative
sum). Reference, measured in the same run: a plain loop that splits the lines and calls
`pycocotools.mask.decode` per object, writing each mask into the id map (no validation at all).
Both outputs are compared frame by frame. Targets: >= 150 frames/s and >= 2x the reference.

    .venv/bin/python benchmarks/bench_kitti_mots.py [--frames 1000 --objects 20 --repeats 3 --ref-repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from vca_data.formats import kitti_mots

HEIGHT, WIDTH = 375, 1242


def make_txt(path: Path, frames: int, objects: int, seed: int = 0) -> None:
    """Objects (cars: rectangles with rounded corners, pedestrians: ellipses) drifting across frames,
    drawn far to near so masks never overlap."""
    rng = np.random.default_rng(seed)
    kinds = rng.random(objects) < 0.6
    sizes = np.where(kinds[:, None], rng.uniform([60, 30], [220, 110], (objects, 2)),
                     rng.uniform([15, 40], [40, 120], (objects, 2)))
    pos = rng.uniform([0, 120], [WIDTH, HEIGHT - 60], (objects, 2))
    vel = rng.uniform(-4, 4, (objects, 2)) * [1, 0.2]
    ids = [(1000 if car else 2000) + k + 1 for k, car in enumerate(kinds)]
    lines = []
    for f in tqdm(range(frames), desc="writing txt", leave=False):
        id_map = np.zeros((HEIGHT, WIDTH), np.uint16)
        centres = (pos + vel * f) % [WIDTH, HEIGHT]
        for k in np.argsort(-sizes[:, 1]):  # larger (nearer) objects last, on top
            cx, cy = centres[k]
            w, h = sizes[k]
            if kinds[k]:
                cv2.rectangle(id_map, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)),
                              int(ids[k]), -1)
            else:
                cv2.ellipse(id_map, (int(cx), int(cy)), (int(w / 2), int(h / 2)), 0, 0, 360, int(ids[k]), -1)
        for obj in kitti_mots.objects_from_id_map(id_map, f):
            lines.append(f"{f} {obj.obj_id} {obj.class_id} {HEIGHT} {WIDTH} {obj.counts.decode()}\n")
    path.write_text("".join(lines))


def ours(path: Path) -> list[np.ndarray]:
    frames = kitti_mots.read_txt(path, HEIGHT, WIDTH)
    return [kitti_mots.decode_id_map(objects, HEIGHT, WIDTH) for objects in frames.values()]


def reference(path: Path) -> list[np.ndarray]:
    maps: dict[int, np.ndarray] = {}
    with open(path) as f:
        for line in f:
            frame, obj_id, _cls, h, w, rle = line.split()
            id_map = maps.get(int(frame))
            if id_map is None:
                id_map = maps[int(frame)] = np.zeros((int(h), int(w)), np.int32)
            mask = mask_utils.decode({"size": [int(h), int(w)], "counts": rle.encode()})
            id_map[mask > 0] = int(obj_id)
    return [maps[k] for k in sorted(maps)]


def best_time(fn, path: Path, repeats: int) -> tuple[float, list[np.ndarray]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(path)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--objects", type=int, default=20, help="objects per frame")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours; the best is reported")
    parser.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the (slow) reference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "0000.txt"
        make_txt(path, args.frames, args.objects)
        n_lines = sum(1 for _ in open(path))
        t_ref, ref_maps = best_time(reference, path, args.ref_repeats)
        t_ours, our_maps = best_time(ours, path, args.repeats)
    assert len(ref_maps) == len(our_maps) == args.frames
    identical = all(np.array_equal(a, b) for a, b in zip(our_maps, ref_maps))
    fps_ours, fps_ref = args.frames / t_ours, args.frames / t_ref
    speedup = fps_ours / fps_ref
    ok = identical and fps_ours >= 150 and speedup >= 2
    print(f"KITTI-MOTS txt -> id maps: {args.frames} frames, {n_lines} objects, {WIDTH}x{HEIGHT}, "
          f"best of {args.repeats} (ours) and {args.ref_repeats} (reference)")
    print(f"{'method':<44}{'seconds':>10}{'frames/s':>12}")
    print(f"{'ours (read_txt validated + decode_id_map)':<44}{t_ours:>10.2f}{fps_ours:>12.1f}")
    print(f"{'pycocotools decode per object (no checks)':<44}{t_ref:>10.2f}{fps_ref:>12.1f}")
    print(f"id maps identical: {identical}")
    print(f"target: >= 150 frames/s and >= 2x reference -> {fps_ours:.0f} frames/s, {speedup:.1f}x: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
