"""Benchmark of `vca-carla collect` on the offline world.

1. Safety and coverage: 30 episodes spread over the three scenarios and the six towns; the ego must
   never collide (collision sensor on the ego), and in at least 95% of the episodes every spawned
   unknown object must show up in the fine labels of some frame; train and test episodes must not
   share towns or unknown classes.
2. Throughput: the collection loop with decoding and the background recorder on, against the bare
   render loop (same episode, same agent and rig, images retrieved but neither decoded nor written),
   measured in the same run; target >= 90%.

Run: .venv/bin/python benchmarks/bench_collect.py [--episodes 30] [--width 160 --height 96]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from carla_scenarios.collector import CollectOptions, EpisodeSpec, collect_episode, connect
from vca_data.episodes import EpisodeReader, validate
from vca_data.labels import SCENARIOS, default_catalogue


def plan(n: int) -> list[EpisodeSpec]:
    cat = default_catalogue()
    towns = cat.all_towns()
    specs = []
    for i in range(n):
        town = towns[i % len(towns)]
        scenario = SCENARIOS[(i // len(towns)) % len(SCENARIOS)]
        specs.append(EpisodeSpec(town, scenario, 100 + i, cat.split_of_town(town)))
    return specs


def timed_loop(client, spec, options, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (of this process, so without the writer process) per tick, from the first
    tick of the driving loop to the end of the episode (the recorder's final flush and the teardown
    included, setup excluded)."""
    stamps = []
    collect_episode(client, spec, options, out, "offline",
                    on_tick=lambda t: stamps.append((time.perf_counter(), time.process_time())))
    n = len(stamps)
    return (time.perf_counter() - stamps[0][0]) / n, (time.process_time() - stamps[0][1]) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--frames", type=int, default=36)
    ap.add_argument("--frame-step", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=72)
    ap.add_argument("--throughput-frames", type=int, default=30)
    args = ap.parse_args()

    client, description = connect("offline", "localhost", 2000)
    print(f"backend: {description}")
    options = CollectOptions(frames=args.frames, frame_step=args.frame_step, width=args.width, height=args.height)
    cat = default_catalogue()
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for spec in plan(args.episodes):
            r = collect_episode(client, spec, options, out, "offline")
            problems = validate(r.path)
            with EpisodeReader(r.path) as ep:
                classes = {o["class"] for o in ep.attrs["unknown_objects"]}
            rows.append((spec, r, problems, classes))
            print(f"  {spec.filename:30s} frames {r.frames:3d}  objects {len(r.unknown_objects):2d}  "
                  f"seen {len(r.seen_objects):2d}  collisions {len(r.collisions)}  "
                  f"{'passed' if r.passed_objects else 'before'} them  {r.seconds:5.1f} s"
                  + (f"  INVALID: {problems[0]}" if problems else ""))
        collect_s = time.perf_counter() - t0

        # same episode, interleaved runs, median: the machine is shared, timings drift
        spec = EpisodeSpec("Town01", "construction", 7, "train")
        loop = CollectOptions(frames=args.throughput_frames, frame_step=2, width=320, height=180)
        bare = CollectOptions(**{**loop.__dict__, "record": False})
        timed_loop(client, spec, bare, out / "warm")  # warm caches (town build)
        bare_t, rec_t = [], []
        for k in range(3):
            bare_t.append(timed_loop(client, spec, bare, out / f"bare{k}"))
            rec_t.append(timed_loop(client, spec, loop, out / f"rec{k}"))
        bare_s, rec_s = float(np.median([t[0] for t in bare_t])), float(np.median([t[0] for t in rec_t]))
        bare_cpu, rec_cpu = float(np.median([t[1] for t in bare_t])), float(np.median([t[1] for t in rec_t]))

    collisions = sum(len(r.collisions) for _, r, _, _ in rows)
    seen_all = sum(r.all_objects_seen for _, r, _, _ in rows) / len(rows)
    invalid = sum(bool(p) for _, _, p, _ in rows)
    towns = {s: {spec.town for spec, *_ in rows if spec.split == s} for s in ("train", "test")}
    classes = {s: set().union(*[c for spec, _, _, c in rows if spec.split == s]) for s in ("train", "test")}
    leak = (towns["train"] & towns["test"]) | (classes["train"] & classes["test"])
    wrong = [c for s in classes for c in classes[s] if cat.by_name(c).split != s]
    ratio = bare_s / rec_s
    passed = sum(r.passed_objects for _, r, _, _ in rows)

    checks = [
        ("ego collisions over episodes", f"{collisions} in {len(rows)}", "0", collisions == 0),
        ("episodes driving past all objects", f"{passed} of {len(rows)}", "info", True),
        ("episodes with every object seen", f"{100 * seen_all:.0f}%", ">= 95%", seen_all >= 0.95),
        ("invalid episode files", str(invalid), "0", invalid == 0),
        ("towns/classes shared by splits", str(sorted(leak)) if leak else "none", "none", not leak and not wrong),
        ("recorder-on / bare loop throughput", f"{1 / rec_s:.1f} / {1 / bare_s:.1f} ticks/s = {100 * ratio:.0f}%",
         ">= 90%", ratio >= 0.90),
        ("  loop CPU per tick, bare / recorder on", f"{1000 * bare_cpu:.1f} / {1000 * rec_cpu:.1f} ms = "
         f"{100 * bare_cpu / rec_cpu:.0f}%", "info", True),
        ("  load average (1 min) / cores", f"{os.getloadavg()[0]:.1f} / {os.cpu_count()}", "info", True),
    ]
    print(f"\ncollected {len(rows)} episodes at {args.width}x{args.height}, {args.frames} frames every "
          f"{args.frame_step} ticks, in {collect_s:.0f} s; throughput at 320x180, every 2nd tick recorded "
          f"(median of 3 interleaved runs)")
    print(f"{'check':38s} {'measured':34s} {'target':8s} result")
    for name, value, target, ok in checks:
        print(f"{name:38s} {value:34s} {target:8s} {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
