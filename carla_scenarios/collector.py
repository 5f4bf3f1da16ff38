"""The collector: plans the episode list (towns x scenarios x seeds, sharded), connects to a backend,
and runs each episode: town, weather and traffic from the episode seed, the scenario's unknown objects
on the ego's route, the agent driving, the rig rendering, the recorder writing every k-th tick.

Every resource an episode takes (synchronous mode, actors, sensors, the partial file) is released in a
context manager, also on Ctrl-C and on server errors. A file only gets its final name when complete,
so `--resume` can skip finished episodes (listed in the manifest) and redo the rest.

Besides the episode file, each episode gets `<name>.tracks.json` beside it: the per-frame transforms and
velocities of the dynamic actors (NPC vehicles and walkers), from which the export derives the true
moving/static state of each track. It is written before the episode file is completed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import carla
import numpy as np

from carla_scenarios import decode
from carla_scenarios.agent import AvoidingAgent, must_stop_at_light, obstacles_from_actors
from carla_scenarios.backend import backend_name, connect, probe_carla  # noqa: F401 (the collector's API)
from carla_scenarios.cleanup import ServerLink, destroy_leftovers
from carla_scenarios.footprints import scenario_footprints
from carla_scenarios.props import (
    enable_physics,
    in_view,
    require_extents,
    require_seen,
    settle_records,
)
from carla_scenarios.recorder import EpisodeRecorder
from carla_scenarios.rig import MAX_DT, ActorRegistry, SensorRig, SynchronousMode
from carla_scenarios.route import Route, lane_route
from carla_scenarios.scenarios import LAYOUTS, plan_layout
from carla_scenarios.spawning import (  # noqa: F401 (the collector's API)
    EpisodeSkipped,
    _set_role,
    _transform,
    spawn_extras,
    spawn_scenario_walkers,
    spawn_unknown_objects,
    start_crossings,
)
from carla_scenarios.weather import random_weather
from vca_data.episodes import (
    EPISODES_DIR,
    POSE_CONVENTION,
    episode_filename,
    read_manifest,
    update_manifest,
    validate,
)
from vca_data.io import atomic_write_json
from vca_data.labels import SCENARIOS, Catalogue, default_catalogue, normalize_town

log = logging.getLogger(__name__)

TRACKS_SUFFIX = ".tracks.json"
# NPC counts per town (vehicles, walkers), ranges drawn from per episode: busier towns get more.
TOWN_TRAFFIC = {
    "Town01": ((6, 12), (6, 12)),
    "Town02": ((5, 10), (6, 12)),
    "Town03": ((10, 18), (8, 16)),
    "Town05": ((10, 18), (8, 14)),
    "Town07": ((4, 8), (4, 8)),
    "Town10HD": ((8, 16), (10, 18)),
}
DEFAULT_TRAFFIC = ((6, 12), (6, 12))


class CollectError(RuntimeError):
    """Collection cannot go on (no server, lost server, sensor timeout); the message says why."""


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpisodeSpec:
    town: str
    scenario: str
    seed: int
    split: str

    @property
    def filename(self) -> str:
        return episode_filename(self.town, self.scenario, self.seed)


def plan_episodes(towns: list[str], scenarios: list[str], episodes: int, seed: int,
                  catalogue: Catalogue | None = None) -> list[EpisodeSpec]:
    """Episodes `seed .. seed+episodes-1` of every town x scenario, in a fixed order."""
    catalogue = catalogue or default_catalogue()
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    specs = []
    for town in towns:
        town = normalize_town(town)
        split = catalogue.split_of_town(town)
        for scenario in scenarios:
            if scenario not in SCENARIOS:
                raise ValueError(f"unknown scenario {scenario!r}; expected one of {list(SCENARIOS)}")
            specs += [EpisodeSpec(town, scenario, seed + i, split) for i in range(episodes)]
    return specs


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= i < N")
    return i, n


def shard_episodes(specs: list[EpisodeSpec], index: int, count: int) -> list[EpisodeSpec]:
    """The part of the episode list that shard `index` of `count` collects: disjoint, together complete,
    independent of list order (by a hash of the file name), so shards balance towns and scenarios."""
    return [s for s in specs if zlib.crc32(s.filename.encode()) % count == index]


def episode_rng(spec: EpisodeSpec) -> np.random.Generator:
    """The episode's one random generator, from its seed, town and scenario."""
    key = [spec.seed, zlib.crc32(spec.town.encode()), zlib.crc32(spec.scenario.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


# ---------------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------------

def load_town(client, town: str):
    """The world with `town` loaded (reloading only when another map is loaded)."""
    world = client.get_world()
    if _map_basename(world.get_map().name) in (town, town + "_Opt"):
        return world
    maps = client.get_available_maps()
    match = [m for m in maps if _map_basename(m) == town] or [m for m in maps if _map_basename(m) == town + "_Opt"]
    if not match:
        names = sorted({_map_basename(m) for m in maps})
        raise EpisodeSkipped(f"town {town} is not available on this server (available: {', '.join(names)})")
    return client.load_world(_map_basename(match[0]))


def _map_basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].split(".")[0]


# ---------------------------------------------------------------------------------------------
# Staging an episode
# ---------------------------------------------------------------------------------------------

@dataclass
class CollectOptions:
    frames: int = 20
    frame_step: int = 2
    width: int = 320
    height: int = 180
    fov: float = 90.0
    dt: float = 0.05
    sensor_timeout: float = 10.0
    target_speed: float = 7.0
    speed_limit: float = 8.33
    warmup_ticks: int = 5
    vehicles: int | None = None  # None: drawn from the town's range
    walkers: int | None = None
    parked: int = 0  # parked cars along the kerbs of the ego's road
    tm_port: int = 8000
    record: bool = True  # False: drive and render without decoding or writing (the benchmark's bare loop)
    layout: str = "ours"  # or "vca-authors": the authors' construction and parking layouts
    weather: tuple[str, ...] | None = None  # presets to draw from (None: all, perturbed); see weather.parse_weather
    traffic_radius: float | None = None  # NPC vehicles and walkers start within this many metres of the ego's road

    def validate(self) -> None:
        if self.frames < 1:
            raise ValueError(f"--frames must be at least 1, got {self.frames}")
        if self.frame_step < 1:
            raise ValueError(f"--frame-step must be at least 1, got {self.frame_step}")
        if not (8 <= self.width <= 4096 and 8 <= self.height <= 4096):
            raise ValueError(f"--width/--height must be in 8..4096, got {self.width}x{self.height}")
        if not 0.0 < self.dt <= MAX_DT:
            raise ValueError(f"--dt must be in (0, {MAX_DT:g}] s (CARLA's docs: physics and sensors are not reliable "
                             f"above {MAX_DT:g} s), got {self.dt}")
        if not 10.0 <= self.fov <= 170.0:
            raise ValueError(f"--fov must be in 10..170 degrees, got {self.fov}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        for name in ("vehicles", "walkers", "parked"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} must be non-negative, got {value}")
        if self.traffic_radius is not None and not self.traffic_radius > 0:
            raise ValueError(f"--traffic-radius must be a positive distance in metres, got {self.traffic_radius}")

    @property
    def ticks(self) -> int:
        return self.frames * self.frame_step

    def drive_distance(self) -> float:
        return self.ticks * self.dt * self.target_speed


@dataclass
class EpisodeResult:
    spec: EpisodeSpec
    path: Path | None
    frames: int = 0
    unknown_pixels: int = 0
    collisions: list = field(default_factory=list)
    unknown_objects: list = field(default_factory=list)
    seen_objects: set = field(default_factory=set)
    seconds: float = 0.0
    skipped: str | None = None
    failed_spawns: dict = field(default_factory=dict)  # what could not be spawned, by kind (non-zero only)
    route_progress: float = 0.0  # metres the ego drove along its route

    @property
    def passed_objects(self) -> bool:
        """Whether the ego drove past the last of the scenario's objects."""
        return bool(self.unknown_objects) and self.route_progress > max(o["route_s"] for o in self.unknown_objects)

    @property
    def all_objects_seen(self) -> bool:
        return bool(self.unknown_objects) and {o["actor_id"] for o in self.unknown_objects} <= self.seen_objects


def layout_distance(options: CollectOptions) -> tuple[float, float]:
    """Where the scenario starts ahead of the ego: about 30-38 m (the VCA authors used about 40 m) for
    long episodes, closer for short ones, so that the ego reaches and passes the objects before the
    episode ends."""
    far = min(38.0, max(16.0, 0.5 * options.drive_distance() + 8.0))
    return max(12.0, far - 8.0), far


def scenario_window(route: Route, near: float, far: float, before: float = 8.0, after: float = 14.0,
                    max_bend_deg: float = 10.0) -> tuple[float, float] | None:
    """The first run of layout starts s0 in [near, far] (1 m grid) whose surroundings
    [s0 - before, s0 + after] are straight and junction-free, as (first, last); None if there is none."""
    yaw = np.degrees(np.unwrap(np.radians(route.yaw)))
    good = []
    for s0 in np.arange(near, far + 1e-6, 1.0):
        region = (route.s >= s0 - before) & (route.s <= s0 + after)
        if s0 + after > route.length or not region.any():
            break
        ok = not route.junction[region].any() and float(np.ptp(yaw[region])) < max_bend_deg
        if ok:
            good.append(float(s0))
        elif good:
            break
    return (good[0], good[-1]) if good else None


def choose_route(carla_map, near: float, far: float, needed: float, rng: np.random.Generator,
                 max_tries: int = 80) -> tuple[carla.Transform, Route, tuple[float, float]]:
    """A spawn point whose lane runs `needed` metres ahead with a straight junction-free stretch for the
    scenario to start in between `near` and `far` metres (closer, down to 12 m, in towns with short
    blocks), preferring a same-direction lane to the left to change into, then an oncoming lane to
    overtake in. Returns the spawn point, its route and the window of scenario starts."""
    points = list(carla_map.get_spawn_points())
    if not points:
        raise EpisodeSkipped("the map has no spawn points")
    best = None
    for k in rng.permutation(len(points))[:max_tries]:
        sp = points[int(k)]
        wp = carla_map.get_waypoint(sp.location)
        if wp is None:
            continue
        try:
            route = lane_route(wp, needed)
        except ValueError:
            continue
        if route.length < needed - 1.0:
            continue
        window = scenario_window(route, near, far)
        closer = window is None
        if closer:
            window = scenario_window(route, min(12.0, near), far)
            if window is None:
                continue
        region = (route.s >= window[0] - 8.0) & (route.s <= window[1] + 14.0)
        same = bool(route.left_free_lane[region].all())
        passable = bool((route.left_free_lane[region] | route.left_oncoming_lane[region]).all())
        score = (not closer) * 4 + same * 2 + passable
        if score == 7:
            return sp, route, window
        if best is None or score > best[0]:
            best = (score, sp, route, window)
    if best is None:
        raise EpisodeSkipped(f"no spawn point with a straight junction-free stretch {near:.0f}-{far:.0f} m ahead")
    return best[1], best[2], best[3]


def _cars(library, rng: np.random.Generator) -> list:
    vehicles = sorted(library.filter("vehicle.*"), key=lambda b: b.id)
    cars = [b for b in vehicles if b.has_attribute("number_of_wheels") and b.get_attribute("number_of_wheels").as_int() == 4]
    if not (cars or vehicles):
        raise EpisodeSkipped("no vehicle blueprints in the library")
    return cars or vehicles


def _pick_car(cars: list, rng: np.random.Generator, role: str):
    """One of `cars`, in one of its recommended colours, with role name `role` (where it has them)."""
    bp = cars[int(rng.integers(len(cars)))]
    if bp.has_attribute("color"):
        values = bp.get_attribute("color").recommended_values
        if values:
            bp.set_attribute("color", values[int(rng.integers(len(values)))])
    _set_role(bp, role)
    return bp


def command_module(blueprint):
    """The batch command module matching a blueprint's backend: `carla.command` builds commands only
    from a server's blueprints, the offline world has its own module of the same shape."""
    if isinstance(blueprint, carla.ActorBlueprint):
        return carla.command
    from carla_scenarios.offline import command

    return command


NEAR_TRIES = 400  # navigation-mesh draws for a walker near the ego's road


class Nearby:
    """Where NPCs may start: within `radius` metres (in the ground plane) of any of `xy`, the ego's road
    ahead; no `Nearby` means anywhere in the town."""

    def __init__(self, xy: np.ndarray, radius: float):
        self.xy = np.asarray(xy, np.float64).reshape(-1, 2)
        self.radius = float(radius)

    def __call__(self, loc: carla.Location) -> bool:
        d = np.hypot(self.xy[:, 0] - loc.x, self.xy[:, 1] - loc.y)
        return bool(d.size) and float(d.min()) <= self.radius


def spawn_traffic(client, world, registry: ActorRegistry, rng: np.random.Generator, count: int,
                  avoid: list[carla.Location], tm_port: int, near: Nearby | None = None) -> list:
    """NPC vehicles on the Traffic Manager's autopilot, at seeded spawn points away from `avoid` (and
    `near` the ego's road when given)."""
    if count == 0:
        return []
    library = world.get_blueprint_library()
    cars = _cars(library, rng)
    points = [p for p in world.get_map().get_spawn_points()
              if all(p.location.distance(a) > 15.0 for a in avoid) and (near is None or near(p.location))]
    order = rng.permutation(len(points))[:count]
    batch = []
    for k in order:
        bp = _pick_car(cars, rng, "traffic")
        cmd = command_module(bp)
        batch.append(cmd.SpawnActor(bp, points[int(k)]).then(cmd.SetAutopilot(cmd.FutureActor, True, tm_port)))
    ids = [r.actor_id for r in client.apply_batch_sync(batch, True) if not r.error]
    actors = list(world.get_actors(ids)) if ids else []
    for a in actors:
        registry.add(a)
    return actors


def spawn_walkers(client, world, registry: ActorRegistry, rng: np.random.Generator, count: int,
                  avoid: list[carla.Location], near: Nearby | None = None) -> list:
    """NPC walkers on the navigation mesh, each with an AI controller walking to a random spot (both
    `near` the ego's road when given: the spot is drawn again, up to NEAR_TRIES times)."""
    if count == 0:
        return []
    library = world.get_blueprint_library()
    walker_bps = sorted(library.filter("walker.pedestrian.*"), key=lambda b: b.id)
    if not walker_bps:
        return []
    world.set_pedestrians_seed(int(rng.integers(2**31)))
    batch = []
    for _ in range(count):
        loc = navigation_location(world, near=near, strict=False)
        if loc is None or any(loc.distance(a) < 4.0 for a in avoid):
            continue
        bp = walker_bps[int(rng.integers(len(walker_bps)))]
        _set_role(bp, "walker")
        if bp.has_attribute("is_invincible"):
            bp.set_attribute("is_invincible", "false")
        batch.append(command_module(bp).SpawnActor(bp, carla.Transform(loc + carla.Location(z=1.0))))
    ids = [r.actor_id for r in client.apply_batch_sync(batch, True) if not r.error]
    walkers = list(world.get_actors(ids)) if ids else []
    for w in walkers:
        registry.add(w)
    controller_bp = library.find("controller.ai.walker")
    cmd = command_module(controller_bp)
    batch = [cmd.SpawnActor(controller_bp, carla.Transform(), w.id) for w in walkers]
    cids = [r.actor_id for r in client.apply_batch_sync(batch, True) if not r.error] if batch else []
    controllers = list(world.get_actors(cids)) if cids else []
    for c in controllers:
        registry.add(c)
    world.tick()  # controllers need one tick before they can be started
    for c in controllers:
        c.start()
        c.go_to_location(navigation_location(world, near=near))
        c.set_max_speed(float(rng.uniform(0.8, 1.8)))
    return walkers


def navigation_location(world, tries: int = 50, near: Nearby | None = None, strict: bool = True):
    """A random point of the navigation mesh: a server returns None when its query fails, which
    `go_to_location` rejects with a Boost ArgumentError, so draw again. With `near`, a point near the
    ego's road (up to NEAR_TRIES draws); when none is found, a start (`strict` False) is None and a
    destination is the last point drawn. No point at all: EpisodeSkipped if `strict`, else None."""
    last = None
    for _ in range(tries if near is None else NEAR_TRIES):
        loc = world.get_random_location_from_navigation()
        if loc is None:
            continue
        last = loc
        if near is None or near(loc):
            return loc
    if near is not None and not strict:
        return None
    if last is not None:
        return last
    if not strict:
        return None
    raise EpisodeSkipped(f"the navigation mesh gave no walker destination in {tries} tries")


def _outer_lane(wp):
    """The rightmost driving lane beside waypoint `wp`, in its direction of travel."""
    while True:
        right = wp.get_right_lane()
        if right is None or right.lane_type != carla.LaneType.Driving or right.lane_id * wp.lane_id <= 0:
            return wp
        wp = right


def kerb_lanes(wp) -> list:
    """The outermost driving lane on each side of the road at `wp`: its own direction's, and the
    opposite direction's where the road has one (each in its own direction of travel)."""
    inner = wp
    while True:
        left = inner.get_left_lane()
        if left is None or left.lane_type != carla.LaneType.Driving:
            return [_outer_lane(wp)]
        if left.lane_id * inner.lane_id < 0:
            return [_outer_lane(wp), _outer_lane(left)]
        inner = left


def spawn_parked(world, registry: ActorRegistry, rng: np.random.Generator, route: Route, count: int,
                 keep_clear: list[float], into_lane: float = 0.25, reach: float = 150.0) -> list:
    """Parked cars along the kerbs of the ego's road, from 6 m to `reach` m ahead along its route, on
    either side of the road: parallel to the lane, mostly on the sidewalk and `into_lane` metres in the
    outermost lane (so that traffic passes them), clear of junctions and 10 m clear of the route
    positions `keep_clear` (the scenario's objects). Held by the hand brake; spots that are taken are
    left out. Their states are recorded like those of the traffic: static tracks."""
    if count == 0:
        return []
    carla_map = world.get_map()
    cars = [b for b in _cars(world.get_blueprint_library(), rng)
            if not b.has_attribute("base_type") or b.get_attribute("base_type").as_str() == "car"]
    end = min(route.length, reach)
    spots = [s for s in np.arange(6.0, end, 1.0)
             if not route.junction[route.index_at(s)] and all(abs(s - c) > 10.0 for c in keep_clear)]
    parked = []
    for k in rng.permutation(len(spots))[: 5 * count]:
        if len(parked) == count:
            break
        x, y, z, _ = route.pose_at(float(spots[int(k)]))
        wp = carla_map.get_waypoint(carla.Location(x=x, y=y, z=z))
        if wp is None or wp.is_junction:
            continue
        lanes = kerb_lanes(wp)
        lane = lanes[int(rng.integers(len(lanes)))]
        bp = _pick_car(cars, rng, "parked")
        half_width = 0.95  # a passenger car's; the spawned one's is known only once it stands there
        tf = lane.transform
        right = tf.get_right_vector()
        offset = 0.5 * lane.lane_width + half_width - into_lane
        loc = carla.Location(tf.location.x + right.x * offset, tf.location.y + right.y * offset, tf.location.z + 0.3)
        actor = registry.try_spawn(bp, carla.Transform(loc, carla.Rotation(yaw=tf.rotation.yaw)))
        if actor is not None:
            actor.apply_control(carla.VehicleControl(hand_brake=True))
            parked.append(actor)
    return parked


def camera_mount(bounding_box) -> carla.Transform:
    """Camera mount just ahead of the ego's box and above its top, so no part of the ego is in view."""
    loc, ext = bounding_box.location, bounding_box.extent
    return carla.Transform(carla.Location(x=loc.x + ext.x + 0.05, z=loc.z + ext.z + 0.2))


def actor_state(actor) -> list[float]:
    """[x, y, z, yaw, vx, vy, vz] of an actor, CARLA world frame."""
    tf = actor.get_transform()
    v = actor.get_velocity()
    return [tf.location.x, tf.location.y, tf.location.z, tf.rotation.yaw, v.x, v.y, v.z]


# ---------------------------------------------------------------------------------------------
# One episode
# ---------------------------------------------------------------------------------------------

def collect_episode(client, spec: EpisodeSpec, options: CollectOptions, data_dir: Path, backend: str,
                    catalogue: Catalogue | None = None, progress: Callable[[int], None] | None = None,
                    on_tick: Callable[[int], None] | None = None) -> EpisodeResult:
    """Stage, drive, record and clean up one episode; returns what was recorded. Raises EpisodeSkipped
    when the town cannot stage it, anything else when the backend fails (after cleaning up)."""
    catalogue = catalogue or default_catalogue()
    start = time.perf_counter()
    rng = episode_rng(spec)
    path = Path(data_dir) / EPISODES_DIR / spec.filename
    tracks_path = path.with_name(path.stem + TRACKS_SUFFIX)
    path.with_name(path.name + ".part").unlink(missing_ok=True)
    result = EpisodeResult(spec, None)

    world = load_town(client, spec.town)
    carla_map = world.get_map()
    weather, weather_record = random_weather(rng, options.weather)
    classes = catalogue.unknown_classes(spec.split, spec.scenario)
    tm = client.get_trafficmanager(options.tm_port)

    destroy_leftovers(client, world)  # of a run that died without cleaning up (the --resume case)
    with contextlib.ExitStack() as stack:
        link = ServerLink()  # after a time-out, cleanup asks nothing more of the server
        stack.enter_context(SynchronousMode(world, options.dt, tm, link))
        registry = stack.enter_context(ActorRegistry(world, client, link))
        tm.set_random_device_seed(int(rng.integers(2**31)))
        world.set_weather(weather)

        near, far = layout_distance(options)
        spawn, route, window = choose_route(carla_map, near, far, max(far + 14.0, options.drive_distance()) + 40.0, rng)
        layout = plan_layout(spec.scenario, classes, float(route.lane_width[0]), rng, window, options.layout)

        library = world.get_blueprint_library()
        cars = _cars(library, rng)
        # the ego is a passenger car: trucks and buses do not fit under the trees that overhang lanes
        small = [b for b in cars if b.has_attribute("base_type") and b.get_attribute("base_type").as_str() == "car"]
        ego_bp = (small or cars)[int(rng.integers(len(small or cars)))]
        _set_role(ego_bp, "ego")
        ego_tf = carla.Transform(spawn.location + carla.Location(z=0.3), spawn.rotation)
        ego = registry.try_spawn(ego_bp, ego_tf)
        if ego is None:
            raise EpisodeSkipped(f"the ego's spawn point at {spawn.location} is occupied")

        unknown_objects = spawn_unknown_objects(world, registry, layout, route)
        if not unknown_objects:
            raise EpisodeSkipped("none of the scenario's objects could be spawned")
        avoid = [spawn.location] + [carla.Location(x=o["transform"][0], y=o["transform"][1], z=o["transform"][2])
                                    for o in unknown_objects]
        scenery_props = spawn_extras(world, registry, layout, route)
        crossings: list = []  # walkers that cross when the ego comes close
        scene_walkers = spawn_scenario_walkers(world, registry, layout, route, rng, crossings)
        (v_lo, v_hi), (w_lo, w_hi) = TOWN_TRAFFIC.get(spec.town, DEFAULT_TRAFFIC)
        n_vehicles = options.vehicles if options.vehicles is not None else int(rng.integers(v_lo, v_hi + 1))
        n_walkers = options.walkers if options.walkers is not None else int(rng.integers(w_lo, w_hi + 1))
        near = None
        if options.traffic_radius is not None:  # the ego's road, as far as the camera sees it well
            near = Nearby(route.xyz[route.s <= options.drive_distance() + 60.0, :2], options.traffic_radius)
        npc_vehicles = spawn_traffic(client, world, registry, rng, n_vehicles, avoid, options.tm_port, near)
        npc_walkers = spawn_walkers(client, world, registry, rng, n_walkers, avoid, near)
        parked = spawn_parked(world, registry, rng, route, options.parked, [o["route_s"] for o in unknown_objects])
        dynamic = ([(a, "vehicle") for a in npc_vehicles] + [(a, "walker") for a in npc_walkers + scene_walkers]
                   + [(a, "parked") for a in parked])

        mount = camera_mount(ego.bounding_box)
        rig = SensorRig(world, registry, ego, options.width, options.height, options.fov, options.sensor_timeout, mount)
        ego.apply_control(carla.VehicleControl(hand_brake=True))
        props = [a for a in registry.actors if a.id in {o["actor_id"] for o in unknown_objects}]
        require_extents(unknown_objects, props)  # a prop whose mesh did not load stops the episode
        meshes = {a.id: a for a in props if a.type_id == "static.prop.mesh"}
        expected: set[int] = set()  # mesh props some frame should have shown
        enable_physics(props)  # they fall onto the ground below them
        for _ in range(options.warmup_ticks):  # props and traffic settle before recording
            rig.tick()
        settle_records(unknown_objects, props)
        failed = {"objects": len(layout.objects) - len(unknown_objects), "vehicles": n_vehicles - len(npc_vehicles),
                  "walkers": n_walkers - len(npc_walkers), "parked": options.parked - len(parked)}
        result.failed_spawns = {k: v for k, v in failed.items() if v > 0}
        if result.failed_spawns:
            log.warning("%s: spawns that failed: %s", spec.filename, result.failed_spawns)
        # start at cruising speed, so that short episodes show driving rather than a standing start
        fwd = ego.get_transform().get_forward_vector()
        ego.set_target_velocity(carla.Vector3D(fwd.x * options.target_speed, fwd.y * options.target_speed, 0.0))

        ext = ego.bounding_box.extent
        road_limit = ego.get_speed_limit() / 3.6  # km/h of the road; 0 where the server has none yet
        speed_limit = min(options.speed_limit, road_limit) if road_limit > 0 else options.speed_limit
        # wheelbase about 1.2 half-lengths for CARLA's cars; pure pursuit tolerates the approximation
        agent = AvoidingAgent(route, half_length=float(ext.x), half_width=float(ext.y),
                              target_speed=options.target_speed, speed_limit=speed_limit, wheelbase=1.2 * float(ext.x))
        footprints = scenario_footprints(registry.actors, unknown_objects, classes)  # after the props settled
        lut = decode.fine_lookup({o["actor_id"]: o["fine_id"] for o in unknown_objects})
        tag_lut = decode.tag_lookup({o["actor_id"]: o["semantic_tags"] for o in unknown_objects})
        key_of = {decode.instance_key(o["actor_id"]): o["actor_id"] for o in unknown_objects}
        attrs = {
            "town": spec.town, "map": carla_map.name,  # the map the server loaded: Town10HD or Town10HD_Opt
            "scenario": spec.scenario, "split": spec.split, "seed": spec.seed,
            "weather": weather_record, "backend": backend, "width": options.width, "height": options.height,
            "fov": float(options.fov),
            "intrinsics": decode.intrinsics(options.width, options.height, options.fov).tolist(),
            "extrinsics": decode.vehicle_from_camera(mount.get_matrix()).tolist(),
            "dt": options.dt, "frame_step": options.frame_step, "unknown_objects": unknown_objects,
            "pose_convention": POSE_CONVENTION,
            "instance_encoding": "actor id & 0xFFFF (CARLA instance camera: G + 256 B)",
            "ego": {"actor_id": int(ego.id), "blueprint": ego_bp.id},
            "npc_vehicles": len(npc_vehicles), "npc_walkers": len(npc_walkers) + len(scene_walkers),
            "parked_vehicles": len(parked), "failed_spawns": failed,
            "route_length": round(route.length, 2), "layout": layout.style, "scenery_props": scenery_props,
        }
        tracks = {
            str(a.id): {"kind": kind, "blueprint": a.type_id, "frames": [], "states": []} for a, kind in dynamic
        }
        recorder = None
        if options.record:
            recorder = stack.enter_context(EpisodeRecorder(path, attrs, options.height, options.width))
        for tick in range(options.ticks):
            ego_tf = ego.get_transform()
            vel = ego.get_velocity()
            speed = math.hypot(vel.x, vel.y)
            if crossings:
                start_crossings(crossings, agent.progress, speed)
            obstacles = obstacles_from_actors(world.get_actors(), ego.id, footprints)
            c = agent.run_step(obstacles, ego_tf.location.x, ego_tf.location.y, ego_tf.rotation.yaw, speed, options.dt,
                               must_stop_at_light(ego))
            ego.apply_control(carla.VehicleControl(throttle=c.throttle, steer=c.steer, brake=c.brake))
            rf = rig.tick()
            if on_tick is not None:
                on_tick(tick)
            if tick % options.frame_step:
                continue
            if recorder is None:
                result.frames += 1
                continue
            img = rf.images
            instance = decode.decode_instance_ids(img["instance"])
            fine = decode.fine_map(instance, lut, decode.decode_semantic(img["semantic"]), tag_lut)
            result.unknown_pixels += int(np.count_nonzero(fine))
            seen = np.unique(instance[fine > 0])
            result.seen_objects.update(key_of[int(k)] for k in seen)
            for a in meshes.values():
                e = a.bounding_box.extent
                centre = a.get_transform().location + carla.Location(z=float(e.z))
                if a.id not in expected and in_view(img["rgb"].transform, centre, min(e.x, e.y),
                                                    options.width, options.height, options.fov):
                    expected.add(a.id)
            recorder.put({  # images decoded in the writer process, off this loop
                "rgb": decode.EncodedImage.of("rgb", img["rgb"]), "depth": decode.EncodedImage.of("depth", img["depth"]),
                "semantic": decode.EncodedImage.of("semantic", img["semantic"]), "instance": instance, "fine": fine,
                "ego_pose": decode.camera_pose(img["rgb"].transform.get_matrix()),
                "timestamp": rf.timestamp, "frame": rf.frame,
            })
            for a, _ in dynamic:
                t = tracks[str(a.id)]
                t["frames"].append(rf.frame)
                t["states"].append([round(v, 4) for v in actor_state(a)])
            if progress is not None:
                progress(1)
        if recorder is not None:
            require_seen(unknown_objects, result.seen_objects, expected)
        result.collisions = list(rig.collisions)
        result.unknown_objects = unknown_objects
        result.route_progress = agent.progress
        if recorder is None:
            result.seconds = time.perf_counter() - start
            return result
        atomic_write_json(tracks_path, {"episode": path.name, "dt": options.dt, "frame_step": options.frame_step,
                                        "state_fields": ["x", "y", "z", "yaw", "vx", "vy", "vz"],
                                        "frame": "CARLA world (left-handed, metres, degrees)",
                                        "tracks": tracks}, indent=None)
        result.path = recorder.close()
        result.frames = recorder.frames
    result.seconds = time.perf_counter() - start
    return result



# ---------------------------------------------------------------------------------------------
# A run of episodes
# ---------------------------------------------------------------------------------------------

def completed_episodes(data_dir: Path) -> set[str]:
    """File names of the episodes the manifest lists as complete (and that exist)."""
    data_dir = Path(data_dir)
    if not (data_dir / "manifest.json").exists():
        return set()
    return {Path(e["file"]).name for e in read_manifest(data_dir)}


def adopt_finished(data_dir: Path, specs: list[EpisodeSpec]) -> None:
    """Add complete episode files missing from the manifest (a run killed between the rename and the
    manifest update) and delete leftover `.part` files of the planned episodes."""
    ep_dir = Path(data_dir) / EPISODES_DIR
    listed = completed_episodes(data_dir)
    for spec in specs:
        path = ep_dir / spec.filename
        path.with_name(path.name + ".part").unlink(missing_ok=True)
        if spec.filename not in listed and path.exists() and not validate(path) \
                and path.with_name(path.stem + TRACKS_SUFFIX).exists():
            update_manifest(Path(data_dir), path)


def merge_datasets(sources: list[Path], out: Path, link: bool = True) -> int:
    """Merge the complete episodes of several dataset folders (e.g. shards) into `out`: files are
    hard-linked (copied across file systems) with their track files, and `out`'s manifest updated.
    Returns the number of episodes merged; an episode present in two sources with different sizes is
    an error."""
    out = Path(out)
    (out / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
    merged = 0
    for src in sources:
        src = Path(src)
        if not (src / "manifest.json").exists():
            raise CollectError(f"{src}: no manifest.json (not a collected dataset folder)")
        for entry in read_manifest(src):
            file = src / entry["file"]
            target = out / EPISODES_DIR / file.name
            for a, b in ((file, target), (file.with_name(file.stem + TRACKS_SUFFIX), target.with_name(file.stem + TRACKS_SUFFIX))):
                if not a.exists():
                    continue
                if b.exists():
                    if b.stat().st_size != a.stat().st_size:
                        raise CollectError(f"{a} and {b} are different versions of one episode")
                    continue
                if link:
                    try:
                        os.link(a, b)
                        continue
                    except OSError:
                        pass
                shutil.copy2(a, b)
            update_manifest(out, target)
            merged += 1
    return merged


def tracks_file(episode_path: Path) -> Path:
    return Path(episode_path).with_name(Path(episode_path).stem + TRACKS_SUFFIX)


def read_tracks(episode_path: Path) -> dict:
    """The dynamic actors' per-frame states of an episode (its `.tracks.json`)."""
    path = tracks_file(episode_path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CollectError(f"{path}: missing (the actor tracks of {Path(episode_path).name})") from None
    except json.JSONDecodeError as e:
        raise CollectError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tracks"), dict):
        raise CollectError(f"{path}: expected an object with 'tracks'")
    return doc
