"""Ego mode's cues (depth, intrinsics, poses): a track moves when its 3-D motion in metres, the camera's
removed, is beyond what static scenery shows (scene flow: near and far on one scale, motion along epipolar
lines seen), or when its mask does not land where a static one's would (silhouettes: textureless objects)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from annotator.proposals.masks import median_or_nan
from annotator.proposals.settings import ProposalSettings
from vca_data import flow as vf


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
        scores[track] = median_or_nan(magnitude[pixels]) / (threshold + median_or_nan(ego_metres[pixels]))
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
