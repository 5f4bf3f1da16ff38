"""The offline Traffic Manager: moves autopilot vehicles along lane centres (CARLA waypoints, a random
choice at each junction from the TM's seed), at the speed limit less the percentage difference, and
slows to keep the leading distance behind whatever stands on the path ahead: vehicles, walkers and
props (so NPCs stop behind a construction site instead of driving through it)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import carla
import numpy as np

from .actors import Actor, Vehicle
from .map import SPEED_LIMIT_KMH

if TYPE_CHECKING:
    from .map import Map

STEP = 1.0  # metres between route points
LOOKAHEAD = 40.0  # metres of route kept ahead
ACCEL = 2.5  # m/s^2
DECEL = 5.0  # m/s^2


class TrafficHost(Protocol):
    """What a Traffic Manager asks of the world it drives in (the offline World provides it), so that
    traffic does not import the world module that imports it."""

    _map: Map

    def _solid_actors(self, exclude: tuple[int, ...]) -> list[Actor]: ...
    def _moved(self, actor: Actor) -> None: ...


class TrafficManagers(Protocol):
    """The Traffic Managers of one server by port (the offline client's server provides it): what the
    world reads of its server, so that the world does not import the client module that imports it."""

    def traffic_manager(self, port: int) -> TrafficManager: ...
    def traffic_managers(self) -> list[TrafficManager]: ...


class _Route:
    """A vehicle's path ahead as points (x, y, yaw) one metre apart, extended from CARLA waypoints."""

    def __init__(self, waypoint: carla.Waypoint, start: carla.Transform) -> None:
        self.points = [(start.location.x, start.location.y, start.rotation.yaw)]
        self.last = waypoint
        self.speed = 0.0

    def extend(self, rng: np.random.Generator) -> bool:
        while len(self.points) * STEP < LOOKAHEAD:
            options = self.last.next(STEP)
            if not options:
                return False
            self.last = options[int(rng.integers(0, len(options)))] if len(options) > 1 else options[0]
            t = self.last.transform
            self.points.append((t.location.x, t.location.y, t.rotation.yaw))
        return True


class TrafficManager:
    """CARLA's TrafficManager interface for the offline world (one per port)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._routes: dict[int, _Route] = {}
        self._vehicles: dict[int, Vehicle] = {}
        self._global_speed_diff = 30.0  # CARLA's default: 30 % under the limit
        self._speed_diff: dict[int, float] = {}
        self._desired_speed: dict[int, float] = {}
        self._global_distance = 2.5
        self._distance: dict[int, float] = {}
        self._synchronous = False
        self._rng = np.random.default_rng(0)

    def get_port(self) -> int:
        return self._port

    def set_synchronous_mode(self, mode_switch: bool = True) -> None:
        self._synchronous = bool(mode_switch)

    def set_random_device_seed(self, value: int) -> None:
        self._rng = np.random.default_rng(int(value))

    def global_percentage_speed_difference(self, percentage: float) -> None:
        self._global_speed_diff = float(percentage)

    def vehicle_percentage_speed_difference(self, actor: Actor, percentage: float) -> None:
        self._speed_diff[actor.id] = float(percentage)

    def set_desired_speed(self, actor: Actor, speed: float) -> None:
        """Target speed in km/h, overriding the percentage difference."""
        self._desired_speed[actor.id] = float(speed)

    def set_global_distance_to_leading_vehicle(self, distance: float) -> None:
        self._global_distance = float(distance)

    def distance_to_leading_vehicle(self, actor: Actor, distance: float) -> None:
        self._distance[actor.id] = float(distance)

    def auto_lane_change(self, actor: Actor, enable: bool) -> None:
        """Accepted: offline NPCs keep their lane (they never change lanes)."""

    def ignore_lights_percentage(self, actor: Actor, perc: float) -> None:
        """Accepted: the offline towns have no traffic lights."""

    def ignore_signs_percentage(self, actor: Actor, perc: float) -> None:
        """Accepted: the offline towns' signs carry no rules."""

    def set_hybrid_physics_mode(self, enabled: bool = False) -> None:
        """Accepted: offline vehicles are always moved kinematically."""

    def shut_down(self) -> None:
        for v in list(self._vehicles.values()):
            v._autopilot_port = None
        self._vehicles.clear()
        self._routes.clear()

    # -- internals -------------------------------------------------------------------------------

    def _register(self, vehicle: Vehicle, enabled: bool) -> None:
        if enabled:
            self._vehicles[vehicle.id] = vehicle
        else:
            self._vehicles.pop(vehicle.id, None)
            self._routes.pop(vehicle.id, None)

    def _target_speed(self, vehicle: Vehicle) -> float:
        if vehicle.id in self._desired_speed:
            return self._desired_speed[vehicle.id] / 3.6
        diff = self._speed_diff.get(vehicle.id, self._global_speed_diff)
        return max(0.0, SPEED_LIMIT_KMH * (1 - diff / 100.0)) / 3.6

    def _step(self, world: TrafficHost, dt: float) -> None:
        """Move every registered vehicle one time step along its route."""
        alive = {i: v for i, v in self._vehicles.items() if v.is_alive}
        self._vehicles = alive
        obstacles = [a for a in world._solid_actors(()) if a.parent is None]
        if not alive:
            return
        obs_xy = np.array([[a.get_transform().location.x, a.get_transform().location.y] for a in obstacles]).reshape(-1, 2)
        obs_r = np.array([min(a.bounding_box.extent.x, a.bounding_box.extent.y) for a in obstacles])
        obs_ext = np.array([[a.bounding_box.extent.x, a.bounding_box.extent.y] for a in obstacles]).reshape(-1, 2)
        obs_ids = np.array([a.id for a in obstacles])
        obs_yaw = np.array([a.get_transform().rotation.yaw for a in obstacles])
        obs_driven = np.array([a.id in alive for a in obstacles], dtype=bool)
        for vid in sorted(alive):
            vehicle = alive[vid]
            route = self._routes.get(vid)
            tf = vehicle._transform
            if route is None:
                wp = world._map.get_waypoint(tf.location)
                if wp is None:
                    continue
                route = self._routes[vid] = _Route(wp, tf)
            if not route.extend(self._rng) and len(route.points) < 2:
                continue
            pts = np.array(route.points)
            ext = vehicle.bounding_box.extent
            # distance along the route to the first obstacle whose footprint reaches into our lane
            free = LOOKAHEAD
            if len(obs_xy):
                # right of way where paths cross: a vehicle yields to crossing autopilot vehicles of lower
                # id only, so two of them can never wait for each other in a junction
                crossing = np.abs((obs_yaw - tf.rotation.yaw + 180) % 360 - 180) > 30
                others = (obs_ids != vid) & ~(obs_driven & crossing & (obs_ids > vid))
                d = np.hypot(pts[:, None, 0] - obs_xy[None, others, 0], pts[:, None, 1] - obs_xy[None, others, 1])
                hit = d < (ext.y + 0.3 + obs_r[others])[None, :]
                rows = np.flatnonzero(hit.any(axis=1))
                rows = rows[rows * STEP > ext.x * 0.5]  # ignore what is beside or behind our own centre
                if len(rows):
                    k = rows[0]
                    j = np.flatnonzero(others)[np.flatnonzero(hit[k])[0]]
                    # the obstacle's reach towards us: its half length along our heading
                    rel = math.radians(obs_yaw[j] - pts[k, 2])
                    reach = abs(math.cos(rel)) * obs_ext[j, 0] + abs(math.sin(rel)) * obs_ext[j, 1]
                    free = k * STEP - ext.x - reach
            gap = self._distance.get(vid, self._global_distance)
            allowed = math.sqrt(max(0.0, 2 * DECEL * (free - gap)))
            speed = min(self._target_speed(vehicle), allowed, route.speed + ACCEL * dt)
            route.speed = speed
            travel = speed * dt
            # walk along the polyline
            seg = np.hypot(np.diff(pts[:, 0]), np.diff(pts[:, 1]))
            i = 0
            while i < len(seg) and travel > seg[i]:
                travel -= seg[i]
                i += 1
            if i >= len(seg):
                i, frac = len(seg) - 1, 1.0
            else:
                frac = travel / seg[i] if seg[i] > 0 else 1.0
            x = pts[i, 0] + (pts[i + 1, 0] - pts[i, 0]) * frac
            y = pts[i, 1] + (pts[i + 1, 1] - pts[i, 1]) * frac
            yaw = math.degrees(math.atan2(pts[i + 1, 1] - pts[i, 1], pts[i + 1, 0] - pts[i, 0])) if seg[i] > 0 else tf.rotation.yaw
            route.points = [(x, y, yaw)] + route.points[i + 1:]
            old_yaw = tf.rotation.yaw
            vehicle._transform = carla.Transform(carla.Location(x, y, tf.location.z), carla.Rotation(yaw=yaw))
            vehicle._speed = speed
            vehicle._velocity = carla.Vector3D(speed * math.cos(math.radians(yaw)), speed * math.sin(math.radians(yaw)), 0.0)
            turn = (yaw - old_yaw + 180) % 360 - 180
            vehicle._angular_velocity = carla.Vector3D(0.0, 0.0, turn / dt)
            world._moved(vehicle)
