"""Writing the labels of a dataset in a release format (COCO JSON, KITTI-MOTS motion txt, colour PNGs),
with or without the proposals nobody has accepted: shared by `vca-annotate export` and the window's
Export menu, which both import it from here. No Qt."""

from __future__ import annotations

import copy
from pathlib import Path

from vca_data.formats.motion_labels import MotionLabels, export_coco, export_color_pngs, export_kitti_motion

EXPORT_FORMATS = ("coco", "kitti-mots", "png")


def confirmed_only(labels: MotionLabels) -> MotionLabels:
    """A copy of `labels` without unaccepted proposals."""
    kept = MotionLabels.new(labels.dataset)
    for seq, entries in labels.sequences.items():
        chosen = {tid: copy.deepcopy(e) for tid, e in entries.items() if e.source != "proposal"}
        if chosen:
            kept.sequences[seq] = chosen
    return kept


def run_export(labels: MotionLabels, root: Path, fmt: str, out: Path,
               sequences: list[str] | None = None) -> str:
    """Export `labels` (made on the dataset at `root`) in `fmt`; returns a one-line summary."""
    if fmt == "coco":
        path = export_coco(labels, root, out, sequences=sequences)
        return f"wrote COCO motion annotations of {sum(len(e) for e in labels.sequences.values())} tracks to {path}"
    if fmt == "kitti-mots":
        paths = export_kitti_motion(labels, root, out)
        return f"wrote {len(paths)} KITTI-MOTS motion txt file(s) to {out}"
    if fmt == "png":
        count = export_color_pngs(labels, root, out)
        return f"wrote {count} colour PNG(s) to {out}"
    raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
