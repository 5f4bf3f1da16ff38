"""Procedural towns of the offline world: a deterministic grid of straight roads and junctions per town
name, written as OpenDRIVE so that CARLA's own `carla.Map` (built client-side from the text) answers
waypoint queries, plus the static scenery (road, lines, sidewalks, buildings, vegetation, poles, signs,
terrain) as coloured boxes, and the sidewalk network that walkers navigate.

Every road has two driving lanes each way (3.5 m) and a sidewalk lane on each side. A junction is a
square of half size `J` (road half width plus sidewalk) with connecting roads for straight on (both
lanes), right turns (outer lane) and left turns (inner lane), so `Waypoint.next()` continues through it.
Layout coordinates are CARLA's (x forward, y right); the OpenDRIVE text is written with y negated.
"""

from __future__ import annotations

import heapq
import math
import zlib
from dataclasses import dataclass, field

import carla
import numpy as np

from vca_data.labels import TAG, normalize_town

from .shapes import Box

LANE_WIDTH = 3.5
LANES_PER_SIDE = 2
ROAD_HALF = LANE_WIDTH * LANES_PER_SIDE
SIDEWALK_TOP = 0.15
SPEED_LIMIT_KMH = 30.0


@dataclass(frozen=True)
class TownStyle:
    """Layout and look of one town."""

    nx: int
    ny: int
    spacing: tuple[float, float]
    sidewalk: float
    drop_edges: int
    road: tuple
    sidewalk_rgb: tuple
    line: tuple
    terrain: tuple
    buildings: tuple  # palette of wall colours
    building_height: tuple[float, float]
    building_fill: float  # share of lots that hold a building
    tree: tuple
    tree_every: float  # metres between street trees
    fences: bool = False


TOWN_STYLES: dict[str, TownStyle] = {
    "Town01": TownStyle(4, 3, (90, 80), 3.0, 0, (0.32, 0.32, 0.34), (0.62, 0.6, 0.56), (0.9, 0.9, 0.88),
                        (0.36, 0.5, 0.24), ((0.62, 0.3, 0.22), (0.7, 0.55, 0.4), (0.55, 0.25, 0.2), (0.8, 0.75, 0.65)),
                        (6, 14), 0.8, (0.2, 0.45, 0.15), 18),
    "Town02": TownStyle(3, 3, (70, 70), 2.5, 1, (0.38, 0.36, 0.34), (0.7, 0.66, 0.58), (0.95, 0.92, 0.75),
                        (0.45, 0.52, 0.28), ((0.85, 0.78, 0.55), (0.9, 0.85, 0.7), (0.75, 0.6, 0.45), (0.6, 0.7, 0.75)),
                        (5, 10), 0.9, (0.3, 0.5, 0.18), 14),
    "Town03": TownStyle(4, 4, (80, 80), 3.5, 0, (0.28, 0.29, 0.31), (0.55, 0.55, 0.58), (0.92, 0.92, 0.92),
                        (0.4, 0.45, 0.3), ((0.45, 0.5, 0.58), (0.6, 0.62, 0.66), (0.35, 0.38, 0.45), (0.7, 0.68, 0.6)),
                        (12, 32), 0.85, (0.18, 0.4, 0.2), 24),
    "Town05": TownStyle(5, 3, (75, 85), 3.0, 1, (0.3, 0.3, 0.3), (0.58, 0.56, 0.6), (0.95, 0.95, 0.95),
                        (0.38, 0.47, 0.3), ((0.3, 0.45, 0.55), (0.55, 0.58, 0.6), (0.25, 0.3, 0.38), (0.75, 0.72, 0.7)),
                        (18, 45), 0.9, (0.22, 0.42, 0.2), 22),
    "Town07": TownStyle(3, 3, (110, 95), 2.0, 1, (0.25, 0.24, 0.23), (0.5, 0.47, 0.42), (0.95, 0.85, 0.4),
                        (0.55, 0.5, 0.28), ((0.55, 0.2, 0.15), (0.5, 0.38, 0.25), (0.85, 0.82, 0.75)),
                        (4, 8), 0.35, (0.25, 0.38, 0.12), 9, fences=True),
    "Town10HD": TownStyle(4, 3, (70, 75), 4.0, 0, (0.2, 0.2, 0.22), (0.68, 0.62, 0.6), (0.98, 0.98, 0.98),
                          (0.3, 0.42, 0.3), ((0.82, 0.45, 0.3), (0.35, 0.55, 0.65), (0.9, 0.88, 0.82), (0.55, 0.35, 0.5),
                                             (0.4, 0.4, 0.42)),
                          (15, 40), 0.95, (0.15, 0.38, 0.22), 16),
}

