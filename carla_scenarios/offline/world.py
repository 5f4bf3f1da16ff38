"""The offline world: CARLA's `World` interface over one town, its actors, the weather and the clock.

A tick advances the clock by the fixed time step, lets the Traffic Managers and walker controllers
choose their moves, moves every actor, fires collision sensors on new overlaps, renders each camera rig
once and hands the images to the sensors' callbacks before `tick()` returns its frame id.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import carla
import numpy as np

from vca_data.labels import CARLA_TAGS, TAG

from .actors import Actor, ActorList, Vehicle, Walker, WalkerAIController
from .blueprints import (
    ActorBlueprint,
    BlueprintLibrary,
    local_bounding_box,
    make_library,
    prop_look,
    vehicle_look,
)
from .lights import TrafficLights
from .map import SIDEWALK_TOP, Map, build_town
from .render import Renderer, encode_depth, encode_instance, encode_rgb, encode_semantic
from .sensors import CollisionEvent, Image, ObstacleDetectionEvent, Sensor
from .shapes import Box, boxes_extent, obb_overlap_2d

if TYPE_CHECKING:
    from .traffic import TrafficManager, TrafficManagers

DEFAULT_DELTA = 0.05  # the time step of a tick when no fixed_delta_seconds is set
_SOLID_TAGS = {TAG["Building"], TAG["Pole"], TAG["Fence"], TAG["TrafficSign"], TAG["Vegetation"]}
_VEHICLE_MASS = 1500.0
CONTACT_MARGIN = 0.05  # metres


class ActorSnapshot:
    """An actor's state at one frame."""

    def __init__(self, actor: Actor) -> None:
        self.id = actor.id
        self._transform = actor.get_transform()
        self._velocity = actor.get_velocity()
        self._angular_velocity = actor.get_angular_velocity()

    def get_transform(self) -> carla.Transform:
        return self._transform

    def get_velocity(self) -> carla.Vector3D:
        return self._velocity

    def get_angular_velocity(self) -> carla.Vector3D:
        return self._angular_velocity

    def get_acceleration(self) -> carla.Vector3D:
        return carla.Vector3D()


class LabelledPoint:
    """CARLA's LabelledPoint (which Python cannot build): a location with a semantic label."""

    def __init__(self, location: carla.Location, label: carla.CityObjectLabel) -> None:
        self.location = location
        self.label = label


class WorldSnapshot:
    """The world at one frame: frame id, timestamp and every actor's state."""

    def __init__(self, world_id: int, timestamp: carla.Timestamp, actors: list[Actor]) -> None:
        self.id = world_id
        self.frame = timestamp.frame
        self.timestamp = timestamp
        self._actors = {a.id: ActorSnapshot(a) for a in actors}

    def find(self, actor_id: int) -> ActorSnapshot | None:
        return self._actors.get(actor_id)

    def has_actor(self, actor_id: int) -> bool:
        return actor_id in self._actors

    def __iter__(self) -> Iterator[ActorSnapshot]:
        return iter(list(self._actors.values()))

    def __len__(self) -> int:
        return len(self._actors)


