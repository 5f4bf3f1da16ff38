"""Fixtures of the baselines tests: a small synthetic open-set dataset and a CPU-sized config."""

from pathlib import Path

import pytest
import torch

from baselines.config import build_config, schema
from vca_data.synthetic_episodes import make_synthetic_episode

EPISODES = [("Town01", "parking", 0), ("Town03", "construction", 1), ("Town02", "parking", 2), ("Town07", "construction", 3)]

# The smallest settings the real code paths accept: ResNet-18 two-stream, narrow FPN and head, 32x48 crops.
MICRO = [
    "model.fpn_channels=16", "model.head_channels=16", "model.embed_dim=8", "model.contrastive.proj_dim=8",
    "model.contrastive.per_class=8", "data.resize=null", "eval.resize=null", "data.crop=[32,48]", "data.batch_size=2", "data.workers=0",
    "train.iters=4", "train.milestones=[3]", "train.warmup_iters=2", "train.log_every=1",
    "train.checkpoint_every=100", "train.lr=0.01",
]


@pytest.fixture(autouse=True)
def one_thread():
    # on a shared 2-core machine, OpenMP threads spin-waiting for each other make these small convolutions
    # ten times slower than one thread does
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def open_set_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("openset")
    for town, scenario, seed in EPISODES:
        make_synthetic_episode(data, town, scenario, seed, num_frames=3, height=40, width=56)
    return data


@pytest.fixture
def micro_overrides() -> list[str]:
    return list(MICRO)


@pytest.fixture
def micro_config():
    def make(model: str = "prototype", *extra: str) -> dict:
        own = schema(model)["model"]  # the micro settings this family takes
        micro = [m for m in MICRO if not m.startswith("model.") or m[6:].split("=")[0].split(".")[0] in own]
        return build_config("tiny", micro + list(extra), model=model)
    return make
