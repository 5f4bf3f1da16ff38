"""Scenario placement rules: where the unknown objects of a scenario go relative to the ego's route.

Placements are made in the route frame (s metres ahead along the ego lane, t metres to the right of its
centre line, yaw relative to the lane) from one random generator, then turned into CARLA transforms.
Only classes handed in (the current split's unknowns of the scenario) are used.

- barrier: a row of barriers or poles across the ego lane, with a few more on the shoulder;
- construction (ours): a three-sided rectangle (near side and both long sides, open at the far end)
  half a lane width to the right of the lane centre about 30-40 m ahead, its near side led by a warning
  sign when the split has one (REFERENCE.md's reading of the paper; not the authors' code);
- parking: a cluster of trolleys, carts with bags or bins at the right edge of the lane, partly in
  it, with a pedestrian standing beside it.

`style='vca-authors'` (`--layout vca-authors`) places the layouts of the authors' scenario_runner fork
instead, for construction and parking (see `_construction_authors`, `_parking_authors`).
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
    speed: float = 0.0  # m/s across the lane (right to left) once triggered; 0 stands
    trigger_s: float = 0.0  # starts when the ego is this many seconds away


@dataclass(frozen=True)
class ExtraProp:
    """A prop of a layout that is not an unknown object of the catalogue (the authors' debris, container)."""

    blueprint: str
    s: float
    t: float
    yaw: float


@dataclass(frozen=True)
class Layout:
    scenario: str
    objects: tuple[Placement, ...]
    walkers: tuple[WalkerPlacement, ...]
    extent: tuple[float, float]  # first and last s of the layout
    extras: tuple[ExtraProp, ...] = ()
    style: str = "ours"


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


def _construction_authors(classes, lane_width, rng, s0):
    """The VCA authors' ConstructionSetupCrossing (MSiam/scenario_runner,
    srunner/scenarios/construction_crash_vehicle.py), from a reference point s0 on the lane centre (their
    40 m): the warning sign 5 m before it on the lane centre turned 270 degrees, debris 2 m after it,
    6 cones every 2 m along the left lane edge (s0 + 2 .. s0 + 12) and 3 cones 1 m apart across the lane
    at s0 + 12: an L open toward the ego. Props of the split's classes take the sign's and cones' places
    (a sign class for the sign, a cone class for the cones where the split has them)."""
    edge = -0.5 * lane_width  # their cones start half a lane width left of the centre
    cls, bp = _pick(classes, rng, prefer_shape="sign")
    objects = [Placement(cls, bp, s0 - 5.0, 0.0, 270.0)]
    for k in range(1, 7):
        cls, bp = _pick(classes, rng, prefer_shape="cone")
        objects.append(Placement(cls, bp, s0 + 2.0 * k, edge, 0.0))
    for k in range(1, 4):
        cls, bp = _pick(classes, rng, prefer_shape="cone")
        objects.append(Placement(cls, bp, s0 + 12.0, edge + float(k), 90.0))
    return objects, [], [ExtraProp("static.prop.dirtdebris02", s0 + 2.0, 0.0, 90.0)]


def _parking_authors(classes, lane_width, rng, s0):
    """The VCA authors' ParkingScenario (Town10HD) as the issue describes it: a container on the ego's
    line at s0 (their 25 m), a walker 15 m before it (their 10 m ahead) and 5 m right of the lane centre
    who crosses at 4 m/s when the ego is 5 s away, and a shopping cart (a class of the split) at the
    lane's right edge beside the walker's start."""
    walk_s = max(s0 - 15.0, 6.0)
    cls, bp = _pick(classes, rng, prefer_shape="trolley")
    objects = [Placement(cls, bp, walk_s, 0.5 * lane_width, float(rng.uniform(0, 360)))]
    walkers = [WalkerPlacement(walk_s + 1.5, 5.0, -90.0, speed=4.0, trigger_s=5.0)]
    return objects, walkers, [ExtraProp("static.prop.container", s0, 0.0, 0.0)]


_RULES = {"barrier": _barrier, "construction": _construction, "parking": _parking}
# The authors' layouts where they have one (their fork has no barrier scenario): --layout vca-authors.
_AUTHORS = {"construction": _construction_authors, "parking": _parking_authors}
LAYOUTS = ("ours", "vca-authors")


def plan_layout(
    scenario: str, classes: list[UnknownClass], lane_width: float, rng: np.random.Generator,
    distance: tuple[float, float] = (28.0, 38.0), style: str = "ours",
) -> Layout:
    """Random layout of one scenario's unknown objects in the route frame, `distance` metres ahead;
    `style` 'vca-authors' places the authors' construction and parking layouts instead of ours, with
    their reference point as close to their 40 m (construction) or 25 m (parking) as `distance` allows."""
    if style not in LAYOUTS:
        raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {style!r}")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {list(SCENARIOS)}")
    if not classes:
        raise ValueError(f"scenario {scenario!r} has no unknown classes to place")
    wrong = [c.name for c in classes if c.scenario != scenario]
    if wrong:
        raise ValueError(f"classes {wrong} do not belong to scenario {scenario!r}")
    if not lane_width > 1.0:
        raise ValueError(f"lane width must be > 1 m, got {lane_width}")
    extras: list[ExtraProp] = []
    if style == "vca-authors" and scenario in _AUTHORS:
        s0 = float(np.clip(40.0 if scenario == "construction" else 25.0, *distance))
        objects, walkers, extras = _AUTHORS[scenario](classes, lane_width, rng, s0)
    else:
        s0 = float(rng.uniform(*distance))
        objects, walkers = _RULES[scenario](classes, lane_width, rng, s0)
    objects = _drop_overlaps(objects)
    ss = [o.s for o in objects] + [w.s for w in walkers] + [e.s for e in extras]
    return Layout(scenario, tuple(objects), tuple(walkers), (min(ss), max(ss)), tuple(extras), style)


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
