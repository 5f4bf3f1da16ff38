"""Benchmark of dense optical flow + Middlebury colour coding (vca_data.flow) on a KITTI-sized frame pair
(1242x375), per DIS preset, against OpenCV's Farneback flow measured in the same run as the reference.
Target: the default preset (vca_data.flow.DEFAULT_PRESET) with colour coding <= 30 ms per pair. The
end-point error against the known true flow of the pair (a textured image shifted by a smooth field)
is printed too, so speed is not bought with accuracy unnoticed.

    .venv/bin/python benchmarks/bench_flow.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

from vca_data import flow as vf

HEIGHT, WIDTH = 375, 1242
TARGET_MS = 30.0


def frame_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured RGB frame, the frame warped by a smooth known flow (up to ~12 px), and that flow
    (first -> second)."""
    rng = np.random.default_rng(seed)
    gray = np.zeros((HEIGHT, WIDTH), np.float32)
    for sigma, weight in ((1.0, 0.4), (3.0, 1.0), (9.0, 1.5)):
        layer = cv2.GaussianBlur(rng.random((HEIGHT, WIDTH), np.float32), (0, 0), sigma)
        gray += weight * (layer - layer.mean()) / (layer.std() + 1e-6)
    first = np.clip(128 + 35 * gray, 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    flow = np.stack([6.0 + 6.0 * np.sin(xs / 200.0), 2.0 * np.cos(ys / 90.0)], -1).astype(np.float32)
    # second(x + flow(x)) = first(x): sample first at x - flow (the flow is smooth, so this inverse is close).
    second = cv2.remap(first, xs - flow[..., 0], ys - flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return cv2.cvtColor(first, cv2.COLOR_GRAY2RGB), cv2.cvtColor(second, cv2.COLOR_GRAY2RGB), flow


def time_ms(function, repeats: int) -> tuple[float, object]:
    result = function()  # warm-up (allocations, thread pool)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times)), result


def end_point_error(estimate: np.ndarray, truth: np.ndarray, border: int = 20) -> float:
    inner = np.s_[border:-border, border:-border]
    return float(np.mean(np.linalg.norm(estimate[inner] - truth[inner], axis=2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    first, second, truth = frame_pair()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"frame pair {WIDTH}x{HEIGHT}, median of {args.repeats} runs, OpenCV {cv2.__version__}, "
          f"{cv2.getNumThreads()} threads, load average {load:.1f} on {os.cpu_count()} CPUs")
    rows = []
    for preset in vf.DIS_PRESETS:
        estimator = vf.FlowEstimator(preset)

        def run(estimator=estimator):
            flow = estimator(first, second)
            return flow, vf.flow_to_color(flow, max_magnitude=30.0)

        ms, (flow, _) = time_ms(run, args.repeats)
        rows.append((f"DIS {preset} + colour", ms, end_point_error(flow, truth), preset == vf.DEFAULT_PRESET))
    gray0, gray1 = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY), cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)

    def farneback():
        flow = cv2.calcOpticalFlowFarneback(gray0, gray1, None, 0.5, 4, 15, 3, 5, 1.2, 0)
        return flow, vf.flow_to_color(flow, max_magnitude=30.0)

    ms, (flow, _) = time_ms(farneback, max(args.repeats // 4, 3))
    reference = ms
    rows.append(("Farneback + colour (reference)", ms, end_point_error(flow, truth), False))
    coding_ms, _ = time_ms(lambda: vf.flow_to_color(truth, max_magnitude=30.0), args.repeats)
    print(f"\n{'method':34s} {'ms/pair':>8s} {'x faster':>9s} {'EPE px':>7s}  target")
    ok = True
    for name, ms, epe, is_default in rows:
        verdict = ""
        if is_default:
            passed = ms <= TARGET_MS
            ok &= passed
            verdict = f"<= {TARGET_MS:.0f} ms (default preset): {'PASS' if passed else 'FAIL'}"
        print(f"{name:34s} {ms:8.1f} {reference / ms:9.1f} {epe:7.2f}  {verdict}")
    print(f"colour coding alone: {coding_ms:.1f} ms per frame")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
