"""Spawning the scenario's props as a 0.9.16 server needs them spawned.

A prop spawned at the road's height on a kerb or a raised sidewalk overlaps it: the server refuses the
spawn (or buries the prop), and the object silently vanished from the episode. Props are spawned a
little above the ground found straight below (`world.ground_projection`; cones, whose boxes sit low,
a little higher), with physics enabled during the warm-up so that they settle on it; their records
then get the pose they settled in.
"""

from __future__ import annotations

import logging
import math

import carla
import numpy as np

log = logging.getLogger(__name__)

SPAWN_LIFT_M = 0.2  # above the ground below the spawn point
CONE_LIFT_M = 0.3
PROBE_ABOVE_M = 2.0  # the ground is searched from this high above the route's height...
PROBE_DEPTH_M = 6.0  # ...down to this far


def spawn_height(world, x: float, y: float, z: float, shape: str | None) -> float:
    """Spawn height of a prop at (x, y): the ground below (the route's height `z` where none is found)
    plus the lift of its shape."""
    hit = world.ground_projection(carla.Location(x=x, y=y, z=z + PROBE_ABOVE_M), PROBE_DEPTH_M)
    ground = float(hit.location.z) if hit is not None else z
    return ground + (CONE_LIFT_M if shape == "cone" else SPAWN_LIFT_M)


def enable_physics(actors) -> None:
    """Let the props fall onto the ground (props spawn without physics)."""
    for a in actors:
        a.set_simulate_physics(True)


def settle_records(records: list[dict], actors) -> None:
    """Update each record's transform to the pose its actor settled in."""
    by_id = {a.id: a for a in actors}
    for o in records:
        actor = by_id.get(o["actor_id"])
        if actor is None:
            continue
        tf = actor.get_transform()
        o["transform"] = [round(v, 4) for v in (tf.location.x, tf.location.y, tf.location.z,
                                                 tf.rotation.pitch, tf.rotation.yaw, tf.rotation.roll)]


class EmptyPropError(RuntimeError):
    """A prop spawned but shows nothing (a `static.prop.mesh` whose mesh did not load): the catalogue
    is wrong for this server, and every episode with it would lack its objects."""


def _describe(o: dict) -> str:
    path = (o.get("attributes") or {}).get("mesh_path")
    return f"{o['blueprint']}" + (f" with mesh_path {path}" if path else "")


def require_extents(records: list[dict], actors) -> None:
    """EmptyPropError unless every spawned object reports a finite, non-zero bounding box."""
    from carla_scenarios.footprints import valid_extent

    by_id = {a.id: a for a in actors}
    for o in records:
        actor = by_id.get(o["actor_id"])
        if actor is not None and not valid_extent(actor.bounding_box.extent):
            e = actor.bounding_box.extent
            raise EmptyPropError(
                f"{o['class']}: {_describe(o)} spawned with bounding box extent ({e.x}, {e.y}, {e.z}): its mesh did "
                f"not load on this server (check the catalogue; `vca-carla scenarios --check` tests every blueprint)")


def in_view(camera_tf, location, half_width: float, width: int, height: int, fov: float, min_px: float = 4.0) -> bool:
    """Whether an object of `half_width` metres at `location` lies inside the camera's view, at least
    `min_px` pixels wide (occlusion not considered)."""
    m = np.array(camera_tf.get_inverse_matrix())
    x, y, z, _ = m @ np.array([location.x, location.y, location.z, 1.0])
    if x < 0.5:
        return False
    f = width / (2.0 * math.tan(math.radians(fov) / 2.0))
    return abs(y) * f / x < width / 2.0 and abs(z) * f / x < height / 2.0 and 2.0 * half_width * f / x >= min_px


def require_seen(records: list[dict], seen: set[int], expected: set[int]) -> None:
    """EmptyPropError for a mesh prop (`static.prop.mesh`) that some frame should have shown (`expected`:
    in view and large enough) but no frame showed a pixel of."""
    for o in records:
        if o["blueprint"] == "static.prop.mesh" and o["actor_id"] in expected and o["actor_id"] not in seen:
            raise EmptyPropError(
                f"{o['class']}: {_describe(o)} showed no pixel in any frame although it was in view: its mesh did "
                f"not load on this server (check the catalogue; `vca-carla scenarios --check` tests every blueprint)")
