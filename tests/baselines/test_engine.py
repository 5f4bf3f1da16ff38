"""The training engine: config validation, exact resume, DDP on CPU (gloo) against one process, the
NaN stop, and the run folder."""

import csv
import math
import socket

import pytest
import torch

from baselines.config import ConfigError, build_config
from baselines.engine import (
    RunError,
    TrainingDiverged,
    build_model,
    latest_checkpoint,
    load_checkpoint,
    lr_factor,
    seed_everything,
    spawn_train,
    train,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_validation_names_the_key(tmp_path):
    cfg = build_config("tiny", ["train.lr=0.1"], model="prototype-cl")
    assert cfg["train"]["lr"] == 0.1 and cfg["model"]["backbone"] == "resnet18"
    assert cfg["train"]["momentum"] == 0.9  # inherited from paper.yaml through `base: paper`
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        build_config("tiny", ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match="data.crop"):
        build_config("tiny", ["data.crop=[32]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: line"):
        build_config(bad)


def test_lr_schedule_warmup_and_steps():
    f = [lr_factor(s, [6, 8], 0.1, 4, 0.001) for s in range(10)]
    assert f[0] == pytest.approx(0.001) and f[2] == pytest.approx(0.5005) and f[4] == 1.0
    assert f[6] == pytest.approx(0.1) and f[8] == pytest.approx(0.01)


def test_resume_continues_exactly(open_set_data, micro_config, tmp_path):
    cfg = micro_config("prototype-cl", "train.iters=4", "model.second_stream=null", "data.workers=1")
    full = train(cfg, tmp_path / "full", open_set_data, progress=False)
    first = train(cfg, tmp_path / "split", open_set_data, stop_at=2, progress=False)
    assert first.steps == 2 and latest_checkpoint(tmp_path / "split").name == "step_0000002.pt"
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "split", open_set_data, progress=False)
    rest = train(cfg, tmp_path / "split", open_set_data, resume=True, progress=False)
    assert rest.steps == 4
    assert first.losses + rest.losses == pytest.approx(full.losses, abs=1e-6)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split"))
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-6), key
    with open(tmp_path / "split" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_ddp_two_processes_match_one(open_set_data, micro_config, tmp_path):
    # 2 processes x 1 image per step see the same images as 1 process x 2 (DistributedSampler order);
    # GroupNorm keeps batch statistics out of it, so losses and weights agree. SGD: the gradient's
    # all-reduce rounds differently from one process's sum, and Adam's normalisation (or the tiny
    # config's logit scale of 50) would amplify that.
    sgd = ("train.optimizer=sgd", "train.lr=0.01", "model.eps=1.0", "model.sigma_init=null", "model.gamma_init=null")
    cfg = micro_config("prototype", "train.iters=3", "model.second_stream=null", *sgd)
    single = train(cfg, tmp_path / "one", open_set_data, progress=False)
    ddp_cfg = micro_config("prototype", "train.iters=3", "data.batch_size=1", "model.second_stream=null", *sgd)
    losses = spawn_train(2, ddp_cfg, tmp_path / "two", open_set_data, port=_free_port())
    assert len(losses) == 3
    assert losses == pytest.approx(single.losses, rel=1e-4)
    seed_everything(cfg["train"]["seed"])
    initial = build_model(cfg).state_dict()
    a = load_checkpoint(latest_checkpoint(tmp_path / "one"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "two"))["model"]
    moved = max(float((a[k] - v).abs().max()) for k, v in initial.items() if v.is_floating_point())
    gap = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    # per-rank loss means over differing void counts make the updates differ slightly, not the steps
    assert moved > 1e-4 and gap < 0.01 * moved


def test_nan_loss_stops_with_step_and_keeps_checkpoint(open_set_data, micro_config, tmp_path):
    cfg = micro_config("prototype", "train.iters=3", "model.second_stream=null")
    train(cfg, tmp_path / "run", open_set_data, stop_at=1, progress=False)
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    state["model"]["head.gamma"] = torch.tensor(math.nan)
    torch.save(state, latest_checkpoint(tmp_path / "run"))
    with pytest.raises(TrainingDiverged, match=r"at step 2: .*step_0000001\.pt is kept"):
        train(cfg, tmp_path / "run", open_set_data, resume=True, progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "step_0000001.pt"
