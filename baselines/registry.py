"""The model families the engine can train, by name (a ModelSpec each, declared by its module), and
the one function that builds a model from a resolved config.

Model modules import ModelSpec and ConfigError from baselines.spec, never from baselines.config: the
config schema is assembled from this registry."""

from __future__ import annotations

from torch import nn

from baselines.models import deeplab as _deeplab
from baselines.models import prototype as _prototype
from baselines.models import segmenter as _segmenter
from baselines.models import sleeg as _sleeg
from baselines.models import vcanet as _vcanet
from baselines.spec import ModelSpec

MODELS: dict[str, ModelSpec] = {**_prototype.SPECS, **_segmenter.SPECS, **_deeplab.SPECS, **_sleeg.SPECS,
                               **_vcanet.SPECS}


def spec_of(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def build_model(cfg: dict) -> nn.Module:
    """The model named by cfg['model']['name'], built from the other model settings."""
    settings = dict(cfg["model"])
    return spec_of(settings.pop("name")).build(**settings)
