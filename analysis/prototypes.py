"""Masked-average-pool prototypes of object classes (VCA paper, equation 2): per image, the feature map
is pooled under each class mask; a class prototype is the mean of its per-image pooled vectors over up
to N images. Saved with counts and provenance as an .npz file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vca_data.io import atomic_path

PROTOTYPES_FORMAT = "vca-prototypes"
PROTOTYPES_VERSION = 1


def masked_average_pool(features: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool a feature map under image-resolution masks.

    features: (B, C, h, w); masks: (B, K, H, W) with values in [0, 1] (bool allowed).
    Each mask is downsampled to (h, w) by area averaging, so a feature cell is weighted by the fraction
    of its receptive pixels that the mask covers (a thin object still counts where nearest-neighbour
    downsampling would drop it). Returns the pooled vectors (B, K, C) and the weight sums (B, K);
    a mask with zero weight gives a zero vector.
    """
    if features.ndim != 4 or masks.ndim != 4 or features.shape[0] != masks.shape[0]:
        raise ValueError(f"expected features (B,C,h,w) and masks (B,K,H,W) with the same B, got "
                         f"{tuple(features.shape)} and {tuple(masks.shape)}")
    h, w = features.shape[-2:]
    weights = F.interpolate(masks.to(features.dtype), size=(h, w), mode="area")  # (B, K, h, w)
    sums = torch.einsum("bkhw,bchw->bkc", weights, features)
    mass = weights.sum(dim=(2, 3))
    pooled = sums / mass.clamp_min(1e-12).unsqueeze(-1)
    return pooled * (mass > 0).unsqueeze(-1), mass


@dataclass
class Prototypes:
    """Class prototypes with what they were computed from."""

    names: list[str]
    vectors: np.ndarray  # (K, C) float32
    counts: np.ndarray  # (K,) images that contributed
    splits: list[str]  # "train" / "test" for unknown classes, "known" for known classes
    scenarios: list[str]
    provenance: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: prototypes are saved as .npz")
        meta = {"format": PROTOTYPES_FORMAT, "version": PROTOTYPES_VERSION, "names": self.names,
                "splits": self.splits, "scenarios": self.scenarios, "provenance": self.provenance}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, vectors=self.vectors.astype(np.float32), counts=self.counts.astype(np.int64),
                         meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Prototypes:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                vectors, counts = z["vectors"], z["counts"]
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a prototypes file ({e})") from None
        if meta.get("format") != PROTOTYPES_FORMAT or meta.get("version") != PROTOTYPES_VERSION:
            raise ValueError(f"{path}: not a {PROTOTYPES_FORMAT} v{PROTOTYPES_VERSION} file")
        k = len(meta["names"])
        if vectors.ndim != 2 or vectors.shape[0] != k or counts.shape != (k,):
            raise ValueError(f"{path}: {k} names but vectors {vectors.shape} and counts {counts.shape}")
        return cls(meta["names"], vectors, counts, meta["splits"], meta["scenarios"], meta.get("provenance", {}))


class PrototypeAccumulator:
    """Running sums of per-image pooled vectors, one slot per class, capped at `max_images` images a class."""

    def __init__(self, num_classes: int, dim: int, max_images: int | None = None):
        self.sums = np.zeros((num_classes, dim), dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.max_images = max_images

    def wants(self, k: int) -> bool:
        return self.max_images is None or self.counts[k] < self.max_images

    def full(self) -> bool:
        return self.max_images is not None and bool((self.counts >= self.max_images).all())

    def add(self, k: int, vector: np.ndarray) -> None:
        if self.wants(k):
            self.sums[k] += vector
            self.counts[k] += 1

    def means(self) -> np.ndarray:
        return (self.sums / np.maximum(self.counts, 1)[:, None]).astype(np.float32)


@dataclass(frozen=True)
class ClassSpec:
    """One class to build a prototype for: unknown classes are selected by their fine id, known classes
    by their train id."""

    name: str
    split: str  # "train" / "test" / "known"
    scenario: str
    fine_id: int | None = None
    train_id: int | None = None

    def mask(self, fine: np.ndarray, train_ids: np.ndarray | None) -> np.ndarray:
        if self.fine_id is not None:
            return fine == self.fine_id
        assert train_ids is not None and self.train_id is not None
        return (train_ids == self.train_id) & (fine == 0)


def class_specs(include_known: bool = False) -> list[ClassSpec]:
    """Every unknown class of the catalogue (both splits), then optionally the 19 known classes."""
    from vca_data.labels import TRAIN_NAMES, default_catalogue

    specs = [ClassSpec(c.name, c.split, c.scenario, fine_id=c.fine_id) for c in default_catalogue().classes]
    if include_known:
        specs += [ClassSpec(n, "known", "", train_id=i) for i, n in enumerate(TRAIN_NAMES)]
    return specs
