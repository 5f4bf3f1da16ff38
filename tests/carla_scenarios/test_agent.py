"""The obstacle-avoiding agent, closed-loop on a kinematic bicycle model against the scenario layouts."""

import math

import numpy as np
import pytest

from carla_scenarios.agent import AvoidingAgent, Obstacle, pure_pursuit_steer, stopping_speed
from carla_scenarios.route import Route
from carla_scenarios.scenarios import plan_layout, world_pose
from vca_data.labels import SCENARIOS, default_catalogue

HALF_LENGTH, HALF_WIDTH = 2.3, 1.0
BOX = 0.45  # half size of a placed object's footprint


def straight_route(length=150.0, lane_width=3.5, left=True):
    s = np.arange(0.0, length + 1e-9, 1.0)
    n = len(s)
    xyz = np.stack([s, np.zeros(n), np.zeros(n)], axis=1)
    return Route(xyz, np.zeros(n), s, np.full(n, lane_width), np.full(n, left), np.zeros(n, bool), np.zeros(n, bool))


def box(x, y, yaw_deg, hl, hw):
    r = math.radians(yaw_deg)
    f, rt = np.array([math.cos(r), math.sin(r)]), np.array([-math.sin(r), math.cos(r)])
    c = np.array([x, y])
    return np.array([c + a * hl * f + b * hw * rt for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))])


