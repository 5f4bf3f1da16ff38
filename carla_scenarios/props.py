"""Spawning the scenario's props as a 0.9.16 server needs them spawned.

A prop spawned at the road's height on a kerb or a raised sidewalk overlaps it: the server refuses the
spawn (or buries the prop), and the object silently vanished from the episode. Props are spawned a
little above the ground found straight below (`world.ground_projection`; cones, whose boxes sit low,
a little higher), with physics enabled during the warm-up so that they settle on it; their records
then get the pose they settled in.
"""

from __future__ import annotations

import logging

import carla

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
