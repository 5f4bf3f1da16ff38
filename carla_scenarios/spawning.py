"""Spawning a scenario's layout in the world: its unknown objects (a little above the ground below them,
see `carla_scenarios.props`), its other props and its pedestrians, all with role names of ours; and
starting the pedestrians that cross when the ego comes close.
"""

from __future__ import annotations

import logging
import math

import carla
import numpy as np

from carla_scenarios.cleanup import ROLES
from carla_scenarios.props import spawn_height
from carla_scenarios.rig import ActorRegistry
from carla_scenarios.route import Route
from carla_scenarios.scenarios import Layout, world_pose

log = logging.getLogger(__name__)


class EpisodeSkipped(RuntimeError):
    """This episode cannot be staged in this town (no suitable route, blueprint missing)."""


def _transform(x: float, y: float, z: float, yaw: float) -> carla.Transform:
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(yaw=yaw))


def _blueprint(library, bp_id: str, attributes: dict | None = None):
    try:
        bp = library.find(bp_id)
    except (IndexError, RuntimeError, KeyError):
        raise EpisodeSkipped(f"blueprint {bp_id} is not in this server's blueprint library") from None
    for key, value in (attributes or {}).items():
        bp.set_attribute(key, str(value))
    _set_role(bp, "prop")
    return bp


def _set_role(bp, kind: str) -> None:
    """Give a blueprint our role name of `kind` (where it has the attribute): leftovers can be found."""
    if bp.has_attribute("role_name"):
        bp.set_attribute("role_name", ROLES[kind])


def spawn_unknown_objects(world, registry: ActorRegistry, layout: Layout, route: Route) -> list[dict]:
    """Spawn the layout's objects a little above the ground below them (see `carla_scenarios.props`);
    returns their records (objects whose spot is taken are left out, with a warning)."""
    library = world.get_blueprint_library()
    records = []
    for p in layout.objects:
        x, y, z, yaw = world_pose(route, p.s, p.t, p.yaw)
        z = spawn_height(world, x, y, z, p.unknown.shape)
        tf = _transform(x, y, z, yaw)
        actor = registry.try_spawn(_blueprint(library, p.blueprint.id, p.blueprint.attributes), tf)
        if actor is None:
            log.warning("could not spawn a %s (%s) at s=%.1f t=%.1f: its spot is taken; left out",
                        p.unknown.name, p.blueprint.id, p.s, p.t)
            continue
        records.append({
            "actor_id": int(actor.id), "fine_id": p.unknown.fine_id, "class": p.unknown.name,
            "blueprint": p.blueprint.id, "transform": [x, y, z, 0.0, yaw, 0.0],
            "route_s": round(p.s, 3), "route_t": round(p.t, 3), "semantic_tags": sorted(int(t) for t in actor.semantic_tags),
        } | ({"attributes": dict(p.blueprint.attributes)} if p.blueprint.attributes else {}))
    return records


def spawn_scenario_walkers(world, registry: ActorRegistry, layout: Layout, route: Route,
                           rng: np.random.Generator, crossings: list | None = None) -> list:
    """The pedestrians of a layout (the parking scenario's shopper); those that cross the road are
    appended to `crossings` as (actor, placement, direction), for `start_crossings`."""
    walker_bps = sorted(world.get_blueprint_library().filter("walker.pedestrian.*"), key=lambda b: b.id)
    out = []
    for wp in layout.walkers if walker_bps else ():
        x, y, z, yaw = world_pose(route, wp.s, wp.t, wp.yaw)
        bp = walker_bps[int(rng.integers(len(walker_bps)))]
        _set_role(bp, "scene_walker")
        actor = registry.try_spawn(bp, _transform(x, y, z + 1.0, yaw))
        if actor is None:
            continue
        out.append(actor)
        if wp.speed > 0 and crossings is not None:
            *_, heading = world_pose(route, wp.s, wp.t, -90.0)  # across the lane, from right to left
            r = math.radians(heading)
            crossings.append((actor, wp, carla.Vector3D(math.cos(r), math.sin(r), 0.0)))
    return out


def start_crossings(crossings: list, ego_s: float, ego_speed: float) -> None:
    """Start the walkers whose trigger came: the ego is `trigger_s` seconds away from them (at its
    speed); a started walker is taken off the list and walks on at its speed."""
    for item in list(crossings):
        actor, wp, direction = item
        if (wp.s - ego_s) <= wp.trigger_s * max(ego_speed, 0.5):
            actor.apply_control(carla.WalkerControl(direction=direction, speed=float(wp.speed)))
            crossings.remove(item)


def spawn_extras(world, registry: ActorRegistry, layout: Layout, route: Route) -> list[dict]:
    """The layout's props that are not unknown objects (the authors' debris and container): spawned
    like them, recorded apart (`scenery_props`); their pixels are no unknown object's."""
    library = world.get_blueprint_library()
    records = []
    for e in layout.extras:
        x, y, z, yaw = world_pose(route, e.s, e.t, e.yaw)
        z = spawn_height(world, x, y, z, None)
        try:
            bp = _blueprint(library, e.blueprint)
        except EpisodeSkipped as err:
            log.warning("%s; left out", err)
            continue
        actor = registry.try_spawn(bp, _transform(x, y, z, yaw))
        if actor is None:
            log.warning("could not spawn %s at s=%.1f t=%.1f: its spot is taken; left out", e.blueprint, e.s, e.t)
            continue
        records.append({"actor_id": int(actor.id), "blueprint": e.blueprint, "transform": [x, y, z, 0.0, yaw, 0.0],
                        "route_s": round(e.s, 3), "route_t": round(e.t, 3)})
    return records
