"""Automatic moving/static proposals for the tracks of motion sequences, from optical flow with the
camera's own motion removed, and the `vca-annotate propose` command that writes them into
`motion_labels.json` (source "proposal") without ever touching a manual label. No Qt here: the
annotator calls `run_proposals` from a worker thread.

Per frame pair (i, i+1) the flow is computed with DIS. With depth, intrinsics and poses ("ego" mode)
each pixel's 3-D motion in metres is measured (vca_data.flow.scene_flow), which compares near and far
objects and sees motion along epipolar lines; the flow is computed both after warping the second frame
by the ego flow (near objects passing the camera stay within DIS's reach) and without it (a car moving
with the camera in a turn), and each track keeps the one that explains its pixels better. A second cue
needs no flow: each track's mask moved into the other frame as if it were static (depth and pose),
against its real mask there, which sees textureless objects move. Frames i and i+3 are compared too
(ego mode), so slow objects add up motion. Without depth or pose ("flow" mode) the camera motion is fitted with
RANSAC outside the instance masks (homography, and the essential matrix with K from the calibration or
a guess), and two cues are combined: the Sampson distance to the background's epipolar geometry, and
the difference to the flow the object would have if it were static and stood on the road plane where
it touches it (a car driving ahead stays on its epipolar lines but not on that prediction). That
prediction takes the camera's motion and the road plane from the road itself (plane plus parallax):
the homography of the flow below the horizon, decomposed with K, so that an object's ground contact
moves exactly as the road beside it; the essential matrix's translation errs by a degree, which near
the focus of expansion is a quarter of a far object's flow. Far
objects move by a fraction of a pixel per frame pair, under DIS's noise, so flow mode also has a
long-baseline cue: the camera's motion chained over a track's frames (translation in camera heights,
from the road plane, which is taken as one plane over the chained frames: the median of each frame
pair's fit moved along the chain), its ground contact moved as if static from one frame into frames
far later, against where its mask's bottom, width and base centre really are there; a far track that clearly
departs from that prediction is moving whatever its per-pair scores say. An object that moves along
its viewing ray far ahead at the camera's speed still differs from a static one by only a pixel or two
over a short sequence. A track's per-frame scores (1 = the decision threshold) go through
hysteresis into moving/static frame states; the fraction of moving frames is the track's score, and
tracks without a clear majority are left unlabelled for the annotator, as are tracks too small to
measure (no frame where the eroded mask keeps `min_pixels`, i.e. objects of about 8x8 px or less). In
ego mode three consecutive moving frames make a track moving whatever the majority (it moved while
seen: a car starting from rest; a static object's errors do not line up so). In flow mode, whose
per-frame evidence is noisier, the median per-frame score decides, over the frames where the ground
cue was measured or the epipolar cue shows motion.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vca_data import flow as vf
from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.motion_labels import MotionLabels
from vca_data.formats.sequence import MotionSequence
from vca_data.io import atomic_path

MODES = ("auto", "ego", "flow")
LABELS_FILE = "motion_labels.json"
FLOW_SUBDIR = "flow"
SUPPRESSED_SUBDIR = "flow_suppressed"
DEFAULT_FLOW_MAX = 30.0
# Proposals run offline: the slower DIS preset resolves small, far objects that "fast" blurs away.
PROPOSAL_PRESET = "medium"
# The most a driving camera turns between frames (radians; 6 degrees): larger rotations are fitting errors.
MAX_TURN = 0.1
# Flow mode: a road homography is plausible when its plane tilts by at most this from the camera's
# vertical axis (a car camera looks level along the road it stands on: a larger tilt is a wall or a
# fit gone wrong; 5 degrees) and its translation points within this of the essential matrix's (10 degrees).
MAX_ROAD_TILT = 0.087
MAX_ROAD_DISAGREEMENT = 0.175

ProgressCallback = Callable[[int, int], None]


@dataclass
class ProposalSettings:
    """Thresholds of the proposals. Per-frame scores are normalised so that 1 is the decision line."""

    erode_px: int = 2                 # mask erosion: DIS smears motion across object boundaries
    min_pixels: int = 20              # smaller masks give no per-frame score
    ego_min_motion_m: float = 0.05    # ego mode: 3-D motion (metres per frame) that counts as moving ...
    ego_relative: float = 0.03        # ... plus this fraction of the camera's own translation per frame
    ego_flow_relative: float = 0.04   # ... plus this fraction of the ego flow at the object, in metres there
    flow_sigma_px: float = 0.5       # ego mode: flow error assumed when judging depth changes
    min_kept: float = 0.3             # fraction of a mask that must land on the same track in the next frame
    flow_noise_px: float = 0.28       # flow mode: residual (px) that counts as moving ...
    flow_relative: float = 0.055      # ... plus this fraction of the flow at the object (epipolar cue)
    ground_depth_error: float = 0.1   # flow mode, ground cue: this fraction of the predicted translational
    flow_error: float = 0.04          # flow (contact depth error), plus this fraction of all of it (DIS
                                      # on flat paint, and the fitted camera motion's error)
    high: float = 1.2                 # hysteresis: a frame turns moving above this score ...
    low: float = 0.85                 # ... and static below this; in between it keeps the last state
    min_frames: int = 2               # fewer decided frames: no proposal unless the score is far off
    moving_run: int = 3               # ego mode: this many consecutive frames at or above `high` make a
                                      # track moving whatever its other frames say (it moved while seen)
    min_confidence: float = 0.5       # |2 * score - 1| below this: no proposal (ego mode)
    silhouette_tolerance_px: float = 1.0  # ego mode: mask misalignment (px) not counted as motion, and
    silhouette_shift_px: float = 0.25     # the mean shift of a mask beyond it that counts as moving
    long_gap: int = 3                 # ego mode: frames i and i + long_gap are compared too (slow objects)
    flow_vote: float = 1.0            # flow mode: a track moves when the median of its per-frame scores
                                      # reaches this (its per-frame evidence flips too often for hysteresis);
    flow_min_confidence: float = 0.05  # tracks whose frames split evenly (|2 * score - 1| below) stay unsure
    long_edge_px: float = 0.7         # flow mode, long-baseline cue: error (px) of a mask's bottom row and sides
    long_relative: float = 0.25       # ... and of the predicted depth change, as a fraction of it (road
                                      # plane tilt, speed scale, an object not facing the camera)
    long_min_gap: int = 4             # ... frames compared at least this far apart, and at least half the
                                      # track's span
    long_vote: float = 2.0            # ... a track whose median discrepancy reaches this moves, whatever
                                      # its per-frame scores say, if it is far: a static object's approach
    long_far: float = 2.0             # over the baseline shows by less than this many measuring errors
                                      # (near ones the per-frame cues measure; their prediction errs with
                                      # their changing outline)
    long_turn: float = 0.5            # ... log width change per radian the direction an object is seen
                                      # from turns (tangent of the angle between its face and the image)


@dataclass
class Proposal:
    """The proposal for one track. `score` is the fraction of its decided frames that move (0..1);
    `label` is None when the evidence is not clear enough (left to the annotator). In flow mode the
    long-baseline cue (`long_baseline`) may label a far track moving whose frames mostly score static."""

    track_id: int
    label: str | None
    score: float
    confidence: float
    mode: str
    frame_scores: dict[int, float] = field(default_factory=dict)
    long_baseline: LongBaseline | None = None   # flow mode


# --------------------------------------------------------------------------------------------------
# Aggregation over a track


def hysteresis_states(scores: Sequence[float], high: float, low: float) -> list[str | None]:
    """Moving/static state per frame: above `high` moving, below `low` static, otherwise the previous
    state (None until the first decision). NaN scores (no measurement) keep the previous state."""
    if not low <= high:
        raise ValueError(f"hysteresis needs low <= high, got low={low}, high={high}")
    states: list[str | None] = []
    state: str | None = None
    for score in scores:
        if score >= high:
            state = "moving"
        elif score <= low:
            state = "static"
        states.append(state)
    return states


def longest_run(frame_scores: dict[int, float], threshold: float) -> int:
    """Length of the longest run of consecutive frames (indices k, k + 1, ...) scoring >= `threshold`."""
    best = run = 0
    previous = None
    for frame in sorted(frame_scores):
        if frame_scores[frame] >= threshold:
            run = run + 1 if previous is not None and frame == previous + 1 and run else 1
        else:
            run = 0
        best, previous = max(best, run), frame
    return best


def aggregate_track(frame_scores: dict[int, float], settings: ProposalSettings, min_confidence: float | None = None
                    ) -> tuple[str | None, float, float]:
    """(label or None, score = fraction of decided frames moving, confidence = |2 score - 1|). A track
    with fewer than `min_frames` decided frames is labelled only when its median score is far from
    the decision line (twice `high`, or half `low`). A track whose frames score at least `high` in a
    run of `moving_run` consecutive frames is moving whatever the fraction: its label says whether it
    moved while seen (a car starting from rest, a pedestrian who stops), and a static object's
    measuring errors, independent from pair to pair, do not line up so. `min_confidence` defaults to
    the settings'."""
    min_confidence = settings.min_confidence if min_confidence is None else min_confidence
    ordered = [frame_scores[f] for f in sorted(frame_scores)]
    states = hysteresis_states(ordered, settings.high, settings.low)
    moving = sum(s == "moving" for s in states)
    decided = sum(s is not None for s in states)
    if decided == 0:
        return None, 0.5, 0.0
    score = moving / decided
    confidence = abs(2.0 * score - 1.0)
    if longest_run(frame_scores, settings.high) >= settings.moving_run:
        return "moving", score, confidence
    if confidence < min_confidence:
        return None, score, confidence
    if decided < settings.min_frames:
        median = float(np.median(ordered))
        if not (median >= 2.0 * settings.high or median <= 0.5 * settings.low):
            return None, score, confidence
    return ("moving" if score > 0.5 else "static"), score, confidence


