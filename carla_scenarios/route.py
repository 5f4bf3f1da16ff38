"""Lane routes: a polyline of lane-centre poses ahead of a waypoint, and the route (Frenet) frame that
the scenarios place objects in and the agent plans in.

Coordinates are CARLA's world frame (x forward, y right, z up, yaw in degrees clockwise from above).
The lateral coordinate `t` is positive to the right of the route, along CARLA's right vector
(-sin yaw, cos yaw), which is the road shoulder side in right-hand traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Route:
    """Lane-centre samples: xyz (N, 3), yaw in degrees (N,), arc length s (N,), lane width (N,), whether
    a same-direction driving lane exists to the left / right of each sample, whether the samples lie in
    a junction, and whether the lane to the left carries oncoming traffic."""

    xyz: np.ndarray
    yaw: np.ndarray
    s: np.ndarray
    lane_width: np.ndarray
    left_free_lane: np.ndarray
    right_free_lane: np.ndarray
    junction: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    left_oncoming_lane: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def index_at(self, s: float) -> int:
        return int(np.clip(np.searchsorted(self.s, s), 0, len(self.s) - 1))

    def pose_at(self, s: float, t: float = 0.0) -> tuple[float, float, float, float]:
        """(x, y, z, yaw_deg) at arc length s (linear interpolation) and lateral offset t."""
        s = float(np.clip(s, self.s[0], self.s[-1]))
        x = float(np.interp(s, self.s, self.xyz[:, 0]))
        y = float(np.interp(s, self.s, self.xyz[:, 1]))
        z = float(np.interp(s, self.s, self.xyz[:, 2]))
        yaw = float(np.degrees(np.interp(s, self.s, np.unwrap(np.radians(self.yaw)))))
        r = math.radians(yaw)
        return x - t * math.sin(r), y + t * math.cos(r), z, yaw

    def frenet(self, points_xy: np.ndarray, s_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (M, 2) on the route: arc length s and signed lateral offset t (right +).
        Points beyond the ends (of the route, or of `s_range` when given) are extrapolated along the
        end segments."""
        p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        lo, hi = 0, len(self.s)
        if s_range is not None:
            lo = max(0, int(np.searchsorted(self.s, s_range[0])) - 1)
            hi = min(len(self.s), int(np.searchsorted(self.s, s_range[1])) + 1)
            hi = max(hi, lo + 2)
        xy = self.xyz[lo:hi, :2]
        s0 = self.s[lo:hi]
        a = xy[:-1]
        d = xy[1:] - a
        seg_len = np.maximum(np.linalg.norm(d, axis=1), 1e-9)
        u = d / seg_len[:, None]
        rel = p[:, None, :] - a[None, :, :]  # M x S x 2
        along = np.einsum("msk,sk->ms", rel, u)
        clamped = along.copy()
        clamped[:, 1:] = np.maximum(clamped[:, 1:], 0.0)  # extrapolate before the first segment
        clamped[:, :-1] = np.minimum(clamped[:, :-1], seg_len[None, :-1])  # and past the last one
        foot = a[None] + clamped[..., None] * u[None]
        dist = np.linalg.norm(p[:, None, :] - foot, axis=2)
        best = np.argmin(dist, axis=1)
        idx = np.arange(len(p))
        s = s0[best] + clamped[idx, best]
        ub = u[best]
        rb = rel[idx, best]
        t = ub[:, 0] * rb[:, 1] - ub[:, 1] * rb[:, 0]  # cross(u, rel): right positive in CARLA axes
        return s, t


def _driving_lane(wp, side: str, same_direction: bool = True):
    """The driving lane beside `wp` on `side`, in the same (or the opposite) direction, else None."""
    other = wp.get_left_lane() if side == "left" else wp.get_right_lane()
    if other is None or "Driving" not in str(other.lane_type):
        return None
    if (other.lane_id * wp.lane_id > 0) != same_direction:
        return None
    return other


def lane_route(waypoint, length: float, step: float = 1.0) -> Route:
    """Route along the lane of `waypoint` for `length` metres; at forks take the straightest branch."""
    if length <= step:
        raise ValueError(f"route length must exceed the step {step}, got {length}")
    wps = [waypoint]
    total = 0.0
    while total < length:
        nxt = wps[-1].next(step)
        if not nxt:
            break
        yaw0 = wps[-1].transform.rotation.yaw
        wps.append(min(nxt, key=lambda w: abs((w.transform.rotation.yaw - yaw0 + 180.0) % 360.0 - 180.0)))
        total += step
    if len(wps) < 2:
        raise ValueError(f"no lane continues from waypoint at {waypoint.transform.location}")
    return route_from_waypoints(wps)


def route_from_waypoints(wps: list) -> Route:
    """Route through a list of waypoints (anything with transform, lane_width, get_left/right_lane)."""
    xyz = np.array([[w.transform.location.x, w.transform.location.y, w.transform.location.z] for w in wps])
    steps = np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1)
    keep = np.concatenate([[True], steps > 1e-6])  # drop repeated samples
    wps = [w for w, k in zip(wps, keep, strict=True) if k]
    xyz = xyz[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1))])
    return Route(
        xyz=xyz,
        yaw=np.array([w.transform.rotation.yaw for w in wps]),
        s=s,
        lane_width=np.array([w.lane_width for w in wps]),
        left_free_lane=np.array([_driving_lane(w, "left") is not None for w in wps]),
        right_free_lane=np.array([_driving_lane(w, "right") is not None for w in wps]),
        junction=np.array([bool(w.is_junction) for w in wps]),
        left_oncoming_lane=np.array([_driving_lane(w, "left", same_direction=False) is not None for w in wps]),
    )
