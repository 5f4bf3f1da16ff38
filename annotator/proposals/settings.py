"""The thresholds of the proposals, one dataclass shared by every cue and the aggregation. Per-frame
scores are normalised so that 1 is each cue's decision line: cues measured in metres, pixels or log depth
then combine by taking the larger, and one hysteresis serves them all."""

from __future__ import annotations

from dataclasses import dataclass


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
