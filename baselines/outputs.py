"""Files that predictions are written as, atomically: PNG images, NumPy arrays, and the metric-ready
pair of one prediction (train ids and unknown score, the names `vca-baseline metrics` reads)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vca_data.io import atomic_path


def write_png(path: Path, image: np.ndarray) -> None:
    """An RGB (HxWx3) or single-channel image as PNG, atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_prediction(out_dir: str | Path, name: str, semantic: np.ndarray, unknown_score: np.ndarray,
                     score_suffix: str = "_unknownScore") -> list[Path]:
    """The metric-ready files of one prediction: <name>_labelTrainIds.png (uint8 train ids, 254 unknown;
    Cityscapes' naming) and <name><score_suffix>.npy (float32 score: the unknown class's probability,
    or an anomaly score)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, scores = out_dir / f"{name}_labelTrainIds.png", out_dir / f"{name}{score_suffix}.npy"
    write_png(labels, semantic.astype(np.uint8))
    write_npy(scores, unknown_score.astype(np.float32))
    return [labels, scores]
