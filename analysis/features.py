"""Feature extractors for the analysis: an ImageNet ResNet-50 (the paper's choice), a ResNet from a local
state dict, or the appearance backbone of a trained baseline run, cut at a chosen stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from baselines.backbones import ResNetFeatures, resnet

STAGES = ("layer1", "layer2", "layer3", "layer4")


class StageExtractor(nn.Module):
    """Runs a ResNetFeatures trunk up to `layer` and returns that stage's map."""

    def __init__(self, trunk: ResNetFeatures, layer: str):
        super().__init__()
        if layer not in STAGES:
            raise ValueError(f"layer must be one of {STAGES}, got {layer!r}")
        self.stem = trunk.stem
        self.stages = nn.Sequential(*[getattr(trunk, s) for s in STAGES[: STAGES.index(layer) + 1]])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(images))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return dev


def _trunk_from_run(run_dir: Path) -> tuple[ResNetFeatures, str]:
    from baselines.engine import load_run_model

    model, config = load_run_model(run_dir)
    backbone = getattr(model, "backbone", None)
    trunk = getattr(backbone, "appearance", backbone)
    if not isinstance(trunk, ResNetFeatures):
        raise ValueError(f"{run_dir}: the run's model has no ResNet appearance backbone to take features from")
    return trunk, f"appearance backbone of run {run_dir} ({config.get('model', {}).get('backbone', '?')})"


def build_extractor(weights: str, layer: str = "layer4", device: str = "auto",
                    arch: str = "resnet50") -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.device, dict]:
    """An eval-mode extractor `images (B,3,H,W ImageNet-normalised) -> features (B,C,h,w)`, its device,
    and a provenance record. `weights`: 'imagenet', 'none' (random, for tests), a state-dict path, or
    'run:RUN_DIR'."""
    dev = resolve_device(device)
    if weights.startswith("run:"):
        trunk, description = _trunk_from_run(Path(weights[4:]))
    else:
        source = None if weights == "none" else weights
        trunk = ResNetFeatures(resnet(arch, source), arch)
        description = f"{arch} ({'random init' if source is None else source} weights)"
    extractor = StageExtractor(trunk, layer).eval().to(dev)
    return extractor, dev, {"weights": weights, "layer": layer, "description": f"{description}, {layer}"}
