"""Cityscapes-VPS: read the panoptic JSON + PNG labels, iterate videos and frames, and open one video
as a `MotionSequence` whose track ids are the panoptic segment ids (stable within a video).

Layout (the VPSNet release)::

    ROOT/panoptic_gt_<split>_city_vps.json      COCO panoptic: images, annotations, categories
    ROOT/<split>/img/                           labelled frames (every 5th)
    ROOT/<split>/img_all/                       all frames (val, test)
    ROOT/<split>/panoptic_video/                panoptic PNGs, segment id = R + 256*G + 256*256*B

Frame names start ``<video:04d>_<global frame:04d>_``; frames are matched to annotations by that prefix.
A video opens on `img_all/` when it is there (all frames; the annotated ones are `labelled_frames`),
else on `img/`. Instances are the segments whose category is a thing (`isthing`, or ids 11-18).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vca_data import png
from vca_data.formats import coco
from vca_data.formats.sequence import Instance, MotionSequence, SequenceError, pick_name
from vca_data.io import atomic_path

SPLITS = ("train", "val", "test")
IMAGE_FOLDERS = ("img_all", "img")
PANOPTIC_FOLDER = "panoptic_video"
#: Thing categories of Cityscapes-VPS when the JSON categories carry no `isthing` flag.
THING_IDS = tuple(range(11, 19))
_FRAME_NAME = re.compile(r"^(\d{4})_(\d{4})_")


class CityscapesVpsFormatError(SequenceError):
    """A Cityscapes-VPS file that breaks the format; the message names the file and field or frame."""


@dataclass(frozen=True)
class Segment:
    id: int
    category_id: int
    iscrowd: bool


@dataclass
class PanopticLabels:
    """The panoptic annotations of one split: per frame key `<video>_<global>` the PNG name and segments."""

    path: Path
    categories: dict[int, tuple[str, bool]]
    frames: dict[str, tuple[str, list[Segment]]]


def frame_key(name: str) -> tuple[str, int] | None:
    """(video id, global frame number) of a Cityscapes-VPS file name, or None if it does not match."""
    m = _FRAME_NAME.match(Path(name).name)
    return (m.group(1), int(m.group(2))) if m else None


def _field(obj: dict, key: str, kind: type | tuple[type, ...], where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise CityscapesVpsFormatError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise CityscapesVpsFormatError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def read_panoptic_json(path: Path) -> PanopticLabels:
    """Read and validate a COCO-panoptic JSON of Cityscapes-VPS."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CityscapesVpsFormatError(f"{path}: not a JSON file: {e}") from None
    where = str(path)
    categories = {}
    for k, cat in enumerate(_field(data, "categories", list, where)):
        w = f"{where}: categories[{k}]"
        cid = _field(cat, "id", int, w)
        isthing = bool(cat.get("isthing", cid in THING_IDS))
        categories[cid] = (_field(cat, "name", str, w), isthing)
    image_names = {}
    for k, img in enumerate(data.get("images", [])):
        w = f"{where}: images[{k}]"
        image_names[_field(img, "id", (int, str), w)] = _field(img, "file_name", str, w)
    frames = {}
    for k, ann in enumerate(_field(data, "annotations", list, where)):
        w = f"{where}: annotations[{k}]"
        png = _field(ann, "file_name", str, w)
        image_name = image_names.get(ann.get("image_id"), png)
        key = frame_key(image_name)
        if key is None:
            raise CityscapesVpsFormatError(f"{w}: file name {image_name!r} does not start with <video>_<frame>_")
        segments = []
        for j, seg in enumerate(_field(ann, "segments_info", list, w)):
            ws = f"{w}.segments_info[{j}]"
            cid = _field(seg, "category_id", int, ws)
            if cid not in categories:
                raise CityscapesVpsFormatError(f"{ws}.category_id: {cid} is not among the categories")
            segments.append(Segment(_field(seg, "id", int, ws), cid, bool(seg.get("iscrowd", 0))))
        frames[f"{key[0]}_{key[1]:04d}"] = (png, segments)
    return PanopticLabels(path, categories, frames)


def read_panoptic_png(path: Path) -> np.ndarray:
    """HxW int32 segment ids of a panoptic PNG (R + 256*G + 256*256*B)."""
    try:
        return png.read_panoptic_png(path)
    except ValueError as err:
        raise CityscapesVpsFormatError(str(err)) from err


def write_panoptic_png(path: Path, segment_ids: np.ndarray) -> Path:
    """Write HxW segment ids (< 2**24) as an RGB panoptic PNG (atomically)."""
    ids = np.asarray(segment_ids, dtype=np.int64)
    if ids.ndim != 2 or ids.min() < 0 or ids.max() >= 1 << 24:
        raise CityscapesVpsFormatError(f"{path}: segment ids must be 2-D in 0..2**24-1")
    rgb = png.panoptic_rgb(ids)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), rgb[..., ::-1]):
            raise OSError(f"{path}: cannot write PNG")
    return Path(path)