def median_vote(frame_scores: dict[int, float], settings: ProposalSettings) -> tuple[str | None, float, float]:
    """(label or None, score = fraction of frames scoring >= 1, confidence = |2 score - 1|) by the median
    per-frame score against `flow_vote`: a robust vote for cues whose per-frame evidence is noisy. A
    track whose frames split evenly (confidence below `flow_min_confidence`) is left unsure."""
    if not frame_scores:
        return None, 0.5, 0.0
    values = np.array(list(frame_scores.values()))
    score = float(np.mean(values >= 1.0))
    confidence = abs(2.0 * score - 1.0)
    if confidence < settings.flow_min_confidence:
        return None, score, confidence
    return ("moving" if float(np.median(values)) >= settings.flow_vote else "static"), score, confidence


# --------------------------------------------------------------------------------------------------
# Per-frame cues


def _robust(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")


def landing_ids(next_id_map: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Track id (next frame) under each pixel's flow target; 0 off screen or on background."""
    return vf.sample_at_flow(next_id_map.astype(np.float32), flow, nearest=True).astype(np.int32)


def track_masks(id_map: np.ndarray, settings: ProposalSettings, landed: np.ndarray | None = None
                ) -> dict[int, np.ndarray]:
    """Eroded mask of each track in a frame, keeping only pixels whose flow lands on the same track in
    the next frame when `landed` is given (drops occluded and out-of-view parts, whose flow is wrong);
    tracks with too little left (thin slivers, mostly occluded) are omitted."""
    masks = {}
    for track in np.unique(id_map).tolist():
        if track == 0:
            continue
        # Small objects are eroded less; slivers thinner than that carry their surroundings' flow: no score.
        full = (id_map == track).astype(np.uint8)
        for radius in range(settings.erode_px, 0, -1):
            mask = cv2.erode(full, np.ones((2 * radius + 1,) * 2, np.uint8)) > 0
            if mask.sum() >= settings.min_pixels:
                break
        else:
            continue
        if landed is not None:
            kept = mask & (landed == track)
            if kept.sum() < max(settings.min_kept * mask.sum(), settings.min_pixels // 2 + 1):
                continue
            mask = kept
        masks[track] = mask
    return masks


def photometric_error(first: np.ndarray, second: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """|first - second warped back by flow| per pixel (grey levels, 5x5 box-averaged)."""
    a = vf._gray(first, "first image").astype(np.float32)
    b = vf.warp_image(vf._gray(second, "second image").astype(np.float32), flow)
    return cv2.blur(np.abs(a - b), (5, 5))


def best_flow_per_track(first: np.ndarray, second: np.ndarray, id_map: np.ndarray, flows: Sequence[np.ndarray]
                        ) -> np.ndarray:
    """The first of `flows` everywhere, except on tracks (id_map > 0) where another one has a lower
    median photometric error over the track's pixels."""
    errors = [photometric_error(first, second, f) for f in flows]
    out = flows[0].copy()
    for track in np.unique(id_map).tolist():
        if track == 0:
            continue
        mask = id_map == track
        costs = [float(np.median(e[mask])) for e in errors]
        best = int(np.argmin(costs))
        if best:
            out[mask] = flows[best][mask]
    return out


def ego_scores(flow: np.ndarray, masks: dict[int, np.ndarray], depth0: np.ndarray, depth1: np.ndarray | None,
               K: np.ndarray, camera1_from_camera0: np.ndarray, settings: ProposalSettings
               ) -> tuple[dict[int, float], np.ndarray]:
    """Per-track scores of one frame pair from depth and pose, and the ego-flow suppressed flow.

    The measure is the median 3-D motion of the mask's points in metres (scene flow); without the
    second frame's depth, the residual flow scaled to metres by depth / focal length (lateral only).
    The depth part of the scene flow is discounted by what a flow error of `flow_sigma_px` makes of the
    second depth map's gradient at the match: on surfaces seen at a grazing angle a fraction of a
    pixel changes the depth by decimetres."""
    ego, valid = vf.ego_flow(depth0, K, camera1_from_camera0)
    suppressed = vf.suppress_ego_flow(flow, ego, valid)
    threshold = settings.ego_min_motion_m + settings.ego_relative * float(
        np.linalg.norm(camera1_from_camera0[:3, 3]))
    # Rendered and real images alike match the ego flow only to a few per cent of its size (measured
    # on static scenery of the offline world: 3% median), which at depth Z is that many pixels * Z / f.
    ego_metres = np.linalg.norm(ego, axis=2) * depth0 * np.float32(settings.ego_flow_relative / K[0, 0])
    if depth1 is not None:
        motion, motion_valid = vf.scene_flow(depth0, depth1, flow, K, camera1_from_camera0)
        gradient = cv2.magnitude(cv2.Sobel(depth1, cv2.CV_32F, 1, 0, ksize=3),
                                 cv2.Sobel(depth1, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
        depth_error = vf.sample_at_flow(gradient, flow, nearest=True) * settings.flow_sigma_px
        along = np.maximum(np.abs(motion[..., 2]) - depth_error, 0.0)
        magnitude = np.sqrt(motion[..., 0] ** 2 + motion[..., 1] ** 2 + along**2)
    else:
        motion_valid = valid
        magnitude = np.linalg.norm(suppressed, axis=2) * depth0 / float(K[0, 0])
    scores = {}
    for track, mask in masks.items():
        pixels = mask & motion_valid
        if pixels.sum() < settings.min_pixels // 2 + 1:
            continue
        scores[track] = _robust(magnitude[pixels]) / (threshold + _robust(ego_metres[pixels]))
    return scores, suppressed


def _silhouette_distance(id_map0: np.ndarray, depth0: np.ndarray, id_map1: np.ndarray, depth1: np.ndarray,
                         K: np.ndarray, camera1_from_camera0: np.ndarray, tolerance: float
                         ) -> dict[int, tuple[float, int]]:
    """For each track of frame 0: its pixels moved into frame 1 as if the track were static (depth and
    pose), and the mean distance (px, beyond `tolerance`) from where they land to the track's own mask
    there, over the pixels that stay in view and are not hidden by something nearer. Returns
    {track: (mean distance, pixels used)}."""
    h, w = id_map0.shape
    ego, valid = vf.ego_flow(depth0, K, camera1_from_camera0)
    points = vf.transform_points(camera1_from_camera0, vf.backproject(depth0, K).astype(np.float64))
    target = np.rint(vf.pixel_grid(h, w) + ego).astype(np.int64)
    inside = valid & (target[..., 0] >= 0) & (target[..., 0] < w) & (target[..., 1] >= 0) & (target[..., 1] < h)
    tx, ty = np.where(inside, target[..., 0], 0), np.where(inside, target[..., 1], 0)
    seen = depth1[ty, tx]
    # Hidden in frame 1: something nearer than the predicted depth stands there (5% + 0.3 m margin).
    inside &= (seen <= 0) | (seen >= points[..., 2] * 0.95 - 0.3)
    out = {}
    for track in np.unique(id_map0).tolist():
        if track == 0:
            continue
        pixels = (id_map0 == track) & inside
        count = int(pixels.sum())
        other = id_map1 == track
        if count == 0 or not other.any():
            continue
        xs, ys = tx[pixels], ty[pixels]
        ys1, xs1 = np.nonzero(other)
        pad = 4
        r0, r1 = min(ys.min(), ys1.min()) - pad, max(ys.max(), ys1.max()) + pad + 1
        c0, c1 = min(xs.min(), xs1.min()) - pad, max(xs.max(), xs1.max()) + pad + 1
        r0, c0 = max(r0, 0), max(c0, 0)
        crop = (~other[r0:r1, c0:c1]).astype(np.uint8)
        distance = cv2.distanceTransform(crop, cv2.DIST_L2, 3)
        d = np.maximum(distance[ys - r0, xs - c0] - tolerance, 0.0)
        out[track] = (float(d.mean()), count)
    return out


def silhouette_scores(id_map0: np.ndarray, depth0: np.ndarray, id_map1: np.ndarray, depth1: np.ndarray,
                      K: np.ndarray, camera1_from_camera0: np.ndarray, settings: ProposalSettings
                      ) -> dict[int, float]:
    """Per-track scores from the instance masks alone: how far each track's mask, moved into the other
    frame as if it were static (depth and pose), lands from the track's real mask there (mean over its
    pixels, beyond `silhouette_tolerance_px`), the larger of both ways (0 -> 1, 1 -> 0), divided by
    `silhouette_shift_px`. Unlike flow this sees the motion of textureless objects (flat-shaded cars
    of a simple renderer, a car's uniform paint): their masks move whatever their inside shows. Blind
    to motion along the viewing ray, which the depth part of the scene flow measures."""
    tolerance = settings.silhouette_tolerance_px
    forward = _silhouette_distance(id_map0, depth0, id_map1, depth1, K, camera1_from_camera0, tolerance)
    backward = _silhouette_distance(id_map1, depth1, id_map0, depth0, K, np.linalg.inv(camera1_from_camera0),
                                    tolerance)
    return {track: max(distance, backward[track][0]) / settings.silhouette_shift_px
            for track, (distance, count) in forward.items()
            if track in backward and min(count, backward[track][1]) >= settings.min_pixels}


def default_intrinsics(height: int, width: int) -> np.ndarray:
    """A guess for sequences without calibration: principal point at the centre, focal length 0.8 x
    width (between KITTI's 0.58 and Cityscapes' 1.1)."""
    return np.array([[0.8 * width, 0.0, width / 2.0], [0.0, 0.8 * width, height / 2.0], [0.0, 0.0, 1.0]])


def contact_depth(track: int, id_map: np.ndarray, K: np.ndarray, normal: np.ndarray, offset: float
                  ) -> np.ndarray | None:
    """Depth map (0 elsewhere) of a track as if it stood on the ground plane n.X = d: each column of the
    object gets the depth where the ray through its lowest pixel meets the plane (a vertical surface
    standing there). Columns whose bottom is hidden (another object or the image border below) get the
    median of the others; None when fewer than a third of the columns touch visible ground. An object
    taller than wide (a pedestrian, a post) touches the ground at its lowest points only, not at the
    lowest pixels of its arms: it gets one depth, from the columns within 2 px of its lowest row."""
    h, _ = id_map.shape
    whole = id_map == track
    columns = np.flatnonzero(whole.any(axis=0))
    if columns.size == 0:
        return None
    bottoms = h - 1 - np.argmax(whole[::-1, columns], axis=0)
    below = np.minimum(bottoms + 1, h - 1)
    visible = (bottoms + 1 < h) & (id_map[below, columns] == 0)
    rows = np.flatnonzero(whole.any(axis=1))
    upright = rows[-1] - rows[0] + 1 > columns.size
    if upright:
        lowest = bottoms.max()
        visible &= bottoms >= lowest - 2
        bottoms = np.full_like(bottoms, lowest)
    rays = np.linalg.inv(K) @ np.vstack([columns, bottoms + 0.5, np.ones_like(columns)])
    along = normal @ rays
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = offset / along
    good = visible & (along > 1e-6) & np.isfinite(depth) & (depth > 0)
    if good.sum() < (1 if upright else max(2, columns.size / 3)):
        return None
    depth = np.where(good, depth, np.median(depth[good]))
    out = np.zeros(id_map.shape, np.float32)
    column_depth = np.zeros(id_map.shape[1], np.float32)
    column_depth[columns] = depth
    out[whole] = np.broadcast_to(column_depth, id_map.shape)[whole]
    return out


@dataclass
class FlowCues:
    """What flow-only mode measures on one track in one frame pair: medians over its mask, in pixels.
    Without a measurable camera translation only `residual` is set; `ground_*` need a road plane and a
    visible contact with it."""

    flow: float                                 # |flow|
    residual: float | None = None               # |flow - background homography flow|
    sampson: float | None = None                # distance to the background's epipolar geometry
    ground_residual: float | None = None        # |flow - flow of the object static on the road|
    ground_translational: float | None = None   # translational part of that predicted flow
    ground_flow: float | None = None            # |that predicted flow|


@dataclass
class CameraGeometry:
    """The camera's motion over one frame pair as flow mode measures it, and the road under it."""

    motion: np.ndarray                 # camera1_from_camera0, translation of length 1 (0: still camera)
    normal: np.ndarray | None = None   # road plane n.X = offset in camera 0, n pointing down (image y)
    offset: float | None = None        # the camera's height over the road, in units of the translation


def plausible_road(road: vf.RoadMotion, motion: np.ndarray) -> bool:
    """Whether a frame pair's road homography (`vf.road_motion`) can be taken for the road: its plane
    nearly level under the camera (`MAX_ROAD_TILT`), its translation measurable and along the one of the
    essential matrix (`motion`, `MAX_ROAD_DISAGREEMENT`). Fits to a wall, or to a road whose flow DIS
    lost, tilt by tens of degrees."""
    t = road.motion[:3, 3]
    if np.linalg.norm(t) < 1e-6 or road.normal[1] < np.cos(MAX_ROAD_TILT):
        return False
    return vf.cosine(t, motion[:3, 3]) >= np.cos(MAX_ROAD_DISAGREEMENT)


def flow_only_cues(flow: np.ndarray, id_map: np.ndarray, masks: dict[int, np.ndarray], exclude: np.ndarray,
                   K: np.ndarray, settings: ProposalSettings
                   ) -> tuple[dict[int, FlowCues], np.ndarray, CameraGeometry | None]:
    """Per-track cues of one frame pair from flow alone, the homography-suppressed flow, and the camera
    motion and road plane found (no cues when the background fit fails or is implausible; no geometry
    when the camera translates but its motion cannot be fitted; a still camera's rotation alone).

    Cue 1: Sampson distance of the mask's flow to the background's epipolar geometry (from the essential
    matrix, which unlike a fitted F stays defined when the background is mostly road; blind to motion
    along epipolar lines). Cue 2: the flow the object would have if it were static and stood on the
    ground: the camera motion (translation in camera heights) and the road plane come from the road's
    homography below the horizon (`vf.road_motion`, K from the calibration or a guess) when it is
    plausible (`plausible_road`), else from the essential matrix and a plane through the background
    points triangulated below the horizon; the object's depth comes from where it touches that plane. A
    car driving ahead stays on its epipolar lines but not on this prediction. Each cue is divided by the
    error expected of it (`flow_cue_score`), which puts far and near objects on one scale. With a camera that does not translate the background homography
    explains every static point, and the residual to it is the measure. The road plane is fitted per
    frame: in units of the camera's motion per frame it changes whenever the car brakes or accelerates."""
    h, w = id_map.shape
    step = max(4, int(round(min(h, w) / 60)))
    background = vf.fit_background_motion(flow, exclude, step=step)
    if background.homography is None:
        return {}, np.zeros_like(flow), None
    suppressed = flow - vf.homography_flow(background.homography, h, w)
    magnitude = np.linalg.norm(flow, axis=2)
    motion, _ = vf.essential_motion(flow, K, exclude, step=step)
    if motion is None:
        full_residual = np.linalg.norm(suppressed, axis=2)
        geometry = None
        if _robust(magnitude[~exclude]) < 0.1:
            # A still camera (waiting at a light): only its rotation, K^-1 H K, moves the image.
            u, _, vt = np.linalg.svd(np.linalg.solve(K, background.homography @ K))
            still = np.eye(4)
            still[:3, :3] = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt  # nearest rotation
            geometry = CameraGeometry(still)
        return {track: FlowCues(_robust(magnitude[mask]), residual=_robust(full_residual[mask]))
                for track, mask in masks.items()}, suppressed, geometry
    sampson = vf.sampson_map(vf.fundamental_from_motion(K, motion), flow)
    road = vf.road_motion(flow, K, exclude, step=max(2, 2 * step // 3), reference=motion)
    if road is not None and plausible_road(road, motion):
        # Plane plus parallax: the ground cue takes the road's own motion, under which a static object's
        # ground contact moves exactly as the road's flow beside it, while the essential matrix errs by
        # a degree in the translation's direction, a quarter of a far object's flow near the focus of
        # expansion.
        speed = float(np.linalg.norm(road.motion[:3, 3]))
        motion = road.motion.copy()
        motion[:3, 3] /= speed
        plane: tuple[np.ndarray, float] | None = (road.normal, 1.0 / speed)
        geometry: CameraGeometry | None = CameraGeometry(motion, *plane)
    else:
        # No plausible road homography (DIS lost the road's flow, or the fit took a wall): the road plane
        # through the background points below the horizon, triangulated with the essential matrix. Its
        # scale differs from the road homography's, so the long-baseline cue does not chain this pair.
        lower = exclude.copy()
        lower[: int(K[1, 2]) + 2] = True
        x0, x1 = vf.background_correspondences(flow, lower, step=max(2, step // 2))
        depth = vf.triangulate_depth(x0, x1, K, motion)
        points = np.column_stack([(x0[:, 0] - K[0, 2]) / K[0, 0] * depth,
                                  (x0[:, 1] - K[1, 2]) / K[1, 1] * depth, depth])
        fitted = vf.fit_ground_plane(points)
        if fitted is not None and fitted[0][1] < 0:
            # The triangulated road lies above the camera: the essential matrix took a wrong solution, and
            # neither its epipolar lines nor its ground prediction can be trusted in this frame pair.
            return {}, suppressed, None
        plane = fitted[:2] if fitted is not None else None
        geometry = None
    if np.trace(motion[:3, :3]) < 1.0 + 2.0 * np.cos(MAX_TURN):
        # A camera all but stopped leaves the essential matrix's decomposition free to twist: no chaining.
        geometry = None
    cues = {}
    for track, mask in masks.items():
        cue = FlowCues(_robust(magnitude[mask]), sampson=_robust(sampson[mask]))
        pseudo = contact_depth(track, id_map, K, *plane) if plane is not None else None
        if pseudo is not None:
            rows, cols = np.nonzero(mask)
            box = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            K_box = K.copy()
            K_box[0, 2] -= cols.min()
            K_box[1, 2] -= rows.min()
            predicted, valid = vf.ego_flow(pseudo[box], K_box, motion)
            pixels = mask[box] & valid
            if pixels.sum() >= settings.min_pixels // 2:
                rotation = vf.rotation_flow(K_box, motion, *pixels.shape)
                cue.ground_residual = _robust(np.linalg.norm(flow[box][pixels] - predicted[pixels], axis=1))
                cue.ground_translational = _robust(np.linalg.norm(predicted[pixels] - rotation[pixels], axis=1))
                cue.ground_flow = _robust(np.linalg.norm(predicted[pixels], axis=1))
        cues[track] = cue
    return cues, suppressed, geometry


def flow_cue_score(cue: FlowCues, settings: ProposalSettings) -> float:
    """One frame's score of a track from its flow-only cues (1 = the decision line): each cue divided by
    the error expected of it, the larger one wins. DIS's error grows with the flow (`flow_relative`);
    the ground prediction's depth comes from a contact point on a fitted plane and only scales the
    translational part of the prediction (the rotation part is exact), so its tolerance follows that
    part (`ground_depth_error`: plane tilt, kerbs, hidden feet) plus DIS's error on the whole flow."""
    scale = settings.flow_noise_px + settings.flow_relative * cue.flow
    if cue.sampson is None:
        return cue.residual / scale if cue.residual is not None else float("nan")
    scores = [cue.sampson / scale]
    if cue.ground_residual is not None:
        expected = (settings.flow_noise_px + settings.ground_depth_error * cue.ground_translational
                    + settings.flow_error * cue.ground_flow)
        scores.append(cue.ground_residual / expected)
    return max(scores)


def decisive(cue: FlowCues, score: float) -> bool:
    """Whether a frame's flow-only score can decide either way. The epipolar cue sees no motion along
    the epipolar lines (a car driving ahead): without the ground cue (no road plane, or the track's
    contact with it hidden) a low score is no evidence that the track stands still; a high one is."""
    return cue.sampson is None or cue.ground_residual is not None or score >= 1.0


# --------------------------------------------------------------------------------------------------
# Long-baseline cue (flow mode)


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


# --------------------------------------------------------------------------------------------------
# Sequences


def sequence_mode(seq: MotionSequence, mode: str = "auto") -> str:
    """The mode a sequence runs in: "ego" needs intrinsics, poses and depth; "auto" picks ego when they
    exist, else "flow". Raises ValueError when "ego" is asked for and something is missing."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "flow":
        return "flow"
    missing = [name for name, value in (("intrinsics (calib)", seq.intrinsics), ("poses", seq.pose(0)),
                                        ("depth", seq.depth(0))) if value is None]
    if not missing:
        return "ego"
    if mode == "ego":
        raise ValueError(f"sequence {seq.name} in {seq.root}: ego mode needs {', '.join(missing)}, "
                         f"which it lacks; use --mode flow")
    return "flow"


def _frame_pairs(seq: MotionSequence, all_frames: bool) -> list[tuple[int, int]]:
    """(i, j) pairs: j = i + 1, or i - 1 for the last frame so that every frame gets a flow."""
    if seq.num_frames < 2:
        return []
    frames = range(seq.num_frames) if all_frames else sorted(set(seq.labelled_frames))
    return [(i, i + 1 if i + 1 < seq.num_frames else i - 1) for i in frames]


def _write_color_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the PNG")


def propose_sequence(seq: MotionSequence, mode: str = "auto", preset: str = PROPOSAL_PRESET,
                     settings: ProposalSettings | None = None, flow_dir: Path | None = None,
                     flow_max: float = DEFAULT_FLOW_MAX, on_frame: Callable[[], None] | None = None,
                     ) -> dict[int, Proposal]:
    """Proposals for every track of `seq`, keyed by track id (unsure tracks have label None).

    With `flow_dir`, the flow of every frame and its suppressed version are written as Middlebury colour
    PNGs (fixed scale: `flow_max` px = full saturation) to FLOWDIR/flow/<seq>/<frame:06d>.png and
    FLOWDIR/flow_suppressed/<seq>/<frame:06d>.png, frame = index in the sequence (flow from frame i to
    i+1; the last frame gets the negated flow to its predecessor). `on_frame` is called after each pair."""
    settings = settings or ProposalSettings()
    used = sequence_mode(seq, mode)
    estimator = vf.FlowEstimator(preset)
    tracks = seq.tracks()
    frame_scores: dict[int, dict[int, float]] = {t: {} for t in tracks}
    blind_scores: dict[int, dict[int, float]] = {t: {} for t in tracks}
    track_frames = {t: set(track.frames) for t, track in tracks.items()}
    labelled = set(seq.labelled_frames)
    K = seq.intrinsics if seq.intrinsics is not None else default_intrinsics(seq.height, seq.width)
    images: dict[int, np.ndarray] = {}
    # Flow mode's long-baseline cue: camera geometry of each frame pair (i, j) and each track's footprints.
    geometry: dict[int, tuple[int, CameraGeometry]] = {}
    prints: dict[int, dict[int, Footprint]] = {t: {} for t in tracks}

    def image(k: int) -> np.ndarray:
        if k not in images:
            images[k] = seq.read_image(k)
        return images[k]

    def pair_scores(i: int, j: int) -> tuple[dict[int, float], np.ndarray, np.ndarray, set[int]]:
        """Per-track scores of frame i against frame j, the flow i -> j, its suppressed version, and the
        tracks whose score is blind to motion along the epipolar lines (flow mode, see `decisive`)."""
        if used == "ego":
            T = vf.relative_pose(seq.pose(i), seq.pose(j))
            depth0 = seq.depth(i)
            if depth0 is None:
                raise ValueError(f"sequence {seq.name}: no depth for frame {i} ({seq.frame_names[i]})")
            ego, ego_valid = vf.ego_flow(depth0, seq.intrinsics, T)
            # Pixels without depth (sky) are taken at infinity for the prior only.
            prior = np.where(ego_valid[..., None], ego, vf.rotation_flow(seq.intrinsics, T, *ego.shape[:2]))
            flow = estimator.with_prior(image(i), image(j), prior)
        else:
            flow = estimator(image(i), image(j))
        id_map = seq.id_map(i)
        if used == "ego":
            # The prior is right for static things but wrong for a car that moves with the camera (it
            # then barely moves in the image while the prior, in a turn, shifts it by tens of pixels,
            # beyond what DIS corrects): each track keeps the flow that explains its pixels better.
            flow = best_flow_per_track(image(i), image(j), id_map, [flow, estimator(image(i), image(j))])
        landed = landing_ids(seq.id_map(j), flow) if j in labelled else None
        masks = track_masks(id_map, settings, landed)
        if used == "ego":
            depth1 = seq.depth(j)
            scores, suppressed = ego_scores(flow, masks, depth0, depth1, seq.intrinsics, T, settings)
            if depth1 is not None and j in labelled:
                for track, score in silhouette_scores(id_map, depth0, seq.id_map(j), depth1, seq.intrinsics, T,
                                                      settings).items():
                    if track in scores:
                        scores[track] = max(scores[track], score)
        else:
            kernel = np.ones((9, 9), np.uint8)
            exclude = cv2.dilate(((id_map > 0) | seq.crowd_mask(i)).astype(np.uint8), kernel) > 0
            cues, suppressed, pair_geometry = flow_only_cues(flow, id_map, masks, exclude, K, settings)
            if pair_geometry is not None:
                geometry[i] = (j, pair_geometry)
            for track, footprint in footprints(id_map).items():
                if track in prints:
                    prints[track][i] = footprint
            scores = {track: flow_cue_score(cue, settings) for track, cue in cues.items()}
            return scores, flow, suppressed, {track for track, cue in cues.items() if not decisive(cue, scores[track])}
        return scores, flow, suppressed, set()

    for i, j in _frame_pairs(seq, all_frames=flow_dir is not None):
        scores, flow, suppressed, blind = pair_scores(i, j)
        # Slow objects: over a longer gap (same camera-motion compensation) their own motion adds up
        # while the measuring error does not; tracks seen in both frames take that measurement. Not in
        # flow mode: there the road plane fitted over the longer gap errs by tens of per cent and parked
        # cars near the camera turn moving (measured on rendered streets).
        far = i + settings.long_gap
        if used == "ego" and far > j > i and far < seq.num_frames and far in labelled:
            scores.update(pair_scores(i, far)[0])
        for k in [k for k in images if k < min(i, j)]:
            del images[k]
        for track, score in scores.items():
            if track in frame_scores and i in track_frames[track] and np.isfinite(score):
                (blind_scores if track in blind else frame_scores)[track][i] = score
        if flow_dir is not None:
            sign = 1.0 if j > i else -1.0
            name = f"{i:06d}.png"
            _write_color_png(Path(flow_dir) / FLOW_SUBDIR / seq.name / name,
                             vf.flow_to_color(sign * flow, flow_max))
            _write_color_png(Path(flow_dir) / SUPPRESSED_SUBDIR / seq.name / name,
                             vf.flow_to_color(sign * suppressed, flow_max))
        if on_frame is not None:
            on_frame()
    steps = height_scaled_steps({i: g for i, (j, g) in geometry.items() if j == i + 1})
    normals = {i: g.normal for i, (_, g) in geometry.items() if g.normal is not None}
    normals.update(road_normals(normals, steps))
    # Frames without a road fit (a still camera triangulates nothing) take the sequence's typical road:
    # the camera's height and pitch over it hardly change.
    typical = np.median(list(normals.values()), axis=0) if normals else np.array([0.0, 1.0, 0.0])
    normals = {i: normals.get(i, typical / np.linalg.norm(typical)) for i in range(seq.num_frames)}
    proposals = {}
    for track, scores in frame_scores.items():
        long = None
        if used == "ego":
            label, score, confidence = aggregate_track(scores, settings)
        else:
            # Frames whose only cue is blind to motion along the epipolar lines cannot show that a track
            # stands still; they decide only for tracks that have no other frames.
            scores = scores or blind_scores[track]
            label, score, confidence = median_vote(scores, settings)
            long = long_baseline_cue(prints[track], steps, normals, K, settings)
            # A far object's slow motion (along the epipolar lines, or a fraction of a pixel sideways per
            # frame) adds up over its frames, where per frame pair it drowns in the flow's noise.
            if long is not None and long.score >= settings.long_vote and long.visible < settings.long_far:
                label = "moving"
        proposals[track] = Proposal(track, label, score, confidence, used, scores, long)
    return proposals


def apply_proposals(labels: MotionLabels, seq_name: str, proposals: dict[int, Proposal]) -> dict[str, int]:
    """Write proposals into `labels` (source "proposal", score = fraction of moving frames). Manual and
    simulator labels are never touched; an earlier proposal is replaced, or removed when the track is
    now unsure. Returns counts: moving, static, unsure, kept (labels left alone)."""
    counts = {"moving": 0, "static": 0, "unsure": 0, "kept": 0}
    for track, proposal in proposals.items():
        current = labels.get(seq_name, track)
        if current is not None and current.source != "proposal":
            counts["kept"] += 1
            continue
        if proposal.label is None:
            counts["unsure"] += 1
            if current is not None:
                labels.remove(seq_name, track)
            continue
        counts[proposal.label] += 1
        labels.set(seq_name, track, proposal.label, source="proposal", score=round(proposal.score, 4))
    return counts


def _count_pairs(seq: MotionSequence, all_frames: bool) -> int:
    return len(_frame_pairs(seq, all_frames))


def run_proposals(root: str | Path, sequences: Sequence[str] | None = None, labels_path: str | Path | None = None,
                  flow_dir: str | Path | None = None, preset: str = PROPOSAL_PRESET, mode: str = "auto",
                  progress: bool = True, on_progress: ProgressCallback | None = None,
                  settings: ProposalSettings | None = None, flow_max: float = DEFAULT_FLOW_MAX) -> dict:
    """Propose labels for the sequences of the dataset at `root` (default: all of them) and save them to
    `labels_path` (default ROOT/motion_labels.json), keeping every manual label. `on_progress(done, total)`
    is called after each frame pair (for a GUI); `progress` shows a tqdm bar. Returns a summary dict:
    sequences, modes (per sequence), moving, static, unsure, kept, labels_path, flow_dir."""
    root = Path(root)
    available = list_sequences(root)
    if sequences is None:
        names = available or [open_sequence(root).name]
    else:
        names = list(sequences)
        unknown = [n for n in names if available and n not in available]
        if unknown:
            raise ValueError(f"{root}: no sequence {unknown[0]!r} (found: {', '.join(available)})")
    opened = [open_sequence(root, name) for name in names]
    labels_path = Path(labels_path) if labels_path is not None else root / LABELS_FILE
    labels = MotionLabels.load(labels_path) if labels_path.exists() else MotionLabels.new(opened[0].dataset)
    if labels.dataset != opened[0].dataset:
        raise ValueError(f"{labels_path}: labels of dataset {labels.dataset!r}, but {root} is {opened[0].dataset!r}")
    modes = {seq.name: sequence_mode(seq, mode) for seq in opened}
    total = sum(_count_pairs(seq, flow_dir is not None) for seq in opened)
    done = 0
    bar = tqdm(total=total, desc="proposals", unit="frame", disable=not progress)

    def step() -> None:
        nonlocal done
        done += 1
        bar.update(1)
        if on_progress is not None:
            on_progress(done, total)

    summary = {"sequences": len(opened), "modes": modes, "moving": 0, "static": 0, "unsure": 0, "kept": 0,
               "labels_path": str(labels_path), "flow_dir": str(flow_dir) if flow_dir is not None else None}
    try:
        for seq in opened:
            bar.set_postfix_str(f"{seq.name} ({modes[seq.name]})")
            proposals = propose_sequence(seq, modes[seq.name], preset, settings,
                                         Path(flow_dir) if flow_dir is not None else None, flow_max, step)
            for key, value in apply_proposals(labels, seq.name, proposals).items():
                summary[key] += value
    finally:
        bar.close()
    labels.save(labels_path)
    return summary


# --------------------------------------------------------------------------------------------------
# Command line


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `propose` subcommand to `vca-annotate`."""
    parser = subparsers.add_parser(
        "propose", help="propose moving/static labels for every track from optical flow",
        description="Compute motion-cue proposals for the tracks of a KITTI-MOTS or Cityscapes-VPS "
                    "dataset and write them into DIR/motion_labels.json with source 'proposal' and a "
                    "score (fraction of the track's frames judged moving). Manual labels are never "
                    "overwritten; tracks without clear evidence are left unlabelled. A track is moving "
                    "if it moved while seen: in ego mode 3 consecutive moving frames suffice. Modes: 'ego' uses "
                    "depth (DIR/depth/<seq>/<frame>.png, metres*256), intrinsics (DIR/calib/<seq>.json) "
                    "and poses (DIR/poses/<seq>.txt) to measure each object's 3-D motion and how its "
                    "mask moves against a static object's; 'flow' needs "
                    "only the images (RANSAC background fit, Sampson distance to the camera's epipolar "
                    "geometry, the flow a static object standing on the road would have, and over each "
                    "track's frames where its mask would be if it stood still since an earlier frame; K "
                    "from DIR/calib when present); 'auto' uses ego where those files exist.",
        epilog="With --flow-dir FLOWDIR the flow of every frame is also saved as a Middlebury colour PNG, "
               "in the layout VCANet reads: FLOWDIR/flow/<seq>/<frame:06d>.png (flow from frame i to "
               "i+1) and FLOWDIR/flow_suppressed/<seq>/<frame:06d>.png (ego flow subtracted), where "
               "frame is the index in the sequence and the last frame holds the negated flow to its "
               "predecessor. Colours use one fixed scale, --flow-max px = full saturation. Tracks too small to "
               "measure (no frame with 20 pixels left after eroding the mask, objects of about 8x8 px or less) "
               "stay unlabelled; benchmarks/bench_proposals.py reports accuracy over all tracks and over "
               "measurable ones (median visible mask area >= 64 px).")
    parser.add_argument("dir", type=Path, metavar="DIR", help="dataset folder (KITTI-MOTS root or "
                        "Cityscapes-VPS root/split)")
    parser.add_argument("--sequence", action="append", dest="sequences", metavar="S",
                        help="only this sequence (repeatable; KITTI: 0002, Cityscapes-VPS: val/0005); default all")
    parser.add_argument("--mode", choices=MODES, default="auto", help="motion cue (default auto)")
    parser.add_argument("--flow-dir", type=Path, metavar="FLOWDIR",
                        help="also store flow and suppressed flow colour PNGs here (see below)")
    parser.add_argument("--preset", choices=sorted(vf.DIS_PRESETS), default=PROPOSAL_PRESET,
                        help=f"DIS optical-flow preset (default {PROPOSAL_PRESET}; fast is ~3x quicker but "
                             "blurs small objects)")
    parser.add_argument("--flow-max", type=float, default=DEFAULT_FLOW_MAX, metavar="PX",
                        help=f"flow magnitude drawn at full saturation in the PNGs (default {DEFAULT_FLOW_MAX})")
    parser.add_argument("--labels", type=Path, help=f"labels file to update (default DIR/{LABELS_FILE})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_propose_command)
    return parser


def _propose_command(args: argparse.Namespace) -> int:
    if args.flow_max <= 0:
        print(f"vca-annotate propose: --flow-max must be positive, got {args.flow_max}")
        return 2
    if not args.dir.is_dir():
        print(f"vca-annotate propose: {args.dir}: no such folder")
        return 2
    try:
        summary = run_proposals(args.dir, args.sequences, args.labels, args.flow_dir, args.preset, args.mode,
                                progress=not args.quiet, flow_max=args.flow_max)
    except ValueError as exc:
        print(f"vca-annotate propose: {exc}")
        return 1
    modes = sorted(set(summary["modes"].values()))
    where = summary["labels_path"] + (f"; flow PNGs in {summary['flow_dir']}" if summary["flow_dir"] else "")
    print(f"{summary['sequences']} sequence(s), {'/'.join(modes)} mode: {summary['moving']} moving, "
          f"{summary['static']} static, {summary['unsure']} unsure, {summary['kept']} manual labels kept "
          f"-> {where}")
    return 0
