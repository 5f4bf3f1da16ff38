"""KITTI-MOTS: read and write the txt and PNG label forms, decode a frame's objects to an id map, and
open a KITTI-MOTS sequence folder as a `MotionSequence`.

txt line: ``frame obj_id class_id img_height img_width rle`` (space separated; `rle` a compressed COCO
RLE string, column-major). Ids are ``class_id * 1000 + instance``; classes 1 car, 2 pedestrian,
10 ignore region (id 10000). PNG form: one 16-bit single-channel PNG per frame, pixel value = obj_id.
The txt lists only frames that hold objects, so frames are enumerated from the image folder.

Every rejection raises `KittiMotsFormatError` naming the file and line (txt) or the file (PNG):
malformed lines, bad RLE, size mismatch, unknown class, duplicate ids in a frame, overlapping masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vca_data.formats import coco
from vca_data.formats.sequence import Instance, MotionSequence, SequenceError, Track, pick_name
from vca_data.io import atomic_path, atomic_write_text

KITTI_CLASSES: dict[int, str] = {1: "car", 2: "pedestrian", 10: "ignore"}
IGNORE_CLASS = 10
IGNORE_ID = 10000
#: Largest image side accepted from a label file; guards id-map allocations against absurd sizes.
MAX_SIDE = 16384
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class KittiMotsFormatError(SequenceError):
    """A KITTI-MOTS label file that breaks the format; the message names the file and line or frame."""


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI-MOTS txt: an object mask in one frame (`line` = 1-based source line, 0 if none)."""

    frame: int
    obj_id: int
    class_id: int
    height: int
    width: int
    counts: bytes
    line: int = 0

    @property
    def rle(self) -> dict:
        return {"size": [self.height, self.width], "counts": self.counts}

    @property
    def category(self) -> str:
        return KITTI_CLASSES[self.class_id]

    def mask(self) -> np.ndarray:
        return coco.rle_to_mask(self.rle)