def _split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> split folder, for a dataset root or a single split folder."""
    root = Path(root)
    if any((root / f).is_dir() for f in IMAGE_FOLDERS):
        # A split folder: its own name is the split.
        return {root.name: root}
    return {s: root / s for s in SPLITS if any((root / s / f).is_dir() for f in IMAGE_FOLDERS)}


def is_cityscapes_vps(root: Path) -> bool:
    return bool(_split_dirs(root))


def _split_images(split_dir: Path) -> tuple[str, dict[str, list[Path]]]:
    """Image folder used (img_all preferred) and its images grouped by video, ordered by frame."""
    for folder in IMAGE_FOLDERS:
        d = split_dir / folder
        if d.is_dir():
            videos: dict[str, list[tuple[int, Path]]] = {}
            for p in d.iterdir():
                key = frame_key(p.name)
                if key is not None and p.suffix.lower() in (".png", ".jpg"):
                    videos.setdefault(key[0], []).append((key[1], p))
            return folder, {v: [p for _, p in sorted(items)] for v, items in sorted(videos.items())}
    return "", {}


def list_videos(root: Path) -> list[str]:
    """Videos of a Cityscapes-VPS root or split folder, named `<split>/<video>` either way, so that
    motion labels name a video the same however the dataset was opened."""
    return [f"{split}/{video}" for split, d in _split_dirs(Path(root)).items() for video in _split_images(d)[1]]


def _find_json(root: Path, split_dir: Path, split: str) -> Path | None:
    name = f"panoptic_gt_{split}_city_vps.json"
    for candidate in (split_dir.parent / name, split_dir / name):
        if candidate.is_file():
            return candidate
    return None


def open_video(root: Path, name: str | None = None) -> CityscapesVpsSequence:
    """Open video `name` (`<split>/<video>`, or `<video>` alone when only one split holds it)."""
    root = Path(root)
    names = list_videos(root)
    if name is not None and "/" not in name:
        matches = [n for n in names if n.split("/", 1)[1] == name]
        if len(matches) > 1:
            raise SequenceError(f"{root}: video {name} exists in several splits ({', '.join(matches)}); name one")
        name = matches[0] if matches else name
    name = pick_name(root, names, name, "Cityscapes-VPS video")
    split, video = name.split("/", 1)
    return CityscapesVpsSequence(root, name, _split_dirs(root)[split], split, video)


class CityscapesVpsSequence(MotionSequence):
    """One Cityscapes-VPS video. The split's panoptic JSON is read and validated on opening; each
    labelled frame's PNG is checked against its segments when read."""

    dataset = "cityscapes-vps"

    def __init__(self, root: Path, name: str, split_dir: Path, split: str, video: str):
        self.root, self.name, self.split, self.video = Path(root), name, split, video
        folder, videos = _split_images(split_dir)
        self.image_folder = folder
        self._images = videos[video]
        self.frame_names = [p.name for p in self._images]
        self.num_frames = len(self._images)
        first = cv2.imread(str(self._images[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise SequenceError(f"{self._images[0]}: cannot read image")
        self.height, self.width = first.shape[:2]
        self.intrinsics = None
        json_path = _find_json(self.root, split_dir, split)
        self.panoptic = read_panoptic_json(json_path) if json_path is not None else None
        self.panoptic_dir = split_dir / PANOPTIC_FOLDER
        self._labels: dict[int, tuple[str, list[Segment]]] = {}
        if self.panoptic is not None:
            for i, p in enumerate(self._images):
                video_id, frame = frame_key(p.name)
                entry = self.panoptic.frames.get(f"{video_id}_{frame:04d}")
                if entry is not None:
                    self._labels[i] = entry
        self.labelled_frames = sorted(self._labels)

    def image_path(self, i: int) -> Path:
        return self._images[self._check_index(i)]

    def segment_ids(self, i: int) -> tuple[np.ndarray, list[Segment]] | None:
        """Validated panoptic segment id map and segments of frame i, or None when it is unlabelled."""
        i = self._check_index(i)
        if i not in self._labels:
            return None
        png_name, segments = self._labels[i]
        path = self.panoptic_dir / png_name
        ids = read_panoptic_png(path)
        if ids.shape != (self.height, self.width):
            raise CityscapesVpsFormatError(
                f"{path}: size {ids.shape[0]}x{ids.shape[1]} differs from the image {self.height}x{self.width}"
            )
        listed = {s.id for s in segments}
        present = set(np.unique(ids).tolist()) - {0}
        if present - listed:
            raise CityscapesVpsFormatError(
                f"{path}: segment id(s) {sorted(present - listed)[:5]} in the PNG are not in the segments_info "
                f"of {self.panoptic.path}"
            )
        if listed - present:
            raise CityscapesVpsFormatError(
                f"{path}: segment id(s) {sorted(listed - present)[:5]} of {self.panoptic.path} have no pixels"
            )
        return ids, segments

    def semantic(self, i: int) -> np.ndarray | None:
        """Train ids of frame i from its panoptic segments' category names (255 void and where a
        category is not one of the 19 train classes); None for an unlabelled frame."""
        from vca_data.labels import TRAIN_NAMES, VOID

        labelled = self.segment_ids(i)
        if labelled is None:
            return None
        ids, segments = labelled
        out = np.full(ids.shape, VOID, dtype=np.uint8)
        for seg in segments:
            name = self.panoptic.categories[seg.category_id][0]
            if name in TRAIN_NAMES:
                out[ids == seg.id] = TRAIN_NAMES.index(name)
        return out

    def _things(self, segments: list[Segment]) -> list[Segment]:
        return [s for s in segments if self.panoptic.categories[s.category_id][1]]

    def instances(self, i: int) -> list[Instance]:
        labelled = self.segment_ids(i)
        if labelled is None:
            return []
        ids, segments = labelled
        return [Instance(s.id, self.panoptic.categories[s.category_id][0], s.iscrowd, coco.mask_to_rle(ids == s.id))
                for s in self._things(segments)]

    def id_map(self, i: int) -> np.ndarray:
        labelled = self.segment_ids(i)
        if labelled is None:
            return np.zeros((self.height, self.width), dtype=np.int32)
        ids, segments = labelled
        keep = [s.id for s in self._things(segments) if not s.iscrowd]
        return np.where(np.isin(ids, keep), ids, 0).astype(np.int32)