TOWN_NAMES: tuple[str, ...] = tuple(TOWN_STYLES)


def map_path(town: str) -> str:
    """CARLA's asset path of a town, as get_available_maps lists it."""
    return f"/Game/Carla/Maps/{town}"


def town_of_map_name(map_name: str) -> str:
    """The town of 'Town01', '/Game/Carla/Maps/Town01', 'Carla/Maps/Town01' or 'Town10HD_Opt';
    ValueError for others."""
    base = str(map_name).rstrip("/").split("/")[-1]
    base = base[:-4] if base.endswith("_Opt") else base  # the layered version of a town is the town
    town = normalize_town(base)
    if town not in TOWN_STYLES:
        raise ValueError(f"map {map_name!r} is not one of the offline towns {list(TOWN_STYLES)}")
    return town


def _right(d: tuple[float, float]) -> tuple[float, float]:
    """Right-hand side of a direction in CARLA's frame (y right)."""
    return (-d[1], d[0])


@dataclass
class Edge:
    id: int
    a: int
    b: int


@dataclass
class Strip:
    """A sidewalk strip along one side of a road: centre line from p0 to p1, half width."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    half_width: float


@dataclass
class Town:
    """Everything generated for one town."""

    name: str
    style: TownStyle
    nodes: list[tuple[float, float]]
    edges: list[Edge]
    junction_half: float
    xodr: str
    boxes: list[Box]
    strips: list[Strip]
    walk_nodes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    walk_adjacency: list[list[tuple[int, float]]] = field(default_factory=list)
    _strip_arrays: tuple | None = field(default=None, repr=False)

    def on_sidewalk(self, xy: np.ndarray) -> np.ndarray:
        """Whether each point (N, 2) lies on a sidewalk strip."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        if not self.strips:
            return np.zeros(len(xy), dtype=bool)
        if self._strip_arrays is None:
            p0 = np.array([s.p0 for s in self.strips], dtype=float)
            d = np.array([s.p1 for s in self.strips], dtype=float) - p0
            length = np.hypot(d[:, 0], d[:, 1])
            self._strip_arrays = (p0, d / length[:, None], length, np.array([s.half_width for s in self.strips]))
        p0, u, length, half = self._strip_arrays
        rel = xy[:, None, :] - p0[None]  # (N, S, 2)
        along = rel[..., 0] * u[:, 0] + rel[..., 1] * u[:, 1]
        across = rel[..., 1] * u[:, 0] - rel[..., 0] * u[:, 1]
        return ((along >= 0) & (along <= length) & (np.abs(across) <= half)).any(axis=1)

    def walk_route(self, start: np.ndarray, goal: np.ndarray) -> list[np.ndarray]:
        """Points from start to goal along sidewalks and crossings (Dijkstra on the sidewalk graph)."""
        nodes = self.walk_nodes
        s = int(np.argmin(np.hypot(*(nodes - start[:2]).T)))
        g = int(np.argmin(np.hypot(*(nodes - goal[:2]).T)))
        dist = {s: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, s)]
        while heap:
            d, n = heapq.heappop(heap)
            if n == g:
                break
            if d > dist.get(n, math.inf):
                continue
            for m, w in self.walk_adjacency[n]:
                nd = d + w
                if nd < dist.get(m, math.inf):
                    dist[m] = nd
                    prev[m] = n
                    heapq.heappush(heap, (nd, m))
        path = [g]
        while path[-1] != s and path[-1] in prev:
            path.append(prev[path[-1]])
        return [nodes[i] for i in reversed(path)] + [np.asarray(goal[:2], dtype=float)]