class World:
    """One loaded town with its actors; see the module docstring for what a tick does."""

    def __init__(self, server: TrafficManagers, town_name: str, world_id: int, map_name: str | None = None) -> None:
        self._server = server
        self.id = world_id
        self._town = build_town(town_name)
        self._map = Map(f"Carla/Maps/{map_name or self._town.name}", self._town.xodr)
        self._renderer = Renderer(self._town.boxes)
        self._lights = TrafficLights(self._town)
        self._library = make_library()
        self._settings = carla.WorldSettings()
        self._settings.fixed_delta_seconds = None  # variable time step, as a server starts
        w = carla.WeatherParameters.ClearNoon
        self._weather = carla.WeatherParameters(**{k: getattr(w, k) for k in _WEATHER_FIELDS})
        self._frame = 0
        self._elapsed = 0.0
        self._delta = 0.0
        self._actors: dict[int, Actor] = {}
        self._scenery_actors: dict[int, Actor] = {}
        self._next_id = 1
        self._rng = np.random.default_rng(0)
        self._on_tick: dict[int, Callable] = {}
        # seconds spent per part of the tick, for the benchmark (encode includes the callbacks)
        self._timings = {"traffic": 0.0, "collision": 0.0, "render": 0.0, "encode": 0.0}
        self._next_callback = 1
        solid = [b for b in self._town.boxes if b.tag in _SOLID_TAGS]
        self._solid_tags = np.array([b.tag for b in solid], dtype=np.int64)
        self._solid_xy = np.array([b.center[:2] for b in solid], dtype=float).reshape(-1, 2)
        self._solid_half = np.array([b.half[:2] for b in solid], dtype=float).reshape(-1, 2)
        self._solid_yaw = np.array([b.yaw for b in solid], dtype=float)
        self._solid_z = np.array([(b.center[2] - b.half[2], b.center[2] + b.half[2]) for b in solid], dtype=float).reshape(-1, 2)
        self._spectator = self._make(Actor, self._library_bp("spectator"), carla.Transform(carla.Location(0, 0, 50)), None, [], None)

    # -- settings, weather, map ------------------------------------------------------------------

    def get_settings(self) -> carla.WorldSettings:
        return _copy_settings(self._settings)

    def apply_settings(self, world_settings: carla.WorldSettings) -> int:
        dt = world_settings.fixed_delta_seconds
        if dt is not None and dt < 0:
            raise ValueError(f"fixed_delta_seconds must be >= 0, got {dt}")
        self._settings = _copy_settings(world_settings)
        return self._frame

    def get_weather(self) -> carla.WeatherParameters:
        return carla.WeatherParameters(**{k: getattr(self._weather, k) for k in _WEATHER_FIELDS})

    def set_weather(self, weather: carla.WeatherParameters) -> None:
        self._weather = carla.WeatherParameters(**{k: getattr(weather, k) for k in _WEATHER_FIELDS})

    def get_map(self) -> Map:
        return self._map

    def get_blueprint_library(self) -> BlueprintLibrary:
        return self._library

    def get_spectator(self) -> Actor:
        return self._spectator

    def get_random_location_from_navigation(self) -> carla.Location:
        """A random point on a sidewalk (walkers' navigation area), from the pedestrian seed."""
        strips = self._town.strips
        lengths = np.array([math.dist(s.p0, s.p1) for s in strips])
        i = int(self._rng.choice(len(strips), p=lengths / lengths.sum()))
        s = strips[i]
        t = self._rng.uniform(0.05, 0.95)
        across = self._rng.uniform(-0.5, 0.5) * s.half_width
        d = np.subtract(s.p1, s.p0) / lengths[i]
        p = np.add(s.p0, d * t * lengths[i]) + np.array([-d[1], d[0]]) * across
        return carla.Location(float(p[0]), float(p[1]), SIDEWALK_TOP)

    def freeze_all_traffic_lights(self, frozen: bool) -> None:
        """Stop (or restart) the traffic lights' cycles where they are."""
        self._lights.frozen_at = self._elapsed if frozen else None

    def set_pedestrians_seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(int(seed))

    def set_pedestrians_cross_factor(self, percentage: float) -> None:
        """Accepted for compatibility: walkers cross roads only at junction crossings."""

    # -- actors ----------------------------------------------------------------------------------

    def spawn_actor(self, blueprint: ActorBlueprint, transform: carla.Transform, attach_to: Actor | None = None,
                    attachment_type: carla.AttachmentType = carla.AttachmentType.Rigid) -> Actor:
        actor, error = self._spawn(blueprint, transform, attach_to)
        if actor is None:
            raise RuntimeError(error)
        return actor

    def try_spawn_actor(self, blueprint: ActorBlueprint, transform: carla.Transform, attach_to: Actor | None = None,
                        attachment_type: carla.AttachmentType = carla.AttachmentType.Rigid) -> Actor | None:
        actor, _ = self._spawn(blueprint, transform, attach_to)
        return actor

    def get_actors(self, actor_ids: list[int] | None = None) -> ActorList:
        if actor_ids is None:
            return ActorList([a for a in self._actors.values() if a is not self._spectator])
        return ActorList([self._actors[i] for i in actor_ids if i in self._actors])

    def get_actor(self, actor_id: int) -> Actor | None:
        return self._actors.get(actor_id)

    def ground_projection(self, location: carla.Location, search_distance: float) -> LabelledPoint | None:
        """The first ground below `location` (road or sidewalk top) within `search_distance`, else None."""
        on_sidewalk = bool(self._town.on_sidewalk(np.array([[location.x, location.y]]))[0])
        z = SIDEWALK_TOP if on_sidewalk else 0.0
        if not 0.0 <= location.z - z <= search_distance:
            return None
        label = carla.CityObjectLabel.Sidewalks if on_sidewalk else carla.CityObjectLabel.Roads
        return LabelledPoint(carla.Location(location.x, location.y, z), label)

    # -- time ------------------------------------------------------------------------------------

    def tick(self, seconds: float = 10.0) -> int:
        """Advance one step and return the new frame id (all sensor data of that frame delivered)."""
        return self._advance()

    def wait_for_tick(self, seconds: float = 10.0) -> WorldSnapshot:
        """Asynchronous mode: the offline world computes the next frame on request."""
        self._advance()
        return self.get_snapshot()

    def get_snapshot(self) -> WorldSnapshot:
        return WorldSnapshot(self.id, self._timestamp(), list(self._actors.values()))

    def on_tick(self, callback: Callable[[WorldSnapshot], object]) -> int:
        cid = self._next_callback
        self._next_callback += 1
        self._on_tick[cid] = callback
        return cid

    def remove_on_tick(self, callback_id: int) -> None:
        self._on_tick.pop(callback_id, None)

    # -- internals -------------------------------------------------------------------------------

    def _timestamp(self) -> carla.Timestamp:
        return carla.Timestamp(self._frame, self._elapsed, self._delta, time.time())

    def _library_bp(self, bp_id: str) -> ActorBlueprint:
        return ActorBlueprint(bp_id, [], [], {})

    def _traffic_manager(self, port: int) -> TrafficManager:
        return self._server.traffic_manager(port)

    def _ground_height(self, x: float, y: float) -> float:
        return SIDEWALK_TOP if self._town.on_sidewalk(np.array([[x, y]]))[0] else 0.0

    def _make(self, cls, blueprint: ActorBlueprint, transform: carla.Transform, parent: Actor | None, tags: list[int],
              bbox: carla.BoundingBox | None) -> Actor:
        actor = cls(self, self._next_id, blueprint, transform, parent, tags, bbox)
        self._next_id += 1
        self._actors[actor.id] = actor
        return actor

    def _spawn(self, blueprint: ActorBlueprint, transform: carla.Transform, attach_to: Actor | None) -> tuple[Actor | None, str]:
        if not isinstance(blueprint, ActorBlueprint):
            raise TypeError(f"expected an offline ActorBlueprint, got {type(blueprint).__name__}")
        if attach_to is not None and not attach_to.is_alive:
            return None, f"cannot attach {blueprint.id} to destroyed actor {attach_to.id}"
        bp_id = blueprint.id
        look = blueprint._look
        loc, rot = transform.location, transform.rotation
        if bp_id.startswith("sensor."):
            return self._make(Sensor, blueprint, transform, attach_to, [], None), ""
        if bp_id == "controller.ai.walker":
            if not isinstance(attach_to, Walker):
                return None, "controller.ai.walker must be attached to a walker"
            return self._make(WalkerAIController, blueprint, carla.Transform(), attach_to, [], None), ""
        if bp_id.startswith("vehicle."):
            boxes = vehicle_look(look, blueprint.get_attribute("color").as_str())
            tags, cls = [look["tag"]], Vehicle
            # On its wheels where any of them touches the road: a car parked with two wheels on the kerb
            # rests on the road (the offline world does not tilt bodies).
            (cx, cy, _), (hx, hy, _) = boxes_extent(boxes)
            yaw = math.radians(rot.yaw)
            z = min(self._ground_height(loc.x + (cx + a) * math.cos(yaw) - (cy + b) * math.sin(yaw),
                                        loc.y + (cx + a) * math.sin(yaw) + (cy + b) * math.cos(yaw))
                    for a in (-hx, hx) for b in (-hy, hy))
            placed = carla.Transform(carla.Location(loc.x, loc.y, z), carla.Rotation(yaw=rot.yaw))
        elif bp_id.startswith("walker."):
            # like CARLA's walkers, the actor's origin is the centre of its bounding box
            (_, _, cz), (_, _, hz) = boxes_extent(look["boxes"])
            boxes = [Box((b.center[0], b.center[1], b.center[2] - cz), b.half, b.rgba, b.tag, b.yaw) for b in look["boxes"]]
            tags, cls = [look["tag"]], Walker
            placed = carla.Transform(carla.Location(loc.x, loc.y, self._ground_height(loc.x, loc.y) + hz),
                                     carla.Rotation(yaw=rot.yaw))
        elif bp_id.startswith("static.prop."):
            boxes, tag = prop_look(blueprint)
            tags, cls = [tag], Actor
            placed = transform
        else:
            return None, f"the offline world cannot spawn {bp_id!r}"
        if not boxes:  # static.prop.mesh with an unknown mesh: an actor with nothing to show, an infinite box
            inf = float("inf")
            empty = carla.BoundingBox(carla.Location(), carla.Vector3D(inf, inf, inf))
            return self._make(cls, blueprint, placed, attach_to, tags, empty), ""
        bbox = local_bounding_box(boxes)
        # a prop whose base lies inside the ground (a kerb) collides with it, as on a server
        sunk = bp_id.startswith("static.prop.") and attach_to is None and \
            loc.z + bbox.location.z - bbox.extent.z < self._ground_height(loc.x, loc.y) - 0.02
        if sunk or (attach_to is None and self._overlapping(placed, bbox, exclude=())):
            return None, f"Spawn failed because of collision at spawn position ({loc.x:.2f}, {loc.y:.2f}, {loc.z:.2f})"
        actor = self._make(cls, blueprint, placed, attach_to, tags, bbox)
        if bp_id.startswith("static.prop."):  # a server's static prop reports its box turned by its yaw (#8663)
            actor.bounding_box = carla.BoundingBox(bbox.location, bbox.extent)
            actor.bounding_box.rotation = carla.Rotation(yaw=placed.rotation.yaw)
            actor._simulate_physics = False  # a server's props stay where spawned until physics is enabled
            actor._falls = True
        actor._body = self._renderer.add_body(boxes, actor.id, actor.get_transform())
        return actor, ""

    def _destroy(self, actor: Actor) -> None:
        if isinstance(actor, Sensor):
            actor.stop()
        if isinstance(actor, Vehicle) and actor._autopilot_port is not None:
            self._traffic_manager(actor._autopilot_port)._register(actor, False)
        if actor._body is not None:
            self._renderer.remove_body(actor._body)
            actor._body = None
        self._actors.pop(actor.id, None)

    def _moved(self, actor: Actor) -> None:
        if actor._body is not None:
            self._renderer.move(actor._body, actor.get_transform())

    def _solid_actors(self, exclude: tuple[int, ...]) -> list[Actor]:
        return [a for a in self._actors.values()
                if a._body is not None and a.parent is None and a.id not in exclude and a.is_alive]

    def _overlapping(self, transform: carla.Transform, bbox: carla.BoundingBox, exclude: tuple[int, ...],
                     margin: float = 0.0) -> list:
        """Actors (and scenery tags, as ints) whose boxes overlap a box placed at transform (grown by
        margin on every side)."""
        centre, half, yaw, zr = _world_box(transform, bbox)
        half = half + margin
        hits: list = []
        others = self._solid_actors(exclude)
        if others:
            boxes = [_world_box(a.get_transform(), a.bounding_box) for a in others]
            over = obb_overlap_2d(centre, half, yaw, np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes]),
                                  np.array([b[2] for b in boxes]))
            for a, b, o in zip(others, boxes, over, strict=True):
                if o and b[3][0] < zr[1] and zr[0] < b[3][1]:
                    hits.append(a)
        if len(self._solid_xy):
            near = np.max(np.abs(self._solid_xy - centre), axis=1) < np.max(self._solid_half, axis=1) + np.hypot(*half) + 1
            idx = np.flatnonzero(near)
            if len(idx):
                over = obb_overlap_2d(centre, half, yaw, self._solid_xy[idx], self._solid_half[idx], self._solid_yaw[idx])
                zok = (self._solid_z[idx, 0] < zr[1]) & (zr[0] < self._solid_z[idx, 1])
                hits.extend(int(self._solid_tags[i]) for i in idx[over & zok])
        return hits

    def _obstacles_at(self, actor: Actor, new_transform: carla.Transform) -> list:
        """What the actor would overlap at new_transform (actors, and scenery tags as ints)."""
        exclude = (actor.id,) + tuple(a.id for a in self._actors.values() if a.parent is actor)
        return self._overlapping(new_transform, actor.bounding_box, exclude)

    def _scenery_actor(self, tag: int) -> Actor:
        """The stand-in actor for static scenery of one tag (other_actor of a collision with it)."""
        if tag not in self._scenery_actors:
            bp = ActorBlueprint(f"static.{CARLA_TAGS[tag].lower()}", [], [], {})
            actor = Actor(self, self._next_id, bp, carla.Transform(), None, [tag], None)
            self._next_id += 1
            self._scenery_actors[tag] = actor
        return self._scenery_actors[tag]

    def _advance(self) -> int:
        dt = self._settings.fixed_delta_seconds or DEFAULT_DELTA
        self._frame += 1
        self._elapsed += dt
        self._delta = dt
        t0 = time.perf_counter()
        for tm in self._server.traffic_managers():
            tm._step(self, dt)
        actors = list(self._actors.values())
        for a in actors:
            if isinstance(a, WalkerAIController):
                a._step(dt)
        for a in actors:
            if a.is_alive and not isinstance(a, WalkerAIController) and a._step(dt):
                self._moved(a)
        for a in actors:  # bodies attached to a parent ride along with it
            if a.parent is not None and a._body is not None and a.is_alive:
                self._moved(a)
        t1 = time.perf_counter()
        self._collisions()
        self._obstacles()
        t2 = time.perf_counter()
        self._timings["traffic"] += t1 - t0
        self._timings["collision"] += t2 - t1
        self._cameras()
        if self._on_tick:
            snapshot = self.get_snapshot()
            for callback in list(self._on_tick.values()):
                callback(snapshot)
        return self._frame

    def _collisions(self) -> None:
        for sensor in [a for a in self._actors.values() if isinstance(a, Sensor) and a.type_id == "sensor.other.collision"]:
            parent = sensor.parent
            if parent is None or not parent.is_alive:
                continue
            exclude = (parent.id,) + tuple(a.id for a in self._actors.values() if a.parent is parent)
            # a margin keeps an actor resting against an obstacle in contact: one event per collision
            hits = self._overlapping(parent.get_transform(), parent.bounding_box, exclude, CONTACT_MARGIN) + parent._contacts
            others = {}
            for h in hits:
                other = self._scenery_actor(h) if isinstance(h, int) else h
                others.setdefault(other.id, other)
            for other in others.values():
                if other.id in sensor._touching:
                    continue
                v = parent._impact if other in parent._contacts or other.id in {
                    getattr(c, "id", None) for c in parent._contacts} else parent.get_velocity()
                w = other.get_velocity()
                impulse = carla.Vector3D((w.x - v.x) * _VEHICLE_MASS, (w.y - v.y) * _VEHICLE_MASS, 0.0)
                sensor._deliver(CollisionEvent(self._frame, self._elapsed, sensor.get_transform(), parent, other, impulse))
            sensor._touching = set(others)

    def _obstacles(self) -> None:
        """Obstacle sensors: the nearest actor (vehicle, walker or prop; only vehicles and walkers with
        only_dynamics) whose box enters the corridor `distance` long and 2 * `hit_radius` wide ahead of
        the sensor. The town's static scenery is not reported."""
        for sensor in [a for a in self._actors.values() if isinstance(a, Sensor) and a.type_id == "sensor.other.obstacle"]:
            if not sensor.is_listening() or not sensor._due(self._elapsed):
                continue
            tf = sensor.get_transform()
            length = float(sensor.attributes["distance"])
            radius = float(sensor.attributes["hit_radius"])
            dynamic_only = sensor.attributes["only_dynamics"].lower() == "true"
            f = tf.get_forward_vector()
            fx, fy = f.x, f.y
            norm = math.hypot(fx, fy) or 1.0
            fx, fy = fx / norm, fy / norm
            corridor = carla.BoundingBox(carla.Location(length / 2, 0, 0), carla.Vector3D(length / 2, radius, radius))
            flat = carla.Transform(tf.location, carla.Rotation(yaw=math.degrees(math.atan2(fy, fx))))
            exclude = tuple(a.id for a in self._actors.values() if a is sensor or a is sensor.parent or
                            (sensor.parent is not None and a.parent is sensor.parent))
            best = None
            for other in self._overlapping(flat, corridor, exclude):
                if isinstance(other, int) or (dynamic_only and not isinstance(other, Vehicle | Walker)):
                    continue
                centre, half, yaw, _ = _world_box(other.get_transform(), other.bounding_box)
                rel = math.radians(yaw) - math.atan2(fy, fx)
                reach = abs(math.cos(rel)) * half[0] + abs(math.sin(rel)) * half[1]
                along = (centre[0] - tf.location.x) * fx + (centre[1] - tf.location.y) * fy
                distance = max(0.0, along - reach)
                if best is None or distance < best[0]:
                    best = (distance, other)
            if best is not None:
                parent = sensor.parent if sensor.parent is not None else sensor
                sensor._deliver(ObstacleDetectionEvent(self._frame, self._elapsed, tf, parent, best[1], best[0]))

    def _cameras(self) -> None:
        rigs: dict[tuple, list[Sensor]] = {}
        for a in self._actors.values():
            if isinstance(a, Sensor) and a.type_id.startswith("sensor.camera.") and a.is_listening() and a._due(self._elapsed):
                t = a._transform
                key = (a.parent.id if a.parent is not None else 0, t.location.x, t.location.y, t.location.z,
                       t.rotation.pitch, t.rotation.yaw, t.rotation.roll, a.attributes["image_size_x"],
                       a.attributes["image_size_y"], a.attributes["fov"])
                rigs.setdefault(key, []).append(a)
        for cams in rigs.values():
            first = cams[0]
            width, height = int(first.attributes["image_size_x"]), int(first.attributes["image_size_y"])
            fov = float(first.attributes["fov"])
            tf = first.get_transform()
            t0 = time.perf_counter()
            images = self._renderer.render(tf, width, height, fov, self._weather, self._frame)
            t1 = time.perf_counter()
            self._timings["render"] += t1 - t0
            for cam in cams:
                kind = cam.type_id.split(".")[-1]
                if kind == "rgb":
                    raw = encode_rgb(images["rgb"])
                elif kind == "depth":
                    raw = encode_depth(images["depth"])
                elif kind == "semantic_segmentation":
                    raw = encode_semantic(images["tag"])
                else:
                    raw = encode_instance(images["tag"], images["id"])
                cam._deliver(Image(self._frame, self._elapsed, tf, width, height, fov, raw))
            self._timings["encode"] += time.perf_counter() - t1

    def _close(self) -> None:
        for a in list(self._actors.values()):
            a._alive = False
        self._actors.clear()
        self._renderer.close()


