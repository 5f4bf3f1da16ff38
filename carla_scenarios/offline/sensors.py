"""Sensors of the offline world: cameras (rgb, depth, semantic and instance segmentation) and the
collision sensor, with `listen`/`stop`, delivering data objects shaped like CARLA's `carla.Image` and
`carla.CollisionEvent` (raw_data in CARLA's BGRA encodings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import carla

from .actors import Actor


class SensorData:
    """What every sensor measurement carries: frame id, simulation time (s) and sensor transform."""

    def __init__(self, frame: int, timestamp: float, transform: carla.Transform) -> None:
        self.frame = frame
        self.timestamp = timestamp
        self.transform = transform


class Image(SensorData):
    """A camera image: width, height, horizontal fov and BGRA `raw_data` bytes."""

    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, width: int, height: int, fov: float,
                 raw_data: bytes) -> None:
        super().__init__(frame, timestamp, transform)
        self.width = width
        self.height = height
        self.fov = fov
        self.raw_data = raw_data

    def __len__(self) -> int:
        return self.width * self.height

    def __repr__(self) -> str:
        return f"Image(frame={self.frame}, timestamp={self.timestamp:.3f}, size={self.width}x{self.height})"


class CollisionEvent(SensorData):
    """A collision of the sensor's parent (`actor`) with `other_actor`."""

    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, actor: Actor, other_actor: Actor,
                 normal_impulse: carla.Vector3D) -> None:
        super().__init__(frame, timestamp, transform)
        self.actor = actor
        self.other_actor = other_actor
        self.normal_impulse = normal_impulse

    def __repr__(self) -> str:
        return f"CollisionEvent(frame={self.frame}, other_actor={self.other_actor.type_id})"


class ObstacleDetectionEvent(SensorData):
    """The nearest actor in the corridor ahead of an obstacle sensor (`distance` in metres)."""

    def __init__(self, frame: int, timestamp: float, transform: carla.Transform, actor: Actor, other_actor: Actor,
                 distance: float) -> None:
        super().__init__(frame, timestamp, transform)
        self.actor = actor
        self.other_actor = other_actor
        self.distance = distance

    def __repr__(self) -> str:
        return f"ObstacleDetectionEvent(frame={self.frame}, other_actor={self.other_actor.type_id}, distance={self.distance:.2f})"


class Sensor(Actor):
    """A sensor actor: `listen(callback)` receives its data on every world tick (or every sensor_tick
    seconds) until `stop()`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._callback: Callable[[Any], Any] | None = None
        self._last_time: float | None = None
        self._touching: set[int] = set()  # actors the parent overlapped last tick (collision sensor)

    def listen(self, callback: Callable[[Any], Any]) -> None:
        if not callable(callback):
            raise TypeError(f"listen expects a callable, got {type(callback).__name__}")
        self._callback = callback

    def stop(self) -> None:
        self._callback = None

    def is_listening(self) -> bool:
        return self._callback is not None

    def _due(self, elapsed: float) -> bool:
        """Whether the sensor measures at this time, honouring its sensor_tick attribute."""
        period = float(self.attributes.get("sensor_tick", "0") or 0)
        if self._last_time is not None and period > 0 and elapsed - self._last_time < period - 1e-9:
            return False
        self._last_time = elapsed
        return True

    def _deliver(self, data: SensorData) -> None:
        if self._callback is not None:
            self._callback(data)
