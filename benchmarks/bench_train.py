"""Training throughput of the baselines engine: images/s of `baselines.engine.train` on synthetic
episodes, against the same model stepping on one batch already in memory (the compute-only reference,
measured in the same run), and the share of the training time the model waits for the data loader
(target: under 10%).

    python benchmarks/bench_train.py                       # tiny config, CPU, 96x128 crops
    python benchmarks/bench_train.py --device cuda --config paper --crop 512 1024 --frame 540 1080
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from baselines.config import build_config
from baselines.engine import build_model, train
from vca_data.synthetic_episodes import make_synthetic_episode

TARGET_WAIT = 0.10


def compute_only(cfg: dict, device: torch.device, steps: int, warmup: int) -> float:
    """Images/s of forward + loss + backward + SGD step on one fixed random batch."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    b = cfg["data"]["batch_size"]
    h, w = cfg["data"]["crop"]
    batch = {
        "image": torch.randn(b, 3, h, w, device=device),
        "depth": torch.rand(b, 1, h, w, device=device) * 80,
        "label": torch.randint(0, 19, (b, h, w), device=device),
    }
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg["train"]["amp"])
    gen = torch.Generator().manual_seed(0)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, enabled=scaler.is_enabled()):
            out = model(batch)
        loss = model.loss(out, batch, gen)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        float(loss.detach())  # the engine reads the loss every step (NaN check): same synchronisation
    return steps * b / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--model", default="prototype", choices=["prototype", "prototype-cl"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=40, help="timed training steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: the config's train.threads)")
    p.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--frame", type=int, nargs=2, default=(180, 240), metavar=("H", "W"),
                   help="size of the synthetic episode frames (default 180 240)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    sets = [f"train.iters={args.warmup + args.steps}", f"train.milestones=[{args.warmup + args.steps}]",
            "train.checkpoint_every=100000", "train.eval_every=0", f"data.workers={args.workers}",
            "model.weights=null", f"train.log_every={args.warmup + args.steps}"]
    if args.threads:
        sets.append(f"train.threads={args.threads}")
    if args.batch_size:
        sets.append(f"data.batch_size={args.batch_size}")
    if args.crop:
        sets.append(f"data.crop=[{args.crop[0]},{args.crop[1]}]")
    cfg = build_config(args.config, sets, model=args.model)
    if cfg["train"]["threads"] > 0 and device.type == "cpu":
        torch.set_num_threads(cfg["train"]["threads"])
    fh, fw = args.frame
    print(f"{args.model} ({args.config}: {cfg['model']['backbone']}, {cfg['model']['second_stream'] or 'RGB only'}), "
          f"batch {cfg['data']['batch_size']}, crop {cfg['data']['crop']}, frames {fh}x{fw}, "
          f"{args.workers} workers, {device}, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for i, town in enumerate(("Town01", "Town03", "Town05")):
            make_synthetic_episode(data, town, ("parking", "construction", "barrier")[i], i, num_frames=12,
                                   height=fh, width=fw)
        summary = train(cfg, Path(tmp) / "run", data, progress=False, device=args.device)
    timed = summary.step_times[args.warmup:]
    wall = sum(t for _, t in timed)
    waited = sum(w for w, _ in timed)
    engine_ips = len(timed) * cfg["data"]["batch_size"] / wall
    wait_share = waited / wall
    reference_ips = compute_only(cfg, device, min(args.steps, 20), args.warmup)

    rows = [
        ("engine training (images/s)", f"{engine_ips:.2f}", "-", ""),
        ("compute only, batch in memory (images/s)", f"{reference_ips:.2f}", "-", ""),
        ("engine / compute only", f"{engine_ips / reference_ips:.2f}", ">= 0.90", ""),
        ("share of step time waiting for data", f"{wait_share:.1%}", f"< {TARGET_WAIT:.0%}",
         "PASS" if wait_share < TARGET_WAIT else "FAIL"),
        ("first step (worker start-up, s)", f"{summary.step_times[0][1]:.2f}", "-", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'quantity'.ljust(width)}  {'value':>8}  {'target':>8}  result")
    for name, value, target, result in rows:
        print(f"{name.ljust(width)}  {value:>8}  {target:>8}  {result}")
    return 0 if wait_share < TARGET_WAIT else 1


if __name__ == "__main__":
    sys.exit(main())
