"""`vca-annotate propose`: the command-line layer over `run_proposals` (its arguments and their help, the
checks of what the user passed, a one-line summary); everything it computes lives in the modules below."""

from __future__ import annotations

import argparse
from pathlib import Path

from annotator.proposals.sequences import (
    DEFAULT_FLOW_MAX,
    DEFAULT_SUPPRESSED_MAX,
    LABELS_FILE,
    MODES,
    PROPOSAL_PRESET,
    run_proposals,
)
from vca_data import flow as vf


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
               "predecessor. Colours use fixed scales: --flow-max px = full saturation for the flow, --suppressed-max px for the "
               "suppressed flow (finer: a moving object's residual is a few pixels). Tracks too small to "
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
                        help=f"flow magnitude drawn at full saturation in the flow PNGs (default {DEFAULT_FLOW_MAX})")
    parser.add_argument("--suppressed-max", type=float, default=DEFAULT_SUPPRESSED_MAX, metavar="PX",
                        help="suppressed-flow magnitude drawn at full saturation in the flow_suppressed PNGs "
                             f"(default {DEFAULT_SUPPRESSED_MAX})")
    parser.add_argument("--labels", type=Path, help=f"labels file to update (default DIR/{LABELS_FILE})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_propose_command)
    return parser


def _propose_command(args: argparse.Namespace) -> int:
    for flag, value in (("--flow-max", args.flow_max), ("--suppressed-max", args.suppressed_max)):
        if not value > 0:
            print(f"vca-annotate propose: {flag} must be positive, got {value}")
            return 2
    if not args.dir.is_dir():
        print(f"vca-annotate propose: {args.dir}: no such folder")
        return 2
    try:
        summary = run_proposals(args.dir, args.sequences, args.labels, args.flow_dir, args.preset, args.mode,
                                progress=not args.quiet, flow_max=args.flow_max,
                                suppressed_max=args.suppressed_max)
    except ValueError as exc:
        print(f"vca-annotate propose: {exc}")
        return 1
    modes = sorted(set(summary["modes"].values()))
    where = summary["labels_path"] + (f"; flow PNGs in {summary['flow_dir']}" if summary["flow_dir"] else "")
    print(f"{summary['sequences']} sequence(s), {'/'.join(modes)} mode: {summary['moving']} moving, "
          f"{summary['static']} static, {summary['unsure']} unsure, {summary['kept']} manual labels kept "
          f"-> {where}")
    return 0