def _layout(name: str, style: TownStyle, rng: np.random.Generator) -> tuple[list, list[Edge]]:
    """Grid nodes and road edges; a few edges are dropped per town where every node keeps two roads
    and the network stays connected."""
    sx, sy = style.spacing
    nodes = [(i * sx, j * sy) for j in range(style.ny) for i in range(style.nx)]
    pairs = []
    for j in range(style.ny):
        for i in range(style.nx):
            k = j * style.nx + i
            if i + 1 < style.nx:
                pairs.append((k, k + 1))
            if j + 1 < style.ny:
                pairs.append((k, k + style.nx))
    dropped = 0
    for idx in rng.permutation(len(pairs)):
        if dropped >= style.drop_edges:
            break
        trial = [p for i, p in enumerate(pairs) if i != idx]
        degree = np.bincount(np.array(trial).ravel(), minlength=len(nodes))
        if degree.min() >= 2 and _connected(len(nodes), trial):
            pairs = trial
            dropped += 1
    edges = [Edge(i + 1, a, b) for i, (a, b) in enumerate(pairs)]
    return nodes, edges


def _connected(n: int, pairs: list[tuple[int, int]]) -> bool:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        adj[a].append(b)
        adj[b].append(a)
    seen = {0}
    stack = [0]
    while stack:
        for m in adj[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen) == n


# ---------------------------------------------------------------------------------------------
# OpenDRIVE
# ---------------------------------------------------------------------------------------------

def _odr_pose(p: tuple[float, float], d: tuple[float, float]) -> tuple[float, float, float]:
    """OpenDRIVE (x, y, hdg) of a CARLA point and direction (y and heading negated)."""
    return p[0], -p[1], math.atan2(-d[1], d[0])


def _lane_xml(lane_id: int, kind: str, width: float, mark: str, pred: int | None = None, succ: int | None = None) -> str:
    link = ""
    if pred is not None:
        link += f'<predecessor id="{pred}"/>'
    if succ is not None:
        link += f'<successor id="{succ}"/>'
    colour = "yellow" if mark == "solid solid" else "standard"
    mark_xml = (
        f'<roadMark sOffset="0" type="{mark}" weight="standard" color="{colour}" width="0.15"/>' if mark != "none" else ""
    )
    return (
        f'<lane id="{lane_id}" type="{kind}" level="false"><link>{link}</link>'
        f'<width sOffset="0" a="{width:.4f}" b="0" c="0" d="0"/>{mark_xml}</lane>'
    )


def _road_xml(road_id: int, junction: int, length: float, geometry: str, link: str, lanes: str) -> str:
    return (
        f'<road name="Road {road_id}" length="{length:.6f}" id="{road_id}" junction="{junction}">'
        f"<link>{link}</link><type s=\"0\" type=\"town\"><speed max=\"{SPEED_LIMIT_KMH:g}\" unit=\"km/h\"/></type>"
        f"<planView>{geometry}</planView>"
        '<elevationProfile><elevation s="0" a="0" b="0" c="0" d="0"/></elevationProfile><lateralProfile/>'
        f'<lanes><laneSection s="0">{lanes}</laneSection></lanes></road>'
    )


