"""`vca-annotate`: open the annotator window on a sequence folder, or run its batch subcommands
(`propose`: motion-cue proposals; `export`: write the labels as COCO JSON, KITTI-MOTS motion txt or
colour PNGs). Qt is imported only when the window is opened."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from annotator.config import USER_CONFIG, ConfigError, load_shortcuts
from annotator.exports import EXPORT_FORMATS, confirmed_only, run_export
from annotator.session import LABELS_FILE, AnnotationSession, SessionError
from vca_data.formats.folders import list_sequences
from vca_data.formats.motion_labels import MotionLabels, MotionLabelsError

SUBCOMMANDS = ("propose", "export")


def build_gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vca-annotate",
        description="Label every instance track of a KITTI-MOTS or Cityscapes-VPS sequence as moving, static "
                    "or ignore. Labels are saved to DIR/motion_labels.json after every change.",
        epilog="Subcommands: `vca-annotate propose DIR` computes motion-cue proposals; "
               "`vca-annotate export DIR --format coco|kitti-mots|png --out OUT` writes the labels. "
               "Run `vca-annotate propose --help` or `vca-annotate export --help` for their options. "
               "Keys: press F1 in the window.",
    )
    parser.add_argument("dir", nargs="?", type=Path, metavar="SEQUENCE_DIR",
                        help="KITTI-MOTS root (image_02/ or training/image_02/), KITTI-MOTS image folder "
                             "(image_02/<seq>), or Cityscapes-VPS root/split folder; empty: open from the menu")
    parser.add_argument("--sequence", "-s", help="sequence to open (KITTI: 0002; Cityscapes-VPS: val/0005); "
                                                 "default: the first")
    parser.add_argument("--labels", type=Path,
                        help=f"labels file to edit (default: SEQUENCE_DIR/{LABELS_FILE})")
    parser.add_argument("--config", type=Path,
                        help=f"YAML key map overriding the defaults (default: {USER_CONFIG} when it exists); "
                             "format: `shortcuts: {{label_moving: [M], ...}}`")
    return parser


def build_command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vca-annotate", description="Batch commands of the annotator.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    # The flow stack is heavy: only loaded for the subcommands.
    from annotator.proposals.command import register

    register(subparsers)
    export = subparsers.add_parser(
        "export", help="write motion labels as COCO JSON, KITTI-MOTS motion txt or colour PNGs",
        description="Write DIR's motion_labels.json in a release format. coco: one COCO instance JSON "
                    "(categories moving=1, static=2, RLE masks, track ids kept; OUT is the .json file). "
                    "kitti-mots: one txt per sequence in KITTI-MOTS form with the motion class "
                    "(OUT is a folder). png: colour PNGs, red moving, blue static (OUT is a folder). "
                    "Unconfirmed proposals are left out unless --include-proposals.")
    export.add_argument("dir", type=Path, metavar="DIR", help="the dataset folder the labels were made on")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="fmt")
    export.add_argument("--out", required=True, type=Path, help="output file (coco) or folder")
    export.add_argument("--labels", type=Path, help=f"labels file (default: DIR/{LABELS_FILE})")
    export.add_argument("--sequence", action="append", dest="sequences",
                        help="only this sequence (repeatable; coco only)")
    export.add_argument("--include-proposals", action="store_true",
                        help="also export proposals nobody has accepted yet")
    export.set_defaults(func=_export_command)
    return parser


def _export_command(args: argparse.Namespace) -> int:
    root: Path = args.dir
    if not root.is_dir() or not list_sequences(root):
        print(f"vca-annotate export: {root}: not a KITTI-MOTS or Cityscapes-VPS dataset folder", file=sys.stderr)
        return 2
    labels_path = args.labels or root / LABELS_FILE
    if not labels_path.is_file():
        print(f"vca-annotate export: {labels_path}: no labels file (label the sequences with "
              f"`vca-annotate {root}` first, or pass --labels)", file=sys.stderr)
        return 2
    try:
        labels = MotionLabels.load(labels_path)
    except (MotionLabelsError, ValueError) as exc:
        print(f"vca-annotate export: {labels_path}: {exc}", file=sys.stderr)
        return 2
    if args.sequences and args.fmt != "coco":
        print("vca-annotate export: --sequence only applies to --format coco", file=sys.stderr)
        return 2
    if not args.include_proposals:
        labels = confirmed_only(labels)
    try:
        summary = run_export(labels, root, args.fmt, args.out, args.sequences)
    except (OSError, ValueError) as exc:
        print(f"vca-annotate export: {exc}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def _run_gui(args: argparse.Namespace) -> int:
    from annotator.app import check_shortcuts, run_app  # Qt only on the GUI branch

    try:
        shortcuts = load_shortcuts(args.config)
        check_shortcuts(shortcuts)
    except ConfigError as exc:
        print(f"vca-annotate: {exc}", file=sys.stderr)
        return 2
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        print("vca-annotate: no display found (DISPLAY is not set); run it in a desktop session, "
              "or under `xvfb-run vca-annotate ...`", file=sys.stderr)
        return 2
    session = None
    if args.dir is not None:
        try:
            session = AnnotationSession.open(args.dir, args.sequence, args.labels)
        except SessionError as exc:
            print(f"vca-annotate: {exc}", file=sys.stderr)
            return 2
        if session.message:
            print(f"vca-annotate: {session.message}", file=sys.stderr)
    code = run_app(session, shortcuts)
    labelled, total = session.progress() if session is not None else (0, 0)
    if session is not None:
        print(f"{labelled} / {total} tracks of {session.name} labelled; labels in {session.labels_path}")
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A subcommand name first selects the batch parser; anything else is the GUI's optional folder.
    # (argparse cannot mix subparsers with an optional positional.)
    if argv and argv[0] in SUBCOMMANDS:
        args = build_command_parser().parse_args(argv)
        return int(args.func(args))
    return _run_gui(build_gui_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
