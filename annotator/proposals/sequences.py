"""The per-sequence loop and the labels it writes: which mode a sequence runs in, the flow of each frame
pair (optionally saved as colour PNGs in VCANet's layout), the cues' per-frame scores, one label per track,
and motion_labels.json updated with source "proposal", never touching a manual or simulator label."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from annotator.proposals.aggregation import aggregate_track, median_vote
from annotator.proposals.ego_cues import best_flow_per_track, ego_scores, silhouette_scores
from annotator.proposals.flow_cues import (
    CameraGeometry,
    decisive,
    default_intrinsics,
    flow_cue_score,
    flow_only_cues,
)
from annotator.proposals.long_baseline import (
    Footprint,
    LongBaseline,
    footprints,
    height_scaled_steps,
    long_baseline_cue,
    road_normals,
)
from annotator.proposals.masks import landing_ids, track_masks
from annotator.proposals.settings import ProposalSettings
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
# The suppressed flow gets its own, finer scale: what is left after subtracting the ego flow is a few
# pixels on a moving object (measured on the offline world's motion exports at 10 fps: median 0.5 px,
# a quarter of the moving objects above 1 px, static objects 0.24 px), which at the raw flow's 30 px
# would be drawn all but white and so be invisible to a network reading the PNGs.
DEFAULT_SUPPRESSED_MAX = 4.0
# Proposals run offline: the slower DIS preset resolves small, far objects that "fast" blurs away.
PROPOSAL_PRESET = "medium"

ProgressCallback = Callable[[int, int], None]


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


#: Beside each sequence's colour PNGs: {"max_px": the magnitude drawn at full saturation}, so that a
#: reader (VCANet's flow cache) can tell PNGs of another scale. Folders without it hold 30 px PNGs
#: (DEFAULT_FLOW_MAX), the one scale written before the file existed.
FLOW_SCALE_FILE = "scale.json"


def write_flow_scale(folder: Path, max_px: float) -> None:
    """Record the colour scale of the flow PNGs in `folder` (one sequence's)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / FLOW_SCALE_FILE, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps({"max_px": float(max_px)}) + "\n")


def read_flow_scale(folder: Path) -> float:
    """The colour scale (px at full saturation) of the flow PNGs in `folder` (see FLOW_SCALE_FILE)."""
    path = Path(folder) / FLOW_SCALE_FILE
    if not path.is_file():
        return DEFAULT_FLOW_MAX
    try:
        value = float(json.loads(path.read_text())["max_px"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected {{\"max_px\": <positive number>}} ({e})") from None
    if not value > 0:
        raise ValueError(f"{path}: max_px must be positive, got {value}")
    return value


def _write_color_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the PNG")


def propose_sequence(seq: MotionSequence, mode: str = "auto", preset: str = PROPOSAL_PRESET,
                     settings: ProposalSettings | None = None, flow_dir: Path | None = None,
                     flow_max: float = DEFAULT_FLOW_MAX, on_frame: Callable[[], None] | None = None,
                     suppressed_max: float = DEFAULT_SUPPRESSED_MAX) -> dict[int, Proposal]:
    """Proposals for every track of `seq`, keyed by track id (unsure tracks have label None).

    With `flow_dir`, the flow of every frame and its suppressed version are written as Middlebury colour
    PNGs (fixed scales: `flow_max` px = full saturation for the flow, `suppressed_max` px for the
    suppressed flow) to FLOWDIR/flow/<seq>/<frame:06d>.png and FLOWDIR/flow_suppressed/<seq>/<frame:06d>.png, frame = index in the sequence (flow from frame i to
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
                             vf.flow_to_color(sign * suppressed, suppressed_max))
        if on_frame is not None:
            on_frame()
    if flow_dir is not None:
        write_flow_scale(Path(flow_dir) / FLOW_SUBDIR / seq.name, flow_max)
        write_flow_scale(Path(flow_dir) / SUPPRESSED_SUBDIR / seq.name, suppressed_max)
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
                  settings: ProposalSettings | None = None, flow_max: float = DEFAULT_FLOW_MAX,
                  suppressed_max: float = DEFAULT_SUPPRESSED_MAX) -> dict:
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
                                         Path(flow_dir) if flow_dir is not None else None, flow_max, step,
                                         suppressed_max)
            for key, value in apply_proposals(labels, seq.name, proposals).items():
                summary[key] += value
    finally:
        bar.close()
    labels.save(labels_path)
    return summary
