"""The training engine shared by every baseline: one readable loop (build the model, the data, the
optimiser and schedule; then forward, loss, backward, step), with the run folder, checkpoints and an
exact `--resume`, mixed precision on CUDA, multi-process DDP (torchrun, env:// init), seeds, periodic
evaluation through vca_data.metrics, and a clear stop when the loss stops being finite.

Exact resume rests on three choices: the sample order is a function of (seed, epoch) only (a
DistributedSampler that can start part-way through an epoch), the augmentation of a sample is a
function of (seed, epoch, index) only (independent of workers), and the random draws of a loss
come from a generator seeded by (seed, step, rank). The global RNG states (python, numpy, torch, CUDA)
of every rank are saved as well, for anything else that draws from them.

A model family declares what it is built from, the data it reads and how it is evaluated in a
ModelSpec (baselines.spec; the families are listed in baselines.registry), so the one loop here trains
every baseline. Runs log to RUN/log.csv and to TensorBoard event files in RUN/tensorboard (loss terms,
lr, images/s, data wait, evaluation metrics and prediction panels).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from baselines.config import read_run_config, save_config
from baselines.registry import MODELS, build_model, spec_of
from baselines.runs import (
    RunError,
    init_weights,
    latest_checkpoint,
    load_checkpoint,
    load_run,
    load_run_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vca_data.io import atomic_path, atomic_write_json

__all__ = [
    "MODELS", "RunError", "TrainingDiverged", "build_model", "latest_checkpoint", "load_checkpoint", "load_run",
    "load_run_model", "save_checkpoint", "train",
]
LOG_FIELDS = ("step", "epoch", "lr", "loss", "terms", "images_per_s", "data_wait", "elapsed_s")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the checkpoint that was kept."""


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1, env:// rendezvous: NCCL on
    GPUs, gloo on CPUs) and pick this process's device (`device` 'cpu' forces the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        gpu = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if gpu else "gloo", init_method="env://")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    return DistInfo(rank, world, local_rank, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), so nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ResumableSampler(DistributedSampler):
    """DistributedSampler (same order for a given seed and epoch, whatever the number of processes)
    that can begin an epoch at a sample position, so a resumed run sees exactly the remaining batches.
    It yields (augmentation seed of the epoch, index) pairs for EpochSeededDataset, so persistent
    DataLoader workers learn the epoch from the index rather than from state set in the parent."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self):
        epoch_seed = derived_seed(self.seed, self.epoch)
        return iter([(epoch_seed, i) for i in list(super().__iter__())[self.start:]])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _ignore_sigint(worker_id: int) -> None:
    # a terminal's Ctrl-C reaches the whole process group: workers keep serving so the main process can
    # finish its step and write the checkpoint
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EpochSeededDataset(Dataset):
    """Wraps a family's training dataset so that sample (seed, index) is augmented from
    default_rng((seed, index)): the same augmentation for a given epoch and frame in any worker,
    different across epochs."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        seed, index = key
        self.base.seed = seed
        return self.base[index]


