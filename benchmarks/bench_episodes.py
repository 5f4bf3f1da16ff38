"""Benchmark: random access to episode frames (all arrays) from the HDF5 episode format, against the same
frames stored the way a user would otherwise keep them, as a folder of PNG files, measured in one run.

Frames are rendered by vca_data.synthetic_episodes at 800x600 (a street scene with sensor-like noise in
the RGB, so compression ratios are honest). The PNG layout is the usual one: `rgb/NNNNNN.png` (8-bit
RGB), `depth/NNNNNN.png` (16-bit, metres*256, the KITTI convention), `semantic/` and `fine/` (8-bit),
`instance/` (16-bit, CARLA's instance ids are 16-bit), poses and timestamps in one .npz loaded once
(the episode reader also keeps those in memory). Reading a PNG frame decodes all five images and
converts them to the episode reader's dtypes (RGB order, float32 metres, uint32 ids).

Targets (issue 2): >= 150 frames/s and >= 2x the PNG folder. Also reported: file sizes, and the
read rate and size with other RGB codecs, to show the cost of each choice.

    .venv/bin/python benchmarks/bench_episodes.py [--frames 100] [--reads 150] [--width 800 --height 600]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vca_data.episodes import DEFAULT_COMPRESSION, FIELDS, EpisodeReader, EpisodeWriter
from vca_data.synthetic_episodes import (
    CAMERA_FORWARD,
    DT,
    SPEED,
    render_frame,
    synthetic_scene,
    world_from_camera,
)

TARGET_FPS = 150.0
TARGET_RATIO = 2.0
DEFAULT = "default (rgb raw)"
RGB_VARIANTS = {
    "rgb lzf": {"rgb": {"compression": "lzf"}},
    "rgb gzip-1": {"rgb": {"compression": "gzip", "compression_opts": 1}},
}


def write_png_frame(root: Path, i: int, frame: dict) -> None:
    name = f"{i:06d}.png"
    cv2.imwrite(str(root / "rgb" / name), cv2.cvtColor(frame["rgb"], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "depth" / name), np.clip(frame["depth"] * 256.0, 0, 65535).astype(np.uint16))
    cv2.imwrite(str(root / "semantic" / name), frame["semantic"])
    cv2.imwrite(str(root / "instance" / name), frame["instance"].astype(np.uint16))
    cv2.imwrite(str(root / "fine" / name), frame["fine"])


def read_png_frame(root: Path, i: int, vectors: dict) -> dict:
    name = f"{i:06d}.png"
    rgb = cv2.cvtColor(cv2.imread(str(root / "rgb" / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(root / "depth" / name), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256.0
    return {
        "rgb": rgb, "depth": depth,
        "semantic": cv2.imread(str(root / "semantic" / name), cv2.IMREAD_UNCHANGED),
        "instance": cv2.imread(str(root / "instance" / name), cv2.IMREAD_UNCHANGED).astype(np.uint32),
        "fine": cv2.imread(str(root / "fine" / name), cv2.IMREAD_UNCHANGED),
        "ego_pose": vectors["ego_pose"][i], "timestamp": float(vectors["timestamp"][i]), "frame": int(vectors["frame"][i]),
    }


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_reads(read, order) -> tuple[float, float]:
    """Frames per wall-clock second and per CPU second of this process, reading the frames in `order`.
    On a shared machine the CPU-time rate is what the code itself achieves; the wall rate also counts
    the time other processes held the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in order:
        read(int(i))
    return len(order) / (time.perf_counter() - wall), len(order) / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="frames in the episode (default 100)")
    parser.add_argument("--reads", type=int, default=150, help="random frame reads per round (default 150)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per store; the median is reported")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the written files here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.reads < 1 or args.rounds < 1:
        parser.error("--frames, --reads and --rounds must be positive")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_episodes_"))
    workdir.mkdir(parents=True, exist_ok=True)
    png_root = workdir / "png"
    for sub in ("rgb", "depth", "semantic", "instance", "fine"):
        (png_root / sub).mkdir(parents=True, exist_ok=True)
    attrs = {"town": "Town01", "scenario": "construction", "split": "train", "seed": 0, "backend": "synthetic"}
    stores = {DEFAULT: DEFAULT_COMPRESSION, **RGB_VARIANTS}
    paths = {name: workdir / f"episode_{k}.h5" for k, name in enumerate(stores)}
    writers = [EpisodeWriter(paths[name], attrs, args.height, args.width, compression=codec, update_manifest=False)
               for name, codec in stores.items()]
    boxes, _, _ = synthetic_scene("Town01", "construction", 0, args.frames)
    rng = np.random.default_rng(0)
    vectors = {"ego_pose": [], "timestamp": [], "frame": []}
    try:
        for i in tqdm(range(args.frames), desc="render and write", unit="frame"):
            cam_x = CAMERA_FORWARD + SPEED * DT * i
            frame = render_frame(boxes, cam_x, args.height, args.width, 90.0, rng)
            frame.update(ego_pose=world_from_camera(cam_x), timestamp=i * DT, frame=i)
            for writer in writers:
                writer.append(frame)
            write_png_frame(png_root, i, frame)
            for key in vectors:
                vectors[key].append(frame[key])
    finally:
        for writer in writers:
            writer.close()
    np.savez(png_root / "vectors.npz", **{k: np.asarray(v) for k, v in vectors.items()})

    with np.load(png_root / "vectors.npz") as npz:
        png_vectors = dict(npz)
    order = np.random.default_rng(1).integers(0, args.frames, args.reads)
    readers = {name: EpisodeReader(path) for name, path in paths.items()}
    # the two stores must agree on the decoded frame (up to the PNG depth quantisation)
    h5_frame, png_frame = readers[DEFAULT][3], read_png_frame(png_root, 3, png_vectors)
    for key in FIELDS:
        h5_value = np.minimum(h5_frame[key], 65535 / 256) if key == "depth" else h5_frame[key]
        if not np.allclose(h5_value, png_frame[key], atol=1 / 256 if key == "depth" else 0):
            raise SystemExit(f"frame 3: field {key!r} differs between the episode file and the PNG folder")

    wall: dict[str, list[float]] = {name: [] for name in [*stores, "png folder"]}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    for _ in tqdm(range(args.rounds), desc="timed rounds", unit="round"):
        for name, reader in readers.items():
            w, c = timed_reads(reader.__getitem__, order)
            wall[name].append(w)
            cpu[name].append(c)
        w, c = timed_reads(lambda i: read_png_frame(png_root, i, png_vectors), order)
        wall["png folder"].append(w)
        cpu["png folder"].append(c)
    for reader in readers.values():
        reader.close()

    wall_fps = {name: statistics.median(v) for name, v in wall.items()}
    cpu_fps = {name: statistics.median(v) for name, v in cpu.items()}
    png_mb = folder_size(png_root) / 1e6
    print(f"\nrandom access to {args.width}x{args.height} episode frames, all arrays "
          f"({args.frames} frames, {args.reads} reads x {args.rounds} rounds, median; "
          f"f/s = frames per wall second, f/cpu-s = frames per CPU second of this process)")
    print(f"{'store':<18} {'f/s':>7} {'vs png':>7} {'f/cpu-s':>8} {'vs png':>7} {'MB':>7} {'MB/frame':>9}  target")
    verdicts = {}
    for name in [*stores, "png folder"]:
        mb = png_mb if name == "png folder" else paths[name].stat().st_size / 1e6
        if name == DEFAULT:
            for label, fps in (("wall", wall_fps), ("cpu", cpu_fps)):
                verdicts[label] = fps[name] >= TARGET_FPS and fps[name] >= TARGET_RATIO * fps["png folder"]
            note = (f">= {TARGET_FPS:.0f} f/s and >= {TARGET_RATIO:.0f}x png: wall {'PASS' if verdicts['wall'] else 'FAIL'}, "
                    f"cpu {'PASS' if verdicts['cpu'] else 'FAIL'}")
        else:
            note = "reference" if name == "png folder" else "(alternative codec)"
        print(f"{name:<18} {wall_fps[name]:7.1f} {wall_fps[name] / wall_fps['png folder']:6.2f}x "
              f"{cpu_fps[name]:8.1f} {cpu_fps[name] / cpu_fps['png folder']:6.2f}x {mb:7.1f} {mb / args.frames:9.2f}  {note}")
    ok = verdicts["wall"]
    if args.workdir is None:
        shutil.rmtree(workdir)
        where = "temporary files removed"
    else:
        where = f"files kept in {workdir}"
    print(f"episode reads: {wall_fps[DEFAULT]:.0f} frames/s ({wall_fps[DEFAULT] / wall_fps['png folder']:.1f}x png), "
          f"{cpu_fps[DEFAULT]:.0f} frames per CPU second ({cpu_fps[DEFAULT] / cpu_fps['png folder']:.1f}x png): "
          f"{'PASS' if ok else 'FAIL'} on wall time, {'PASS' if verdicts['cpu'] else 'FAIL'} on CPU time; {where}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
