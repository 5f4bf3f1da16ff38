"""Flow mode's long-baseline cue: a far object moves a fraction of a pixel per frame pair, under DIS's noise,
so the camera's motion is chained over a track's frames and its contact, width and base centre compared with
a static object's many frames later; a far track that clearly departs is moving whatever its pairs say."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from annotator.proposals.flow_cues import CameraGeometry
from annotator.proposals.settings import ProposalSettings
from vca_data import flow as vf


@dataclass
class Footprint:
    """Where a track's mask meets the ground in one frame, and how wide it is: what the long-baseline
    cue compares across frames (instance masks are exact: their edges hold to a pixel)."""

    row: float          # image row of the contact: bottom edge of the mask's lowest pixels
    column: float       # centre column of the mask's lowest quarter (between the feet, the wheels)
    width: float        # mask width (px); NaN when a side touches the image border or another track
    grounded: bool      # the contact is in view: background right below the lowest pixels


def footprints(id_map: np.ndarray, reach: int = 2) -> dict[int, Footprint]:
    """The footprint of every track (id > 0) of a frame's id map. A track's width is hidden (NaN) when a
    side is cut by the image border, or when another track comes within `reach` px of it sideways
    anywhere along its outline: one hides part of the other, and a car parked behind another loses
    more of its outline as the camera approaches, which reads as the hidden car shrinking (driving
    away). Measured on offline-world parked cars: dropping the width of the occluding track too (its
    contact lower in the image) does better than keeping it, so both lose it."""
    h, w = id_map.shape
    out, boxes = {}, {}
    for track in np.unique(id_map).tolist():
        if track == 0:
            continue
        mask = id_map == track
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        bottom = int(rows[-1])
        lowest = np.flatnonzero(mask[bottom])
        grounded = bottom + 1 < h and not id_map[bottom + 1, lowest].any()
        left, right = int(cols[0]), int(cols[-1])
        clipped = left == 0 or right == w - 1
        base = np.flatnonzero(mask[bottom - (bottom - int(rows[0])) // 4:bottom + 1].any(axis=0))
        out[track] = Footprint(bottom + 1.0, (base[0] + base[-1] + 1) / 2.0,
                               float("nan") if clipped else float(right - left + 1), bool(grounded))
        boxes[track] = (int(rows[0]), bottom + 1, max(0, left - reach), min(w, right + reach + 1))
    kernel = np.ones((1, 2 * reach + 1), np.uint8)
    for track, box in boxes.items():
        if np.isnan(out[track].width):
            continue
        window = id_map[box[0]:box[1], box[2]:box[3]]
        mask = window == track
        beside = window[(cv2.dilate(mask.astype(np.uint8), kernel) > 0) & ~mask]
        if np.any((beside != 0) & (beside != track)):
            out[track] = Footprint(out[track].row, out[track].column, float("nan"), out[track].grounded)
    return out


def height_scaled_steps(geometry: dict[int, CameraGeometry], window: int = 2) -> dict[int, np.ndarray]:
    """camera_{i+1}_from_camera_i for every frame i with a measured forward pair (`geometry[i]`, motion
    from frame i to i + 1), its translation in camera heights: the road plane's offset is the camera's
    height in units of that pair's translation, and the height, unlike the speed, does not change. The
    scale is the median over `window` pairs either side (one pair's plane offset errs by per cents; the
    speed changes slowly); pairs with no plane within the window are left out, a single pair missing
    between two measured ones gets the earlier one's rotation and their mean translation."""
    speeds = {i: 1.0 / g.offset for i, g in geometry.items() if g.offset is not None and g.offset > 0}
    steps = {}
    for i in sorted(geometry):
        near = [speeds[k] for k in range(i - window, i + window + 1) if k in speeds]
        step = geometry[i].motion.copy()
        if not step[:3, 3].any():
            steps[i] = step   # a still camera: no translation to scale
        elif near:
            step[:3, 3] *= float(np.median(near))
            steps[i] = step
    # One pair lost between two measured ones (a camera coming to a halt): its neighbours' mean, so that
    # the chain goes on.
    for i in [i for i in range(min(steps, default=0), max(steps, default=0)) if i not in steps]:
        if i - 1 in steps and i + 1 in steps:
            steps[i] = steps[i - 1].copy()
            steps[i][:3, 3] = (steps[i - 1][:3, 3] + steps[i + 1][:3, 3]) / 2.0
    return steps


