"""The training engine shared by every baseline: one readable loop (build the model, the data, the
optimiser and schedule; then forward, loss, backward, step), with the run folder, checkpoints and an
exact `--resume`, mixed precision on CUDA, multi-process DDP (torchrun, env:// init), seeds, periodic
evaluation through vca_data.metrics, and a clear stop when the loss stops being finite.

Exact resume rests on three choices: the sample order is a function of (seed, epoch) only (a
DistributedSampler that can start part-way through an epoch), the augmentation of a sample is a
function of (seed, epoch, index) only (independent of workers), and the random draws of a loss
come from a generator seeded by (seed, step, rank). The global RNG states (python, numpy, torch, CUDA)
of every rank are saved as well, for anything else that draws from them.

A model is an nn.Module with `forward(batch) -> outputs`, `loss(outputs, batch, generator) -> dict`
('loss' plus named terms), `predict(batch) -> dict` and `input_keys`; MODELS maps names to builders.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import random
import re
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
from baselines.models.prototype import prototype, prototype_cl
from vca_data.datasets import OpenSetDataset
from vca_data.io import atomic_path, atomic_write_json
from vca_data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, Resize

MODELS: dict[str, Callable[..., nn.Module]] = {"prototype": prototype, "prototype-cl": prototype_cl}
CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")
LOG_FIELDS = ("step", "epoch", "lr", "loss", "terms", "images_per_s", "data_wait", "elapsed_s")


class RunError(RuntimeError):
    """The run folder cannot be used as asked (missing, or already holding a run); names the folder."""


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


def build_model(cfg: dict) -> nn.Module:
    """The model named by cfg['model']['name'], built from the other model settings."""
    settings = dict(cfg["model"])
    name = settings.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**settings)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), so nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def train_transform(cfg: dict) -> Compose:
    """Geometric augmentation over numpy samples (the dataset converts to tensors after it): optional
    resize, random scale, flip, crop."""
    d = cfg["data"]
    steps: list = []
    if d["resize"] is not None:
        steps.append(Resize(*d["resize"]))
    steps += [
        RandomScale(d["min_scale"], d["max_scale"]),
        RandomHorizontalFlip(0.5 if d["flip"] else 0.0),
        RandomCrop(*d["crop"]),
    ]
    return Compose(steps)


def eval_transform(cfg: dict) -> Compose | None:
    size = cfg["eval"]["resize"]
    return Compose([Resize(*size)]) if size is not None else None


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
    """Wraps an OpenSetDataset so that sample (seed, index) is augmented from default_rng((seed, index)):
    the same augmentation for a given epoch and frame in any worker, different across epochs."""

    def __init__(self, base: OpenSetDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        seed, index = key
        self.base.seed = seed
        return self.base[index]


def move_to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def lr_factor(step: int, milestones: list[int], gamma: float, warmup_iters: int, warmup_factor: float) -> float:
    """Step schedule with linear warm-up: gamma ** (milestones passed) times the warm-up ramp."""
    factor = gamma ** bisect.bisect_right(milestones, step)
    if step < warmup_iters:
        alpha = step / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


# ---------------------------------------------------------------------------------------------
# Run folder and checkpoints
# ---------------------------------------------------------------------------------------------

def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    for p in folder.glob("step_*.pt") if folder.is_dir() else []:
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Write checkpoints/step_NNNNNNN.pt atomically and drop all but the newest `keep`."""
    path = Path(run_dir) / "checkpoints" / f"step_{state['step']:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for _, old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise several exception types
        raise RunError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def load_run(
    run_dir: str | Path, checkpoint: str | Path | None = None, device: torch.device | str = "cpu"
) -> tuple[dict, nn.Module, int]:
    """(config, model in eval mode on `device`, step) from a run folder and its newest (or the given)
    checkpoint."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir / "config.yaml")
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if path is None:
        raise RunError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
    state = load_checkpoint(path)
    if state.get("model_name", cfg["model"]["name"]) != cfg["model"]["name"]:
        raise RunError(f"{path}: checkpoint of model {state['model_name']!r}, config says {cfg['model']['name']!r}")
    # the weights come from the checkpoint: do not look for ImageNet files when rebuilding
    cfg_build = {**cfg, "model": {**cfg["model"], "weights": None}}
    model = build_model(cfg_build)
    model.load_state_dict(state["model"])
    return cfg, model.to(device).eval(), int(state["step"])


def load_run_model(run_dir: str | Path, checkpoint: str | Path | None = None,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, config) of a run: what `analysis` takes backbones from."""
    cfg, model, _ = load_run(run_dir, checkpoint, device)
    return model, cfg


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
) -> TrainSummary:
    """Train cfg's model on data_dir's training split into run_dir; with `resume`, continue the run
    from its newest checkpoint exactly where it stopped. `stop_at` ends (with a checkpoint) after that
    many steps without changing the schedule, as an interruption would. `device` 'cpu' keeps a
    GPU machine's run on the CPU. Raises TrainingDiverged on a non-finite loss, keeping the last
    checkpoint."""
    from baselines.evaluate import evaluate

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
    model = build_model(cfg).to(info.device)
    use_amp = bool(t_cfg["amp"]) and info.device.type == "cuda"
    if info.world_size > 1 and info.device.type == "cuda" and cfg["model"].get("norm") == "bn":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    train_set = OpenSetDataset(
        data_dir, split=d_cfg["train_split"], scenarios=d_cfg["scenarios"], transform=train_transform(cfg),
        frame_step=d_cfg["frame_step"], seed=0,
    )
    eval_set = None
    if t_cfg["eval_every"]:
        eval_set = OpenSetDataset(
            data_dir, split=d_cfg["eval_split"], scenarios=d_cfg["scenarios"], transform=eval_transform(cfg),
            frame_step=cfg["eval"]["frame_step"],
        )
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

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=t_cfg["lr"], momentum=t_cfg["momentum"], weight_decay=t_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, milestones, t_cfg["lr_gamma"], t_cfg["warmup_iters"], t_cfg["warmup_factor"]),
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
                    window = {"t": now, "images": 0, "wait": 0.0}
                if step % t_cfg["checkpoint_every"] == 0 or step == total or step == stop_at or interrupted:
                    rngs = _gather_rng(info)
                    if info.is_main:
                        last_ckpt = save_checkpoint(run_dir, {
                            "step": step, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                            "model_name": cfg["model"]["name"],
                        }, int(t_cfg["keep_checkpoints"]))
                if eval_set is not None and (step % t_cfg["eval_every"] == 0 or step == total):
                    if info.is_main:
                        result = evaluate(core, eval_set, info.device, cfg["eval"]["batch_size"], 0, use_amp,
                                          max_images=t_cfg["eval_max_images"], progress=False)
                        history.append({"step": step, "miou": result["overall"]["miou"],
                                        "ca_iou": result["overall"]["ca_iou"], "images": result["overall"]["images"]})
                        _write_history(run_dir, history)
                        bar.write(f"step {step}: mIoU {result['overall']['miou']:.3f}, "
                                  f"CA-IoU {result['overall']['ca_iou']:.3f} on {result['overall']['images']} images")
                    if info.world_size > 1:
                        dist.barrier()
                    model.train()
                if step >= total or step == stop_at or interrupted:
                    break
                t_wait = time.perf_counter()
            if interrupted:
                break
    finally:
        bar.close()
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
