"""From a track's per-frame scores to its label. Ego mode: hysteresis into moving/static frame states, the
fraction of moving frames, and three consecutive moving frames enough (it moved while seen). Flow mode,
whose per-frame evidence flips too often for hysteresis: the median score. No clear majority: unsure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from annotator.proposals.settings import ProposalSettings


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
