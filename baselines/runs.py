"""Run folders of the baselines: RUN/config.yaml, RUN/checkpoints/step_NNNNNNN.pt (written atomically,
the newest `keep` kept), the RNG states saved with them, and loading a trained model back from a run
folder alone (what eval, predict, analysis and SLEEG's segmenter take)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from baselines.config import read_run_config
from baselines.registry import build_model
from vca_data.io import atomic_path

CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")


class RunError(RuntimeError):
    """The run folder cannot be used as asked (missing, or already holding a run); names the folder."""


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
    model.load_state_dict(_renamed(state["model"], model))
    return cfg, model.to(device).eval(), int(state["step"])


def init_weights(model: nn.Module, run_dir: str | Path, model_name: str) -> Path:
    """Load the newest weights of the run folder `run_dir` (train.init_from) into `model`, a new run of
    family `model_name`; returns the checkpoint read. The run must be of the same family and its
    weights must fit the model (VCANet phase 2 starts from its phase-1 run this way)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir / "config.yaml")
    if cfg["model"]["name"] != model_name:
        raise RunError(f"{run_dir / 'config.yaml'}: train.init_from is a run of model {cfg['model']['name']!r}; "
                       f"a {model_name!r} run starts only from a {model_name!r} run")
    path = latest_checkpoint(run_dir)
    if path is None:
        raise RunError(f"{run_dir}: train.init_from has no checkpoint in {run_dir / 'checkpoints'}")
    state = load_checkpoint(path)
    try:
        model.load_state_dict(_renamed(state["model"], model))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise RunError(f"{path}: its weights do not fit this model (another architecture in its config.yaml?): "
                       f"{first[1].strip() if len(first) > 1 else first[0]}") from None
    return path


def load_run_model(run_dir: str | Path, checkpoint: str | Path | None = None,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, config) of a run: what `analysis` takes backbones from."""
    cfg, model, _ = load_run(run_dir, checkpoint, device)
    return model, cfg




def _renamed(weights: dict, model: nn.Module) -> dict:
    """Weights of runs made before the dense models kept their backbone and FPN under `body.`."""
    own = model.state_dict()
    if all(k in own for k in weights):
        return weights
    renamed = {(f"body.{k}" if k.split(".")[0] in ("backbone", "fpn") else k): v for k, v in weights.items()}
    return renamed if all(k in own for k in renamed) else weights