def separated(a, b):
    """Separating-axis test of two convex quadrilaterals."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return True
    return False


def drive(agent, obstacles, seconds=14.0, dt=0.05, wheelbase=2.7, max_steer=70.0):
    """Kinematic bicycle: returns the ego footprints over time and the final state."""
    x, y, yaw, v = 0.0, 0.0, 0.0, 0.0
    boxes = []
    for _ in range(int(seconds / dt)):
        c = agent.run_step(obstacles, x, y, yaw, v, dt)
        acc = 3.5 * c.throttle - 8.0 * c.brake
        v = max(0.0, v + acc * dt)
        delta = math.radians(c.steer * max_steer)
        yaw += math.degrees(v / wheelbase * math.tan(delta) * dt)
        x += v * math.cos(math.radians(yaw)) * dt
        y += v * math.sin(math.radians(yaw)) * dt
        boxes.append(box(x, y, yaw, HALF_LENGTH, HALF_WIDTH))
    return boxes, (x, y, yaw, v)


def layout_obstacles(scenario, split, seed, route):
    classes = default_catalogue().unknown_classes(split, scenario)
    layout = plan_layout(scenario, classes, 3.5, np.random.default_rng(seed), (25.0, 35.0))
    obs = []
    for k, p in enumerate(layout.objects):
        x, y, _, yaw = world_pose(route, p.s, p.t, p.yaw)
        obs.append(Obstacle(k + 1, "static", box(x, y, yaw, BOX, BOX), (0.0, 0.0)))
    return layout, obs


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_passes_every_layout_without_contact(scenario):
    route = straight_route()
    for seed in range(4):
        layout, obs = layout_obstacles(scenario, "train" if seed % 2 else "test", seed, route)
        agent = AvoidingAgent(route, HALF_LENGTH, HALF_WIDTH, target_speed=7.0)
        boxes, (x, y, _, _) = drive(agent, obs)
        for ego in boxes:
            assert all(separated(ego, o.corners_xy) for o in obs), f"{scenario} seed {seed}: contact"
        assert x > layout.extent[1] + 5.0, f"{scenario} seed {seed}: did not get past the objects (x={x:.1f})"
        assert abs(y) < 0.6, "back in its lane after passing"


def test_brakes_before_a_blocked_road():
    route = straight_route(left=False)
    # a wall of boxes over the ego lane and both sides
    obs = [Obstacle(k, "static", box(30.0, t, 0.0, 0.4, 0.4), (0.0, 0.0)) for k, t in enumerate(np.arange(-4.0, 4.1, 0.8))]
    agent = AvoidingAgent(route, HALF_LENGTH, HALF_WIDTH, target_speed=8.0)
    boxes, (x, _, _, v) = drive(agent, obs, seconds=12.0)
    # stopped short of the wall, with room left to steer round it
    assert v < 0.05 and 30.0 - 0.4 - 14.0 < x + HALF_LENGTH < 30.0 - 0.4 - 8.0
    assert all(separated(b, o.corners_xy) for b in boxes for o in obs)


def test_follows_a_slower_vehicle_when_the_next_lane_is_taken():
    route = straight_route(length=300.0)
    agent = AvoidingAgent(route, HALF_LENGTH, HALF_WIDTH, target_speed=8.0, speed_limit=8.0)
    x, yaw, v = 0.0, 0.0, 0.0
    lead_x, lead_v = 20.0, 4.0
    for _ in range(300):
        lead = Obstacle(1, "vehicle", box(lead_x, 0.0, 0.0, 2.3, 1.0), (lead_v, 0.0))
        # a second car beside the lead in the left lane keeps the lane change closed
        side = Obstacle(2, "vehicle", box(lead_x - 6.0, -3.5, 0.0, 2.3, 1.0), (lead_v, 0.0))
        c = agent.run_step([lead, side], x, 0.0, yaw, v, 0.05)
        v = max(0.0, v + (3.5 * c.throttle - 8.0 * c.brake) * 0.05)
        x += v * 0.05
        lead_x += lead_v * 0.05
        assert lead_x - 2.3 - (x + HALF_LENGTH) > 0.5
    assert v == pytest.approx(lead_v, abs=1.0)
    assert agent.offset == 0.0


def test_speed_limit_and_controller_maths():
    assert stopping_speed(10.0, 2.5) == pytest.approx(math.sqrt(50.0))
    assert stopping_speed(-1.0) == 0.0
    # target straight ahead: no steering; target to the right (CARLA +y): positive steer
    assert pure_pursuit_steer((0, 0), 0.0, (10, 0), 2.7, 70) == 0.0
    assert pure_pursuit_steer((0, 0), 0.0, (10, 2), 2.7, 70) > 0.0
    # known value: alpha = 45 deg, distance sqrt(2): delta = atan(2 L sin(alpha) / d) = atan(L)
    assert pure_pursuit_steer((0, 0), 0.0, (1, 1), 1.0, 90) == pytest.approx(math.atan(1.0) / (math.pi / 2))
    route = straight_route()
    agent = AvoidingAgent(route, HALF_LENGTH, HALF_WIDTH, target_speed=20.0, speed_limit=5.0)
    _, (_, _, _, v) = drive(agent, [], seconds=8.0)
    assert 4.0 < v <= 5.3


def test_overtakes_in_the_oncoming_lane_only_when_it_is_clear():
    route = straight_route(left=False)
    route.left_oncoming_lane = np.ones(len(route.s), bool)
    _, obs = layout_obstacles("construction", "train", 2, route)
    agent = AvoidingAgent(route, HALF_LENGTH, HALF_WIDTH, target_speed=7.0)
    x, y, yaw, v = 0.0, 0.0, 0.0, 7.0
    car_x, car_v = 90.0, -7.0  # oncoming car in the left lane, driving towards the ego
    waited = False
    for _ in range(700):
        car = Obstacle(99, "vehicle", box(car_x, -3.5, 180.0, 2.3, 1.0), (car_v, 0.0))
        c = agent.run_step(obs + [car], x, y, yaw, v, 0.05)
        v = max(0.0, v + (3.5 * c.throttle - 8.0 * c.brake) * 0.05)
        yaw += math.degrees(v / 2.7 * math.tan(math.radians(c.steer * 70.0)) * 0.05)
        x += v * math.cos(math.radians(yaw)) * 0.05
        y += v * math.sin(math.radians(yaw)) * 0.05
        car_x += car_v * 0.05
        ego = box(x, y, yaw, HALF_LENGTH, HALF_WIDTH)
        assert separated(ego, car.corners_xy) and all(separated(ego, o.corners_xy) for o in obs)
        waited |= v < 1.0 and car_x > x
    assert waited, "the ego must wait for the oncoming car"
    assert x > 60.0 and abs(y) < 0.6, "then pass the works and return to its lane"
