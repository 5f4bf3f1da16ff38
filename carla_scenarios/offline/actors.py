"""Actors of the offline world with CARLA's interface: props, vehicles (a kinematic bicycle model driven by
VehicleControl, or the Traffic Manager), walkers (WalkerControl, or their AI controller) and the
walker AI controller. Poses and velocities are CARLA value types in CARLA's frame."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import carla
import numpy as np

from .map import SPEED_LIMIT_KMH

if TYPE_CHECKING:
    from .blueprints import ActorBlueprint
    from .map import Town

MAX_STEER_DEG = 70.0  # CARLA's default vehicles steer their front wheels up to 70 degrees
MAX_ACCEL = 3.5  # m/s^2 at full throttle from rest
MAX_BRAKE = 8.0  # m/s^2 at full brake
MAX_SPEED = 50.0  # m/s


class ActorHost(Protocol):
    """What an actor asks of the world it lives in (the offline World provides it): the actors are typed
    against this interface, not against the world module, so that the world imports its actors downward."""

    _town: Town
    _lights: Any  # the town's traffic lights: affecting(x, y, yaw), state(light, group, elapsed)
    _elapsed: float

    def _moved(self, actor: Actor) -> None: ...
    def _destroy(self, actor: Actor) -> None: ...
    def _ground_height(self, x: float, y: float) -> float: ...
    def _obstacles_at(self, actor: Actor, new_transform: carla.Transform) -> list: ...
    def _traffic_manager(self, port: int) -> Any: ...  # the Traffic Manager on that port


def _copy_transform(t: carla.Transform) -> carla.Transform:
    return carla.Transform(carla.Location(t.location.x, t.location.y, t.location.z),
                           carla.Rotation(pitch=t.rotation.pitch, yaw=t.rotation.yaw, roll=t.rotation.roll))


class Actor:
    """Anything spawned: id, blueprint id, attributes, semantic tags, bounding box, pose, velocity."""

    def __init__(self, world: ActorHost, actor_id: int, blueprint: ActorBlueprint, transform: carla.Transform,
                 parent: Actor | None = None, semantic_tags: list[int] | None = None,
                 bounding_box: carla.BoundingBox | None = None) -> None:
        self._world = world
        self.id = actor_id
        self.type_id = blueprint.id
        self.attributes = {a.id: a.as_str() for a in blueprint}
        self.parent = parent
        self.semantic_tags = list(semantic_tags or [])
        self.bounding_box = bounding_box or carla.BoundingBox(carla.Location(), carla.Vector3D())
        self._transform = _copy_transform(transform)  # relative to the parent when attached
        self._velocity = carla.Vector3D()
        self._angular_velocity = carla.Vector3D()
        self._alive = True
        self._simulate_physics = True
        self._body: int | None = None
        self._contacts: list = []  # what stopped the actor's last move (actors, scenery tags)
        self._impact = carla.Vector3D()  # the velocity it had when they stopped it
        self._falls = False  # a prop: falls to the ground under gravity while it simulates physics

    @property
    def is_alive(self) -> bool:
        return self._alive

    @property
    def is_active(self) -> bool:
        return self._alive

    @property
    def is_dormant(self) -> bool:
        return False

    def get_world(self) -> ActorHost:
        return self._world

    def get_transform(self) -> carla.Transform:
        if self.parent is not None:
            from .render import camera_transform

            return camera_transform(self.parent.get_transform(), self._transform)
        return _copy_transform(self._transform)

    def get_location(self) -> carla.Location:
        return self.get_transform().location

    def get_velocity(self) -> carla.Vector3D:
        return carla.Vector3D(self._velocity.x, self._velocity.y, self._velocity.z)

    def get_angular_velocity(self) -> carla.Vector3D:
        return carla.Vector3D(self._angular_velocity.x, self._angular_velocity.y, self._angular_velocity.z)

    def get_acceleration(self) -> carla.Vector3D:
        return carla.Vector3D()

    def set_transform(self, transform: carla.Transform) -> None:
        self._transform = _copy_transform(transform)
        self._world._moved(self)

    def set_location(self, location: carla.Location) -> None:
        self.set_transform(carla.Transform(location, self._transform.rotation))

    def set_target_velocity(self, velocity: carla.Vector3D) -> None:
        self._velocity = carla.Vector3D(velocity.x, velocity.y, velocity.z)

    def set_target_angular_velocity(self, angular_velocity: carla.Vector3D) -> None:
        self._angular_velocity = carla.Vector3D(angular_velocity.x, angular_velocity.y, angular_velocity.z)

    def set_simulate_physics(self, enabled: bool = True) -> None:
        self._simulate_physics = bool(enabled)

    def set_enable_gravity(self, enabled: bool) -> None:
        """Accepted for compatibility: the offline world keeps bodies on the ground or where placed."""

    def destroy(self) -> bool:
        """Remove the actor from the world; False if it was already destroyed."""
        if not self._alive:
            return False
        self._world._destroy(self)
        self._alive = False
        return True

    def _step(self, dt: float) -> bool:
        """Advance by dt; True when the pose changed (a prop with physics falls to the ground)."""
        if not (self._falls and self._simulate_physics) or self.parent is not None:
            return False
        loc = self._transform.location
        box = self.bounding_box
        rest = self._world._ground_height(loc.x, loc.y) - (box.location.z - box.extent.z)
        if loc.z <= rest + 1e-4:
            self._velocity = carla.Vector3D()
            return False
        vz = self._velocity.z - 9.81 * dt
        self._transform.location.z = max(rest, loc.z + vz * dt)
        self._velocity = carla.Vector3D(0.0, 0.0, vz if self._transform.location.z > rest else 0.0)
        return True

    def __repr__(self) -> str:
        return f"Actor(id={self.id}, type={self.type_id})"


class Vehicle(Actor):
    """A vehicle: kinematic bicycle model under VehicleControl, or moved by a Traffic Manager."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._control = carla.VehicleControl()
        self._speed = 0.0  # signed, along the heading
        self._light_state = carla.VehicleLightState.NONE
        self._autopilot_port: int | None = None
        ext = self.bounding_box.extent
        self._wheelbase = 1.2 * ext.x

    def apply_control(self, control: carla.VehicleControl) -> None:
        self._control = carla.VehicleControl(
            throttle=float(np.clip(control.throttle, 0, 1)), steer=float(np.clip(control.steer, -1, 1)),
            brake=float(np.clip(control.brake, 0, 1)), hand_brake=control.hand_brake, reverse=control.reverse,
            manual_gear_shift=control.manual_gear_shift, gear=control.gear,
        )

    def get_control(self) -> carla.VehicleControl:
        c = self._control
        return carla.VehicleControl(throttle=c.throttle, steer=c.steer, brake=c.brake, hand_brake=c.hand_brake,
                                    reverse=c.reverse, manual_gear_shift=c.manual_gear_shift, gear=c.gear)

    def set_autopilot(self, enabled: bool = True, port: int = 8000) -> None:
        self._world._traffic_manager(port)._register(self, enabled)
        self._autopilot_port = port if enabled else None

    def get_speed_limit(self) -> float:
        return SPEED_LIMIT_KMH

    def _light(self) -> carla.TrafficLightState | None:
        """The state of the light whose trigger volume holds the vehicle, None outside every one."""
        tf = self.get_transform()
        lights = self._world._lights
        hit = lights.affecting(tf.location.x, tf.location.y, tf.rotation.yaw)
        return None if hit is None else lights.state(*hit, self._world._elapsed)

    def is_at_traffic_light(self) -> bool:
        """Whether a red or yellow light affects the vehicle (it stands in that light's trigger volume)."""
        return self._light() in (carla.TrafficLightState.Red, carla.TrafficLightState.Yellow)

    def get_traffic_light_state(self) -> carla.TrafficLightState:
        """The state of the light affecting the vehicle; Green when none does, as on a server."""
        state = self._light()  # (Red is 0: no `or` here)
        return carla.TrafficLightState.Green if state is None else state

    def get_light_state(self) -> carla.VehicleLightState:
        return self._light_state

    def set_light_state(self, light_state: carla.VehicleLightState) -> None:
        self._light_state = light_state

    def set_transform(self, transform: carla.Transform) -> None:
        super().set_transform(transform)
        if self._autopilot_port is not None:  # the Traffic Manager plans anew from the new place
            self._world._traffic_manager(self._autopilot_port)._routes.pop(self.id, None)

    def set_target_velocity(self, velocity: carla.Vector3D) -> None:
        super().set_target_velocity(velocity)
        yaw = math.radians(self._transform.rotation.yaw)
        self._speed = velocity.x * math.cos(yaw) + velocity.y * math.sin(yaw)

    def _step(self, dt: float) -> bool:
        if self._autopilot_port is not None or not self._simulate_physics:
            return False
        c = self._control
        direction = -1.0 if c.reverse else 1.0
        v = self._speed
        accel = direction * c.throttle * MAX_ACCEL * max(0.0, 1.0 - abs(v) / MAX_SPEED)
        brake = (MAX_BRAKE if c.hand_brake else c.brake * MAX_BRAKE) + 0.05 * abs(v) + 0.1
        v_new = v + accel * dt
        # braking and drag oppose the motion and never reverse it
        if v_new > 0:
            v_new = max(0.0, v_new - brake * dt)
        elif v_new < 0:
            v_new = min(0.0, v_new + brake * dt)
        if abs(v_new) < 1e-3 and accel == 0:
            v_new = 0.0
        tf = self._transform
        yaw = math.radians(tf.rotation.yaw)
        steer = math.radians(c.steer * MAX_STEER_DEG)
        yaw_rate = v_new / self._wheelbase * math.tan(steer) if abs(steer) > 1e-6 else 0.0
        new = self._advanced(tf, v_new, yaw_rate, dt)
        self._contacts = self._world._obstacles_at(self, new) if v_new != 0 else []
        if self._contacts:
            # a hit stops the vehicle against the obstacle (the longest free part of the move, by
            # bisection), as a rigid obstacle would
            lo, hi = 0.0, 1.0
            for _ in range(6):
                mid = (lo + hi) / 2
                if self._world._obstacles_at(self, self._advanced(tf, v_new, yaw_rate, dt * mid)):
                    hi = mid
                else:
                    lo = mid
            self._transform = self._advanced(tf, v_new, yaw_rate, dt * lo)
            self._impact = carla.Vector3D(v_new * math.cos(yaw), v_new * math.sin(yaw), 0.0)
            self._speed = 0.0
            self._velocity = carla.Vector3D()
            self._angular_velocity = carla.Vector3D()
            return lo > 0
        self._speed = v_new
        new_yaw = math.radians(new.rotation.yaw)
        self._velocity = carla.Vector3D(v_new * math.cos(new_yaw), v_new * math.sin(new_yaw), 0.0)
        self._angular_velocity = carla.Vector3D(0.0, 0.0, math.degrees(yaw_rate))
        moved = v_new != 0 or yaw_rate != 0
        self._transform = new
        return moved


    @staticmethod
    def _advanced(tf: carla.Transform, speed: float, yaw_rate: float, dt: float) -> carla.Transform:
        """The pose after dt at constant speed and yaw rate (midpoint heading)."""
        yaw = math.radians(tf.rotation.yaw)
        new_yaw = yaw + yaw_rate * dt
        mid = (yaw + new_yaw) / 2
        return carla.Transform(
            carla.Location(tf.location.x + speed * math.cos(mid) * dt, tf.location.y + speed * math.sin(mid) * dt, tf.location.z),
            carla.Rotation(pitch=tf.rotation.pitch, yaw=math.degrees(new_yaw), roll=tf.rotation.roll),
        )


