"""The motion labels of the VCA motion track: one `motion_labels.json` per dataset holding, per sequence
and track, `moving` / `static` / `ignore`, where the label came from, and frame ranges that override it;
and the exports of those labels: COCO instance JSON (VCA release form), KITTI-MOTS-style motion txt,
and colour PNGs.

File schema (version 1)::

    {"format": "vca-motion-labels", "version": 1, "dataset": "kitti-mots",
     "sequences": {"0002": {"1003": {"label": "moving", "source": "manual", "score": null,
                                     "ranges": [{"start": 10, "end": 24, "label": "static"}]}}}}

Track ids are JSON object keys (strings) in the file and ints in memory. Ranges are inclusive frame
indices (positions in the sequence, not file numbers); where ranges overlap the later one wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vca_data.formats import coco
from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.sequence import MotionSequence
from vca_data.io import atomic_path, atomic_write_json, atomic_write_text

FORMAT = "vca-motion-labels"
VERSION = 1
LABELS = ("moving", "static", "ignore")
SOURCES = ("manual", "proposal", "simulator")

#: COCO categories of the VCA release.
COCO_CATEGORIES = [{"id": 1, "name": "moving", "supercategory": "motion"},
                   {"id": 2, "name": "static", "supercategory": "motion"}]
CATEGORY_ID = {"moving": 1, "static": 2}
#: KITTI-MOTS motion txt classes: 1 moving, 2 static, 10 ignore.
MOTION_CLASS = {"moving": 1, "static": 2}
#: Colours of the PNG export (RGB).
COLORS = {"moving": (255, 0, 0), "static": (0, 0, 255)}
OVERLAY_ALPHA = 0.5


class MotionLabelsError(ValueError):
    """A motion labels file or value that breaks the schema; the message names the file and field."""


@dataclass
class FrameRange:
    """Inclusive range of frame indices where `label` overrides the track label."""

    start: int
    end: int
    label: str


@dataclass
class TrackLabel:
    label: str
    source: str
    score: float | None = None
    ranges: list[FrameRange] = field(default_factory=list)


def _check_label(label: object, where: str) -> str:
    if label not in LABELS:
        raise MotionLabelsError(f"{where}: expected one of {', '.join(LABELS)}, got {label!r}")
    return label  # type: ignore[return-value]


def _check_source(source: object, where: str) -> str:
    if source not in SOURCES:
        raise MotionLabelsError(f"{where}: expected one of {', '.join(SOURCES)}, got {source!r}")
    return source  # type: ignore[return-value]


def _check_score(score: object, where: str) -> float | None:
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise MotionLabelsError(f"{where}: expected a finite number or null, got {score!r}")
    return float(score)


def _check_frame(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MotionLabelsError(f"{where}: expected a frame index >= 0, got {value!r}")
    return value


def _parse_range(obj: object, where: str) -> FrameRange:
    if not isinstance(obj, dict) or set(obj) != {"start", "end", "label"}:
        raise MotionLabelsError(f"{where}: expected {{\"start\", \"end\", \"label\"}}, got {obj!r}")
    start = _check_frame(obj["start"], f"{where}.start")
    end = _check_frame(obj["end"], f"{where}.end")
    if end < start:
        raise MotionLabelsError(f"{where}: end {end} before start {start}")
    return FrameRange(start, end, _check_label(obj["label"], f"{where}.label"))


def _parse_track(obj: object, where: str) -> TrackLabel:
    if not isinstance(obj, dict):
        raise MotionLabelsError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = set(obj) - {"label", "source", "score", "ranges"}
    if unknown:
        raise MotionLabelsError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("label", "source"):
        if key not in obj:
            raise MotionLabelsError(f"{where}: missing field {key!r}")
    ranges = obj.get("ranges", [])
    if not isinstance(ranges, list):
        raise MotionLabelsError(f"{where}.ranges: expected a list")
    return TrackLabel(
        _check_label(obj["label"], f"{where}.label"),
        _check_source(obj["source"], f"{where}.source"),
        _check_score(obj.get("score"), f"{where}.score"),
        [_parse_range(r, f"{where}.ranges[{k}]") for k, r in enumerate(ranges)],
    )


class MotionLabels:
    """Moving/static/ignore labels of the tracks of a dataset's sequences."""

    def __init__(self, dataset: str, sequences: dict[str, dict[int, TrackLabel]] | None = None):
        self.dataset = dataset
        self.sequences: dict[str, dict[int, TrackLabel]] = sequences if sequences is not None else {}

    def __repr__(self) -> str:
        n = sum(len(t) for t in self.sequences.values())
        return f"MotionLabels(dataset={self.dataset!r}, sequences={len(self.sequences)}, tracks={n})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MotionLabels) and self.dataset == other.dataset
                and self.sequences == other.sequences)

    @classmethod
    def new(cls, dataset: str) -> MotionLabels:
        return cls(dataset)

    @classmethod
    def from_dict(cls, obj: object, name: str = "<motion labels>") -> MotionLabels:
        if not isinstance(obj, dict):
            raise MotionLabelsError(f"{name}: expected a JSON object at the top level")
        if obj.get("format") != FORMAT:
            raise MotionLabelsError(f"{name}: format: expected {FORMAT!r}, got {obj.get('format')!r}")
        if obj.get("version") != VERSION:
            raise MotionLabelsError(f"{name}: version: expected {VERSION}, got {obj.get('version')!r} "
                                    f"(this toolkit reads version {VERSION})")
        dataset = obj.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise MotionLabelsError(f"{name}: dataset: expected a non-empty string, got {dataset!r}")
        sequences = obj.get("sequences")
        if not isinstance(sequences, dict):
            raise MotionLabelsError(f"{name}: sequences: expected an object of sequence name -> tracks")
        result: dict[str, dict[int, TrackLabel]] = {}
        for seq, tracks in sequences.items():
            if not isinstance(tracks, dict):
                raise MotionLabelsError(f"{name}: sequences.{seq}: expected an object of track id -> label")
            parsed = {}
            for key, value in tracks.items():
                try:
                    track = int(key)
                except ValueError:
                    raise MotionLabelsError(f"{name}: sequences.{seq}.{key}: track id is not an integer") from None
                parsed[track] = _parse_track(value, f"{name}: sequences.{seq}.{key}")
            result[seq] = parsed
        return cls(dataset, result)

    @classmethod
    def load(cls, path: Path) -> MotionLabels:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MotionLabelsError(f"{path}: not JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise MotionLabelsError(f"{path}: not UTF-8 text: {e.reason}") from None
        return cls.from_dict(obj, str(path))

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dataset": self.dataset,
            "sequences": {
                seq: {
                    str(track): {
                        "label": t.label, "source": t.source, "score": t.score,
                        "ranges": [{"start": r.start, "end": r.end, "label": r.label} for r in t.ranges],
                    }
                    for track, t in sorted(tracks.items())
                }
                for seq, tracks in sorted(self.sequences.items())
            },
        }

    def save(self, path: Path) -> None:
        """Write the labels atomically (a crash never leaves a half-written file)."""
        atomic_write_json(path, self.to_dict())

    def get(self, seq: str, track: int) -> TrackLabel | None:
        return self.sequences.get(seq, {}).get(int(track))

    def set(self, seq: str, track: int, label: str, source: str = "manual", score: float | None = None) -> None:
        """Set the track label (frame ranges already set for the track are kept)."""
        where = f"{seq}/{track}"
        label = _check_label(label, f"{where}: label")
        source = _check_source(source, f"{where}: source")
        score = _check_score(score, f"{where}: score")
        tracks = self.sequences.setdefault(seq, {})
        old = tracks.get(int(track))
        tracks[int(track)] = TrackLabel(label, source, score, old.ranges if old else [])

    def add_range(self, seq: str, track: int, start: int, end: int, label: str) -> None:
        """Override the label of a labelled track on frames start..end (inclusive)."""
        current = self.get(seq, track)
        if current is None:
            raise MotionLabelsError(f"{seq}/{track}: label the track before adding frame ranges")
        where = f"{seq}/{track}: range"
        current.ranges.append(_parse_range({"start": start, "end": end, "label": label}, where))

    def remove(self, seq: str, track: int) -> None:
        tracks = self.sequences.get(seq, {})
        tracks.pop(int(track), None)
        if not tracks:
            self.sequences.pop(seq, None)

    def label_at(self, seq: str, track: int, frame: int) -> str | None:
        """Label of a track in one frame: the last range covering the frame, else the track label."""
        t = self.get(seq, track)
        if t is None:
            return None
        for r in reversed(t.ranges):
            if r.start <= frame <= r.end:
                return r.label
        return t.label


