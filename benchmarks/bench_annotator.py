"""Annotator speed: frame stepping with 30 visible tracks at 1242x375 (KITTI size), including the
repaint, and opening a 1000-frame sequence up to the first frame shown.

Stepping is timed from the key press to the painted frame (the view is repainted synchronously), with
the frame/overlay cache and its prefetch thread, at a key-repeat rate (one step every 40 ms, as when
an arrow key is held) and back to back. The reference, measured in the same run, is the same window
with its caches emptied before every step (decode PNG + masks + overlay on the UI thread).

Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_annotator.py [--data DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5.QtCore import Qt  # noqa: E402
from PyQt5.QtTest import QTest  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402

from annotator.app import MainWindow  # noqa: E402
from annotator.config import default_shortcuts  # noqa: E402
from vca_data.formats.kitti_mots import read_txt, write_txt  # noqa: E402
from vca_data.synthetic import make_kitti_mots_sequence  # noqa: E402

STEP_TARGET_MS = 20.0
OPEN_TARGET_S = 2.0
KEY_REPEAT_S = 0.040


def make_data(data: Path, frames: int) -> tuple[Path, Path]:
    """A 1242x375 sequence with 30 tracks, and a 1000-frame sequence built from its frames played
    forth and back (images hard-linked, instance lines copied), so generating it takes seconds."""
    short = data / "kitti30"
    if not (short / "instances_txt" / "0000.txt").exists():
        make_kitti_mots_sequence(short, seq="0000", num_frames=frames, height=375, width=1242,
                                 num_objects=30, seed=0)
    long = data / "kitti1000"
    if not (long / "instances_txt" / "0000.txt").exists():
        by_frame = read_txt(short / "instances_txt" / "0000.txt")
        cycle = list(range(frames)) + list(range(frames - 2, 0, -1))
        out_frames = {}
        (long / "image_02" / "0000").mkdir(parents=True, exist_ok=True)
        for t in range(1000):
            src = cycle[t % len(cycle)]
            target = long / "image_02" / "0000" / f"{t:06d}.png"
            if not target.exists():
                os.link(short / "image_02" / "0000" / f"{src:06d}.png", target)
            out_frames[t] = [type(o)(t, o.obj_id, o.class_id, o.height, o.width, o.counts)
                             for o in by_frame.get(src, [])]
        write_txt(long / "instances_txt" / "0000.txt", out_frames)
    return short, long


def label_some(window: MainWindow) -> None:
    """Mid-annotation state: a third moving, a third static, the rest proposals or unlabelled."""
    session = window.session
    for k, track in enumerate(session.track_ids):
        if k % 3 == 0:
            session.set_label(track, "moving")
        elif k % 3 == 1:
            session.set_label(track, "static")
        elif k % 2 == 0:
            session.proposals.set(session.name, track, "moving", source="proposal", score=0.7)
    session.version += 1
    window.select_track(session.track_ids[4])


def time_steps(app: QApplication, window: MainWindow, steps: int, pause: float, cold: bool) -> np.ndarray:
    window.set_frame(0)
    app.processEvents()
    times = []
    direction = Qt.Key_Right
    for _ in range(steps):
        if window.frame >= window.session.sequence.num_frames - 1:
            direction = Qt.Key_Left
        elif window.frame == 0:
            direction = Qt.Key_Right
        if cold:
            window.store.frames.clear()
            window.store.overlays.clear()
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        QTest.keyClick(window.view, direction)
        window.view.repaint()
        times.append(time.perf_counter() - start)
        app.processEvents()
    return np.array(times) * 1000.0


def time_open(app: QApplication, root: Path) -> tuple[float, float, int]:
    """Seconds from open_folder() to the first frame painted, the same in a fresh process (imports and
    Qt start-up included), and the number of frames."""
    window = MainWindow(default_shortcuts())
    window.resize(1600, 900)
    window.show()
    app.processEvents()
    start = time.perf_counter()
    assert window.open_folder(root)
    window.view.repaint()
    in_process = time.perf_counter() - start
    frames = window.session.sequence.num_frames
    window.close()
    code = ("import time, sys; t = time.perf_counter();"
            "from PyQt5.QtWidgets import QApplication; app = QApplication(sys.argv[:1]);"
            "from annotator.app import MainWindow; w = MainWindow(); w.resize(1600, 900); w.show();"
            f"w.open_folder({str(root)!r}); w.view.repaint(); print(time.perf_counter() - t); w.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, check=True)
    return in_process, float(out.stdout.strip().splitlines()[-1]), frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="where to keep the generated sequences (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=120, help="frame steps per measurement")
    parser.add_argument("--frames", type=int, default=40, help="frames of the 30-track sequence")
    args = parser.parse_args()
    tmp = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="bench_annotator_")
        args.data = Path(tmp)
    try:
        t0 = time.perf_counter()
        short, long = make_data(args.data, args.frames)
        print(f"data: {short} and {long} ready in {time.perf_counter() - t0:.1f} s")
        app = QApplication.instance() or QApplication(sys.argv[:1])
        window = MainWindow(default_shortcuts())
        window.resize(1600, 900)
        window.show()
        window.activateWindow()
        app.processEvents()
        window.open_folder(short)
        label_some(window)
        visible = np.mean([len(window.session.tracks_at(f)) for f in range(window.session.sequence.num_frames)])
        held = time_steps(app, window, args.steps, KEY_REPEAT_S, cold=False)
        burst = time_steps(app, window, args.steps, 0.0, cold=False)
        cold = time_steps(app, window, max(args.steps // 3, 10), 0.0, cold=True)
        size = f"{window.session.sequence.width}x{window.session.sequence.height}"
        window.close()
        open_s, process_s, frames = time_open(app, long)

        p95 = float(np.percentile(held, 95))
        rows = [
            ("step, key held (40 ms repeat), cached + prefetch", held),
            ("step, back to back, cached + prefetch", burst),
            ("step, reference: caches emptied each step", cold),
        ]
        print(f"\nframe stepping: {size}, {visible:.1f} visible tracks on average, view 1600x900 window, "
              f"repaint included (ms)")
        print(f"{'measurement':52s} {'p50':>7s} {'p95':>7s} {'max':>7s}")
        for name, values in rows:
            print(f"{name:52s} {np.percentile(values, 50):7.2f} {np.percentile(values, 95):7.2f} "
                  f"{values.max():7.2f}")
        print(f"speed-up of the cache (p95, reference / key held): {np.percentile(cold, 95) / p95:.1f}x")
        print(f"\nopening a {frames}-frame sequence (s): open_folder -> first frame painted {open_s:.2f}; "
              f"fresh process incl. imports and Qt start-up {process_s:.2f}")
        step_ok = p95 <= STEP_TARGET_MS
        open_ok = open_s <= OPEN_TARGET_S
        print(f"\n{'target':52s} {'value':>8s} {'limit':>8s}  result")
        print(f"{'step p95, key held (ms)':52s} {p95:8.2f} {STEP_TARGET_MS:8.2f}  {'PASS' if step_ok else 'FAIL'}")
        print(f"{'open 1000 frames to first frame (s)':52s} {open_s:8.2f} {OPEN_TARGET_S:8.2f}  "
              f"{'PASS' if open_ok else 'FAIL'}")
        return 0 if step_ok and open_ok else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
