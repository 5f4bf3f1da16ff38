"""Benchmark: the offline world's synchronous loop with one four-camera rig (rgb, depth, semantic,
instance) at 640x360 and a collision sensor on a driving ego (autopilot), 20 NPC vehicles and 20 walkers.

Every town by default (`--town all`), one row each, because the slowest town decides whether a
collection keeps up. Target: at least 17 ticks/s of CPU time of this process (process_time: the machine
may be shared, and wall clock then measures the other users too) in the slowest town; PASS/FAIL is
printed for that town. Reference measured in the same run for the first town: the same scene drawn the
plain way, all of it (ground planes included) by PyBullet's TINY renderer, one `getCameraImage` per
camera, which is what a direct implementation would do. Prints ticks/s (wall clock and CPU time) and the
per-part breakdown (traffic and physics, collisions, render, encode; wall clock ms per tick).

    python benchmarks/bench_offline_world.py [--town all|Town03] [--ticks 100] [--width 640 --height 360]
"""

from __future__ import annotations

import argparse
import queue
import time

import carla
import numpy as np
import pybullet
from tqdm import tqdm

from carla_scenarios.offline import command
from carla_scenarios.offline.client import synchronous_world
from carla_scenarios.offline.map import TOWN_NAMES, build_town
from carla_scenarios.offline.render import FAR, NEAR, Renderer

TARGET = 17.0  # ticks/s of CPU time, in the slowest town
CAMERAS = ("rgb", "depth", "semantic_segmentation", "instance_segmentation")


def setup(args: argparse.Namespace):
    client, world, tm = synchronous_world(args.town, 2000, dt=0.05, seed=args.seed)
    lib = world.get_blueprint_library()
    spawns = world.get_map().get_spawn_points()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(spawns))
    ego = world.spawn_actor(lib.find("vehicle.tesla.model3"), spawns[order[0]])
    ego.set_autopilot(True, tm.get_port())
    vehicles = lib.filter("vehicle.*")
    batch = [
        command.SpawnActor(vehicles[int(rng.integers(0, len(vehicles)))], spawns[i]).then(
            command.SetAutopilot(command.FutureActor, True, tm.get_port()))
        for i in order[1:args.vehicles + 1]
    ]
    npc = [r.actor_id for r in client.apply_batch_sync(batch, True) if not r.has_error()]
    walkers = []
    walker_bps = lib.filter("walker.pedestrian.*")
    while len(walkers) < args.walkers:
        bp = walker_bps[int(rng.integers(0, len(walker_bps)))]
        walker = world.try_spawn_actor(bp, carla.Transform(world.get_random_location_from_navigation()))
        if walker is None:
            continue
        controller = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
        controller.start()
        controller.go_to_location(world.get_random_location_from_navigation())
        controller.set_max_speed(1.4)
        walkers.append(walker)
    collision = world.spawn_actor(lib.find("sensor.other.collision"), carla.Transform(), attach_to=ego)
    collision.listen(lambda event: None)
    queues = {}
    for kind in CAMERAS:
        bp = lib.find(f"sensor.camera.{kind}")
        bp.set_attribute("image_size_x", str(args.width))
        bp.set_attribute("image_size_y", str(args.height))
        bp.set_attribute("fov", "90")
        cam = world.spawn_actor(bp, carla.Transform(carla.Location(x=1.5, z=2.4)), attach_to=ego)
        q: queue.Queue = queue.Queue()
        cam.listen(q.put)
        queues[kind] = q
    return client, world, ego, npc, walkers, queues


def run_loop(world, queues, ticks: int) -> tuple[float, float, dict]:
    for part in world._timings:
        world._timings[part] = 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in tqdm(range(ticks), desc="ticks", leave=False):
        frame = world.tick()
        for kind, q in queues.items():
            image = q.get(timeout=5.0)
            if image.frame != frame:
                raise RuntimeError(f"{kind} image of frame {image.frame} arrived for frame {frame}")
            np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4)
    return time.perf_counter() - wall0, time.process_time() - cpu0, dict(world._timings)


