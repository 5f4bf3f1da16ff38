"""What the open-set baselines learn on a budget: the prototype model (with and without the
contrastive loss) against a plain softmax segmentation head on the same body, data and budget (the
reference that says what the data allows), each evaluated on its own training towns and on the test
towns: mIoU, CA-IoU and the IoU of road / building / sky, per scenario, with wall times.

    python benchmarks/bench_baseline_quality.py                       # collects the demo's data first
    python benchmarks/bench_baseline_quality.py --data demo_out/open_set --config tiny
    python benchmarks/bench_baseline_quality.py --models prototype --set train.iters=1000

Targets (issue 16, the demo's budget): prototype at least 40% mIoU on the training towns and 25% on
the test towns, road, building and sky each at least 50% IoU on the test towns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from baselines.config import build_config
from baselines.engine import train
from baselines.evaluate import evaluate_run
from vca_data.metrics.table import format_table

VARIANTS = {
    "prototype": ("prototype", []),
    "prototype-cl": ("prototype-cl", []),
    "softmax": ("segmenter", ["model.unknown_class=true"]),
}
TARGETS = {"train_miou": 0.40, "test_miou": 0.25, "test_stuff_iou": 0.50}


def collect_demo_data(out: Path) -> None:
    """The demo's open-set data: 1 episode per train town and scenario, the same for the test towns."""
    common = ["--scenario", "all", "--episodes", "1", "--frames", "20", "--width", "320", "--height", "180",
              "--out", str(out)]
    for split, seed in (("train", 0), ("test", 100)):
        subprocess.run(["vca-carla", "collect", "--split", split, "--seed", str(seed), *common], check=True,
                       stdout=subprocess.DEVNULL)


def row(result: dict, scenario: str | None = None) -> dict:
    r = result["overall"] if scenario is None else result["scenarios"][scenario]
    return {"mIoU": r["miou"], "CA-IoU": r["ca_iou"], "road": r["iou"]["road"], "building": r["iou"]["building"],
            "sky": r["iou"]["sky"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="open-set dataset (default: collect the demo's)")
    p.add_argument("--config", default="tiny")
    p.add_argument("--models", default="prototype,prototype-cl,softmax", help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        data = args.data
        if data is None:
            data = work / "open_set"
            if not (data / "manifest.json").is_file():
                print(f"collecting the demo's data into {data} ...", flush=True)
                collect_demo_data(data)
        results: dict = {}
        for name in args.models.split(","):
            model, extra = VARIANTS[name]
            cfg = build_config(args.config, extra + args.set, model=model)
            run = work / f"run_{name}"
            t0 = time.perf_counter()
            summary = train(cfg, run, data, progress=False)
            train_s = time.perf_counter() - t0
            on_train = evaluate_run(run, data, split="train", progress=False)
            on_test = evaluate_run(run, data, split="test", progress=False)
            results[name] = {"train_s": train_s, "images_per_s": summary.images_per_s, "final_loss": summary.final_loss,
                             "train": on_train, "test": on_test}
            print(f"{name}: {summary.steps} steps in {train_s:.0f} s ({summary.images_per_s:.1f} img/s), final loss "
                  f"{summary.final_loss:.3f}; mIoU train towns {on_train['overall']['miou']:.1%}, test towns "
                  f"{on_test['overall']['miou']:.1%}", flush=True)
    for split in ("train", "test"):
        rows = {}
        for name, r in results.items():
            rows[f"{name} all"] = row(r[split])
            for scenario in r[split]["scenarios"]:
                rows[f"{name} {scenario}"] = row(r[split], scenario)
        print(format_table(rows, columns=["mIoU", "CA-IoU", "road", "building", "sky"],
                           percent=("mIoU", "CA-IoU", "road", "building", "sky"), title=f"{split} towns ({data})"))
    failed = False
    if "prototype" in results:
        r = results["prototype"]
        stuff = min(r["test"]["overall"]["iou"][c] for c in ("road", "building", "sky"))
        checks = {"train_miou": r["train"]["overall"]["miou"], "test_miou": r["test"]["overall"]["miou"],
                  "test_stuff_iou": stuff}
        for key, value in checks.items():
            ok = value >= TARGETS[key]
            failed |= not ok
            print(f"prototype {key}: {value:.1%} (target {TARGETS[key]:.0%}): {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({k: {"train_s": v["train_s"], "images_per_s": v["images_per_s"],
                                             "train": v["train"]["overall"], "test": v["test"]["overall"],
                                             "test_scenarios": v["test"]["scenarios"]} for k, v in results.items()},
                                        indent=1, default=float))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
