"""SLEEG's data-side costs: pasting 10 anomaly patches per image (baselines/sleeg/patches.py) at 320x180
and 1024x512 for the paper's Harris shape and the code's random-point shape, on uint8 RGB and on the
normalised float32 image the dataset pastes into; and the SLEEG training dataset's cost per sample
against the plain open-set sample it wraps (donor read + pasting). Reference for the target (pasting
under 10% of a training step): one training step of the tiny SLEEG (sleeg-tiny sizes: ResNet-18 FPN
segmenter, 96x128 crops, batch 4) on this machine's CPU, measured in the same run.

    .venv/bin/python benchmarks/bench_sleeg.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.models.segmenter import SoftmaxSegmenter  # noqa: E402
from baselines.models.sleeg import Sleeg  # noqa: E402
from baselines.sleeg.data import SleegTrainDataset, normalise  # noqa: E402
from baselines.sleeg.patches import PatchSettings, paste_patches  # noqa: E402
from vca_data.datasets import OpenSetDataset  # noqa: E402
from vca_data.synthetic_episodes import make_synthetic_episode  # noqa: E402
from vca_data.transforms import Compose, RandomCrop  # noqa: E402


def _natural(h: int, w: int, seed: int) -> np.ndarray:
    """A textured image with edges and corners (blocks of random colour, smoothed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    img = np.kron(small, np.ones((16, 16, 1), np.uint8))[:h, :w]
    return np.clip(img.astype(np.int16) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)


def time_paste(h: int, w: int, shape: str, normalised: bool, repeats: int) -> float:
    target, donor = _natural(h, w, 0), _natural(h, w, 1)
    convert = normalise if normalised else None
    image = normalise(target) if normalised else target
    settings = PatchSettings(shape=shape)
    paste_patches(image, donor, np.random.default_rng(0), settings, convert, inplace=True)  # warm-up
    t0 = time.perf_counter()
    for i in range(repeats):
        paste_patches(image, donor, np.random.default_rng(i), settings, convert, inplace=True)
    return (time.perf_counter() - t0) / repeats


def time_dataset(repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        for town, scenario, seed in [("Town01", "parking", 0), ("Town02", "parking", 2)]:
            make_synthetic_episode(Path(tmp), town, scenario, seed, num_frames=4, height=180, width=320)
        base = OpenSetDataset(tmp, transform=Compose([RandomCrop(96, 128)]), seed=0)
        sleeg = SleegTrainDataset(base, PatchSettings())
        n = len(base)
        for ds in (base, sleeg):
            ds[0]
        t0 = time.perf_counter()
        for i in range(repeats):
            base[i % n]
        t_base = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        for i in range(repeats):
            sleeg[i % n]
        return t_base, (time.perf_counter() - t0) / repeats


def time_step(repeats: int) -> float:
    torch.manual_seed(0)
    seg = SoftmaxSegmenter(backbone="resnet18", weights=None, norm="gn", second_stream="depth", fpn_channels=64,
                           head_channels=64)
    model = Sleeg(seg, 512, head_channels=32)
    opt = torch.optim.SGD(model.head.parameters(), lr=0.01, momentum=0.9)
    anomaly = torch.zeros(4, 96, 128, dtype=torch.long)
    anomaly[:, 30:60, 40:80] = 1
    batch = {"image": torch.randn(4, 3, 96, 128), "depth": torch.rand(4, 1, 96, 128) * 50,
             "label": torch.zeros(4, 96, 128, dtype=torch.long), "anomaly": anomaly}
    model.train()

    def step(i: int) -> None:
        model.current_step = i
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0)
    t0 = time.perf_counter()
    for i in range(repeats):
        step(i + 1)
    return (time.perf_counter() - t0) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"pasting 10 patches per image (ms, mean of {args.repeats}):")
    print(f"{'size':>10} {'shape':>7} {'uint8':>8} {'float32':>8}")
    for h, w in ((180, 320), (512, 1024)):
        for shape in ("harris", "random"):
            a = time_paste(h, w, shape, False, args.repeats) * 1e3
            b = time_paste(h, w, shape, True, args.repeats) * 1e3
            print(f"{w:>5}x{h:<4} {shape:>7} {a:8.2f} {b:8.2f}")
    t_base, t_sleeg = time_dataset(args.repeats)
    print(f"dataset sample, 320x180 frames, 96x128 crop: open-set {t_base * 1e3:.2f} ms, SLEEG {t_sleeg * 1e3:.2f} ms "
          f"(+{(t_sleeg - t_base) * 1e3:.2f} ms: donor read + pasting)")
    t_step = time_step(max(3, args.repeats // 4))
    per_image = (t_sleeg - t_base)
    print(f"tiny SLEEG training step (batch 4, 96x128, 1 CPU thread): {t_step * 1e3:.0f} ms; "
          f"pasting + donor for its 4 images: {4 * per_image * 1e3:.1f} ms = {4 * per_image / t_step:.1%} of the step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
