"""The sensor rig and the synchronous loop: synchronous mode with a fixed time step as a context manager
that always restores the previous settings, an actor registry that destroys everything it spawned,
and four co-located cameras (RGB, depth, semantic, instance) plus a collision sensor on the ego, whose
images are matched to the world frame through one queue per sensor with a timeout.

Follows CARLA's `PythonAPI/examples/synchronous_mode.py`: whatever fails, settings are restored and
actors destroyed (sensors stopped first) in `__exit__`.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

import carla

from carla_scenarios.cleanup import ROLES, ServerLink, destroy_actors

log = logging.getLogger(__name__)

CAMERAS = {
    "rgb": "sensor.camera.rgb",
    "depth": "sensor.camera.depth",
    "semantic": "sensor.camera.semantic_segmentation",
    "instance": "sensor.camera.instance_segmentation",
}
# Camera mount on the ego (vehicle frame, metres): bonnet height, slightly ahead of the centre.
CAMERA_MOUNT = carla.Transform(carla.Location(x=1.5, z=1.7))


# CARLA's docs: a fixed time step should not exceed 0.1 s (physics sub-stepping and sensors degrade).
MAX_DT = 0.1


class SensorTimeout(RuntimeError):
    """A sensor delivered no image for a frame within the timeout (or skipped it)."""


class SynchronousMode:
    """Context manager: synchronous mode with `fixed_delta_seconds = dt` (also on the Traffic Manager);
    the world's previous settings are restored on exit, whatever happened."""

    def __init__(self, world, dt: float, traffic_manager=None, link: ServerLink | None = None):
        if not 0.0 < dt <= MAX_DT:
            raise ValueError(f"time step must be in (0, {MAX_DT:g}] s (CARLA's physics is not reliable above "
                             f"{MAX_DT:g} s), got {dt}")
        self.world = world
        self.dt = dt
        self.traffic_manager = traffic_manager
        self.link = link or ServerLink()
        self._saved = None

    def __enter__(self) -> SynchronousMode:
        settings = self.world.get_settings()
        limit = settings.max_substep_delta_time * settings.max_substeps
        if settings.substepping and self.dt > limit + 1e-9:
            raise ValueError(
                f"time step {self.dt:g} s exceeds the server's physics sub-stepping limit max_substep_delta_time "
                f"x max_substeps = {settings.max_substep_delta_time:g} x {settings.max_substeps} = {limit:g} s "
                f"(use a smaller --dt)")
        self._saved = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.dt
        self.world.apply_settings(settings)
        if self.traffic_manager is not None:
            self.traffic_manager.set_synchronous_mode(True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._saved is None:
            return
        self.link.note(exc)
        if self.traffic_manager is not None:
            self.link.call("reset the traffic manager's synchronous mode", self.traffic_manager.set_synchronous_mode, False)
        # asynchronous always: "previous" settings that were synchronous are a killed run's leftovers,
        # and a synchronous server without a client waits for ticks forever
        self._saved.synchronous_mode = False
        self.link.call("restore the world settings", self.world.apply_settings, self._saved)
        self._saved = None


class ActorRegistry:
    """Every actor the collector spawns is registered here and destroyed on exit: sensors and walker
    controllers stopped, then all destroyed in one batch through `client` (one call per actor without
    one); after a time-out of the server nothing more is asked of it."""

    def __init__(self, world, client=None, link: ServerLink | None = None):
        self.world = world
        self.client = client
        self.link = link or ServerLink()
        self.actors: list = []

    def __enter__(self) -> ActorRegistry:
        return self

    def add(self, actor):
        self.actors.append(actor)
        return actor

    def spawn(self, blueprint, transform, attach_to=None):
        actor = self.world.spawn_actor(blueprint, transform, attach_to=attach_to) if attach_to is not None \
            else self.world.spawn_actor(blueprint, transform)
        return self.add(actor)

    def try_spawn(self, blueprint, transform):
        actor = self.world.try_spawn_actor(blueprint, transform)
        return self.add(actor) if actor is not None else None

    def destroy_all(self) -> int:
        """Destroy every registered actor; returns how many could not be destroyed."""
        if self.client is not None:
            failed = destroy_actors(self.client, list(reversed(self.actors)), self.link)
            if failed:
                log.warning("could not destroy %d of %d actors%s", failed, len(self.actors),
                            " (the server is gone)" if self.link.dead else "")
            self.actors = []
            return failed
        failed = 0

        def order(a):
            tid = a.type_id
            return 0 if tid.startswith("sensor.") else 1 if tid.startswith("controller.") else 2

        first_error = None
        for actor in sorted(reversed(self.actors), key=order):
            if self.link.dead:
                failed += 1
                continue
            try:
                if actor.type_id.startswith(("sensor.", "controller.")):
                    actor.stop()
                actor.destroy()
            except Exception as e:  # a lost server fails every call: report once, not per actor
                failed += 1
                first_error = first_error or e
                self.link.note(e)
        if failed:
            log.warning("could not destroy %d of %d actors (%s)", failed, len(self.actors), first_error)
        self.actors = []
        return failed

    def __exit__(self, exc_type, exc, tb) -> None:
        self.link.note(exc)
        self.destroy_all()


@dataclass
class RigFrame:
    frame: int
    timestamp: float
    images: dict  # sensor name -> carla.Image


class SensorRig:
    """Four cameras sharing one mount on the ego and a collision sensor; `tick()` advances the world and
    returns the images of that frame."""

    def __init__(self, world, registry: ActorRegistry, ego, width: int, height: int, fov: float,
                 timeout: float = 5.0, mount: carla.Transform = CAMERA_MOUNT):
        if width < 8 or height < 8:
            raise ValueError(f"image size must be at least 8x8, got {width}x{height}")
        self.world = world
        self.timeout = timeout
        self.mount = mount
        self.queues: dict[str, queue.Queue] = {}
        self.collisions: list[dict] = []
        library = world.get_blueprint_library()
        for name, bp_id in CAMERAS.items():
            bp = library.find(bp_id)
            bp.set_attribute("image_size_x", str(width))
            bp.set_attribute("image_size_y", str(height))
            bp.set_attribute("fov", str(fov))
            if bp.has_attribute("role_name"):
                bp.set_attribute("role_name", ROLES["sensor"])
            sensor = registry.spawn(bp, mount, attach_to=ego)
            q: queue.Queue = queue.Queue()
            sensor.listen(q.put)
            self.queues[name] = q
        collision_bp = library.find("sensor.other.collision")
        if collision_bp.has_attribute("role_name"):
            collision_bp.set_attribute("role_name", ROLES["sensor"])
        collision = registry.spawn(collision_bp, carla.Transform(), attach_to=ego)
        collision.listen(self._on_collision)

    def _on_collision(self, event) -> None:
        other = event.other_actor
        self.collisions.append({
            "frame": int(event.frame),
            "other_id": int(other.id) if other is not None else 0,
            "other_type": other.type_id if other is not None else "",
        })

    def _retrieve(self, name: str, frame: int):
        q = self.queues[name]
        while True:
            try:
                data = q.get(timeout=self.timeout)
            except queue.Empty:
                raise SensorTimeout(
                    f"sensor '{name}' delivered no image for frame {frame} within {self.timeout:g} s"
                ) from None
            if data.frame == frame:
                return data
            if data.frame > frame:
                raise SensorTimeout(f"sensor '{name}' skipped frame {frame} (next image is frame {data.frame})")
            # an older image (sensors may lag a few frames): drop it and keep draining

    def tick(self) -> RigFrame:
        frame = self.world.tick(max(self.timeout, 1.0))
        images = {name: self._retrieve(name, frame) for name in self.queues}
        return RigFrame(frame, float(images["rgb"].timestamp), images)
