"""Preview images of the offline towns: one RGB and one semantic frame (CARLA palette) per town, seen
from a car on the first spawn point with traffic, walkers and a few unknown-object props ahead.

    python -m carla_scenarios.offline.preview --out docs/towns [--width 320 --height 180] [--towns Town01 ...]

Writes <out>/<Town>_rgb.png and <out>/<Town>_semantic.png.
"""

from __future__ import annotations

import argparse
import queue
from pathlib import Path

import carla
import cv2
import numpy as np
from tqdm import tqdm

from vca_data.io import atomic_write_bytes
from vca_data.labels import colorize_carla, default_catalogue

from . import command
from .client import synchronous_world
from .map import TOWN_NAMES

PREVIEW_PORT = 2950  # an address of its own, so a preview never touches another world in the process


def render_preview(town: str, width: int, height: int, ticks: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB (HxWx3 uint8) and CARLA tag (HxW uint8) images of a town after a few ticks of traffic."""
    client, world, tm = synchronous_world(town, PREVIEW_PORT, dt=0.1, seed=seed)
    lib = world.get_blueprint_library()
    spawns = world.get_map().get_spawn_points()
    rng = np.random.default_rng(seed)
    ego_tf = spawns[0]
    ego = world.spawn_actor(lib.find("vehicle.tesla.model3"), ego_tf)
    wp = world.get_map().get_waypoint(ego_tf.location)
    # a few unknown objects of the catalogue on the lane ahead, a little to the side
    classes = default_catalogue().classes
    for k, distance in enumerate((18.0, 21.0, 24.0)):
        ahead = wp.next(distance)[0].transform
        bp_entry = classes[(k * 3) % len(classes)].blueprints[0]
        bp = lib.find(bp_entry.id)
        for key, value in bp_entry.attributes.items():
            bp.set_attribute(key, value)
        side = ahead.get_right_vector() * (1.2 if k % 2 else -1.2)
        world.try_spawn_actor(bp, carla.Transform(ahead.location + side, ahead.rotation))
    far = [spawns[int(i)] for i in rng.permutation(len(spawns))[:12] if spawns[int(i)].location.distance(ego_tf.location) > 10]
    vehicles = lib.filter("vehicle.*")
    batch = [command.SpawnActor(vehicles[int(rng.integers(len(vehicles)))], tf).then(
        command.SetAutopilot(command.FutureActor, True, 8000)) for tf in far]
    client.apply_batch_sync(batch, True)
    walkers = lib.filter("walker.pedestrian.*")
    for _ in range(10):
        walker = world.try_spawn_actor(walkers[int(rng.integers(len(walkers)))],
                                       carla.Transform(world.get_random_location_from_navigation()))
        if walker is not None:
            controller = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
            controller.start()
            controller.go_to_location(world.get_random_location_from_navigation())
    queues = {}
    for kind in ("rgb", "semantic_segmentation"):
        bp = lib.find(f"sensor.camera.{kind}")
        bp.set_attribute("image_size_x", str(width))
        bp.set_attribute("image_size_y", str(height))
        bp.set_attribute("fov", "90")
        cam = world.spawn_actor(bp, carla.Transform(carla.Location(x=-6.0, z=2.8), carla.Rotation(pitch=-6)), attach_to=ego)
        queues[kind] = queue.Queue()
        cam.listen(queues[kind].put)
    for _ in range(ticks):
        world.tick()
    images = {}
    for kind, q in queues.items():
        while not q.empty():
            images[kind] = q.get()
    rgb = np.frombuffer(images["rgb"].raw_data, dtype=np.uint8).reshape(height, width, 4)[..., 2::-1]
    tags = np.frombuffer(images["semantic_segmentation"].raw_data, dtype=np.uint8).reshape(height, width, 4)[..., 2]
    client.load_world(town)  # release the actors
    return rgb.copy(), tags.copy()


def _png(image_rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for <Town>_rgb.png and <Town>_semantic.png")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--towns", nargs="+", default=list(TOWN_NAMES), help=f"towns (default all: {' '.join(TOWN_NAMES)})")
    args = parser.parse_args(argv)
    if args.width < 16 or args.height < 16:
        parser.error("--width and --height must be at least 16")
    unknown = [t for t in args.towns if t not in TOWN_NAMES]
    if unknown:
        parser.error(f"unknown towns {unknown}; the offline world has {list(TOWN_NAMES)}")
    for town in tqdm(args.towns, desc="towns"):
        rgb, tags = render_preview(town, args.width, args.height)
        atomic_write_bytes(args.out / f"{town}_rgb.png", _png(rgb))
        atomic_write_bytes(args.out / f"{town}_semantic.png", _png(colorize_carla(tags)))
    print(f"wrote {2 * len(args.towns)} preview images of {len(args.towns)} towns to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
