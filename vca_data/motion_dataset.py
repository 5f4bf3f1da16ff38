"""Torch dataset of the motion track: the labelled frames of KITTI-MOTS / Cityscapes-VPS sequences with
optional colour-coded optical flow, instance masks with their track ids, and per-pixel moving/static
labels from a `MotionLabels`, augmented jointly (vca_data.transforms)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.motion_labels import MotionLabels
from vca_data.formats.sequence import MotionSequence
from vca_data.labels import TRAIN_NAMES, VOID
from vca_data.transforms import Normalize, ToTensor

#: Per-pixel motion classes of the `motion` map.
BACKGROUND, MOVING, STATIC = 0, 1, 2
MOTION_CODE = {"moving": MOVING, "static": STATIC}
#: The key lists to hand vca_data.transforms for motion samples, e.g. train_transform(h, w, **MOTION_KEYS).
MOTION_KEYS = {"image_keys": ("image", "flow"), "dense_keys": (),
               "label_keys": ("instance", "motion", "category", "semantic")}
#: Category names of the datasets that differ from the Cityscapes train names.
CATEGORY_ALIASES = {"pedestrian": "person"}


def category_train_id(category: str) -> int:
    """Cityscapes train id of an instance category name (KITTI `pedestrian` = `person`); 255 if none."""
    name = CATEGORY_ALIASES.get(category, category)
    return TRAIN_NAMES.index(name) if name in TRAIN_NAMES else VOID


class MotionDataset(Dataset):
    """Labelled frames of motion sequences.

    A sample is a dict:
      - `image`: 3xHxW float32 tensor, ImageNet-normalised RGB;
      - `flow`: 3xHxW float32 tensor of the colour-coded flow PNG `flow_dir/<seq>/<frame:06d>.png`
        (frame = index in the sequence; normalised like the image), only with `flow_dir`;
      - `instance`: HxW int64 track ids, 0 background and crowd/ignore regions, 255 padding from
        augmentation (track id 255 is therefore refused);
      - `motion`: HxW int64, 0 background, 1 moving, 2 static, 255 ignore (crowd regions, tracks labelled
        `ignore` or not labelled, padding); frame ranges of the labels apply;
      - `category`: HxW int64 Cityscapes train id of each instance's category (255 elsewhere);
      - `semantic`: HxW int64 Cityscapes train ids of every pixel (255 void), only where the sequence
        has semantic labels (MotionSequence.semantic: Cityscapes-VPS, the offline world's exports);
      - `meta`: {dataset, sequence, frame, image (path)}.

    `labels` is a MotionLabels or the path of a motion_labels.json; `sequences` defaults to the labelled
    sequences found under `root`; `frame_step` keeps every n-th labelled frame of each sequence.
    `transform` is a callable (sample, rng) -> sample over numpy arrays
    with the keys above (build it with `**MOTION_KEYS`); numpy arrays it leaves are made tensors. With
    `seed`, sample i always gets the same augmentation.
    """

    def __init__(
        self,
        root: str | Path,
        labels: MotionLabels | str | Path,
        sequences: Sequence[str] | None = None,
        flow_dir: str | Path | None = None,
        transform: Callable | None = None,
        seed: int | None = None,
        frame_step: int = 1,
    ):
        if frame_step < 1:
            raise ValueError(f"frame_step must be at least 1, got {frame_step}")
        self.root = Path(root)
        self.labels = labels if isinstance(labels, MotionLabels) else MotionLabels.load(Path(labels))
        available = list_sequences(self.root)
        if sequences is None:
            sequences = [s for s in available if s in self.labels.sequences]
        missing = [s for s in sequences if s not in available]
        if missing:
            raise ValueError(f"{self.root}: no sequence(s) {', '.join(missing)} (found: {', '.join(available) or 'none'})")
        if not sequences:
            raise ValueError(f"{self.root}: none of the sequences {', '.join(available) or '(none)'} has motion labels")
        self.sequences: list[MotionSequence] = [open_sequence(self.root, s) for s in sequences]
        self.flow_dir = Path(flow_dir) if flow_dir is not None else None
        self.transform = transform
        self.seed = seed
        self._items = [(k, i) for k, seq in enumerate(self.sequences) for i in seq.labelled_frames[::frame_step]]
        self._finish = [ToTensor(image_keys=MOTION_KEYS["image_keys"], dense_keys=(),
                                 label_keys=MOTION_KEYS["label_keys"]),
                        Normalize(image_keys=MOTION_KEYS["image_keys"])]

    def __len__(self) -> int:
        return len(self._items)

    def flow_path(self, seq: MotionSequence, i: int) -> Path:
        return self.flow_dir / seq.name / f"{i:06d}.png"

    def _read_flow(self, seq: MotionSequence, i: int) -> np.ndarray:
        path = self.flow_path(seq, i)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{path}: missing or unreadable flow PNG for frame {i} of {seq.name}")
        if bgr.shape[:2] != (seq.height, seq.width):
            raise ValueError(f"{path}: flow is {bgr.shape[1]}x{bgr.shape[0]}, frame is {seq.width}x{seq.height}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def label_maps(self, seq: MotionSequence, i: int) -> dict[str, np.ndarray]:
        """The `instance`, `motion` and `category` maps of frame i (before augmentation)."""
        ids = seq.id_map(i)
        crowd = seq.crowd_mask(i)
        categories = {inst.track_id: inst.category for inst in seq.instances(i) if not inst.crowd}
        tracks = np.unique(ids)
        tracks = tracks[tracks != 0]
        if (tracks == VOID).any():
            raise ValueError(f"{seq.name} frame {i}: track id {VOID} is reserved for padding in motion samples")
        motion_of = np.array([MOTION_CODE.get(self.labels.label_at(seq.name, int(t), i), VOID) for t in tracks],
                             dtype=np.int64)
        category_of = np.array([category_train_id(categories.get(int(t), "")) for t in tracks], dtype=np.int64)
        position = np.searchsorted(tracks, ids)
        on_track = ids != 0
        motion = np.full(ids.shape, BACKGROUND, dtype=np.int64)
        category = np.full(ids.shape, VOID, dtype=np.int64)
        motion[on_track] = motion_of[position[on_track]]
        category[on_track] = category_of[position[on_track]]
        motion[crowd] = VOID
        return {"instance": ids.astype(np.int64), "motion": motion, "category": category}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range (dataset has {len(self)} frames)")
        index = int(index) % len(self)
        k, i = self._items[index]
        seq = self.sequences[k]
        sample = {"image": seq.read_image(i), **self.label_maps(seq, i)}
        semantic = seq.semantic(i)
        if semantic is not None:
            sample["semantic"] = semantic
        if self.flow_dir is not None:
            sample["flow"] = self._read_flow(seq, i)
        if self.transform is not None:
            rng = np.random.default_rng((self.seed, index)) if self.seed is not None else np.random.default_rng()
            sample = self.transform(sample, rng)
        if isinstance(sample["image"], np.ndarray):
            for step in self._finish:
                sample = step(sample)
        sample["meta"] = {"dataset": seq.dataset, "sequence": seq.name, "frame": i, "image": str(seq.image_path(i))}
        return sample