class Walker(Actor):
    """A pedestrian moved by WalkerControl (direction and speed), or by its AI controller."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._control = carla.WalkerControl()

    def apply_control(self, control: carla.WalkerControl) -> None:
        self._control = carla.WalkerControl(carla.Vector3D(control.direction.x, control.direction.y, control.direction.z),
                                            float(control.speed), bool(control.jump))

    def get_control(self) -> carla.WalkerControl:
        c = self._control
        return carla.WalkerControl(carla.Vector3D(c.direction.x, c.direction.y, c.direction.z), c.speed, c.jump)

    def _step(self, dt: float) -> bool:
        c = self._control
        norm = math.hypot(c.direction.x, c.direction.y)
        if c.speed <= 0 or norm < 1e-9:
            self._velocity = carla.Vector3D()
            return False
        ux, uy = c.direction.x / norm, c.direction.y / norm
        tf = self._transform
        x, y = tf.location.x + ux * c.speed * dt, tf.location.y + uy * c.speed * dt
        z = self._world._ground_height(x, y) + self.bounding_box.extent.z
        self._transform = carla.Transform(carla.Location(x, y, z), carla.Rotation(yaw=math.degrees(math.atan2(uy, ux))))
        self._velocity = carla.Vector3D(ux * c.speed, uy * c.speed, 0.0)
        return True


class WalkerAIController(Actor):
    """Walks its parent walker along sidewalks and crossings to a destination."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._route: list[np.ndarray] = []
        self._max_speed = 1.4
        self._running = False

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False
        self._route = []
        if self.parent is not None and self.parent.is_alive:
            self.parent.apply_control(carla.WalkerControl(carla.Vector3D(1, 0, 0), 0.0, False))

    def go_to_location(self, destination: carla.Location) -> None:
        if not isinstance(destination, carla.Location):  # the server's binding raises ArgumentError (a TypeError)
            raise TypeError(f"go_to_location expects a carla.Location, got {type(destination).__name__}")
        here = self.parent.get_location()
        self._route = self._world._town.walk_route(np.array([here.x, here.y]), np.array([destination.x, destination.y]))

    def set_max_speed(self, speed: float = 1.4) -> None:
        self._max_speed = float(speed)

    def get_transform(self) -> carla.Transform:
        return self.parent.get_transform() if self.parent is not None else super().get_transform()

    def _step(self, dt: float) -> bool:
        walker = self.parent
        if not self._running or walker is None or not walker.is_alive:
            return False
        here = walker.get_location()
        pos = np.array([here.x, here.y])
        while self._route and np.hypot(*(self._route[0] - pos)) < max(0.3, self._max_speed * dt):
            self._route.pop(0)
        if not self._route:
            walker.apply_control(carla.WalkerControl(carla.Vector3D(1, 0, 0), 0.0, False))
            return False
        d = self._route[0] - pos
        walker.apply_control(carla.WalkerControl(carla.Vector3D(float(d[0]), float(d[1]), 0.0), self._max_speed, False))
        return False


class ActorList:
    """A list of actors filtered by fnmatch on type_id, like carla.ActorList."""

    def __init__(self, actors: list[Actor]) -> None:
        self._actors = list(actors)

    def filter(self, wildcard_pattern: str) -> ActorList:
        return ActorList([a for a in self._actors if fnmatch.fnmatchcase(a.type_id, wildcard_pattern)])

    def find(self, actor_id: int) -> Actor | None:
        for a in self._actors:
            if a.id == actor_id:
                return a
        return None

    def __getitem__(self, pos: int) -> Actor:
        return self._actors[pos]

    def __iter__(self) -> Iterator[Actor]:
        return iter(self._actors)

    def __len__(self) -> int:
        return len(self._actors)

    def __repr__(self) -> str:
        return f"ActorList({self._actors})"
