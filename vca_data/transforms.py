"""Joint augmentations over a sample dict: the image, extra dense inputs (depth, optical flow) and label
maps of one sample are resized, flipped and cropped together so they stay pixel-aligned.

A sample is a plain dict. Each transform is told which keys it touches:

- `image_keys`: HxWx3 uint8 images, resized bilinearly, padded with 0;
- `dense_keys`: HxW or HxWxC float maps such as depth in metres, resized bilinearly, padded with 0
  (the "invalid" value of KITTI-style depth);
- `flow_keys`: HxWx2 or HxWx3 optical flow (u, v in pixels, optional third channel = valid flag),
  resized by nearest neighbour so a sparse validity mask stays exact, with (u, v) multiplied by the
  resize factors and u negated on a horizontal flip, padded with 0 (invalid);
- `label_keys`: HxW integer maps (train ids, CARLA tags, instance ids), resized by nearest neighbour
  (values stay exactly those of the input), padded with 255 (void).

Keys that a sample lacks are skipped, so one pipeline serves samples with and without depth or flow;
keys not named anywhere (meta data) pass through untouched. Random transforms draw from the
`numpy.random.Generator` handed to `__call__`, so a pipeline is reproducible from a seed; without one
they draw fresh OS entropy (so DataLoader workers do not repeat each other's augmentations).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch

from vca_data.labels import VOID

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = dict


def _size_of(sample: Sample, keys: Iterable[str]) -> tuple[int, int]:
    """(height, width) shared by every named array in the sample; raises if they disagree."""
    size = None
    first = None
    for key in keys:
        if key not in sample:
            continue
        arr = sample[key]
        hw = tuple(arr.shape[:2]) if isinstance(arr, np.ndarray) else tuple(arr.shape[-2:])
        if size is None:
            size, first = hw, key
        elif hw != size:
            raise ValueError(f"sample arrays differ in size: {first!r} is {size}, {key!r} is {hw}")
    if size is None:
        raise ValueError(f"sample has none of the keys {sorted(set(keys))}")
    return size  # type: ignore[return-value]


def _nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of each destination pixel for a nearest-neighbour resize with pixel centres
    aligned (the same geometry as cv2's bilinear resize, so labels stay on their image pixels)."""
    idx = np.floor((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64)
    return np.clip(idx, 0, src - 1)


def resize_nearest(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an HxW[xC] array of any dtype; output values are input values."""
    rows = _nearest_indices(arr.shape[0], height)
    cols = _nearest_indices(arr.shape[1], width)
    return arr[rows[:, None], cols[None, :]]


def resize_bilinear(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HxW[xC] image or float map, keeping its dtype."""
    if arr.shape[0] == height and arr.shape[1] == width:
        return arr
    if arr.ndim == 3 and arr.shape[2] > 4:
        # cv2 handles at most 4 channels well; resize channel groups separately
        return np.stack([resize_bilinear(arr[..., c], height, width) for c in range(arr.shape[2])], axis=-1)
    work = arr if arr.dtype in (np.uint8, np.uint16, np.float32, np.float64) else arr.astype(np.float32)
    out = cv2.resize(work, (width, height), interpolation=cv2.INTER_LINEAR)
    if arr.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out.astype(arr.dtype, copy=False)


class JointTransform:
    """Base of the geometric transforms: holds the key lists and applies one operation per key kind."""

    def __init__(
        self,
        image_keys: Sequence[str] = ("image",),
        dense_keys: Sequence[str] = ("depth",),
        label_keys: Sequence[str] = ("label", "fine"),
        flow_keys: Sequence[str] = (),
    ):
        self.image_keys = tuple(image_keys)
        self.dense_keys = tuple(dense_keys)
        self.label_keys = tuple(label_keys)
        self.flow_keys = tuple(flow_keys)

    @property
    def all_keys(self) -> tuple[str, ...]:
        return self.image_keys + self.dense_keys + self.flow_keys + self.label_keys

    def _check(self, sample: Sample) -> tuple[int, int]:
        for key in self.all_keys:
            if key in sample and not isinstance(sample[key], np.ndarray):
                raise TypeError(
                    f"{type(self).__name__}: sample[{key!r}] must be a numpy array (apply ToTensor last), "
                    f"got {type(sample[key]).__name__}"
                )
        return _size_of(sample, self.all_keys)

    def _resize(self, sample: Sample, height: int, width: int) -> Sample:
        h, w = self._check(sample)
        if (h, w) == (height, width):
            return sample
        out = dict(sample)
        for key in self.image_keys + self.dense_keys:
            if key in out:
                out[key] = resize_bilinear(out[key], height, width)
        for key in self.flow_keys:
            if key in out:
                flow = resize_nearest(out[key], height, width).astype(np.float32, copy=True)
                flow[..., 0] *= width / w
                flow[..., 1] *= height / h
                out[key] = flow
        for key in self.label_keys:
            if key in out:
                out[key] = resize_nearest(out[key], height, width)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Resize(JointTransform):
    """Resize every named array to (height, width)."""

    def __init__(self, height: int, width: int, **keys: Sequence[str]):
        super().__init__(**keys)
        if height < 1 or width < 1:
            raise ValueError(f"Resize: size must be positive, got {height}x{width}")
        self.height, self.width = int(height), int(width)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return self._resize(sample, self.height, self.width)

    def __repr__(self) -> str:
        return f"Resize({self.height}, {self.width})"


class RandomScale(JointTransform):
    """Resize by a factor drawn uniformly from [min_scale, max_scale] (the same factor on both axes)."""

    def __init__(self, min_scale: float = 0.8, max_scale: float = 1.3, **keys: Sequence[str]):
        super().__init__(**keys)
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomScale: need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        h, w = self._check(sample)
        scale = rng.uniform(self.min_scale, self.max_scale)
        return self._resize(sample, max(1, round(h * scale)), max(1, round(w * scale)))

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomHorizontalFlip(JointTransform):
    """Mirror left-right with probability p; flow u components change sign."""

    def __init__(self, p: float = 0.5, **keys: Sequence[str]):
        super().__init__(**keys)
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        self._check(sample)
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        for key in self.all_keys:
            if key in out:
                out[key] = np.ascontiguousarray(out[key][:, ::-1])
        for key in self.flow_keys:
            if key in out:
                out[key][..., 0] *= -1
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop(JointTransform):
    """Crop a (height, width) window at a random position; samples smaller than the window are first
    padded at the bottom and right (images and dense maps with 0, labels with 255 = void), so padded
    pixels never count as a class."""

    def __init__(self, height: int, width: int, label_fill: int = VOID, **keys: Sequence[str]):
        super().__init__(**keys)
        if height < 1 or width < 1:
            raise ValueError(f"RandomCrop: size must be positive, got {height}x{width}")
        self.height, self.width = int(height), int(width)
        self.label_fill = label_fill

    def _pad(self, arr: np.ndarray, fill: float) -> np.ndarray:
        ph, pw = max(0, self.height - arr.shape[0]), max(0, self.width - arr.shape[1])
        if ph == 0 and pw == 0:
            return arr
        widths = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
        return np.pad(arr, widths, mode="constant", constant_values=fill)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        h, w = self._check(sample)
        ph, pw = max(h, self.height), max(w, self.width)
        top = int(rng.integers(0, ph - self.height + 1))
        left = int(rng.integers(0, pw - self.width + 1))
        out = dict(sample)
        for key in self.all_keys:
            if key not in out:
                continue
            fill = self.label_fill if key in self.label_keys else 0
            padded = self._pad(out[key], fill)
            out[key] = np.ascontiguousarray(padded[top : top + self.height, left : left + self.width])
        return out

    def __repr__(self) -> str:
        return f"RandomCrop({self.height}, {self.width})"


class ToTensor(JointTransform):
    """Numpy arrays to torch tensors: images HxWx3 uint8 -> 3xHxW float in [0, 1]; dense and flow maps
    HxW -> 1xHxW, HxWxC -> CxHxW float32; label maps HxW -> int64. Takes the key lists of the geometric
    transforms so one set of keys serves a whole pipeline."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        out = dict(sample)
        for key in self.image_keys:
            if key in out:
                img = np.asarray(out[key])
                if img.ndim != 3 or img.dtype != np.uint8:
                    raise ValueError(f"ToTensor: {key!r} must be an HxWxC uint8 image, got {img.dtype} {img.shape}")
                out[key] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        for key in self.dense_keys + self.flow_keys:
            if key in out:
                arr = np.asarray(out[key], dtype=np.float32)
                arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
                out[key] = torch.from_numpy(np.ascontiguousarray(arr))
        for key in self.label_keys:
            if key in out:
                out[key] = torch.from_numpy(np.asarray(out[key]).astype(np.int64))
        return out

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """Subtract a per-channel mean and divide by a std (ImageNet statistics by default) on the float
    CxHxW image tensors that ToTensor made."""

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        image_keys: Sequence[str] = ("image",),
    ):
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"Normalize: mean {mean} and std {std} must have equal length and std > 0")
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.image_keys = tuple(image_keys)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        out = dict(sample)
        for key in self.image_keys:
            if key in out:
                img = out[key]
                if not isinstance(img, torch.Tensor) or not img.is_floating_point() or img.shape[0] != len(self.mean):
                    raise ValueError(
                        f"Normalize: {key!r} must be a float {len(self.mean)}xHxW tensor (apply ToTensor first)"
                    )
                out[key] = (img - self.mean) / self.std
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class Compose:
    """Apply transforms in order, handing each the same random generator."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def train_transform(
    crop_height: int, crop_width: int, min_scale: float = 0.8, max_scale: float = 1.3, **keys: Sequence[str]
) -> Compose:
    """The usual training pipeline: random scale, flip, crop, then tensors with ImageNet normalisation."""
    flow_keys = keys.get("flow_keys", ())
    return Compose([
        RandomScale(min_scale, max_scale, **keys),
        RandomHorizontalFlip(0.5, **keys),
        RandomCrop(crop_height, crop_width, **keys),
        ToTensor(keys.get("image_keys", ("image",)), keys.get("dense_keys", ("depth",)),
                 keys.get("label_keys", ("label", "fine")), flow_keys),
        Normalize(image_keys=keys.get("image_keys", ("image",))),
    ])


def eval_transform(height: int | None = None, width: int | None = None, **keys: Sequence[str]) -> Compose:
    """The evaluation pipeline: optional resize to (height, width), then normalised tensors."""
    steps: list = []
    if height is not None and width is not None:
        steps.append(Resize(height, width, **keys))
    steps += [
        ToTensor(keys.get("image_keys", ("image",)), keys.get("dense_keys", ("depth",)),
                 keys.get("label_keys", ("label", "fine")), keys.get("flow_keys", ())),
        Normalize(image_keys=keys.get("image_keys", ("image",))),
    ]
    return Compose(steps)