def chained_runs(steps: dict[int, np.ndarray]) -> list[list[int]]:
    """Runs of consecutive frames joined by `steps` (step i joins frame i to i + 1)."""
    runs: list[list[int]] = []
    for i in sorted(steps):
        if runs and runs[-1][-1] == i:
            runs[-1].append(i + 1)
        else:
            runs.append([i, i + 1])
    return runs


def road_normals(normals: dict[int, np.ndarray], steps: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The road as one plane over each run of frames joined by `steps` (translation in camera heights):
    each frame's plane n.X = 1 (`normals`, camera heights) is moved into the run's first frame by the
    chained steps, the median of them is taken, and it is moved back into every frame of the run. A
    plane fitted on one frame pair tilts by a hundredth of a radian, which at 60 camera heights moves a
    contact's depth by half; the camera's own pitching and rolling, which the steps' rotations follow,
    is kept. Frames in no run with a measured plane are left out."""
    out = {}
    for run in chained_runs(steps):
        camera_from_first = {run[0]: np.eye(4)}
        for i in run[1:]:
            camera_from_first[i] = steps[i - 1] @ camera_from_first[i - 1]
        # n.X_i = 1 with X_i = R X_first + t  <=>  (R^T n / (1 - n.t)).X_first = 1
        moved = [m[:3, :3].T @ normals[i] / (1.0 - normals[i] @ m[:3, 3])
                 for i, m in camera_from_first.items() if i in normals]
        if not moved:
            continue
        first = np.median(moved, axis=0)
        for i, m in camera_from_first.items():
            normal = m[:3, :3] @ first
            out[i] = normal / (1.0 + normal @ m[:3, 3])
    return out


@dataclass
class LongBaseline:
    """A track's long-baseline cue over frame pairs (a, b) far apart: where the track is in b against
    where it would be if it had stood still since a, each discrepancy divided by its expected error.
    `score`: median over the pairs of the larger of the depth and the sideways discrepancy; `depth`:
    median of the signed depth discrepancy (log depth ratio, positive = farther than a static object
    would be); `visible`: median of the predicted depth change over its measuring error alone (how
    clearly a static object's approach shows); `pairs`: how many pairs."""

    score: float
    depth: float
    visible: float
    pairs: int


def _contact_point(print_: Footprint, K: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    """3-D contact point (camera heights) of a grounded footprint on the plane n.X = 1."""
    ray = np.linalg.solve(K, np.array([print_.column, print_.row, 1.0]))
    along = float(normal @ ray)
    return ray / along if along > 1e-6 else None


def long_baseline_cue(prints: dict[int, Footprint], steps: dict[int, np.ndarray], normals: dict[int, np.ndarray],
                      K: np.ndarray, settings: ProposalSettings) -> LongBaseline | None:
    """The long-baseline cue of one track from its footprints per frame, the camera's steps between
    consecutive frames (translation in camera heights, `height_scaled_steps`) and the road normal per
    frame (plane n.X = 1 in camera heights). For frames a and b at least `long_min_gap` frames and half
    the track's span apart, joined by measured steps: the contact in a is placed on a's road plane and
    moved into b as if static; its predicted depth there is compared with the depth of b's contact on
    b's plane (bottom row) and with the depth the change of the mask's width implies. Each is a log
    depth ratio whose error is the edge error `long_edge_px` propagated, plus `long_relative` times the
    predicted change (plane tilt, speed scale, an object not facing the camera); the width's, and the
    sideways one's, also `long_turn` times the angle by which the direction the object is seen from
    turns (a car seen at an angle narrows as the camera turns at a junction). Per frame pair a car
    driving ahead at the camera's speed differs from a static one by a tenth of a pixel; over many
    frames a static one comes closer and grows, while that car keeps its place and size. None when no
    pair of frames qualifies."""
    frames = sorted(f for f in prints if f in normals)
    if len(frames) < 2:
        return None
    gap = max(settings.long_min_gap, (frames[-1] - frames[0] + 1) // 2)
    edge = settings.long_edge_px
    fy = K[1, 1]
    scores, depths, visible = [], [], []
    for a in frames:
        first = prints[a]
        point = _contact_point(first, K, normals[a]) if first.grounded else None
        if point is None:
            continue
        depth_a = point[2]
        # A row error of e px moves the contact's depth by about e * n_y * Z / f_y in log depth.
        row_error_a = edge * abs(normals[a][1]) * depth_a / fy
        moved = np.eye(4)
        for b in range(a + 1, frames[-1] + 1):
            if b - 1 not in steps:
                break
            moved = steps[b - 1] @ moved
            if b - a < gap or b not in prints or b not in normals:
                continue
            predicted = moved[:3, :3] @ point + moved[:3, 3]
            if predicted[2] <= 1e-3:
                break
            change = float(np.log(predicted[2] / depth_a))
            estimates = []  # (log depth ratio seen / predicted, its measuring error)
            second = prints[b]
            seen = _contact_point(second, K, normals[b]) if second.grounded else None
            if seen is not None:
                row_error_b = edge * abs(normals[b][1]) * seen[2] / fy
                estimates.append((float(np.log(seen[2] / predicted[2])), float(np.hypot(row_error_a, row_error_b))))
            sideways = 0.0
            if np.isfinite(first.width) and np.isfinite(second.width):
                # Width ~ 1 / depth for a face parallel to the image; an object seen at an angle widens or
                # narrows as the direction it is seen from turns (the camera turning, or passing it) by
                # the tangent of that angle per radian, at any depth: `long_turn`.
                turn = float(np.arccos(np.clip(vf.cosine(point, predicted), -1.0, 1.0)))
                width_error = float(np.hypot(edge * np.sqrt(2.0) * np.hypot(1.0 / first.width, 1.0 / second.width),
                                             settings.long_turn * turn))
                # The depth seen in b is depth_a * width_a / width_b.
                estimates.append((float(np.log(depth_a * first.width / second.width / predicted[2])), width_error))
                # Sideways, where both frames show the whole width: the centre of the mask's base against
                # its projection; the rotation's share is exact, the translation's scales with the depth,
                # and the base's centre moves with half the width's change as the view turns.
                projected = K @ predicted
                rotated = K @ (moved[:3, :3] @ point)
                shift = abs(projected[0] / projected[2] - rotated[0] / rotated[2])
                sideways = (second.column - projected[0] / projected[2]) / float(np.sqrt(
                    2.0 * edge**2 + (settings.long_relative * shift) ** 2
                    + (settings.long_turn / 2.0 * turn * second.width) ** 2))
            if not estimates:
                continue
            weights = np.array([1.0 / e**2 for _, e in estimates])
            discrepancy = float(np.dot(weights, [d for d, _ in estimates]) / weights.sum())
            measuring = float(1.0 / np.sqrt(weights.sum()))
            depth = discrepancy / float(np.hypot(measuring, settings.long_relative * change))
            scores.append(max(abs(depth), abs(sideways)))
            depths.append(depth)
            visible.append(abs(change) / measuring)
    if not scores:
        return None
    return LongBaseline(float(np.median(scores)), float(np.median(depths)), float(np.median(visible)), len(scores))
