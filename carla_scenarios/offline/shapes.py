"""Geometry of the offline world: CARLA <-> PyBullet frames, coloured boxes, box overlap tests, and the
box recipes that give each vehicle, walker and prop its look.

CARLA's frame is left-handed (x forward, y right, z up, yaw clockwise seen from above); PyBullet's is
right-handed. Everything the API hands out is in CARLA's frame; `to_bullet_*` convert at the boundary
by negating y (and with it yaw). Only boxes are used: the TINY renderer's cost grows with triangles,
and a box is 12 of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vca_data.labels import TAG


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in some parent frame (CARLA axes): centre, half extents, yaw (degrees,
    CARLA sense), colour (RGBA, 0-1) and the CARLA semantic tag its pixels carry."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    tag: int
    yaw: float = 0.0
    windows: tuple[int, int] | None = None  # (columns, storeys) of a window texture on every face


def to_bullet_position(x: float, y: float, z: float) -> list[float]:
    return [x, -y, z]


def bullet_quaternion(pitch: float, yaw: float, roll: float) -> list[float]:
    """PyBullet quaternion (x, y, z, w) of a CARLA rotation given in degrees."""
    return quaternion_from_matrix(to_bullet_rotation(rotation_matrix(pitch, yaw, roll)))


def rotation_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3x3 rotation of a CARLA Rotation (degrees) in CARLA's left-handed frame; equals the upper
    left block of carla.Transform.get_matrix()."""
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    return np.array(
        [
            [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
            [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
            [sp, -cp * sr, cp * cr],
        ]
    )


_FLIP_Y = np.diag([1.0, -1.0, 1.0])


def to_bullet_rotation(rot: np.ndarray) -> np.ndarray:
    """The same physical rotation expressed in PyBullet's frame (y negated on both sides)."""
    return _FLIP_Y @ rot @ _FLIP_Y


def quaternion_from_matrix(m: np.ndarray) -> list[float]:
    """Quaternion (x, y, z, w) of a proper rotation matrix (Shepperd's method)."""
    t = m[0, 0] + m[1, 1] + m[2, 2]
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        return [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    if m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        return [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    if m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        return [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
    return [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]


def obb_overlap_2d(
    center: np.ndarray, half: np.ndarray, yaw_deg: float, centers: np.ndarray, halves: np.ndarray, yaws_deg: np.ndarray
) -> np.ndarray:
    """Whether the oriented rectangle (center (2,), half extents (2,), yaw) overlaps each of N others
    (centers (N,2), halves (N,2), yaws (N,)), by the separating-axis test. Touching edges do not count."""
    centers = np.asarray(centers, dtype=float).reshape(-1, 2)
    if len(centers) == 0:
        return np.zeros(0, dtype=bool)
    halves = np.asarray(halves, dtype=float).reshape(-1, 2)
    a = math.radians(yaw_deg)
    ua = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # rows: own axes
    b = np.radians(np.asarray(yaws_deg, dtype=float))
    ub = np.stack(
        [np.stack([np.cos(b), np.sin(b)], 1), np.stack([-np.sin(b), np.cos(b)], 1)], 1
    )  # (N, 2 axes, 2)
    d = centers - np.asarray(center, dtype=float)
    separated = np.zeros(len(centers), dtype=bool)
    for k in range(2):  # own axes
        axis = ua[k]
        ra = half[k]
        rb = np.abs(ub[:, 0] @ axis) * halves[:, 0] + np.abs(ub[:, 1] @ axis) * halves[:, 1]
        separated |= np.abs(d @ axis) >= ra + rb
    for k in range(2):  # their axes
        axis = ub[:, k]  # (N, 2)
        ra = np.abs(axis @ ua[0]) * half[0] + np.abs(axis @ ua[1]) * half[1]
        rb = halves[:, k]
        separated |= np.abs(np.sum(d * axis, 1)) >= ra + rb
    return ~separated


# ---------------------------------------------------------------------------------------------
# Looks: box recipes in the actor's own frame (origin at the ground below the centre, CARLA axes)
# ---------------------------------------------------------------------------------------------

BLACK = (0.08, 0.08, 0.08, 1.0)
WHITE = (0.92, 0.92, 0.92, 1.0)
GLASS = (0.15, 0.2, 0.28, 1.0)
ORANGE = (0.95, 0.42, 0.05, 1.0)
YELLOW = (0.95, 0.8, 0.1, 1.0)
RED = (0.85, 0.1, 0.1, 1.0)
METAL = (0.6, 0.62, 0.65, 1.0)


def vehicle_boxes(extent: tuple[float, float, float], rgba: tuple, tag: int, kind: str) -> list[Box]:
    """A car, truck or bus: body, cabin/glass, four wheels. The parts above the body start at its top
    rather than inside it: the TINY renderer pays for every pixel of every face it draws, hidden or
    not, and a bus right ahead of the camera fills much of the image with each overlapping part."""
    ex, ey, ez = extent
    wheel_r = 0.35 if kind == "car" else 0.5
    body_bottom = wheel_r * 0.8
    body_z, body_half = wheel_r * 0.8 + (ez - body_bottom / 2) * 0.55, (2 * ez - body_bottom) * 0.28
    boxes = [Box((0, 0, body_z), (ex, ey, body_half), rgba, tag)]
    top = body_z + body_half

    def above(x: float, hx: float, hy: float, z1: float, colour: tuple) -> Box:  # from the body's top to z1
        return Box((x, 0, (top + z1) / 2), (hx, hy, (z1 - top) / 2), colour, tag)

    if kind == "car":
        boxes.append(Box((-0.15 * ex, 0, 2 * ez * 0.78), (0.55 * ex, 0.9 * ey, 0.22 * ez), GLASS, tag))
    elif kind == "truck":
        boxes.append(above(0.72 * ex, 0.26 * ex, ey * 0.98, ez * 1.98, rgba))
        boxes.append(Box((0.99 * ex, 0, ez * 1.45), (0.02 * ex, ey * 0.85, ez * 0.3), GLASS, tag))
        boxes.append(above(-0.28 * ex, 0.7 * ex, ey, ez * 2.0, WHITE))
    else:  # bus: tall body with a window band, then the roof
        boxes.append(above(0, ex, ey, ez * 1.67, GLASS))
        boxes.append(Box((0, 0, ez * 1.825), (ex, ey, ez * 0.155), rgba, tag))
    for sx in (0.68, -0.68):
        for sy in (1, -1):
            boxes.append(Box((sx * ex, sy * (ey - 0.12), wheel_r), (wheel_r, 0.12, wheel_r), BLACK, tag))
    return boxes


def walker_boxes(height: float, shirt: tuple, trousers: tuple, skin: tuple) -> list[Box]:
    """A pedestrian: legs, torso, arms, head (origin at the feet here; the actor origin is at the
    centre like CARLA's capsule, the caller offsets)."""
    tag = TAG["Pedestrian"]
    leg = 0.47 * height
    torso = 0.33 * height
    head = 0.13 * height
    return [
        Box((0, 0.09, leg / 2), (0.08, 0.07, leg / 2), trousers, tag),
        Box((0, -0.09, leg / 2), (0.08, 0.07, leg / 2), trousers, tag),
        Box((0, 0, leg + torso / 2), (0.12, 0.2, torso / 2), shirt, tag),
        Box((0, 0.26, leg + torso * 0.55), (0.06, 0.05, torso * 0.45), shirt, tag),
        Box((0, -0.26, leg + torso * 0.55), (0.06, 0.05, torso * 0.45), shirt, tag),
        Box((0, 0, leg + torso + head / 2 + 0.03), (0.1, 0.09, head / 2), skin, tag),
    ]


def prop_boxes(shape: str, tag: int, variant: int = 0) -> list[Box]:
    """Boxes that read as the prop: a cone is stacked shrinking tiers with a white band, a barrier a
    striped board on legs, a trolley a wire basket on wheels with a handle, and so on."""
    if shape == "cone":
        h = 0.75 if variant == 0 else 1.0
        base = [Box((0, 0, 0.02), (0.22, 0.22, 0.02), BLACK, tag)]
        tiers = []
        n = 4
        for i in range(n):
            z0 = 0.04 + i * (h - 0.04) / n
            half = 0.15 * (1 - i / (n + 0.5))
            colour = WHITE if i == 2 else ORANGE
            tiers.append(Box((0, 0, z0 + (h - 0.04) / n / 2), (half, half, (h - 0.04) / n / 2), colour, tag))
        return base + tiers
    if shape == "pole":
        boxes = [Box((0, 0, 0.03), (0.18, 0.18, 0.03), BLACK, tag)]
        for i in range(5):
            colour = YELLOW if i % 2 == 0 else BLACK
            boxes.append(Box((0, 0, 0.06 + 0.2 * i + 0.1), (0.05, 0.05, 0.1), colour, tag))
        return boxes
    if shape == "sign":  # arrow board on a small trailer
        return [
            Box((0, 0, 0.35), (0.6, 0.5, 0.08), METAL, tag),
            Box((0.3, 0.45, 0.2), (0.2, 0.06, 0.2), BLACK, tag),
            Box((0.3, -0.45, 0.2), (0.2, 0.06, 0.2), BLACK, tag),
            Box((0, 0, 0.9), (0.05, 0.05, 0.5), METAL, tag),
            Box((-0.02, 0, 1.65), (0.04, 0.9, 0.55), YELLOW, tag),
            Box((-0.07, 0, 1.65), (0.02, 0.6, 0.12), BLACK, tag),
            Box((-0.07, -0.45, 1.65), (0.02, 0.12, 0.3), BLACK, tag),
        ]
    if shape == "bin":
        body = (0.15, 0.4, 0.2, 1.0) if variant == 0 else (0.35, 0.35, 0.38, 1.0)
        return [
            Box((0, 0, 0.5), (0.3, 0.3, 0.5), body, tag),
            Box((0, 0, 1.04), (0.33, 0.33, 0.04), BLACK, tag),
        ]
    if shape == "bags":  # shopping cart loaded with coloured bags
        return trolley_boxes(tag) + [
            Box((0.05, 0.12, 0.95), (0.14, 0.12, 0.2), (0.85, 0.85, 0.8, 1.0), tag),
            Box((0.2, -0.12, 0.93), (0.13, 0.12, 0.18), (0.2, 0.5, 0.85, 1.0), tag),
            Box((-0.2, -0.05, 0.92), (0.12, 0.14, 0.17), (0.9, 0.3, 0.4, 1.0), tag),
        ]
    if shape == "barrier":
        boxes = [
            Box((0, 0.8, 0.45), (0.05, 0.05, 0.45), METAL, tag),
            Box((0, -0.8, 0.45), (0.05, 0.05, 0.45), METAL, tag),
            Box((0, 0.8, 0.03), (0.3, 0.06, 0.03), METAL, tag),
            Box((0, -0.8, 0.03), (0.3, 0.06, 0.03), METAL, tag),
        ]
        for i in range(4):
            colour = RED if i % 2 == 0 else WHITE
            boxes.append(Box((0, 0.75 - 0.5 * i, 0.75), (0.04, 0.25, 0.15), colour, tag))
        return boxes
    if shape == "trolley":
        return trolley_boxes(tag)
    if shape == "container":
        return [Box((0, 0, 0.7), (1.0, 0.6, 0.7), (0.2, 0.45, 0.3, 1.0), tag), Box((0, 0, 1.43), (1.02, 0.62, 0.03), BLACK, tag)]
    if shape == "barrel":
        return [Box((0, 0, 0.45), (0.28, 0.28, 0.45), (0.75, 0.25, 0.1, 1.0), tag), Box((0, 0, 0.6), (0.29, 0.29, 0.05), WHITE, tag)]
    if shape == "chain":
        return [
            Box((0, 0.9, 0.4), (0.05, 0.05, 0.4), RED, tag),
            Box((0, -0.9, 0.4), (0.05, 0.05, 0.4), RED, tag),
            Box((0, 0, 0.6), (0.02, 0.9, 0.02), YELLOW, tag),
        ]
    if shape == "debris":
        return [
            Box((0, 0, 0.05), (0.5, 0.4, 0.05), (0.4, 0.33, 0.25, 1.0), tag),
            Box((0.2, 0.1, 0.12), (0.2, 0.2, 0.08), (0.5, 0.45, 0.4, 1.0), tag),
        ]
    if shape == "bag":
        return [Box((0, 0, 0.22), (0.18, 0.15, 0.22), (0.1, 0.1, 0.1, 1.0) if variant else (0.9, 0.9, 0.85, 1.0), tag)]
    if shape == "warning":
        return [
            Box((0, 0.3, 0.5), (0.03, 0.03, 0.5), METAL, tag),
            Box((0, -0.3, 0.5), (0.03, 0.03, 0.5), METAL, tag),
            Box((0, 0, 1.1), (0.03, 0.45, 0.3), ORANGE if variant == 0 else RED, tag),
        ]
    raise ValueError(f"no look for prop shape {shape!r}")


def trolley_boxes(tag: int) -> list[Box]:
    """A shopping trolley: wire basket (a light box with a darker floor), handle, legs, wheels."""
    wire = (0.75, 0.77, 0.8, 1.0)
    return [
        Box((0, 0, 0.78), (0.45, 0.28, 0.22), wire, tag),
        Box((0, 0, 0.57), (0.45, 0.28, 0.01), METAL, tag),
        Box((-0.5, 0, 1.02), (0.03, 0.3, 0.03), RED, tag),
        Box((0.35, 0.22, 0.3), (0.02, 0.02, 0.27), METAL, tag),
        Box((-0.35, 0.22, 0.3), (0.02, 0.02, 0.27), METAL, tag),
        Box((0.35, -0.22, 0.3), (0.02, 0.02, 0.27), METAL, tag),
        Box((-0.35, -0.22, 0.3), (0.02, 0.02, 0.27), METAL, tag),
        Box((0.35, 0.22, 0.04), (0.04, 0.02, 0.04), BLACK, tag),
        Box((-0.35, 0.22, 0.04), (0.04, 0.02, 0.04), BLACK, tag),
        Box((0.35, -0.22, 0.04), (0.04, 0.02, 0.04), BLACK, tag),
        Box((-0.35, -0.22, 0.04), (0.04, 0.02, 0.04), BLACK, tag),
    ]


def box_corners(b: Box) -> np.ndarray:
    """The eight corners (8x3) of a box in its parent frame (CARLA axes)."""
    unit = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    c, s = math.cos(math.radians(b.yaw)), math.sin(math.radians(b.yaw))
    local = unit * np.array(b.half)
    return np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c, local[:, 2]], 1) + np.array(b.center)


def boxes_extent(boxes: list[Box]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centre and half extents of the axis-aligned box around a recipe (yaw of parts ignored: the
    recipes use unrotated parts)."""
    lo = np.min([np.subtract(b.center, b.half) for b in boxes], axis=0)
    hi = np.max([np.add(b.center, b.half) for b in boxes], axis=0)
    return tuple(((lo + hi) / 2).tolist()), tuple(((hi - lo) / 2).tolist())
