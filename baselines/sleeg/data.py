"""SLEEG's training data: open-set frames (baselines.openset's augmentation) with anomalies pasted
from another frame of the same dataset, and the 'anomaly' target: 1 pasted, 0 normal, 255 ignored.

Sample i draws everything (donor frame, patches) from np.random.default_rng((seed, epoch, i, 1)), a
stream beside the geometric augmentation's (seed, epoch, i), so a sample is the same in any worker
and a resumed run sees the same patches. The donor is another frame of the dataset, read raw (its RGB
and depth only), resized like the training frames when data.resize is set; patches are pasted into the
normalised image tensor (the donor normalised the same way) and, with data.paste_depth, into the depth.
Pasted pixels become void (255) in 'label' (the frozen segmenter is not trained on them). Outside the
pasted areas every pixel is normal (the paper: "we take all pixels outside the pasted area as normal")
except the training split's labelled unknown objects (254), which data.train_unknowns ignores (the
default: SLEEG uses no anomaly labels), counts as normal, or as anomaly (outlier exposure).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from baselines.openset import IMAGENET_MEAN, IMAGENET_STD, open_set_datasets
from baselines.sleeg.losses import IGNORE
from baselines.sleeg.patches import PatchSettings, paste_patches
from vca_data.datasets import OpenSetDataset
from vca_data.labels import UNKNOWN, VOID

PASTE_STREAM = 1
TRAIN_UNKNOWNS = {"ignore": IGNORE, "normal": 0, "anomaly": 1}


def normalise(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB as the dataset's ImageNet-normalised float32."""
    return ((rgb.astype(np.float32) * np.float32(1 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def patch_settings(cfg: dict) -> PatchSettings:
    d = cfg["data"]
    return PatchSettings(shape=d["patch_shape"], count=int(d["patch_count"]), area=tuple(d["patch_area"]),
                         aspect=tuple(d["patch_aspect"]), points=int(d["patch_points"]), noise=float(d["patch_noise"]))


class SleegTrainDataset(Dataset):
    """An OpenSetDataset's samples plus pasted anomalies and the 'anomaly' target (see the module
    docs). `seed` and `set_epoch` reach the wrapped dataset, as the engine expects."""

    def __init__(self, base: OpenSetDataset, settings: PatchSettings, paste_depth: bool = True,
                 train_unknowns: str = "ignore", resize: list[int] | None = None):
        if train_unknowns not in TRAIN_UNKNOWNS:
            raise ValueError(f"train_unknowns must be one of {list(TRAIN_UNKNOWNS)}, got {train_unknowns!r}")
        if len(base) < 2:
            raise ValueError(f"{base.data_dir}: SLEEG pastes patches from another frame and the split has {len(base)}")
        self.base = base
        self.settings = settings
        self.paste_depth = bool(paste_depth)
        self.unknown_value = TRAIN_UNKNOWNS[train_unknowns]
        self.resize = resize

    @property
    def seed(self):
        return self.base.seed

    @seed.setter
    def seed(self, value) -> None:
        self.base.seed = value

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def _rng(self, index: int) -> np.random.Generator:
        if self.base.seed is None:
            return np.random.default_rng()
        return np.random.default_rng((int(self.base.seed), int(self.base.epoch), int(index), PASTE_STREAM))

    def donor(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (RGB HxWx3 uint8, depth HxW float32) of frame `index`, resized like training frames."""
        episode, frame = int(self.base._episode_of[index]), int(self.base._frame_of[index])
        data = self.base._reader(episode).read(frame, ("rgb", "depth"))
        rgb, depth = data["rgb"], data["depth"].astype(np.float32)
        if self.resize is not None:
            h, w = self.resize
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        return rgb, depth

    def __getitem__(self, index: int) -> dict:
        index = int(index) % len(self)
        sample = self.base[index]
        rng = self._rng(index)
        other = int(rng.integers(0, len(self) - 1))
        other += other >= index  # any frame but this one
        donor_rgb, donor_depth = self.donor(other)
        image = sample["image"].numpy().transpose(1, 2, 0)  # a view: pasted in place into the fresh tensor
        extra = []
        if self.paste_depth and "depth" in sample:
            extra.append((sample["depth"].numpy()[0], donor_depth))
        result = paste_patches(image, donor_rgb, rng, self.settings, normalise, extra, inplace=True)
        pasted = torch.from_numpy(result.mask.view(bool))
        label = sample["label"]
        anomaly = torch.zeros_like(label)
        anomaly[label == UNKNOWN] = self.unknown_value
        anomaly[pasted] = 1
        label[pasted] = VOID
        sample["label"], sample["anomaly"] = label, anomaly
        sample["meta"]["donor"] = other
        return sample


def sleeg_datasets(cfg: dict, data_dir: str | Path, split: str, train: bool) -> Dataset:
    """Training: SleegTrainDataset over the open-set training frames; evaluation: the plain frames."""
    base = open_set_datasets(cfg, data_dir, split, train)
    if not train:
        return base
    d = cfg["data"]
    return SleegTrainDataset(base, patch_settings(cfg), d["paste_depth"], d["train_unknowns"], d["resize"])