def _build_xodr(name: str, nodes, edges: list[Edge], J: float, sidewalk: float) -> str:
    roads = []
    node_arms: dict[int, list[tuple[Edge, tuple[float, float]]]] = {i: [] for i in range(len(nodes))}
    for e in edges:
        pa, pb = np.array(nodes[e.a]), np.array(nodes[e.b])
        length = float(np.hypot(*(pb - pa)))
        d = tuple((pb - pa) / length)
        x, y, h = _odr_pose(tuple(pa + np.array(d) * J), d)
        geom = f'<geometry s="0" x="{x:.6f}" y="{y:.6f}" hdg="{h:.9f}" length="{length - 2 * J:.6f}"><line/></geometry>'
        link = (
            f'<predecessor elementType="junction" elementId="{1000 + e.a}"/>'
            f'<successor elementType="junction" elementId="{1000 + e.b}"/>'
        )
        lanes = (
            "<left>" + _lane_xml(3, "sidewalk", sidewalk, "none") + _lane_xml(2, "driving", LANE_WIDTH, "solid")
            + _lane_xml(1, "driving", LANE_WIDTH, "broken") + "</left>"
            + '<center><lane id="0" type="none" level="false"><link/>'
            '<roadMark sOffset="0" type="solid solid" weight="standard" color="yellow" width="0.15"/></lane></center>'
            + "<right>" + _lane_xml(-1, "driving", LANE_WIDTH, "broken") + _lane_xml(-2, "driving", LANE_WIDTH, "solid")
            + _lane_xml(-3, "sidewalk", sidewalk, "none") + "</right>"
        )
        roads.append(_road_xml(e.id, -1, length - 2 * J, geom, link, lanes))
        node_arms[e.a].append((e, d))  # leaving a along d
        node_arms[e.b].append((e, (-d[0], -d[1])))  # leaving b along -d
    junctions = []
    next_id = 10000
    for n, arms in node_arms.items():
        centre = np.array(nodes[n])
        connections = []
        for e_in, d_arm_in in arms:
            d_in = (-d_arm_in[0], -d_arm_in[1])  # driving into the junction
            in_at_end = e_in.b == n
            in_sign = -1 if in_at_end else 1  # lane ids of the incoming direction
            for e_out, d_out in arms:
                if e_out is e_in:
                    continue
                out_at_start = e_out.a == n
                out_sign = -1 if out_at_start else 1
                cross = d_in[0] * d_out[1] - d_in[1] * d_out[0]
                dot = d_in[0] * d_out[0] + d_in[1] * d_out[1]
                if dot > 0.5:
                    kind = "straight"
                elif cross > 0:  # d_out = right(d_in) in CARLA's frame
                    kind = "right"
                else:
                    kind = "left"
                # one connecting road per movement, both lanes, reference line on the road centre:
                # the lanes of a turn are concentric arcs, so no lane ends without a way on
                p0 = centre - np.array(d_in) * J
                p1 = centre + np.array(d_out) * J
                x, y, h = _odr_pose(tuple(p0), d_in)
                if kind == "straight":
                    length = 2 * J
                    geom = f'<geometry s="0" x="{x:.6f}" y="{y:.6f}" hdg="{h:.9f}" length="{length:.6f}"><line/></geometry>'
                else:
                    radius = float(np.hypot(*(p1 - p0))) / math.sqrt(2)
                    length = radius * math.pi / 2
                    # a right turn in CARLA's frame is clockwise in OpenDRIVE's: negative curvature
                    curvature = (-1 if kind == "right" else 1) / radius
                    geom = (
                        f'<geometry s="0" x="{x:.6f}" y="{y:.6f}" hdg="{h:.9f}" length="{length:.6f}">'
                        f'<arc curvature="{curvature:.9f}"/></geometry>'
                    )
                road_id = next_id
                next_id += 1
                link = (
                    f'<predecessor elementType="road" elementId="{e_in.id}" contactPoint="{"end" if in_at_end else "start"}"/>'
                    f'<successor elementType="road" elementId="{e_out.id}" contactPoint="{"start" if out_at_start else "end"}"/>'
                )
                lane_xml = "".join(
                    _lane_xml(-k, "driving", LANE_WIDTH, "none", in_sign * k, out_sign * k) for k in (1, 2)
                )
                lanes = '<center><lane id="0" type="none" level="false"><link/></lane></center><right>' + lane_xml + "</right>"
                roads.append(_road_xml(road_id, 1000 + n, length, geom, link, lanes))
                lane_links = "".join(f'<laneLink from="{in_sign * k}" to="{-k}"/>' for k in (1, 2))
                connections.append(
                    f'<connection id="{len(connections)}" incomingRoad="{e_in.id}" connectingRoad="{road_id}" '
                    f'contactPoint="start">{lane_links}</connection>'
                )
        junctions.append(f'<junction id="{1000 + n}" name="Junction {n}">{"".join(connections)}</junction>')
    header = (
        '<?xml version="1.0" standalone="yes"?><OpenDRIVE>'
        f'<header revMajor="1" revMinor="4" name="{name}" version="1" north="0" south="0" east="0" west="0">'
        "<geoReference><![CDATA[+proj=tmerc +lat_0=0 +lon_0=0 +k=1 +x_0=0 +y_0=0 +datum=WGS84 +units=m "
        "+geoidgrids=egm96_15.gtx +vunits=m +no_defs ]]></geoReference></header>"
    )
    return header + "".join(roads) + "".join(junctions) + "</OpenDRIVE>"


