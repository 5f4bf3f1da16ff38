"""VCANet speed: training images/s (phase 1 and phase 2 steps) and inference frames/s (both streams, the
three heads and their post-processing) at the paper's 1024x512 with ResNet-50 and the authors' head
settings, on the CPU or a GPU (`--device cuda`). Reference in the same run: the plain two-stream
softmax segmenter on the same backbone (baselines/models/segmenter.py), so the cost of the SOLO heads
is read against a dense head. Paper: 5 fps on a 1080Ti at 1024x512; the issue's GPU target: 25 fps.

    .venv/bin/python benchmarks/bench_vcanet.py [--size 512x1024] [--repeats 1] [--device cpu|cuda] [--backbone resnet50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.models.segmenter import SoftmaxSegmenter  # noqa: E402
from baselines.models.vcanet import VCANet  # noqa: E402


def batch(h: int, w: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, h // 4:h // 2, w // 8:w // 4] = True
    masks[1, h // 2:3 * h // 4, w // 2:5 * w // 8] = True
    masks[2, h // 3:2 * h // 3, 3 * w // 4:7 * w // 8] = True
    inst = {"masks": masks.to(device), "things": torch.tensor([2, 0, 2], device=device),
            "motion": torch.tensor([0, 1, 0], device=device)}
    return {"image": torch.randn(1, 3, h, w, generator=g).to(device),
            "flow": torch.randn(1, 3, h, w, generator=g).to(device),
            "depth": torch.rand(1, 1, h, w, generator=g).to(device) * 50,
            "semantic": torch.randint(0, 19, (1, h, w), generator=g).to(device),
            "label": torch.randint(0, 19, (1, h, w), generator=g).to(device),
            "instances": [inst]}


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def train_step(model, params, b):
    opt = torch.optim.SGD(params, lr=1e-4)

    def step():
        terms = model.loss(model(b), b)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x1024", help="HxW of the input (default the paper's 512x1024)")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps after one warm-up (default 1: a 1024x512 ResNet-50 step is slow on a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet18", "resnet50"])
    args = parser.parse_args()
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be HxW, e.g. 512x1024, got {args.size!r}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    b = batch(h, w, args.device)
    rows = []
    for phase in (1, 2):
        model = VCANet(backbone=args.backbone, norm="bn", phase=phase).to(args.device)
        model.train()
        t = timed(train_step(model, model.trainable_parameters(), b), args.repeats, args.device)
        rows.append((f"VCANet phase {phase} training step", 1 / t, "img/s"))
    model.eval()
    rows.append(("VCANet inference (3 heads + Matrix NMS)", 1 / timed(lambda: model.predict(b), args.repeats, args.device), "fps"))
    ref = SoftmaxSegmenter(backbone=args.backbone, norm="bn").to(args.device)
    ref.train()
    rows.append(("reference: two-stream softmax segmenter training step",
                 1 / timed(train_step(ref, [p for p in ref.parameters() if p.requires_grad], b), args.repeats, args.device),
                 "img/s"))
    ref.eval()
    rows.append(("reference: softmax segmenter inference", 1 / timed(lambda: ref.predict(b), args.repeats, args.device), "fps"))
    print(f"VCANet at {h}x{w}, {args.backbone}, device {args.device}, threads {torch.get_num_threads()}, batch 1")
    for name, value, unit in rows:
        print(f"  {name:58s} {value:8.3f} {unit}")
    if args.device == "cuda":
        fps = rows[2][1]
        print(f"{'PASS' if fps >= 25 else 'FAIL'}: inference {fps:.1f} fps against the 25 fps GPU target (paper: 5 fps on a 1080Ti)")
    else:
        print("(no GPU here: the 25 fps target is for a GPU; these are the CPU figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
