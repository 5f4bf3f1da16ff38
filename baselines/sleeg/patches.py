"""Synthetic anomalies for SLEEG: convex patches cut from another image and pasted into a training
image; the pasted pixels are the anomaly class, the rest normal.

Each of `count` patches (10, paper section "Parameter Sensitivity") starts as a rectangle whose area is
a uniform 3-6% of the *target* image and whose aspect (width / height) is uniform in 0.8-1.2 (the
authors' code, core/modeling/codec.py PatchEncoderDecoder.DEFAULT_PATCH_CFG and add_patch), cut from
the donor at a uniform position. Inside the rectangle the pasted shape is a convex polygon:

- ``"harris"`` (the paper, "Anomaly Patch Rendering"): the convex hull of the rectangle's Harris
  corners (cv2.cornerHarris, block 2, aperture 3, k 0.04; corners are pixels whose response exceeds
  `harris_rel` of the rectangle's maximum). A flat rectangle with fewer than three corners falls back
  to the random-point hull (counted in `PasteResult.fallbacks`);
- ``"random"`` (the code, core/modeling/augment.py RandomRoadObject: `pts = np.random.rand(15, 2)`):
  the convex hull of `points` (15) uniform random points in the rectangle.

So the area and aspect ranges hold for the rectangles; the pasted polygon covers part of its
rectangle. The polygon is pasted at a uniform position of the target; later patches cover earlier
ones. With `noise` > 0 a patch's content is replaced, with that probability, by N(0, 1) noise in the
normalised image space (the code's `noise_ratio`, 0.1 in configs/exps/deeplabv3_res50.py; the paper
has none). Everything is drawn from the numpy Generator passed in, so a seeded generator gives the
same patches every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

SHAPES = ("harris", "random")


@dataclass(frozen=True)
class PatchSettings:
    shape: str = "harris"
    count: int = 10
    area: tuple[float, float] = (0.03, 0.06)
    aspect: tuple[float, float] = (0.8, 1.2)
    points: int = 15
    harris_rel: float = 0.01
    noise: float = 0.0

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"patch shape must be one of {SHAPES}, got {self.shape!r}")
        if self.count < 0 or self.points < 3:
            raise ValueError(f"need patch count >= 0 and points >= 3, got {self.count}, {self.points}")
        if not (0 < self.area[0] <= self.area[1] < 1 and 0 < self.aspect[0] <= self.aspect[1]):
            raise ValueError(f"need 0 < area min <= max < 1 and 0 < aspect min <= max, got {self.area}, {self.aspect}")
        if not 0 <= self.noise <= 1 or not 0 < self.harris_rel < 1:
            raise ValueError(f"need noise in [0, 1] and harris_rel in (0, 1), got {self.noise}, {self.harris_rel}")


@dataclass
class PasteResult:
    image: np.ndarray                 # HxWxC, the target with the patches pasted (same dtype)
    mask: np.ndarray                  # HxW uint8, 1 pasted anomaly, 0 normal
    rectangles: list[tuple[int, int, int, int]] = field(default_factory=list)  # (y, x, h, w) in the target
    shapes: list[np.ndarray] = field(default_factory=list)  # hxw bool polygon of each patch
    fallbacks: int = 0                # Harris patches that had too few corners


def rectangle_size(rng: np.random.Generator, height: int, width: int, settings: PatchSettings) -> tuple[int, int]:
    """(h, w) of a patch rectangle: area uniform in settings.area of height x width, aspect w/h uniform
    in settings.aspect, rounded to pixels and clipped to the image."""
    area = rng.uniform(*settings.area) * height * width
    aspect = rng.uniform(*settings.aspect)
    w = int(round(math.sqrt(area * aspect)))
    h = int(round(math.sqrt(area / aspect)))
    return max(1, min(height, h)), max(1, min(width, w))


def _fill_hull(points_xy: np.ndarray, h: int, w: int) -> np.ndarray:
    hull = cv2.convexHull(np.round(points_xy).astype(np.int32).reshape(-1, 1, 2))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def random_hull(rng: np.random.Generator, h: int, w: int, points: int) -> np.ndarray:
    """hxw bool: the convex hull of `points` uniform random points in the rectangle."""
    pts = rng.uniform(0.0, 1.0, size=(points, 2)) * np.array([w - 1, h - 1], dtype=np.float64)
    return _fill_hull(pts, h, w)


def harris_hull(rgb: np.ndarray, rel: float) -> np.ndarray | None:
    """hxw bool: the convex hull of the Harris corners of an hxwx3 uint8 patch, or None when there
    are fewer than three corners or their hull is degenerate."""
    h, w = rgb.shape[:2]
    if h < 3 or w < 3:
        return None
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    response = cv2.cornerHarris(gray, 2, 3, 0.04)
    top = float(response.max())
    if not top > 0:
        return None
    ys, xs = np.nonzero(response > rel * top)
    if len(xs) < 3:
        return None
    mask = _fill_hull(np.stack([xs, ys], axis=1).astype(np.float64), h, w)
    return mask if mask.sum() >= 3 and (np.ptp(xs) > 0 and np.ptp(ys) > 0) else None


def paste_patches(
    image: np.ndarray,
    donor_rgb: np.ndarray,
    rng: np.random.Generator,
    settings: PatchSettings = PatchSettings(),
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
    extra: list[tuple[np.ndarray, np.ndarray]] = (),
    inplace: bool = False,
) -> PasteResult:
    """Paste `settings.count` convex patches of the donor into a copy of `image`.

    `image` is HxWxC (any dtype: uint8 RGB, or an ImageNet-normalised float array); `donor_rgb` is the
    donor's H'xW'x3 uint8 RGB, where the Harris corners are found; `convert` maps a donor rectangle to
    the values pasted (e.g. ImageNet normalisation; default: the RGB as it is), so only the patches
    are converted. `extra` pairs (target HxW[xC], donor H'xW'[xC])
    are pasted with the same shapes (e.g. depth), in place; with `inplace` the image is too (no copy).
    Noise patches draw N(0, 1) values."""
    if image.ndim != 3 or donor_rgb.ndim != 3 or donor_rgb.shape[2] != 3:
        raise ValueError(f"paste_patches: need HxWxC image and H'xW'x3 donor, got {image.shape}, {donor_rgb.shape}")
    out = image if inplace else image.copy()
    height, width = image.shape[:2]
    dh, dw = donor_rgb.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    result = PasteResult(out, mask)
    for _ in range(settings.count):
        h, w = rectangle_size(rng, height, width, settings)
        h, w = min(h, dh), min(w, dw)
        sy, sx = int(rng.integers(0, dh - h + 1)), int(rng.integers(0, dw - w + 1))
        ty, tx = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        shape = None
        if settings.shape == "harris":
            shape = harris_hull(donor_rgb[sy:sy + h, sx:sx + w], settings.harris_rel)
            if shape is None:
                result.fallbacks += 1
        if shape is None:
            shape = random_hull(rng, h, w, settings.points)
        where = shape[:, :, None]
        if settings.noise > 0 and rng.uniform() < settings.noise:
            source = rng.standard_normal((h, w, out.shape[2])).astype(out.dtype)
        else:
            source = donor_rgb[sy:sy + h, sx:sx + w]
            source = source if convert is None else convert(source)
        np.copyto(out[ty:ty + h, tx:tx + w], source, where=where)  # much faster than boolean indexing
        for target, other in extra:
            np.copyto(target[ty:ty + h, tx:tx + w], other[sy:sy + h, sx:sx + w], where=shape if target.ndim == 2 else where)
        mask[ty:ty + h, tx:tx + w] |= shape.view(np.uint8)
        result.rectangles.append((ty, tx, h, w))
        result.shapes.append(shape)
    return result