def reference(town_name: str, camera: carla.Transform, width: int, height: int, frames: int) -> tuple[float, float]:
    """Seconds (wall, CPU) per frame to draw the whole town with PyBullet alone, once per camera."""
    town = build_town(town_name)
    renderer = Renderer([])  # empty scene: add every box of the town as PyBullet bodies, ground included
    for start in range(0, len(town.boxes), 120):
        renderer.add_body(town.boxes[start:start + 120], 0, carla.Transform())
    loc = camera.location
    view = pybullet.computeViewMatrix([loc.x, -loc.y, loc.z], [loc.x + np.cos(np.radians(-camera.rotation.yaw)),
                                      -loc.y + np.sin(np.radians(-camera.rotation.yaw)), loc.z], [0, 0, 1],
                                      physicsClientId=renderer.client)
    vfov = 2 * np.degrees(np.arctan(np.tan(np.radians(45)) * height / width))
    proj = pybullet.computeProjectionMatrixFOV(vfov, width / height, NEAR, FAR, physicsClientId=renderer.client)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(frames):
        for _ in CAMERAS:
            pybullet.getCameraImage(width, height, view, proj, renderer=pybullet.ER_TINY_RENDERER,
                                    flags=pybullet.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX, physicsClientId=renderer.client)
    renderer.close()
    return (time.perf_counter() - wall0) / frames, (time.process_time() - cpu0) / frames


def measure(args: argparse.Namespace, town: str, with_reference: bool) -> dict:
    """One town: ticks/s (wall, CPU), ms per tick of each part, metres driven, and the reference."""
    run = argparse.Namespace(**{**vars(args), "town": town})
    client, world, ego, npc, walkers, queues = setup(run)
    run_loop(world, queues, args.warmup)
    start = ego.get_location()
    wall, cpu, parts = run_loop(world, queues, args.ticks)
    row = {"town": town, "wall": args.ticks / wall, "cpu": args.ticks / cpu, "driven": ego.get_location().distance(start),
           "npc": len(npc), "walkers": len(walkers)}
    row.update({part: 1000 * seconds / args.ticks for part, seconds in parts.items()})
    row["other"] = 1000 * (wall - sum(parts.values())) / args.ticks
    if with_reference:
        camera = [a for a in world.get_actors().filter("sensor.camera.rgb")][0].get_transform()
        row["ref_wall"], row["ref_cpu"] = reference(town, camera, args.width, args.height, args.reference_frames)
    client.load_world(town)  # releases the actors and the renderer
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--town", default="all", help=f"offline town, or 'all' (default): {', '.join(TOWN_NAMES)}")
    parser.add_argument("--ticks", type=int, default=100, help="timed ticks per town (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed ticks first (default 10)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--walkers", type=int, default=20)
    parser.add_argument("--reference-frames", type=int, default=3, help="frames drawn by the reference (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.ticks < 1 or args.width < 16 or args.height < 16:
        parser.error("--ticks must be >= 1 and the image at least 16x16")
    if args.town != "all" and args.town not in TOWN_NAMES:
        parser.error(f"--town must be 'all' or one of {', '.join(TOWN_NAMES)}, got {args.town!r}")
    towns = list(TOWN_NAMES) if args.town == "all" else [args.town]

    rows = [measure(args, town, with_reference=i == 0) for i, town in enumerate(tqdm(towns, desc="towns", leave=False))]
    first = rows[0]
    print(f"\noffline world, rig of {len(CAMERAS)} cameras at {args.width}x{args.height}, {first['npc']} NPC vehicles, "
          f"{first['walkers']} walkers, {args.ticks} timed ticks per town (ms/tick: wall clock)")
    print(f"{'town':10s} {'ticks/s wall':>12s} {'ticks/s CPU':>11s} {'traffic':>8s} {'collision':>9s} {'render':>7s} "
          f"{'encode':>7s} {'other':>6s} {'driven m':>9s}")
    for r in rows:
        print(f"{r['town']:10s} {r['wall']:12.1f} {r['cpu']:11.1f} {r['traffic']:8.1f} {r['collision']:9.1f} {r['render']:7.1f} "
              f"{r['encode']:7.1f} {r['other']:6.1f} {r['driven']:9.0f}")
    print(f"reference ({first['town']}, PyBullet only): {1000 * first['ref_wall']:.1f} ms/tick wall, "
          f"{1000 * first['ref_cpu']:.1f} ms/tick CPU; speed-up (CPU) {first['ref_cpu'] * first['cpu']:.1f}x")
    slowest = min(rows, key=lambda r: r["cpu"])
    verdict = "PASS" if slowest["cpu"] >= TARGET else "FAIL"
    print(f"target >= {TARGET:.0f} ticks/s of CPU time in the slowest town ({slowest['town']}, {slowest['cpu']:.1f}): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
