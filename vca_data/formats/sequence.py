"""One view of a motion sequence whatever its dataset (KITTI-MOTS or Cityscapes-VPS): frames, per-frame
instances with track ids, tracks, and optional camera poses, intrinsics and depth.

The dataset modules (`kitti_mots`, `cityscapes_vps`) subclass `MotionSequence`; the annotator, the
proposals, the exports and the motion dataset only use the interface defined here. Which layout a folder
holds, and opening it, is `vca_data.formats.folders` (above the dataset modules, which import this one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vca_data.formats import coco


class SequenceError(ValueError):
    """A folder that is not a readable motion sequence, or a sequence file that breaks its format."""


@dataclass
class Instance:
    """One object mask in one frame. `rle` is a pycocotools RLE {'size': [h, w], 'counts': bytes}."""

    track_id: int
    category: str
    crowd: bool
    rle: dict

    def mask(self) -> np.ndarray:
        return coco.rle_to_mask(self.rle)


@dataclass
class Track:
    """A non-crowd object over time: its id, category and the frame indices where it is visible."""

    track_id: int
    category: str
    frames: list[int] = field(default_factory=list)


class MotionSequence(ABC):
    """A sequence of frames with tracked instance masks. Subclasses set the attributes below and
    implement `instances`; everything else has a generic implementation they may speed up."""

    dataset: str
    name: str
    root: Path
    num_frames: int
    height: int
    width: int
    frame_names: list[str]
    labelled_frames: list[int]
    intrinsics: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dataset={self.dataset!r}, name={self.name!r}, "
                f"frames={self.num_frames}, size={self.height}x{self.width})")

    @abstractmethod
    def image_path(self, i: int) -> Path:
        """Path of the image file of frame i."""

    @abstractmethod
    def instances(self, i: int) -> list[Instance]:
        """Instances of frame i (crowd/ignore regions with crowd=True); empty for unlabelled frames."""

    def _check_index(self, i: int) -> int:
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range for sequence {self.name} with {self.num_frames} frames")
        return int(i)

    def read_image(self, i: int) -> np.ndarray:
        """Frame i as an HxWx3 uint8 RGB array."""
        path = self.image_path(self._check_index(i))
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SequenceError(f"{path}: cannot read image")
        if bgr.shape[:2] != (self.height, self.width):
            raise SequenceError(f"{path}: image is {bgr.shape[1]}x{bgr.shape[0]}, expected "
                                f"{self.width}x{self.height} like the first frame")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def id_map(self, i: int) -> np.ndarray:
        """HxW int32 map of track ids of frame i; 0 = background and crowd/ignore regions."""
        out = np.zeros((self.height, self.width), dtype=np.int32)
        for inst in self.instances(i):
            if not inst.crowd:
                out[inst.mask()] = inst.track_id
        return out

    def crowd_mask(self, i: int) -> np.ndarray:
        """HxW bool mask of the crowd/ignore regions of frame i."""
        out = np.zeros((self.height, self.width), dtype=bool)
        for inst in self.instances(i):
            if inst.crowd:
                out |= inst.mask()
        return out

    def tracks(self) -> dict[int, Track]:
        """Non-crowd tracks over the labelled frames, keyed by track id."""
        result: dict[int, Track] = {}
        for i in self.labelled_frames:
            for inst in self.instances(i):
                if inst.crowd:
                    continue
                track = result.setdefault(inst.track_id, Track(inst.track_id, inst.category))
                track.frames.append(i)
        return dict(sorted(result.items()))

    def pose(self, i: int) -> np.ndarray | None:
        """4x4 world_from_camera pose of frame i, or None when the sequence has no poses."""
        return None

    def depth(self, i: int) -> np.ndarray | None:
        """HxW float32 depth in metres of frame i (0 = invalid), or None when there is none."""
        return None

    def semantic(self, i: int) -> np.ndarray | None:
        """HxW uint8 Cityscapes train ids of frame i (255 void), or None when the source has no
        semantic labels (KITTI-MOTS has none; Cityscapes-VPS and the offline world's exports do)."""
        return None


def pick_name(root: Path, names: list[str], name: str | None, what: str) -> str:
    """Resolve the requested sequence name against those available (shared by the dataset modules)."""
    if name is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise SequenceError(f"{root}: holds no {what}")
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise SequenceError(f"{root}: holds {len(names)} {what}s ({shown}); name one")
    if name not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise SequenceError(f"{root}: no {what} {name!r} (found: {shown or 'none'})")
    return name
