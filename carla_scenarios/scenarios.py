"""Scenario placement rules: where the unknown objects of a scenario go relative to the ego's route.

Placements are made in the route frame (s metres ahead along the ego lane, t metres to the right of its
centre line, yaw relative to the lane) from one random generator, then turned into CARLA transforms.
Only classes handed in (the current split's unknowns of the scenario) are used.

- barrier: a row of barriers or poles across the ego lane, with a few more on the shoulder;
- construction: the VCA authors' layout, a three-sided rectangle (near side and both long sides,
  open at the far end) half a lane width to the right of the lane centre about 30-40 m ahead, its near
  side led by a warning sign when the split has one;
- parking: a cluster of trolleys, carts with bags or bins at the right edge of the lane, partly in
  it, with a pedestrian standing beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carla_scenarios.route import Route
from vca_data.labels import SCENARIOS, Blueprint, UnknownClass

# Minimum distance between two placed objects (metres), so that spawns do not overlap.
MIN_SPACING = 0.9


@dataclass(frozen=True)
class Placement:
    unknown: UnknownClass
    blueprint: Blueprint
    s: float  # metres ahead along the route
    t: float  # metres right of the lane centre
    yaw: float  # degrees relative to the lane direction


@dataclass(frozen=True)
class WalkerPlacement:
    s: float
    t: float
    yaw: float


@dataclass(frozen=True)
class Layout:
    scenario: str
    objects: tuple[Placement, ...]
    walkers: tuple[WalkerPlacement, ...]
    extent: tuple[float, float]  # first and last s of the layout


def _pick(classes: list[UnknownClass], rng: np.random.Generator, prefer_shape: str | None = None):
    pool = [c for c in classes if c.shape == prefer_shape] if prefer_shape else []
    pool = pool or classes
    cls = pool[int(rng.integers(len(pool)))]
    return cls, cls.blueprints[int(rng.integers(len(cls.blueprints)))]


def _barrier(classes, lane_width, rng, s0):
    objects = []
    count = int(rng.integers(2, 4))
    # the row covers the right two thirds of the lane at least, so the ego has to leave its lane
    ts = np.linspace(-0.3 * lane_width, 0.45 * lane_width, count) + rng.uniform(-0.1, 0.1, count)
    for t in ts:
        cls, bp = _pick(classes, rng)
        objects.append(Placement(cls, bp, s0 + float(rng.uniform(-0.3, 0.3)), float(t), 90.0 + float(rng.uniform(-12, 12))))
    for _ in range(int(rng.integers(0, 3))):
        cls, bp = _pick(classes, rng)
        s = s0 + float(rng.uniform(2.5, 8.0))
        objects.append(Placement(cls, bp, s, 0.5 * lane_width + float(rng.uniform(0.6, 1.2)), float(rng.uniform(-20, 20))))
    return objects, []


def _construction(classes, lane_width, rng, s0):
    objects = []
    length = float(rng.uniform(6.0, 10.0))
    width = float(rng.uniform(0.8, 1.0)) * lane_width
    centre = 0.5 * lane_width  # half a lane to the right of the lane centre
    near_left, near_right = centre - width / 2, centre + width / 2
    lead, lead_bp = _pick(classes, rng, prefer_shape="sign")
    objects.append(Placement(lead, lead_bp, s0, centre, 90.0 + float(rng.uniform(-8, 8))))
    spacing = 3.0 if all(c.shape == "sign" for c in classes) else float(rng.uniform(1.6, 2.4))
    # near side: the corners beside the lead object
    for t in (near_left, near_right):
        cls, bp = _pick(classes, rng)
        objects.append(Placement(cls, bp, s0, t, float(rng.uniform(-30, 30))))
    # the two long sides
    for s in np.arange(s0 + spacing, s0 + length + 1e-6, spacing):
        for t in (near_left, near_right):
            cls, bp = _pick(classes, rng)
            objects.append(Placement(cls, bp, float(s), t, float(rng.uniform(-30, 30))))
    return objects, []


def _parking(classes, lane_width, rng, s0):
    objects = []
    count = int(rng.integers(3, 7))
    edge = 0.5 * lane_width
    s = s0
    for i in range(count):
        cls, bp = _pick(classes, rng)
        # the first objects spill into the lane, the rest stand at its edge and on the shoulder
        t = edge + (float(rng.uniform(-0.9, -0.4)) if i < 2 else float(rng.uniform(-0.2, 0.9)))
        objects.append(Placement(cls, bp, s, t, float(rng.uniform(0, 360))))
        s += float(rng.uniform(1.0, 2.2))
    walkers = [WalkerPlacement(s0 + float(rng.uniform(0.0, s - s0)), edge + float(rng.uniform(1.6, 2.2)), float(rng.uniform(0, 360)))]
    return objects, walkers


_RULES = {"barrier": _barrier, "construction": _construction, "parking": _parking}


def plan_layout(
    scenario: str, classes: list[UnknownClass], lane_width: float, rng: np.random.Generator,
    distance: tuple[float, float] = (28.0, 38.0),
) -> Layout:
    """Random layout of one scenario's unknown objects in the route frame, `distance` metres ahead."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {list(SCENARIOS)}")
    if not classes:
        raise ValueError(f"scenario {scenario!r} has no unknown classes to place")
    wrong = [c.name for c in classes if c.scenario != scenario]
    if wrong:
        raise ValueError(f"classes {wrong} do not belong to scenario {scenario!r}")
    if not lane_width > 1.0:
        raise ValueError(f"lane width must be > 1 m, got {lane_width}")
    s0 = float(rng.uniform(*distance))
    objects, walkers = _RULES[scenario](classes, lane_width, rng, s0)
    objects = _drop_overlaps(objects)
    ss = [o.s for o in objects] + [w.s for w in walkers]
    return Layout(scenario, tuple(objects), tuple(walkers), (min(ss), max(ss)))


def _drop_overlaps(objects: list[Placement]) -> list[Placement]:
    kept: list[Placement] = []
    for o in objects:
        if all((o.s - k.s) ** 2 + (o.t - k.t) ** 2 >= MIN_SPACING**2 for k in kept):
            kept.append(o)
    return kept


def world_pose(route: Route, s: float, t: float, yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, yaw) in CARLA's world of a route-frame placement."""
    x, y, z, lane_yaw = route.pose_at(s, t)
    return x, y, z, (lane_yaw + yaw + 180.0) % 360.0 - 180.0
