"""Footprints of the scenario's props for the agent, robust to what a 0.9.16 server reports.

A static prop spawned with a yaw reports a bounding box whose own rotation already equals the actor's
yaw (carla issue #8663), so `bounding_box.get_world_vertices(actor.get_transform())` turns it twice;
and some props report zero, infinite or NaN extents (a `static.prop.mesh` whose mesh did not load).
A prop's footprint is therefore built from its spawn yaw and the box's extent and offset alone, and a
box without a finite positive extent is replaced by a size of its catalogue shape, with a warning.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

# Half extents (x, y, z metres) by catalogue shape, for props whose box the server gets wrong: about
# the stock props' own boxes.
SHAPE_EXTENTS = {
    "cone": (0.2, 0.2, 0.4),
    "pole": (0.15, 0.15, 1.2),
    "sign": (0.55, 0.35, 0.6),
    "bin": (0.35, 0.35, 0.5),
    "bags": (0.5, 0.3, 0.5),
    "trolley": (0.55, 0.3, 0.5),
    "barrier": (1.0, 0.25, 0.5),
}
DEFAULT_EXTENT = (0.5, 0.5, 0.5)


def valid_extent(extent) -> bool:
    """Whether a box extent is finite and positive in x and y (z may be flat)."""
    values = (float(extent.x), float(extent.y), float(extent.z))
    return all(math.isfinite(v) for v in values) and values[0] > 1e-3 and values[1] > 1e-3


def prop_extent(actor, shape: str | None = None, what: str = "") -> tuple[tuple[float, float, float], bool]:
    """(half extents, measured) of a prop: its box's extent, or its shape's catalogue size when the box
    has a zero, infinite or NaN extent (measured False; a warning names the actor)."""
    ext = actor.bounding_box.extent
    if valid_extent(ext):
        return (float(ext.x), float(ext.y), float(ext.z)), True
    fallback = SHAPE_EXTENTS.get(shape or "", DEFAULT_EXTENT)
    log.warning("%s (actor %d, %s) reports bounding box extent (%s, %s, %s); using the %s size %s instead",
                what or "a prop", actor.id, actor.type_id, ext.x, ext.y, ext.z, shape or "default", fallback)
    return fallback, False


def footprint(x: float, y: float, yaw_deg: float, extent: tuple[float, float, float],
              offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(4, 2) corners in CARLA's world of a box with half extents `extent`, centred `offset` (local x, y)
    from the point (x, y) and turned by `yaw_deg` once."""
    r = math.radians(yaw_deg)
    c, s = math.cos(r), math.sin(r)
    hx, hy = extent[0], extent[1]
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]]) + np.asarray(offset, dtype=float)
    return np.column_stack([x + local[:, 0] * c - local[:, 1] * s, y + local[:, 0] * s + local[:, 1] * c])


def prop_footprint(actor, spawn_yaw: float, shape: str | None = None) -> np.ndarray:
    """The prop's footprint from its spawn yaw, its box's extent and offset (the box's own rotation is
    ignored: it repeats the actor's yaw on a server), at the actor's current location."""
    extent, measured = prop_extent(actor, shape)
    loc = actor.get_transform().location
    box = actor.bounding_box.location
    offset = (float(box.x), float(box.y)) if measured and math.isfinite(box.x) and math.isfinite(box.y) else (0.0, 0.0)
    return footprint(float(loc.x), float(loc.y), spawn_yaw, extent, offset)


def scenario_footprints(actors, records: list[dict], classes) -> dict[int, np.ndarray]:
    """Footprints of a scenario's spawned objects by actor id, from their records (spawn yaw in
    `transform[4]`, class name) and the classes' shapes (the fallback sizes)."""
    by_id = {a.id: a for a in actors}
    shape_of = {c.name: c.shape for c in classes}
    return {o["actor_id"]: prop_footprint(by_id[o["actor_id"]], float(o["transform"][4]), shape_of.get(o["class"]))
            for o in records if o["actor_id"] in by_id}