_WEATHER_FIELDS = (
    "cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle", "sun_altitude_angle",
    "fog_density", "fog_distance", "fog_falloff", "wetness", "scattering_intensity", "mie_scattering_scale",
    "rayleigh_scattering_scale", "dust_storm",
)


def _copy_settings(settings: carla.WorldSettings) -> carla.WorldSettings:
    out = carla.WorldSettings()
    out.synchronous_mode = settings.synchronous_mode
    out.no_rendering_mode = settings.no_rendering_mode
    out.fixed_delta_seconds = settings.fixed_delta_seconds
    out.substepping = settings.substepping
    out.max_substep_delta_time = settings.max_substep_delta_time
    out.max_substeps = settings.max_substeps
    return out


def _world_box(transform: carla.Transform, bbox: carla.BoundingBox) -> tuple[np.ndarray, np.ndarray, float, tuple]:
    """2D centre, half extents, yaw and z range of an actor's bounding box placed at transform."""
    c = transform.transform(carla.Location(bbox.location.x, bbox.location.y, bbox.location.z))
    yaw = transform.rotation.yaw  # the offline world's own boxes are never turned (a prop's reported one is)
    e = bbox.extent
    return np.array([c.x, c.y]), np.array([e.x, e.y]), yaw, (c.z - e.z, c.z + e.z)