# ---------------------------------------------------------------------------------------------
# Scenery
# ---------------------------------------------------------------------------------------------

def _jitter(rgb: tuple, rng: np.random.Generator, amount: float = 0.04) -> tuple:
    c = np.clip(np.array(rgb[:3]) + rng.uniform(-amount, amount, 3), 0, 1)
    return (float(c[0]), float(c[1]), float(c[2]), 1.0)


def _scenery(style: TownStyle, nodes, edges: list[Edge], J: float, rng: np.random.Generator) -> tuple[list[Box], list[Strip]]:
    boxes: list[Box] = []
    strips: list[Strip] = []
    sw = style.sidewalk
    road_rgba = (*style.road, 1.0)
    line_rgba = (*style.line, 1.0)
    yellow = (0.9, 0.75, 0.15, 1.0)
    xs = [p[0] for p in nodes]
    ys = [p[1] for p in nodes]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    span = max(max(xs) - min(xs), max(ys) - min(ys)) / 2 + 150
    boxes.append(Box((cx, cy, -0.52), (span, span, 0.5), (*style.terrain, 1.0), TAG["Terrain"]))
    for n in nodes:
        boxes.append(Box((n[0], n[1], -0.05), (J, J, 0.05), road_rgba, TAG["Roads"]))
    lot_depth = min(style.spacing) / 2 - ROAD_HALF - sw - 2.0
    for e in edges:
        pa, pb = np.array(nodes[e.a]), np.array(nodes[e.b])
        full = float(np.hypot(*(pb - pa)))
        u = (pb - pa) / full
        yaw = math.degrees(math.atan2(u[1], u[0]))
        r = np.array(_right(tuple(u)))
        mid = (pa + pb) / 2
        length = full - 2 * J

        def at(along: float, across: float, z: float, _pa=pa, _u=u, _r=r) -> tuple[float, float, float]:
            p = _pa + _u * along + _r * across
            return (float(p[0]), float(p[1]), z)

        boxes.append(Box((mid[0], mid[1], -0.05), (length / 2, ROAD_HALF, 0.05), road_rgba, TAG["Roads"], yaw))
        # lane markings: centre line, two edge lines, two broken lane lines
        boxes.append(Box((mid[0], mid[1], 0.006), (length / 2, 0.12, 0.006), yellow, TAG["RoadLine"], yaw))
        for side in (1, -1):
            p = mid + r * side * (ROAD_HALF - 0.25)
            boxes.append(Box((p[0], p[1], 0.006), (length / 2, 0.08, 0.006), line_rgba, TAG["RoadLine"], yaw))
            along = J + 2.0
            while along + 3.0 < full - J - 1.0:
                boxes.append(Box(at(along + 1.5, side * LANE_WIDTH, 0.006), (1.5, 0.07, 0.006), line_rgba, TAG["RoadLine"], yaw))
                along += 12.0
            # sidewalk strip
            off = side * (ROAD_HALF + sw / 2)
            sp = mid + r * off
            boxes.append(Box((sp[0], sp[1], SIDEWALK_TOP / 2), (length / 2, sw / 2, SIDEWALK_TOP / 2),
                             _jitter(style.sidewalk_rgb, rng, 0.02), TAG["SideWalks"], yaw))
            strips.append(Strip(tuple(pa + u * J + r * off), tuple(pb - u * J + r * off), sw / 2))
            _street_furniture(boxes, style, rng, at, yaw, side, full, J)
            _buildings(boxes, style, rng, at, yaw, side, full, lot_depth, sw)
    return boxes, strips


