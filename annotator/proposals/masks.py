"""Which pixels of a track a frame pair measures, in both modes: its mask eroded (DIS smears motion across
object boundaries) and kept only where the flow lands on the same track in the next frame (occluded and
out-of-view parts carry wrong flow); tracks with too little left give no score in that frame."""

from __future__ import annotations

import cv2
import numpy as np

from annotator.proposals.settings import ProposalSettings
from vca_data import flow as vf


def median_or_nan(values: np.ndarray) -> float:
    """Median of `values`; NaN (no measurement) when there are none."""
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
