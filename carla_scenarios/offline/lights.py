"""Traffic lights of the offline world: a few signalised junctions per town, for the agent's red-light
rule to be tested (real towns have lights at most junctions).

Every third junction with three or more roads is signalised. Its lights run one fixed cycle: the two
road axes take turns, green 8 s, yellow 2 s, then red while the other axis has its 10 s; each junction
starts its cycle at its own offset. A vehicle is affected by a light when it stands in the light's
trigger volume: in an incoming lane, within `TRIGGER_M` metres before the junction, heading into it,
as a server's vehicle is inside a traffic light's trigger box.
"""

from __future__ import annotations

import math

import carla
import numpy as np

from .map import ROAD_HALF, Town

GREEN_S, YELLOW_S = 8.0, 2.0
CYCLE_S = 2 * (GREEN_S + YELLOW_S)
TRIGGER_M = 6.0  # trigger volume length before the junction's edge


class TrafficLights:
    """The signalised junctions of a town and their light states over time."""

    def __init__(self, town: Town) -> None:
        degree = np.bincount(np.array([(e.a, e.b) for e in town.edges], dtype=int).ravel(), minlength=len(town.nodes))
        busy = [n for n in range(len(town.nodes)) if degree[n] >= 3]
        self.junctions = {n: town.nodes[n] for n in busy[::3]}
        self.offsets = {n: (7.3 * k) % CYCLE_S for k, n in enumerate(self.junctions)}
        self.half = town.junction_half
        self.frozen_at: float | None = None

    def state(self, junction: int, axis: int, elapsed: float) -> carla.TrafficLightState:
        """The light facing traffic on road axis 0 (x) or 1 (y) of a signalised junction at time `elapsed`."""
        t = ((self.frozen_at if self.frozen_at is not None else elapsed) + self.offsets[junction]) % CYCLE_S
        t = (t - axis * (GREEN_S + YELLOW_S)) % CYCLE_S
        if t < GREEN_S:
            return carla.TrafficLightState.Green
        if t < GREEN_S + YELLOW_S:
            return carla.TrafficLightState.Yellow
        return carla.TrafficLightState.Red

    def affecting(self, x: float, y: float, yaw_deg: float) -> tuple[int, int] | None:
        """(junction, axis) whose trigger volume holds a vehicle at (x, y) heading yaw_deg, else None."""
        fx, fy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        for n, (cx, cy) in self.junctions.items():
            dx, dy = cx - x, cy - y
            along = dx * fx + dy * fy  # metres to the junction's centre along the heading
            across = -dx * fy + dy * fx  # along the vehicle's right: the centre lies left of an incoming lane
            if self.half - 1.0 <= along <= self.half + TRIGGER_M and -ROAD_HALF - 0.5 <= across <= 0.0 \
                    and max(abs(fx), abs(fy)) > 0.9:
                return n, 0 if abs(fx) > abs(fy) else 1
        return None