# ---------------------------------------------------------------------------------------------------
# Exports


def _export_sequences(labels: MotionLabels, root: Path, sequences: list[str] | None) -> Iterator[MotionSequence]:
    available = list_sequences(root)
    names = sorted(labels.sequences) if sequences is None else list(sequences)
    for name in names:
        if name not in available:
            raise MotionLabelsError(f"{root}: no sequence {name!r} for the labels (found: {', '.join(available)})")
        yield open_sequence(root, name)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def export_coco(labels: MotionLabels, root: Path, out: Path, sequences: list[str] | None = None) -> Path:
    """COCO instance JSON in the VCA release form: categories moving = 1 and static = 2, one image per
    labelled frame (`file_name` relative to `root`), one annotation per labelled instance with its RLE
    mask (counts as a string), `track_id`, `sequence` and original `category_name`. Instances labelled
    `ignore`, unlabelled tracks and crowd regions are left out. Written atomically; returns `out`."""
    images, annotations = [], []
    seqs = list(_export_sequences(labels, root, sequences))
    for seq in seqs:
        for i in tqdm(seq.labelled_frames, desc=f"coco {seq.name}", leave=False):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": _relative(seq.image_path(i), root),
                           "height": seq.height, "width": seq.width, "sequence": seq.name, "frame": i})
            for inst in seq.instances(i):
                state = None if inst.crowd else labels.label_at(seq.name, inst.track_id, i)
                if state not in CATEGORY_ID:
                    continue
                rle = {"size": list(inst.rle["size"]), "counts": inst.rle["counts"]}
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_ID[state],
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": coco.rle_area(rle), "bbox": coco.rle_bbox(rle), "iscrowd": 0,
                    "track_id": inst.track_id, "sequence": seq.name, "category_name": inst.category,
                })
    data = {"info": {"description": f"VCA motion labels of {labels.dataset}", "version": str(VERSION)},
            "images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    atomic_write_json(out, data, indent=None)
    return Path(out)


def export_kitti_motion(labels: MotionLabels, root: Path, out_dir: Path) -> list[Path]:
    """KITTI-MOTS-style motion txt per sequence, `out_dir/<seq>.txt` (a `/` in a sequence name becomes
    `_`), same line format as KITTI-MOTS with motion classes: class 1 = moving, 2 = static, and
    obj_id = class*1000 + instance, where `instance` (1..999) numbers the sequence's labelled tracks in
    track id order, so a track keeps its instance when a frame range changes its class. Tracks labelled
    `ignore`, unlabelled tracks and crowd regions are merged into the ignore region (class 10, id 10000).
    The frame column is the frame index in the sequence (the file number for KITTI-MOTS). Beside each
    txt, `<seq>.tracks.json` maps instance -> original track id. Returns the txt paths."""
    out_dir = Path(out_dir)
    written = []
    for seq in _export_sequences(labels, root, None):
        seq_labels = labels.sequences.get(seq.name, {})
        moving_or_static = sorted(t for t, lab in seq_labels.items()
                                  if lab.label != "ignore" or any(r.label != "ignore" for r in lab.ranges))
        if len(moving_or_static) > 999:
            raise MotionLabelsError(f"{seq.name}: {len(moving_or_static)} labelled tracks, at most 999 fit "
                                    f"the KITTI-MOTS id scheme")
        instance = {track: k + 1 for k, track in enumerate(moving_or_static)}
        lines = []
        for i in tqdm(seq.labelled_frames, desc=f"kitti {seq.name}", leave=False):
            ignore = np.zeros((seq.height, seq.width), dtype=bool)
            objects = []
            for inst in seq.instances(i):
                state = None if inst.crowd else labels.label_at(seq.name, inst.track_id, i)
                if state in MOTION_CLASS:
                    cls = MOTION_CLASS[state]
                    objects.append((cls * 1000 + instance[inst.track_id], cls, inst.rle["counts"]))
                else:
                    ignore |= inst.mask()
            if ignore.any():
                objects.append((10000, 10, coco.mask_to_rle(ignore)["counts"]))
            for obj_id, cls, counts in sorted(objects):
                lines.append(f"{i} {obj_id} {cls} {seq.height} {seq.width} {counts.decode('ascii')}\n")
        stem = seq.name.replace("/", "_")
        txt = out_dir / f"{stem}.txt"
        atomic_write_text(txt, "".join(lines))
        atomic_write_json(out_dir / f"{stem}.tracks.json", {
            "format": "vca-kitti-motion-tracks", "version": VERSION, "sequence": seq.name,
            "classes": {"1": "moving", "2": "static", "10": "ignore"},
            "instances": {str(k): t for t, k in instance.items()},
        })
        written.append(txt)
    return written


def color_overlay(image: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """RGB image with the `moving` mask blended red and the `static` mask blended blue."""
    out = image.astype(np.float32)
    for state, mask in masks.items():
        out[mask] = (1 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * np.array(COLORS[state], np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def export_color_pngs(labels: MotionLabels, root: Path, out_dir: Path) -> int:
    """One PNG per labelled frame, `out_dir/<seq>/<frame name>.png`: the frame with moving instances
    blended red and static ones blue (alpha 0.5); ignore, unlabelled and crowd pixels keep the image.
    Returns the number of PNGs written."""
    count = 0
    for seq in _export_sequences(labels, root, None):
        for i in tqdm(seq.labelled_frames, desc=f"png {seq.name}", leave=False):
            masks = {state: np.zeros((seq.height, seq.width), dtype=bool) for state in COLORS}
            for inst in seq.instances(i):
                state = None if inst.crowd else labels.label_at(seq.name, inst.track_id, i)
                if state in masks:
                    masks[state] |= inst.mask()
            rgb = color_overlay(seq.read_image(i), masks)
            target = Path(out_dir) / seq.name / f"{Path(seq.frame_names[i]).stem}.png"
            with atomic_path(target, suffix=".png") as tmp:
                if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"{target}: cannot write PNG")
            count += 1
    return count