def move_to(batch, device: torch.device):
    """The batch with every tensor in it (at any depth of dicts, lists and tuples) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def lr_factor(step: int, milestones: list[int], gamma: float, warmup_iters: int, warmup_factor: float,
              schedule: str = "step", total: int | None = None, power: float = 0.9) -> float:
    """Learning-rate factor at `step`: the step schedule (gamma ** milestones passed) or the poly
    schedule ((1 - step / total) ** power, SLEEG's code), times the linear warm-up ramp."""
    if schedule == "poly":
        factor = max(0.0, 1.0 - step / max(total or 1, 1)) ** power
    else:
        factor = gamma ** bisect.bisect_right(milestones, step)
    if step < warmup_iters:
        alpha = step / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


class TensorBoard:
    """RUN/tensorboard event files (torch's SummaryWriter; `tensorboard --logdir RUN` reads them). On
    resume, events after the resumed step are hidden by TensorBoard's purge_step, so the curves match
    the run."""

    def __init__(self, folder: Path, resumed_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=resumed_step + 1 if resumed_step else None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, picture, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class CsvLog:
    """RUN/log.csv: one row per logged step, appended and flushed; on resume, rows after the resumed
    step are dropped first so the log matches the run."""

    def __init__(self, path: Path, fields: tuple[str, ...], keep_until: int | None):
        self.path, self.fields = Path(path), fields
        if keep_until is None or not self.path.is_file():
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerow(fields)
        else:
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= keep_until]
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainSummary:
    steps: int
    time_s: float
    images_per_s: float
    data_wait_share: float
    final_loss: float
    checkpoint: Path | None
    losses: list[float]
    step_times: list[tuple[float, float]]  # (seconds waiting for the batch, seconds of the whole step)
    interrupted: bool = False  # stopped by Ctrl-C after a checkpoint; continue with resume


def _reduce_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world
    return values


def _gather_rng(info: DistInfo) -> list[dict]:
    state = rng_state()
    if info.world_size == 1:
        return [state]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _metrics_history(run_dir: Path, until: int | None) -> list[dict]:
    path = run_dir / "metrics.json"
    if until is None or not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    return [h for h in doc.get("history", []) if h.get("step", 0) <= until]


def train(
    cfg: dict,
    run_dir: str | Path,
    data_dir: str | Path,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    device: str | None = None,
    log_line: Callable[[str], None] | None = None,
) -> TrainSummary:
    """Train cfg's model on data_dir's training split into run_dir; with `resume`, continue the run
    from its newest checkpoint exactly where it stopped. `stop_at` ends (with a checkpoint) after that
    many steps without changing the schedule, as an interruption would. `device` 'cpu' keeps a
    GPU machine's run on the CPU. Raises TrainingDiverged on a non-finite loss, keeping the last
    checkpoint. `log_line` receives the lines that describe the run before it starts (the data it
    reads), on the main process."""
    info = setup_distributed(device)
    run_dir = Path(run_dir)
    t_cfg, d_cfg = cfg["train"], cfg["data"]
    latest = latest_checkpoint(run_dir)
    if resume and latest is None:
        raise RunError(f"{run_dir}: no checkpoint to resume from (expected {run_dir / 'checkpoints'}/step_*.pt)")
    if not resume and latest is not None:
        raise RunError(f"{run_dir} already holds a run ({latest.name}); pass --resume to continue it or choose a new --out")

    if t_cfg["threads"] > 0 and info.device.type == "cpu":
        torch.set_num_threads(int(t_cfg["threads"]))
    seed = int(t_cfg["seed"])
    seed_everything(seed)  # identical initial weights on every rank
    spec = spec_of(cfg["model"]["name"])
    model = build_model(cfg).to(info.device)
    use_amp = bool(t_cfg["amp"]) and info.device.type == "cuda"
    if info.world_size > 1 and info.device.type == "cuda" and cfg["model"].get("norm") == "bn":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    if not resume and t_cfg["init_from"]:
        init_weights(model, t_cfg["init_from"], cfg["model"]["name"])
        if hasattr(model, "after_init_from"):  # a model's own step on top of the weights it started from
            model.after_init_from()
    train_set = spec.datasets(cfg, Path(data_dir), d_cfg["train_split"], True)
    eval_set = None
    if t_cfg["eval_every"] or t_cfg["panels"]:
        eval_set = spec.datasets(cfg, Path(data_dir), d_cfg["eval_split"], False)
    if info.is_main and log_line is not None and spec.describe is not None:
        for line in spec.describe(cfg, data_dir):
            log_line(line)
    if info.is_main:  # only once model and data were found, so a failed start leaves no half run folder
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    batch_size = int(d_cfg["batch_size"])
    sampler = ResumableSampler(train_set, info.world_size, info.rank, seed)
    steps_per_epoch = len(sampler) // batch_size
    if steps_per_epoch == 0:
        raise RunError(
            f"{data_dir}: {len(train_set)} training frames are fewer than one batch "
            f"({batch_size} per process x {info.world_size} processes)"
        )
    if t_cfg["iters"] is not None:
        total, milestones = int(t_cfg["iters"]), list(t_cfg["milestones"])
    else:
        total = int(t_cfg["epochs"]) * steps_per_epoch
        milestones = [m * steps_per_epoch for m in t_cfg["milestones"]]

    params = [p for p in (spec.trainable(model) if spec.trainable else model.parameters()) if p.requires_grad]
    if not params:
        raise RunError(f"model {cfg['model']['name']!r} has no parameter to train with this config")
    if t_cfg["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(params, lr=t_cfg["lr"], weight_decay=t_cfg["weight_decay"])
    else:
        optimizer = torch.optim.SGD(params, lr=t_cfg["lr"], momentum=t_cfg["momentum"], weight_decay=t_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, milestones, t_cfg["lr_gamma"], t_cfg["warmup_iters"], t_cfg["warmup_factor"],
                            t_cfg["schedule"], total, t_cfg["poly_power"]),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    step = 0
    if resume:
        state = load_checkpoint(latest)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        rngs = state["rng"]
        set_rng_state(rngs[info.rank] if len(rngs) == info.world_size else rngs[0])
    core = model
    if info.world_size > 1:
        model = DistributedDataParallel(core, device_ids=[info.device.index] if info.device.type == "cuda" else None)

    log = CsvLog(run_dir / "log.csv", LOG_FIELDS, step if resume else None) if info.is_main else None
    board = TensorBoard(run_dir / "tensorboard", step if resume else None) if info.is_main and t_cfg["tensorboard"] else None
    history = _metrics_history(run_dir, step if resume else None)
    last_ckpt = latest
    losses: list[float] = []
    step_times: list[tuple[float, float]] = []
    images = 0
    wait_s = 0.0
    t_start = time.perf_counter()
    window = {"t": t_start, "images": 0, "wait": 0.0}
    bar = tqdm(total=total, initial=step, desc="train", unit="it", disable=not (progress and info.is_main),
               dynamic_ncols=True)
    # one loader for the whole run: persistent workers are not restarted at every epoch
    loader = DataLoader(
        EpochSeededDataset(train_set), batch_size=batch_size, sampler=sampler, num_workers=d_cfg["workers"],
        drop_last=True, pin_memory=info.device.type == "cuda", persistent_workers=d_cfg["workers"] > 0,
        collate_fn=spec.collate,
        generator=torch.Generator().manual_seed(seed), worker_init_fn=_ignore_sigint,
    )
    # Ctrl-C in a single-process run: finish the step, write a checkpoint, stop (a second Ctrl-C aborts)
    interrupted: list[bool] = []

    def on_sigint(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        bar.write("interrupted: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    catch_sigint = info.world_size == 1 and threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, on_sigint) if catch_sigint else None
    try:
        while step < total and (stop_at is None or step < stop_at):
            epoch, offset = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            sampler.set_start(offset * batch_size)
            model.train()
            t_wait = time.perf_counter()
            for batch in loader:
                waited = time.perf_counter() - t_wait
                wait_s += waited
                window["wait"] += waited
                batch = move_to(batch, info.device)
                core.current_step = step
                with torch.autocast(info.device.type, enabled=use_amp):
                    outputs = model(batch)
                terms = core.loss(outputs, batch, torch.Generator().manual_seed(derived_seed(seed, step, info.rank)))
                names = list(terms)
                values = _reduce_mean(torch.stack([terms[k].detach().float() for k in names]), info.world_size)
                loss_value = float(values[names.index("loss")])
                if not math.isfinite(loss_value):
                    kept = f"the last checkpoint {last_ckpt} is kept" if last_ckpt else "no checkpoint was written yet"
                    raise TrainingDiverged(f"loss is {loss_value} at step {step + 1}: training stopped; {kept}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms["loss"]).backward()
                if t_cfg["grad_clip"] > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(params, t_cfg["grad_clip"])
                lr_used = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                n_images = batch["image"].shape[0] * info.world_size
                images += n_images
                window["images"] += n_images
                losses.append(loss_value)
                step_times.append((waited, time.perf_counter() - t_wait))
                bar.update(1)

                if step % t_cfg["log_every"] == 0 or step == total:
                    now = time.perf_counter()
                    span = max(now - window["t"], 1e-9)
                    speed, share = window["images"] / span, window["wait"] / span
                    bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{speed:.1f}", wait=f"{share:.0%}")
                    if log is not None:
                        log.write({
                            "step": step, "epoch": epoch, "lr": f"{lr_used:.6g}",
                            "loss": f"{loss_value:.6f}",
                            "terms": " ".join(f"{k}={float(v):.5f}" for k, v in zip(names, values, strict=True) if k != "loss"),
                            "images_per_s": f"{speed:.3f}", "data_wait": f"{share:.4f}",
                            "elapsed_s": f"{now - t_start:.2f}",
                        })
                    if board is not None:
                        board.scalars(step, {"loss/total": loss_value, "lr": lr_used, "speed/images_per_s": speed,
                                             "speed/data_wait_share": share,
                                             **{f"loss/{k}": float(v) for k, v in zip(names, values, strict=True)
                                                if k != "loss"}})
                    window = {"t": now, "images": 0, "wait": 0.0}
                if step % t_cfg["checkpoint_every"] == 0 or step == total or step == stop_at or interrupted:
                    rngs = _gather_rng(info)
                    if info.is_main:
                        last_ckpt = save_checkpoint(run_dir, {
                            "step": step, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                            "model_name": cfg["model"]["name"],
                        }, int(t_cfg["keep_checkpoints"]))
                periodic = bool(t_cfg["eval_every"]) and step % t_cfg["eval_every"] == 0
                if eval_set is not None and (periodic or (step == total and t_cfg["eval_every"])):
                    if info.is_main:
                        result = spec.evaluate(core, eval_set, info.device, cfg, max_images=t_cfg["eval_max_images"],
                                               progress=False, workers=0)
                        history.append({"step": step, **result["headline"], "images": result["images"]})
                        _write_history(run_dir, history)
                        bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in result["headline"].items())
                                  + f" on {result['images']} images")
                        if board is not None:
                            board.scalars(step, {f"eval/{k}": v for k, v in result["headline"].items()})
                    if info.world_size > 1:
                        dist.barrier()
                    model.train()
                last_step = step >= total or step == stop_at or bool(interrupted)
                if board is not None and spec.panels is not None and t_cfg["panels"] and eval_set is not None and (
                        periodic or last_step):
                    for name, picture in spec.panels(core, eval_set, info.device, int(t_cfg["panels"]), cfg["eval"]["resize"]):
                        board.image(f"predictions/{name}", picture, step)
                    model.train()
                if last_step:
                    break
                t_wait = time.perf_counter()
            if interrupted:
                break
    finally:
        bar.close()
        if board is not None:
            board.close()
        if catch_sigint:
            signal.signal(signal.SIGINT, previous_handler)
    elapsed = time.perf_counter() - t_start
    return TrainSummary(
        steps=step, time_s=elapsed, images_per_s=images / elapsed if elapsed > 0 else 0.0,
        data_wait_share=wait_s / elapsed if elapsed > 0 else 0.0,
        final_loss=losses[-1] if losses else float("nan"), checkpoint=last_ckpt, losses=losses,
        step_times=step_times, interrupted=bool(interrupted),
    )


def _write_history(run_dir: Path, history: list[dict]) -> None:
    path = run_dir / "metrics.json"
    doc: dict = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = {}
    doc["history"] = history
    atomic_write_json(path, doc)


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """The resolved config of an existing run, with optional overrides (e.g. a longer train.iters)."""
    from baselines.config import apply_overrides, validate

    path = Path(run_dir) / "config.yaml"
    cfg = read_run_config(path)
    return validate(apply_overrides(cfg, overrides or []), str(path))


def _spawned_worker(rank: int, world_size: int, port: int, cfg: dict, run_dir: str, data_dir: str,
                    stop_at: int | None, result_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    torch.set_num_threads(1)
    try:
        summary = train(cfg, run_dir, data_dir, stop_at=stop_at, progress=False)
        torch.save({"losses": summary.losses, "steps": summary.steps}, Path(result_dir) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn_train(world_size: int, cfg: dict, run_dir: str | Path, data_dir: str | Path, port: int,
                stop_at: int | None = None) -> list[float]:
    """Train with `world_size` local processes started by torch.multiprocessing (gloo on CPU, NCCL on
    GPUs), without torchrun; returns rank 0's loss per step (the mean over ranks)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_spawned_worker, args=(world_size, port, cfg, str(run_dir), str(data_dir), stop_at, tmp),
                 nprocs=world_size, join=True)
        return list(torch.load(Path(tmp) / "rank0.pt", weights_only=True)["losses"])
