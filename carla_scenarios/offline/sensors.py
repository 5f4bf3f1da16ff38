"""Sensors of the offline world: cameras (rgb, depth, semantic and instance segmentation) and the
collision sensor, with `listen`/`stop`, delivering data objects shaped like CARLA's `carla.Image` and
`carla.CollisionEvent` (raw_data in CARLA's BGRA encodings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import carla
import cv2
import numpy as np

from vca_data.io import atomic_write_bytes
from vca_data.labels import colorize_carla

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

    def convert(self, color_converter: carla.ColorConverter) -> None:
        """Convert raw_data in place like CARLA: Depth and LogarithmicDepth give grey levels of the encoded
        depth, CityScapesPalette colours the tag in R with CARLA's palette, Raw leaves it."""
        self.raw_data = _converted(self._bgra(), color_converter).tobytes()

    def save_to_disk(self, path: str, color_converter: carla.ColorConverter = carla.ColorConverter.Raw) -> None:
        """Write the (converted) image to `path`; the extension picks the format, as with CARLA."""
        bgra = _converted(self._bgra(), color_converter)
        target = Path(path)
        ok, data = cv2.imencode(target.suffix or ".png", bgra)
        if not ok:
            raise ValueError(f"{path}: cannot encode an image with extension {target.suffix!r}")
        atomic_write_bytes(target, data.tobytes())

    def _bgra(self) -> np.ndarray:
        return np.frombuffer(self.raw_data, dtype=np.uint8).reshape(self.height, self.width, 4)

    def __len__(self) -> int:
        return self.width * self.height

    def __repr__(self) -> str:
        return f"Image(frame={self.frame}, timestamp={self.timestamp:.3f}, size={self.width}x{self.height})"


def _converted(bgra: np.ndarray, color_converter: carla.ColorConverter) -> np.ndarray:
    """BGRA image after one of CARLA's colour converters."""
    out = bgra.copy()
    if color_converter == carla.ColorConverter.Raw:
        return out
    if color_converter in (carla.ColorConverter.Depth, carla.ColorConverter.LogarithmicDepth):
        a = bgra.astype(np.float64)
        normalized = (a[..., 2] + a[..., 1] * 256 + a[..., 0] * 65536) / (256**3 - 1)
        if color_converter == carla.ColorConverter.LogarithmicDepth:
            # CARLA's formula: 1 + log(depth) / 5.70378, clamped to [0, 1] (depth normalised to 1000 m)
            normalized = np.clip(1.0 + np.log(np.maximum(normalized, 1e-12)) / 5.70378, 0.0, 1.0)
        grey = np.round(normalized * 255).astype(np.uint8)
        out[..., 0] = out[..., 1] = out[..., 2] = grey
        return out
    if color_converter == carla.ColorConverter.CityScapesPalette:
        out[..., 2::-1] = colorize_carla(bgra[..., 2])
        return out
    raise ValueError(f"unknown colour converter {color_converter!r}")


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
