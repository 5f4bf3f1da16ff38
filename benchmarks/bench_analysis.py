"""Prototype extraction throughput at 800x600 and the share of time spent outside the backbone.

Reference measured in the same run: the bare backbone forward on the same number of images (no
reading, no pooling). Target (issue 8): time outside the backbone under 10% of the total.
Weights: random ResNet-50 (ImageNet weights are not downloadable here; the compute is the same)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.extract import ExtractionTiming, extract_prototypes  # noqa: E402
from analysis.features import build_extractor  # noqa: E402
from analysis.prototypes import class_specs  # noqa: E402
from vca_data.synthetic_episodes import make_synthetic_episode  # noqa: E402

FRAMES, H, W, BATCH = 6, 600, 800, 2


def main() -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        for town, scenario, seed in [("Town01", "parking", 0), ("Town02", "barrier", 1)]:
            make_synthetic_episode(data, town=town, scenario=scenario, seed=seed, num_frames=FRAMES, height=H, width=W)
        extractor, device, _ = build_extractor("none", "layer4", "auto", "resnet50")
        with torch.inference_mode():
            extractor(torch.zeros(1, 3, H, W, device=device))  # warm-up
        timing = ExtractionTiming()
        extract_prototypes(data, extractor, class_specs(), max_images=None, batch_size=BATCH, device=device,
                           progress=False, timing=timing)
        images = timing.images
        x = torch.randn(BATCH, 3, H, W, device=device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(0, images, BATCH):
                extractor(x)
        bare = time.perf_counter() - t0
    share = timing.outside_share
    print(f"{'device':28s} {device}")
    print(f"{'images (800x600)':28s} {images}")
    print(f"{'pipeline images/s':28s} {images / timing.total_s:.2f}")
    print(f"{'bare backbone images/s':28s} {images / bare:.2f}  (reference)")
    print(f"{'pipeline / bare time':28s} {timing.total_s / bare:.3f}")
    print(f"{'time outside backbone':28s} {100 * share:.1f}%  target < 10%  {'PASS' if share < 0.10 else 'FAIL'}")
    return 0 if share < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