def _int_field(value: str, what: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise KittiMotsFormatError(f"{where}: {what} {value!r} is not an integer") from None


def _parse_line(text: str, lineno: int, name: str) -> KittiObject:
    where = f"{name}:{lineno}"
    fields = text.split()
    if len(fields) != 6:
        raise KittiMotsFormatError(
            f"{where}: expected 6 space-separated fields 'frame obj_id class_id img_height img_width rle', "
            f"got {len(fields)}"
        )
    frame = _int_field(fields[0], "frame", where)
    obj_id = _int_field(fields[1], "object id", where)
    class_id = _int_field(fields[2], "class id", where)
    height = _int_field(fields[3], "image height", where)
    width = _int_field(fields[4], "image width", where)
    if frame < 0:
        raise KittiMotsFormatError(f"{where}: frame {frame} is negative")
    if class_id not in KITTI_CLASSES:
        raise KittiMotsFormatError(f"{where}: unknown class id {class_id} (expected 1 car, 2 pedestrian or 10 ignore)")
    if obj_id <= 0 or obj_id // 1000 != class_id:
        raise KittiMotsFormatError(
            f"{where}: object id {obj_id} does not belong to class {class_id} (expected class_id*1000 + instance)"
        )
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise KittiMotsFormatError(f"{where}: image size {height}x{width} outside 1..{MAX_SIDE}")
    counts = fields[5]
    if not counts.isascii():
        raise KittiMotsFormatError(f"{where}: bad RLE: non-ASCII characters")
    return KittiObject(frame, obj_id, class_id, height, width, counts.encode("ascii"), lineno)


def _validate(objects: Sequence[KittiObject], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate objects of one or many frames, all of one size, in one vectorised pass: RLE, duplicate
    ids in a frame, overlapping masks in a frame. Returns the foreground runs (starts, ends, owner =
    index into `objects`) in column-major pixel order."""
    empty = np.zeros(0, dtype=np.int64)
    if not objects:
        return empty, empty, empty
    num_pixels = objects[0].height * objects[0].width
    try:
        starts, ends, owners = coco.foreground_runs_batch([o.counts for o in objects], num_pixels)
    except coco.RleError as e:
        raise KittiMotsFormatError(f"{name}:{objects[e.index].line}: bad RLE: {e}") from None
    frames = np.fromiter((o.frame for o in objects), dtype=np.int64, count=len(objects))
    ids = np.fromiter((o.obj_id for o in objects), dtype=np.int64, count=len(objects))
    order = np.lexsort((np.arange(len(objects)), ids, frames))
    same = (frames[order][1:] == frames[order][:-1]) & (ids[order][1:] == ids[order][:-1])
    if same.any():
        dups = [(objects[order[k]], objects[order[k + 1]]) for k in np.flatnonzero(same)]
        first, second = min(dups, key=lambda pair: pair[1].line)
        raise KittiMotsFormatError(
            f"{name}:{second.line}: frame {second.frame}: object id {second.obj_id} appears twice "
            f"(first on line {first.line})"
        )
    # One sort finds overlaps in every frame at once: frames are laid end to end on one pixel axis.
    _, frame_rank = np.unique(frames, return_inverse=True)
    shift = frame_rank[owners] * (num_pixels + 1)
    clash = coco.first_overlap(starts + shift, ends + shift, owners)
    if clash is not None:
        a, b = objects[clash[0]], objects[clash[1]]
        first, second = (a, b) if a.line <= b.line else (b, a)
        raise KittiMotsFormatError(
            f"{name}:{second.line}: frame {second.frame}: mask of object {second.obj_id} overlaps object "
            f"{first.obj_id} (line {first.line})"
        )
    return starts, ends, owners


def parse_txt(text: str, name: str = "<txt>", height: int | None = None,
              width: int | None = None) -> dict[int, list[KittiObject]]:
    """Parse and validate the text of a KITTI-MOTS txt file; objects grouped by frame (sorted).
    `height`/`width`, when given, are the image size every line must state; otherwise all lines must
    agree with the first. `name` is used in error messages."""
    frames: dict[int, list[KittiObject]] = {}
    size: tuple[int, int] | None = (height, width) if height is not None and width is not None else None
    size_from = "the images"
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        obj = _parse_line(raw, lineno, name)
        if size is None:
            size, size_from = (obj.height, obj.width), f"line {lineno}"
        elif (obj.height, obj.width) != size:
            raise KittiMotsFormatError(
                f"{name}:{lineno}: mask size {obj.height}x{obj.width} (height x width) differs from "
                f"{size[0]}x{size[1]} of {size_from}"
            )
        frames.setdefault(obj.frame, []).append(obj)
    _validate([o for objects in frames.values() for o in objects], name)
    return dict(sorted(frames.items()))


def read_txt(path: Path, height: int | None = None, width: int | None = None) -> dict[int, list[KittiObject]]:
    """Read and validate a KITTI-MOTS txt file (see `parse_txt`)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise KittiMotsFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_txt(text, str(path), height, width)


def decode_id_map(objects: Sequence[KittiObject], height: int, width: int, name: str = "<txt>") -> np.ndarray:
    """HxW int32 map of obj_id (0 background) of one frame's objects, painted from their RLE runs in
    one pass; rejects bad RLE, size mismatches, duplicate ids and overlapping masks."""
    for obj in objects:
        if (obj.height, obj.width) != (height, width):
            raise KittiMotsFormatError(
                f"{name}:{obj.line}: mask size {obj.height}x{obj.width} (height x width) differs from "
                f"the image size {height}x{width}"
            )
    if not objects:
        return np.zeros((height, width), dtype=np.int32)
    starts, ends, owners = _validate(objects, name)
    ids = np.fromiter((o.obj_id for o in objects), dtype=np.int32, count=len(objects))
    return coco.paint_runs(starts, ends, ids[owners], height, width)


def check_id(obj_id: int, where: str) -> None:
    if obj_id // 1000 not in KITTI_CLASSES or obj_id <= 0:
        raise KittiMotsFormatError(
            f"{where}: object id {obj_id} has unknown class {obj_id // 1000} (expected 1 car, 2 pedestrian "
            f"or 10 ignore, id = class*1000 + instance)"
        )


def objects_from_id_map(id_map: np.ndarray, frame: int, name: str = "<id map>") -> list[KittiObject]:
    """The objects of an HxW obj_id map (0 background), sorted by id, ready for `write_txt`."""
    id_map = np.asarray(id_map)
    if id_map.ndim != 2:
        raise KittiMotsFormatError(f"{name}: frame {frame}: id map must be 2-D, got shape {id_map.shape}")
    h, w = id_map.shape
    objects = []
    for obj_id, rle in coco.id_map_to_rles(id_map).items():
        check_id(obj_id, f"{name}: frame {frame}")
        objects.append(KittiObject(frame, obj_id, obj_id // 1000, h, w, rle["counts"]))
    return objects


def format_txt(frames: Mapping[int, Iterable[KittiObject]]) -> str:
    lines = []
    for frame in sorted(frames):
        for obj in sorted(frames[frame], key=lambda o: o.obj_id):
            lines.append(f"{frame} {obj.obj_id} {obj.class_id} {obj.height} {obj.width} {obj.counts.decode('ascii')}")
    return "".join(line + "\n" for line in lines)


def write_txt(path: Path, frames: Mapping[int, Iterable[KittiObject]]) -> Path:
    """Write objects grouped by frame as a KITTI-MOTS txt (atomically), lines sorted by frame and id.
    The text is validated before it is written, so a file this writes always reads back."""
    text = format_txt(frames)
    parse_txt(text, str(path))
    atomic_write_text(path, text)
    return Path(path)


def read_png(path: Path, height: int | None = None, width: int | None = None) -> np.ndarray:
    """HxW int32 obj_id map of a KITTI-MOTS instance PNG (16-bit single channel), validated."""
    path = Path(path)
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if png is None:
        raise KittiMotsFormatError(f"{path}: cannot read PNG")
    if png.ndim != 2 or png.dtype != np.uint16:
        raise KittiMotsFormatError(
            f"{path}: expected a single-channel 16-bit PNG, got {png.dtype} with shape {png.shape}"
        )
    if height is not None and width is not None and png.shape != (height, width):
        raise KittiMotsFormatError(
            f"{path}: size {png.shape[0]}x{png.shape[1]} (height x width) differs from the image size "
            f"{height}x{width}"
        )
    ids = np.unique(png)
    for obj_id in ids[ids != 0]:
        check_id(int(obj_id), str(path))
    return png.astype(np.int32)


def write_png(path: Path, id_map: np.ndarray) -> Path:
    """Write an obj_id map as a 16-bit KITTI-MOTS instance PNG (atomically)."""
    id_map = np.asarray(id_map)
    if id_map.ndim != 2 or (id_map.size and (id_map.min() < 0 or id_map.max() > 65535)):
        raise KittiMotsFormatError(f"{path}: id map must be 2-D with ids in 0..65535")
    for obj_id in np.unique(id_map):
        if obj_id:
            check_id(int(obj_id), str(path))
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), id_map.astype(np.uint16)):
            raise OSError(f"{path}: cannot write PNG")
    return Path(path)


def txt_to_pngs(txt_path: Path, out_dir: Path, frame_names: Sequence[str], height: int, width: int) -> int:
    """Convert a txt label file to one PNG per frame (frames without objects get an all-zero PNG).
    `frame_names` are the image file names; their stems are the frame numbers. Returns PNGs written."""
    frames = read_txt(txt_path, height, width)
    out_dir = Path(out_dir)
    for name in frame_names:
        frame = int(Path(name).stem)
        write_png(out_dir / f"{Path(name).stem}.png", decode_id_map(frames.get(frame, []), height, width, str(txt_path)))
    return len(frame_names)


def pngs_to_txt(png_dir: Path, txt_path: Path) -> Path:
    """Convert a folder of instance PNGs (`<frame:06d>.png`) to one txt label file."""
    frames = {}
    for png in sorted(Path(png_dir).glob("*.png")):
        frame = _int_field(png.stem, "frame file name", str(png))
        frames[frame] = objects_from_id_map(read_png(png), frame, str(png))
    return write_txt(txt_path, frames)


# ---------------------------------------------------------------------------------------------------
# Sequence folders


def _image_bases(root: Path) -> list[Path]:
    return [root, root / "training"]


def _image_dir(root: Path, seq: str) -> Path | None:
    for base in _image_bases(root):
        d = base / "image_02" / seq
        if d.is_dir():
            return d
    return None


def _label_paths(root: Path, seq: str) -> tuple[Path | None, Path | None]:
    """(txt file, PNG folder) of a sequence; either may be None."""
    txt = png = None
    for base in _image_bases(root):
        if txt is None and (base / "instances_txt" / f"{seq}.txt").is_file():
            txt = base / "instances_txt" / f"{seq}.txt"
        if png is None and (base / "instances" / seq).is_dir():
            png = base / "instances" / seq
    return txt, png


def list_kitti_sequences(root: Path) -> list[str]:
    """Sequences of a KITTI-MOTS root that have both images and labels (either form)."""
    root = Path(root)
    names = set()
    for base in _image_bases(root):
        if (base / "image_02").is_dir():
            names.update(d.name for d in (base / "image_02").iterdir() if d.is_dir())
    return sorted(n for n in names if any(p is not None for p in _label_paths(root, n)))


def is_kitti_mots(root: Path) -> bool:
    return bool(list_kitti_sequences(Path(root)))


def is_kitti_image_folder(path: Path) -> bool:
    """True for a sequence's image folder (`ROOT/image_02/<seq>` or `ROOT/training/image_02/<seq>`)."""
    path = Path(path)
    return path.parent.name == "image_02" and path.is_dir()


def _dataset_root(image_folder: Path) -> Path:
    base = image_folder.parent.parent
    return base.parent if base.name == "training" else base


def open_kitti_sequence(root: Path, name: str | None = None) -> KittiMotsSequence:
    root = Path(root)
    if is_kitti_image_folder(root) and not (root / "image_02").is_dir():
        if name is not None and name != root.name:
            raise SequenceError(f"{root}: is the image folder of sequence {root.name}, not {name}")
        root, name = _dataset_root(root), root.name
    name = pick_name(root, list_kitti_sequences(root), name, "KITTI-MOTS sequence")
    return KittiMotsSequence(root, name)


class KittiMotsSequence(MotionSequence):
    """A KITTI-MOTS sequence folder; labels from `instances_txt/<seq>.txt` (preferred when both forms
    exist) or `instances/<seq>/`. The txt is read and fully validated when the sequence is opened;
    extras (`calib/<seq>.json`, `poses/<seq>.txt`, `depth/<seq>/`, `semantic/<seq>/`) are read when present."""

    dataset = "kitti-mots"

    def __init__(self, root: Path, name: str):
        self.root = Path(root)
        self.name = name
        image_dir = _image_dir(self.root, name)
        if image_dir is None:
            raise SequenceError(f"{self.root}: no image folder image_02/{name} or training/image_02/{name}")
        self.image_dir = image_dir
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SequenceError(f"{image_dir}: no images")
        self._images = images
        self.frame_names = [p.name for p in images]
        self.frame_numbers = [_int_field(p.stem, "frame file name", str(p)) for p in images]
        self._index = {f: i for i, f in enumerate(self.frame_numbers)}
        first = cv2.imread(str(images[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise SequenceError(f"{images[0]}: cannot read image")
        self.height, self.width = first.shape[:2]
        self.num_frames = len(images)
        self.labelled_frames = list(range(self.num_frames))
        self.txt_path, self.png_dir = _label_paths(self.root, name)
        self._objects: dict[int, list[KittiObject]] = {}
        if self.txt_path is not None:
            for frame, objects in read_txt(self.txt_path, self.height, self.width).items():
                if frame not in self._index:
                    raise KittiMotsFormatError(
                        f"{self.txt_path}:{objects[0].line}: frame {frame} has no image in {image_dir}"
                    )
                self._objects[self._index[frame]] = objects
        elif self.png_dir is not None:
            missing = [n for n in self.frame_names if not (self.png_dir / f"{Path(n).stem}.png").is_file()]
            if missing:
                raise KittiMotsFormatError(f"{self.png_dir}: no instance PNG for image {missing[0]} "
                                           f"({len(missing)} missing)")
        else:
            raise SequenceError(f"{self.root}: no labels instances_txt/{name}.txt or instances/{name}/")
        self.intrinsics = self._read_calib()
        self._poses: np.ndarray | None = None
        self._poses_read = False

    @property
    def label_form(self) -> str:
        return "txt" if self.txt_path is not None else "png"

    def image_path(self, i: int) -> Path:
        return self._images[self._check_index(i)]

    def objects(self, i: int) -> list[KittiObject]:
        """The txt objects of frame i, or those of its PNG converted to RLE."""
        i = self._check_index(i)
        if self.txt_path is not None:
            return self._objects.get(i, [])
        return objects_from_id_map(self._read_png(i), self.frame_numbers[i], str(self._png_path(i)))

    def _png_path(self, i: int) -> Path:
        return self.png_dir / f"{Path(self.frame_names[i]).stem}.png"

    def _read_png(self, i: int) -> np.ndarray:
        return read_png(self._png_path(i), self.height, self.width)

    def instances(self, i: int) -> list[Instance]:
        return [Instance(o.obj_id, o.category, o.class_id == IGNORE_CLASS, o.rle) for o in self.objects(i)]

    def obj_id_map(self, i: int) -> np.ndarray:
        """HxW int32 obj_id map of frame i including ignore regions (10000)."""
        i = self._check_index(i)
        if self.txt_path is not None:
            return decode_id_map(self._objects.get(i, []), self.height, self.width, str(self.txt_path))
        return self._read_png(i)

    def id_map(self, i: int) -> np.ndarray:
        ids = self.obj_id_map(i)
        ids[ids // 1000 == IGNORE_CLASS] = 0
        return ids

    def crowd_mask(self, i: int) -> np.ndarray:
        return self.obj_id_map(i) // 1000 == IGNORE_CLASS

    def tracks(self) -> dict[int, Track]:
        if self.txt_path is None:
            return super().tracks()
        result: dict[int, Track] = {}
        for i in sorted(self._objects):
            for obj in self._objects[i]:
                if obj.class_id != IGNORE_CLASS:
                    result.setdefault(obj.obj_id, Track(obj.obj_id, obj.category)).frames.append(i)
        return dict(sorted(result.items()))

    def _extra(self, *parts: str) -> Path | None:
        for base in _image_bases(self.root):
            p = base.joinpath(*parts)
            if p.exists():
                return p
        return None

    def _frame_png(self, folder: str, i: int, dtype, expected: str) -> np.ndarray | None:
        """Frame i's single-channel PNG of the extra `folder/<seq>/` (None when absent), checked for
        `dtype` and the frames' size; SequenceError naming the file and `expected` otherwise."""
        i = self._check_index(i)
        path = self._extra(folder, self.name, f"{Path(self.frame_names[i]).stem}.png")
        if path is None:
            return None
        png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if png is None or png.dtype != dtype or png.shape != (self.height, self.width):
            raise SequenceError(f"{path}: expected {expected}")
        return png

    def _read_calib(self) -> np.ndarray | None:
        path = self._extra("calib", f"{self.name}.json")
        if path is None:
            return None
        try:
            k = np.asarray(json.loads(path.read_text())["K"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            raise SequenceError(f"{path}: expected {{\"K\": [[fx,0,cx],[0,fy,cy],[0,0,1]]}} ({e})") from None
        if k.shape != (3, 3):
            raise SequenceError(f"{path}: K must be 3x3, got shape {k.shape}")
        return k

    def _load_poses(self) -> np.ndarray | None:
        path = self._extra("poses", f"{self.name}.txt")
        if path is None:
            return None
        poses = []
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                raise SequenceError(f"{path}:{lineno}: expected 12 numbers") from None
            if len(values) != 12:
                raise SequenceError(f"{path}:{lineno}: expected 12 numbers (row-major 3x4), got {len(values)}")
            pose = np.eye(4)
            pose[:3] = np.reshape(values, (3, 4))
            poses.append(pose)
        if len(poses) != self.num_frames:
            raise SequenceError(f"{path}: {len(poses)} poses for {self.num_frames} frames")
        return np.stack(poses)

    def pose(self, i: int) -> np.ndarray | None:
        i = self._check_index(i)
        if not self._poses_read:
            self._poses, self._poses_read = self._load_poses(), True
        return None if self._poses is None else self._poses[i].copy()

    def semantic(self, i: int) -> np.ndarray | None:
        """Train ids from `semantic/<seq>/<frame>.png` (uint8, 255 void; `vca-carla export` writes them),
        or None when the folder has none (KITTI-MOTS itself)."""
        return self._frame_png("semantic", i, np.uint8,
                               f"a {self.width}x{self.height} single-channel uint8 PNG of train ids")

    def depth(self, i: int) -> np.ndarray | None:
        png = self._frame_png("depth", i, np.uint16, f"a {self.height}x{self.width} uint16 depth PNG (metres*256)")
        return None if png is None else png.astype(np.float32) / 256.0