def _street_furniture(boxes, style: TownStyle, rng, at, yaw: float, side: int, full: float, J: float) -> None:
    """Lamp posts and street trees along the outer sidewalk edge, a sign near the junction ahead."""
    sw = style.sidewalk
    edge = side * (ROAD_HALF + 0.45)
    pole_rgba = (0.3, 0.32, 0.33, 1.0)
    along = J + 6.0 + rng.uniform(0, 6)
    lamp = True
    while along < full - J - 4:
        if lamp:
            boxes.append(Box(at(along, edge, 3.0), (0.09, 0.09, 3.0), pole_rgba, TAG["Pole"], yaw))
            boxes.append(Box(at(along, edge - side * 0.9, 5.95), (0.07, 0.9, 0.05), pole_rgba, TAG["Pole"], yaw))
        else:
            tx = side * (ROAD_HALF + sw - 0.6)
            h = rng.uniform(3.5, 6.0)
            boxes.append(Box(at(along, tx, h / 2), (0.15, 0.15, h / 2), (0.35, 0.25, 0.15, 1.0), TAG["Vegetation"], yaw))
            c = rng.uniform(1.2, 2.0)
            boxes.append(Box(at(along, tx, h + c * 0.6), (c, c, c * 0.9), _jitter(style.tree, rng), TAG["Vegetation"],
                             yaw + 45 * rng.integers(0, 2)))
        lamp = not lamp
        along += style.tree_every * rng.uniform(0.8, 1.2)
    # a sign facing traffic that drives towards the junction at this road's end (right-hand side)
    if side == 1 and rng.uniform() < 0.7:
        s_along = full - J - 3.0
        boxes.append(Box(at(s_along, side * (ROAD_HALF + 0.6), 1.3), (0.05, 0.05, 1.3), pole_rgba, TAG["Pole"], yaw))
        plate = [(0.85, 0.1, 0.1, 1.0), (0.1, 0.3, 0.8, 1.0), (0.95, 0.95, 0.95, 1.0)][int(rng.integers(0, 3))]
        boxes.append(Box(at(s_along - 0.06, side * (ROAD_HALF + 0.6), 2.75), (0.03, 0.4, 0.4), plate, TAG["TrafficSign"], yaw))


def _buildings(boxes, style: TownStyle, rng, at, yaw: float, side: int, full: float, lot_depth: float, sw: float) -> None:
    """Lots of random width between the block corners; each holds a building (with windows) or a
    hedge and a tree; rural towns get fences."""
    start = ROAD_HALF + sw + 1.5
    along = start + lot_depth * 0.6
    end = full - start - lot_depth * 0.6
    lo, hi = style.building_height
    while along < end - 6:
        width = min(rng.uniform(8, 20), end - along)
        depth = lot_depth * rng.uniform(0.55, 1.0)
        centre_along = along + width / 2
        across = side * (start + depth / 2)
        if rng.uniform() < style.building_fill:
            h = rng.uniform(lo, hi)
            colour = _jitter(style.buildings[int(rng.integers(0, len(style.buildings)))], rng)
            # windows come from a facade texture (free in the TINY renderer, which samples a texture
            # for every pixel anyway): one column per ~3.5 m of width, one storey per 3.5 m of height
            windows = (int(np.clip(round(width / 3.5), 2, 6)), int(np.clip(round(h / 3.5), 1, 12)))
            boxes.append(Box(at(centre_along, across, h / 2), (width / 2 - 0.5, depth / 2, h / 2), colour, TAG["Building"], yaw,
                             windows))
        else:
            boxes.append(Box(at(centre_along, side * (start + 0.6), 0.6), (width / 2 - 0.5, 0.5, 0.6),
                             _jitter(style.tree, rng), TAG["Vegetation"], yaw))
            c = rng.uniform(2.0, 3.5)
            boxes.append(Box(at(centre_along, across, 2.0 + c), (c, c, c), _jitter(style.tree, rng), TAG["Vegetation"], yaw + 45))
            boxes.append(Box(at(centre_along, across, 1.0 + c / 2), (0.2, 0.2, 1.0 + c / 2), (0.35, 0.25, 0.15, 1.0),
                             TAG["Vegetation"], yaw))
            if style.fences:
                boxes.append(Box(at(centre_along, side * (start - 0.4), 0.55), (width / 2, 0.04, 0.55), (0.55, 0.45, 0.3, 1.0),
                                 TAG["Fence"], yaw))
        along += width + rng.uniform(0, 3)


