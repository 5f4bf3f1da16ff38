"""Flow mode's per-pair cues (images only): a track moves when its flow leaves the background's epipolar
geometry, or the flow it would have standing still where it touches the road, whose motion and plane come
from the road's own homography (plane plus parallax: the essential matrix errs near the focus of expansion)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotator.proposals.masks import median_or_nan
from annotator.proposals.settings import ProposalSettings
from vca_data import flow as vf

# The most a driving camera turns between frames (radians; 6 degrees): larger rotations are fitting errors.
MAX_TURN = 0.1
# Flow mode: a road homography is plausible when its plane tilts by at most this from the camera's
# vertical axis (a car camera looks level along the road it stands on: a larger tilt is a wall or a
# fit gone wrong; 5 degrees) and its translation points within this of the essential matrix's (10 degrees).
MAX_ROAD_TILT = 0.087
MAX_ROAD_DISAGREEMENT = 0.175


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
        if median_or_nan(magnitude[~exclude]) < 0.1:
            # A still camera (waiting at a light): only its rotation, K^-1 H K, moves the image.
            u, _, vt = np.linalg.svd(np.linalg.solve(K, background.homography @ K))
            still = np.eye(4)
            still[:3, :3] = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt  # nearest rotation
            geometry = CameraGeometry(still)
        return {track: FlowCues(median_or_nan(magnitude[mask]), residual=median_or_nan(full_residual[mask]))
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
        cue = FlowCues(median_or_nan(magnitude[mask]), sampson=median_or_nan(sampson[mask]))
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
                cue.ground_residual = median_or_nan(np.linalg.norm(flow[box][pixels] - predicted[pixels], axis=1))
                cue.ground_translational = median_or_nan(np.linalg.norm(predicted[pixels] - rotation[pixels], axis=1))
                cue.ground_flow = median_or_nan(np.linalg.norm(predicted[pixels], axis=1))
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
