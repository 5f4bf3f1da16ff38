"""Scenario placement rules and the route frame they are placed in."""

import math

import numpy as np
import pytest

from carla_scenarios.route import Route
from carla_scenarios.scenarios import MIN_SPACING, plan_layout, world_pose
from vca_data.labels import SCENARIOS, SPLITS, default_catalogue


def straight_route(length=120.0, yaw=0.0, lane_width=3.5, left=True):
    s = np.arange(0.0, length + 1e-9, 1.0)
    r = math.radians(yaw)
    xyz = np.stack([s * math.cos(r), s * math.sin(r), np.zeros_like(s)], axis=1)
    n = len(s)
    return Route(xyz, np.full(n, yaw), s, np.full(n, lane_width), np.full(n, left), np.zeros(n, bool), np.zeros(n, bool))


def test_frenet_round_trip_on_a_bent_route():
    # a route turning by 90 degrees over a quarter circle of radius 20
    ang = np.linspace(0, math.pi / 2, 40)
    xyz = np.stack([20 * np.sin(ang), 20 - 20 * np.cos(ang), np.zeros_like(ang)], axis=1)
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1))])
    yaw = np.degrees(ang)
    n = len(s)
    route = Route(xyz, yaw, s, np.full(n, 3.5), np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool))
    for s_q, t_q in [(5.0, 0.0), (10.0, 1.5), (20.0, -2.0)]:
        x, y, _, _ = route.pose_at(s_q, t_q)
        (s_back,), (t_back,) = route.frenet(np.array([[x, y]]))
        assert s_back == pytest.approx(s_q, abs=0.05) and t_back == pytest.approx(t_q, abs=0.05)


def test_right_offset_follows_carla_right_vector():
    route = straight_route(yaw=90.0)  # heading +y; CARLA's right vector is then -x
    x, y, _, yaw = route.pose_at(10.0, 2.0)
    assert (x, y) == pytest.approx((-2.0, 10.0)) and yaw == pytest.approx(90.0)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("split", SPLITS)
def test_layouts_use_only_the_split_classes_and_do_not_overlap(scenario, split):
    classes = default_catalogue().unknown_classes(split, scenario)
    allowed = {c.name for c in classes}
    for seed in range(20):
        layout = plan_layout(scenario, classes, 3.5, np.random.default_rng(seed), (28.0, 38.0))
        assert layout.objects and {o.unknown.name for o in layout.objects} <= allowed
        for o in layout.objects:
            assert o.blueprint in o.unknown.blueprints
            assert 20.0 <= o.s <= 55.0 and -2.5 < o.t < 4.0
        pts = np.array([[o.s, o.t] for o in layout.objects])
        d = np.linalg.norm(pts[:, None] - pts[None], axis=2) + np.eye(len(pts)) * 99
        assert d.min() >= MIN_SPACING
        # every layout blocks part of the ego lane (|t| < lane half width + ego half width)
        assert any(abs(o.t) < 1.75 + 1.0 for o in layout.objects)


def test_construction_is_a_three_sided_rectangle_half_a_lane_aside():
    classes = default_catalogue().unknown_classes("train", "construction")
    layout = plan_layout("construction", classes, 3.6, np.random.default_rng(4), (40.0, 40.0))
    s = np.array([o.s for o in layout.objects])
    t = np.array([o.t for o in layout.objects])
    assert s.min() == pytest.approx(40.0)
    assert np.median(t) == pytest.approx(1.8, abs=0.05)  # centred half a lane (3.6 / 2) to the right
    # near side has three objects, the far end is open: at most the two side rows reach the last s
    assert np.count_nonzero(np.isclose(s, 40.0)) == 3
    assert np.count_nonzero(np.isclose(s, s.max())) == 2


def test_same_seed_same_layout_and_world_pose():
    classes = default_catalogue().unknown_classes("test", "parking")
    a = plan_layout("parking", classes, 3.5, np.random.default_rng(9))
    b = plan_layout("parking", classes, 3.5, np.random.default_rng(9))
    assert a == b and len(a.walkers) == 1
    route = straight_route(yaw=90.0)
    o = a.objects[0]
    x, y, _, yaw = world_pose(route, o.s, o.t, o.yaw)
    assert (x, y) == pytest.approx((-o.t, o.s))


def test_layout_rejects_foreign_classes():
    cat = default_catalogue()
    with pytest.raises(ValueError, match="do not belong"):
        plan_layout("parking", cat.unknown_classes("train", "barrier"), 3.5, np.random.default_rng(0))


def test_scenario_window_avoids_junctions_and_bends():
    from carla_scenarios.collector import scenario_window

    route = straight_route(length=100.0)
    assert scenario_window(route, 20.0, 30.0) == (20.0, 30.0)
    route.junction[(route.s > 35) & (route.s < 45)] = True  # a junction 35-45 m ahead
    # starts need 8 m before and 14 m after them free of it: up to s0 = 21
    assert scenario_window(route, 20.0, 30.0) == (20.0, 21.0)
    assert scenario_window(route, 25.0, 30.0) is None
    bent = straight_route(length=100.0)
    bent.yaw[bent.s > 30] = 25.0  # the road turns 30 m ahead
    assert scenario_window(bent, 12.0, 30.0) == (12.0, 16.0)
