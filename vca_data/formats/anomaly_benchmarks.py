"""Readers of the anomaly-segmentation benchmarks the SLEEG paper reports on, from a local folder in
the layout they are published (or commonly redistributed) in, as (name, RGB HxWx3 uint8, label HxW
uint8: 0 normal, 1 anomaly, 255 void).

Formats and layouts:

- ``fishyscapes``: Fishyscapes Lost & Found and Static validation sets as PEBAL and Meta-OoD read them
  (tianyu0207/PEBAL code/dataset/data_loader.py, class Fishyscapes): ROOT/<subset>/original/<name>.png
  and ROOT/<subset>/labels/<name>.png with 0 in-distribution, 1 anomaly, 255 void; <subset> is
  LostAndFound or Static (ROOT may also be one subset folder itself).
- ``road-anomaly``: Road Anomaly (Lis et al. 2019) as released: ROOT/frames/<name>.jpg with
  ROOT/frames/<name>.labels/labels_semantic.png, 0 normal and 2 anomaly (the SegmentMeIfYouCan code's
  legacy reader keeps `labels >= 2`, SLEEG's label_map {0: 0, 2: 1}); or the redistributed
  ROOT/original/<name>.jpg with ROOT/labels/<name>.png, 0 / 1 (PEBAL's RoadAnomaly class).
- ``smiyc``: SegmentMeIfYouCan RoadAnomaly21 (dataset_AnomalyTrack) and RoadObstacle21
  (dataset_ObstacleTrack): ROOT/images/<name>.{jpg,webp,png} with
  ROOT/labels_masks/<name>_labels_semantic.png, 0 normal (road for obstacles), 1 anomaly, 255 void
  (SegmentMeIfYouCan/road-anomaly-benchmark road_anomaly_benchmark/datasets/tracks.py). Only the
  validation frames come with labels; images without one are skipped and counted.

`discover(root, fmt)` lists the labelled frames (an image folder with no labels at all is an error
naming it); `read_frame` reads one and checks that the label values are the documented ones and that
the label has the image's size, with one-line errors naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

FORMATS = ("fishyscapes", "road-anomaly", "smiyc")
VOID = 255
FISHYSCAPES_SUBSETS = ("LostAndFound", "Static")
SMIYC_IMAGE_SUFFIXES = (".jpg", ".webp", ".png")


class BenchmarkError(ValueError):
    """A benchmark folder or file is not in its documented layout; the message names it."""


@dataclass(frozen=True)
class BenchmarkFrame:
    name: str            # unique within the benchmark: <subset>/<stem> or <stem>
    subset: str          # LostAndFound, Static, RoadAnomaly, AnomalyTrack, ObstacleTrack, ...
    image: Path
    label: Path
    mapping: tuple[tuple[int, int], ...]  # label file value -> 0 / 1 / 255


@dataclass
class Benchmark:
    root: Path
    fmt: str
    frames: list[BenchmarkFrame]
    unlabelled: list[Path] = field(default_factory=list)   # images without a label file (skipped)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for frame in self.frames:
            rgb, label = read_frame(frame)
            yield frame.name, rgb, label


IDENTITY = ((0, 0), (1, 1), (VOID, VOID))


def _pairs(image_dir: Path, label_of, suffixes: tuple[str, ...]) -> tuple[list[tuple[Path, Path]], list[Path]]:
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not images:
        raise BenchmarkError(f"{image_dir}: no images ({', '.join(suffixes)})")
    pairs, missing = [], []
    for image in images:
        label = label_of(image)
        (pairs.append((image, label)) if label.is_file() else missing.append(image))
    if not pairs:
        raise BenchmarkError(f"{image_dir}: {len(images)} images and no label files (expected e.g. {label_of(images[0])})")
    return pairs, missing


def _fishyscapes(root: Path) -> Benchmark:
    subsets = [root / s for s in FISHYSCAPES_SUBSETS if (root / s / "original").is_dir()]
    if not subsets and (root / "original").is_dir():
        subsets = [root]
    if not subsets:
        raise BenchmarkError(f"{root}: not a Fishyscapes folder (expected {root}/LostAndFound/original/*.png and "
                             f"labels/*.png, or Static/...)")
    frames, missing = [], []
    for folder in subsets:
        if not (folder / "labels").is_dir():
            raise BenchmarkError(f"{folder}: has original/ but no labels/ folder")
        pairs, lost = _pairs(folder / "original", lambda p, f=folder: f / "labels" / f"{p.stem}.png", (".png",))
        frames += [BenchmarkFrame(f"{folder.name}/{i.stem}", folder.name, i, la, IDENTITY) for i, la in pairs]
        missing += lost
    return Benchmark(root, "fishyscapes", frames, missing)


def _road_anomaly(root: Path) -> Benchmark:
    if (root / "frames").is_dir():
        pairs, missing = _pairs(root / "frames", lambda p: p.parent / f"{p.stem}.labels" / "labels_semantic.png",
                                (".jpg", ".png", ".webp"))
        mapping = ((0, 0), (2, 1))
    elif (root / "original").is_dir():
        if not (root / "labels").is_dir():
            raise BenchmarkError(f"{root}: has original/ but no labels/ folder")
        pairs, missing = _pairs(root / "original", lambda p: root / "labels" / f"{p.stem}.png", (".jpg", ".png"))
        mapping = ((0, 0), (1, 1))
    else:
        raise BenchmarkError(f"{root}: not a Road Anomaly folder (expected {root}/frames/<name>.jpg with "
                             "<name>.labels/labels_semantic.png, or original/*.jpg with labels/*.png)")
    return Benchmark(root, "road-anomaly", [BenchmarkFrame(i.stem, "RoadAnomaly", i, la, mapping) for i, la in pairs],
                     missing)


def _smiyc(root: Path) -> Benchmark:
    if not (root / "images").is_dir():
        raise BenchmarkError(f"{root}: not a SegmentMeIfYouCan folder (expected {root}/images/ and "
                             f"{root}/labels_masks/<name>_labels_semantic.png)")
    if not (root / "labels_masks").is_dir():
        raise BenchmarkError(f"{root}: has images/ but no labels_masks/ folder (only the validation frames have labels)")
    pairs, missing = _pairs(root / "images", lambda p: root / "labels_masks" / f"{p.stem}_labels_semantic.png",
                            SMIYC_IMAGE_SUFFIXES)
    subset = root.name.removeprefix("dataset_")
    return Benchmark(root, "smiyc", [BenchmarkFrame(i.stem, subset, i, la, IDENTITY) for i, la in pairs], missing)


def discover(root: str | Path, fmt: str) -> Benchmark:
    """The labelled frames of benchmark folder `root` in format `fmt` (see the module docs)."""
    if fmt not in FORMATS:
        raise BenchmarkError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: no such folder")
    return {"fishyscapes": _fishyscapes, "road-anomaly": _road_anomaly, "smiyc": _smiyc}[fmt](root)


def read_label(path: Path, mapping: tuple[tuple[int, int], ...]) -> np.ndarray:
    """HxW uint8 0 / 1 / 255 from a single-channel (greyscale or palette) label PNG whose values are
    the keys of `mapping`."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise BenchmarkError(f"{path}: label image of mode {im.mode}, expected a single-channel PNG")
            raw = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise BenchmarkError(f"{path}: not a readable label image ({e})") from None
    lut_keys = np.array([k for k, _ in mapping])
    bad = np.setdiff1d(np.unique(raw), lut_keys)
    if bad.size:
        raise BenchmarkError(f"{path}: label values {bad[:8].tolist()} outside the documented {lut_keys.tolist()}")
    out = np.empty(raw.shape, np.uint8)
    for key, value in mapping:
        out[raw == key] = value
    return out


def read_frame(frame: BenchmarkFrame) -> tuple[np.ndarray, np.ndarray]:
    """(RGB HxWx3 uint8, label HxW uint8 0 / 1 / 255) of one frame."""
    bgr = cv2.imread(str(frame.image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BenchmarkError(f"{frame.image}: not a readable image")
    label = read_label(frame.label, frame.mapping)
    if label.shape != bgr.shape[:2]:
        raise BenchmarkError(f"{frame.label}: label is {label.shape[1]}x{label.shape[0]}, its image "
                             f"{frame.image.name} is {bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), label


def iter_benchmark(root: str | Path, fmt: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB, label 0 / 1 / 255) of every labelled frame, in name order."""
    yield from discover(root, fmt)
