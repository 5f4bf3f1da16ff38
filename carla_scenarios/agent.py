"""The ego's obstacle-avoiding driving agent: pure-pursuit steering and a speed controller along a lane
route, a corridor check against the bounding boxes of the world's actors (ground truth, not
perception), lane change or swerve when the next lane is free, braking otherwise.

CARLA's own `agents` package is not in the wheel and its autopilot ignores props, hence this agent.
Planning happens in the route frame of `carla_scenarios.route` (s ahead, t right of the start lane);
a lane change is a lateral offset of one lane width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np

from carla_scenarios.route import Route

# Horizon (s) over which moving actors' footprints are swept along their velocity.
PREDICTION_S = 2.0
ONCOMING_EXTRA_M = 35.0  # clear road beyond the lookahead needed before overtaking in the oncoming lane
STANDOFF_M = 3.0  # distance kept to a vehicle or walker ahead when stopped
STANDOFF_STATIC_M = 12.0  # and to a static obstacle: room to pull out round it
PASS_LENGTH_M = 25.0  # a scenario's length plus the way back into the lane, for the overtaking horizon
COMFORT_DECEL = 2.5  # m/s^2 used to derive the speed that still allows stopping before an obstacle


@dataclass
class Obstacle:
    actor_id: int
    kind: str  # "static", "vehicle" or "walker"
    corners_xy: np.ndarray  # (K, 2) footprint corners, CARLA world
    velocity_xy: tuple[float, float]


def actor_kind(type_id: str) -> str | None:
    """Obstacle kind of an actor type id, None for actors that are not physical obstacles."""
    if type_id.startswith("vehicle."):
        return "vehicle"
    if type_id.startswith("walker."):
        return "walker"
    if type_id.startswith("static."):
        return "static"
    return None


def obstacle_of(actor) -> Obstacle | None:
    """Footprint of a CARLA actor from its bounding box and transform (None for sensors etc.)."""
    kind = actor_kind(actor.type_id)
    if kind is None:
        return None
    verts = actor.bounding_box.get_world_vertices(actor.get_transform())
    corners = np.array([[v.x, v.y] for v in verts])
    vel = actor.get_velocity() if kind != "static" else None
    return Obstacle(actor.id, kind, corners, (vel.x, vel.y) if vel is not None else (0.0, 0.0))


def obstacles_from_actors(actors, ego_id: int, footprints: dict[int, np.ndarray] | None = None) -> list[Obstacle]:
    """The obstacles among `actors` (the ego left out); `footprints` gives the corners of actors whose
    box cannot be trusted (the scenario's props: see `carla_scenarios.footprints`)."""
    out = []
    footprints = footprints or {}
    for actor in actors:
        if actor.id == ego_id:
            continue
        if actor.id in footprints:
            out.append(Obstacle(actor.id, "static", footprints[actor.id], (0.0, 0.0)))
            continue
        ob = obstacle_of(actor)
        if ob is not None:
            out.append(ob)
    return out


def must_stop_at_light(vehicle) -> bool:
    """Whether a red or yellow traffic light affects the vehicle (it is in the light's trigger volume);
    both calls read the last tick on the client, they ask the server nothing."""
    return bool(vehicle.is_at_traffic_light()) and vehicle.get_traffic_light_state() in (
        carla.TrafficLightState.Red, carla.TrafficLightState.Yellow)


def pure_pursuit_steer(
    pose_xy: tuple[float, float], yaw_deg: float, target_xy: tuple[float, float], wheelbase: float, max_steer_deg: float
) -> float:
    """CARLA steer command in [-1, 1] (positive = right) that turns the rear axle at `pose_xy` onto
    `target_xy` along a circular arc (pure pursuit)."""
    dx, dy = target_xy[0] - pose_xy[0], target_xy[1] - pose_xy[1]
    r = math.radians(yaw_deg)
    fwd = dx * math.cos(r) + dy * math.sin(r)
    right = -dx * math.sin(r) + dy * math.cos(r)
    dist = math.hypot(fwd, right)
    if dist < 1e-6:
        return 0.0
    alpha = math.atan2(right, fwd)
    delta = math.atan2(2.0 * wheelbase * math.sin(alpha), dist)
    return float(np.clip(delta / math.radians(max_steer_deg), -1.0, 1.0))


def stopping_speed(gap: float, decel: float = COMFORT_DECEL) -> float:
    """Highest speed (m/s) from which the ego still stops within `gap` metres."""
    return math.sqrt(2.0 * decel * max(gap, 0.0))


@dataclass
class Control:
    throttle: float
    steer: float
    brake: float


class AvoidingAgent:
    """Drives one vehicle along a `Route`; `run_step(obstacles, pose, speed)` returns a `Control`."""

    def __init__(
        self,
        route: Route,
        half_length: float,
        half_width: float,
        target_speed: float = 7.0,
        speed_limit: float = 8.33,
        wheelbase: float = 2.7,
        max_steer_deg: float = 70.0,
        margin: float = 0.5,
    ):
        if route.length < 10.0:
            raise ValueError(f"route too short for the agent: {route.length:.1f} m")
        self.route = route
        self.half_length = half_length
        self.half_width = half_width
        self.target_speed = min(target_speed, speed_limit)
        self.speed_limit = speed_limit
        self.wheelbase = wheelbase
        self.max_steer_deg = max_steer_deg
        self.margin = margin
        self.offset = 0.0  # current target lateral offset (route frame)
        self._integral = 0.0
        self.last_gap = math.inf
        self.blocker: str | None = None  # kind of the obstacle that limits the chosen corridor
        self.gaps: dict[float, float] = {}
        self.gap_here = math.inf
        self.progress = 0.0  # the ego's arc length along the route at the last step
        self._blocker: dict[float, str | None] = {}

    # -- planning ---------------------------------------------------------------------------------

    def _footprints(self, obstacles: list[Obstacle], ego_s: float, ego_xy: tuple[float, float], reach: float,
                    horizon: float = PREDICTION_S):
        """Per obstacle within `reach` metres: s_min, s_max, t_min, t_max, kind, in the route frame
        (moving ones swept along their velocity over `horizon` seconds)."""
        pts, owners = [], []
        for k, ob in enumerate(obstacles):
            c = ob.corners_xy
            if math.hypot(c[0, 0] - ego_xy[0], c[0, 1] - ego_xy[1]) > reach:
                continue
            vx, vy = ob.velocity_xy
            if ob.kind != "static" and vx * vx + vy * vy > 0.04:
                c = np.vstack([c, c + np.array([vx, vy]) * horizon])
            pts.append(c)
            owners.append(np.full(len(c), k))
        if not pts:
            return []
        owner = np.concatenate(owners)
        s, t = self.route.frenet(np.vstack(pts), (ego_s - reach, ego_s + reach))
        rows = []
        for k in np.unique(owner):
            m = owner == k
            rows.append((s[m].min(), s[m].max(), t[m].min(), t[m].max(), obstacles[int(k)].kind))
        return rows

    @staticmethod
    def pursuit_distance(speed: float) -> float:
        """Pure-pursuit look-ahead distance (m) at a speed (m/s)."""
        return max(4.0, speed + 3.0)

    def _free_distance(self, rows, ego_s: float, ego_t: float, offset: float, lookahead: float, speed: float) -> float:
        """Distance from the ego's front to the first obstacle on the way to lateral offset `offset`;
        inf if clear within the lookahead. The ego's centre is taken to move linearly from its lateral
        position to the offset over a transition length (pure pursuit converges within about 1.5 of
        its look-ahead distances, or twice as fast); an obstacle blocks if it overlaps the band that the
        ego sweeps while its box passes the obstacle's extent along the route."""
        hw = self.half_width + self.margin
        hl = self.half_length
        front = ego_s + hl
        transition = 1.5 * self.pursuit_distance(speed) + 2.0

        def t_at(ahead: float, length: float) -> float:
            return ego_t + (offset - ego_t) * min(1.0, max(ahead, 0.0) / length)

        best, self._blocker[offset] = math.inf, None
        for s_min, s_max, t_min, t_max, kind in rows:
            if s_max < ego_s - hl - (8.0 if kind == "vehicle" else 1.0):
                continue  # behind us (a vehicle behind still matters while we move over)
            if s_min > front + lookahead:
                continue
            if s_max < ego_s - hl and abs(offset - ego_t) < 0.5:
                continue  # traffic behind in our own lane is its business; it matters only when moving over
            # a slow and a quick move over (pure pursuit converges fastest at first): the band covers both
            ts = [t_at(d, length) for d in (s_min - ego_s - hl, s_max - ego_s + hl) for length in (transition, 0.5 * transition)]
            if t_max > min(ts) - hw and t_min < max(ts) + hw:
                if max(s_min - front, 0.0) < best:
                    best, self._blocker[offset] = max(s_min - front, 0.0), kind
        return best

    def _lane_offsets(self, ego_s: float) -> dict[float, float]:
        """Candidate lateral offsets, in order of preference (lane centre first), each with the extra
        clear distance it needs: overtaking in the oncoming lane needs room for the whole manoeuvre."""
        i = self.route.index_at(ego_s)
        w = float(self.route.lane_width[i])
        opts = {0.0: 0.0}
        if self.route.left_free_lane[i]:
            opts[-w] = 0.0
        if self.route.right_free_lane[i]:
            opts[w] = 0.0
        opts[-0.45 * w] = 0.0
        opts[0.45 * w] = 0.0
        if not self.route.left_free_lane[i] and len(self.route.left_oncoming_lane) and self.route.left_oncoming_lane[i]:
            opts[-w] = ONCOMING_EXTRA_M
        return opts

    def plan(self, obstacles: list[Obstacle], ego_s: float, ego_t: float, speed: float,
             ego_xy: tuple[float, float]) -> tuple[float, float]:
        """Choose the lateral offset and the free distance ahead in its corridor."""
        lookahead = max(15.0, speed * speed / (2 * COMFORT_DECEL) + 2.0 * speed + 6.0)
        reach = lookahead + ONCOMING_EXTRA_M + self.half_length + 2 * PREDICTION_S * 15.0  # anything that can reach us
        rows = self._footprints(obstacles, ego_s, ego_xy, reach)
        self._blocker = {}
        options = self._lane_offsets(ego_s)
        options.setdefault(self.offset, 0.0)
        gaps = {o: self._free_distance(rows, ego_s, ego_t, o, lookahead, speed) for o, extra in options.items() if not extra}
        oncoming = [o for o, extra in options.items() if extra]
        if oncoming:
            # the oncoming lane must stay clear for the whole pass: sweep traffic over the time it takes
            ahead = gaps[0.0] if math.isfinite(gaps[0.0]) else lookahead
            horizon = min(12.0, (ahead + PASS_LENGTH_M) / max(speed, 4.0) + PREDICTION_S)
            long_rows = self._footprints(obstacles, ego_s, ego_xy, reach + horizon * 15.0, horizon)
            for o in oncoming:
                gaps[o] = self._free_distance(long_rows, ego_s, ego_t, o, lookahead + options[o], speed)
        if math.isinf(gaps[0.0]):
            choice = 0.0
        elif math.isinf(gaps[self.offset]):
            choice = self.offset
        else:
            free = [o for o in gaps if math.isinf(gaps[o])]
            choice = free[0] if free else max(gaps, key=lambda o: (gaps[o], o == self.offset))
        self.offset = choice
        self.gaps = gaps
        # what lies ahead if the ego kept its current lateral position (limits the speed of a move over)
        self.gap_here = self._free_distance(rows, ego_s, ego_t, ego_t, lookahead, speed)
        self.blocker = self._blocker.get(choice)
        return choice, gaps[choice]

    # -- control ----------------------------------------------------------------------------------

    def run_step(self, obstacles: list[Obstacle], x: float, y: float, yaw_deg: float, speed: float, dt: float,
                 red_light: bool = False) -> Control:
        """One control step from the ego's pose (CARLA world, centre of its box) and speed (m/s);
        `red_light`: a red or yellow traffic light holds the ego (`must_stop_at_light`), so it brakes."""
        (s,), (t,) = self.route.frenet(np.array([[x, y]]))
        self.progress = float(s)
        offset, gap = self.plan(obstacles, float(s), float(t), speed, (x, y))
        self.last_gap = gap
        r = math.radians(yaw_deg)
        rear = (x - 0.5 * self.wheelbase * math.cos(r), y - 0.5 * self.wheelbase * math.sin(r))
        ld = self.pursuit_distance(speed)
        tx, ty, _, _ = self.route.pose_at(float(s) + ld, offset)
        steer = pure_pursuit_steer(rear, yaw_deg, (tx, ty), self.wheelbase, self.max_steer_deg)
        if red_light:
            self._integral = 0.0
            return Control(0.0, steer, 1.0)

        remaining = self.route.length - float(s) - self.half_length
        # stop well short of a static obstacle, so that there is room to steer round it later
        standoff = STANDOFF_STATIC_M if self.blocker == "static" else STANDOFF_M
        target = min(self.target_speed, self.speed_limit, stopping_speed(min(gap - standoff, remaining - STANDOFF_M)))
        if abs(offset - t) > 0.5:
            target = min(target, 0.8 * self.target_speed)  # take lane changes a little slower
            ahead = self.gap_here
            if math.isfinite(ahead):
                # pulling out close to an obstacle: slow enough that the move completes before it
                target = min(target, max(1.0, (ahead - 2.0) / 1.5 - 3.0))
        err = target - speed
        if target < 0.05 or err < -1.5 or min(gap, remaining) < 3.0:
            self._integral = 0.0
            brake = 1.0 if (target < 0.05 or min(gap, remaining) < 3.0) else float(np.clip(-0.3 * err, 0.0, 1.0))
            return Control(0.0, steer, brake)
        self._integral = float(np.clip(self._integral + err * dt, -5.0, 5.0))
        throttle = float(np.clip(0.35 * err + 0.05 * self._integral + 0.2, 0.0, 0.8))
        if err < -0.3:
            return Control(0.0, steer, float(np.clip(-0.2 * err, 0.0, 0.5)))
        return Control(throttle, steer, 0.0)