# ---------------------------------------------------------------------------------------------
# Walking network
# ---------------------------------------------------------------------------------------------

def _walk_graph(strips: list[Strip], nodes, J: float) -> tuple[np.ndarray, list[list[tuple[int, float]]]]:
    """Nodes at both ends of every sidewalk strip; edges along strips, around junction corners and
    across roads (crossings), never through a junction's middle."""
    points = []
    adjacency: list[list[tuple[int, float]]] = []
    for s in strips:
        i = len(points)
        points.extend([s.p0, s.p1])
        length = float(np.hypot(s.p1[0] - s.p0[0], s.p1[1] - s.p0[1]))
        adjacency.extend([[(i + 1, length)], [(i, length)]])
    pts = np.array(points, dtype=float)
    for c in nodes:
        c = np.array(c)
        near = np.flatnonzero(np.max(np.abs(pts - c), axis=1) <= J + 0.01)
        for ii, a in enumerate(near):
            for b in near[ii + 1:]:
                seg = pts[b] - pts[a]
                length = float(np.hypot(*seg))
                if length > 2 * J + 1:
                    continue
                t = np.clip(np.dot(c - pts[a], seg) / max(length**2, 1e-9), 0, 1)
                if np.hypot(*(pts[a] + t * seg - c)) < 5.0:
                    continue
                adjacency[a].append((int(b), length))
                adjacency[b].append((int(a), length))
    return pts, adjacency


# ---------------------------------------------------------------------------------------------
# Town and Map
# ---------------------------------------------------------------------------------------------

_TOWNS: dict[str, Town] = {}


def build_town(name: str) -> Town:
    """The town of that name (deterministic; cached per process)."""
    town_name = town_of_map_name(name)
    if town_name in _TOWNS:
        return _TOWNS[town_name]
    style = TOWN_STYLES[town_name]
    rng = np.random.default_rng(zlib.crc32(town_name.encode()))
    nodes, edges = _layout(town_name, style, rng)
    J = ROAD_HALF + style.sidewalk
    xodr = _build_xodr(town_name, nodes, edges, J, style.sidewalk)
    boxes, strips = _scenery(style, nodes, edges, J, rng)
    walk_nodes, walk_adjacency = _walk_graph(strips, nodes, J)
    town = Town(town_name, style, nodes, edges, J, xodr, boxes, strips, walk_nodes, walk_adjacency)
    _TOWNS[town_name] = town
    return town


class Map(carla.Map):
    """CARLA's client-side map built from OpenDRIVE text (as `carla.Map(name, xodr_content)`), plus
    recommended spawn points, which a server would otherwise supply."""

    def __init__(self, name: str, xodr_content: str) -> None:
        super().__init__(name, xodr_content)
        self._spawn_points: list[carla.Transform] | None = None

    def get_spawn_points(self) -> list[carla.Transform]:
        """On every driving lane about every 22 m, at least 6 m from a junction, half a metre above the
        road like CARLA's spawn points."""
        if self._spawn_points is None:
            points = []
            for wp in self.generate_waypoints(22.0):
                if wp.is_junction:
                    continue
                ahead, behind = wp.next(6.0), wp.previous(6.0)
                if not ahead or not behind or any(w.is_junction for w in ahead + behind):
                    continue
                tf = wp.transform
                points.append(carla.Transform(carla.Location(tf.location.x, tf.location.y, tf.location.z + 0.5), tf.rotation))
            self._spawn_points = points
        return [carla.Transform(t.location, t.rotation) for t in self._spawn_points]
