"""The plain softmax segmentation network on the prototype baseline's body (two-stream ResNet + FPN
merged at stride 4): a tower of 3x3 conv + GroupNorm + ReLU and a 1x1 classifier.

Two uses, one model:
- closed set (`unknown_class: false`, the default): 19 train ids, the split's unknown pixels ignored
  (255), so it never sees an unknown label; SLEEG sits on it (`segment` gives the class logits and the
  backbone's last stage);
- open set (`unknown_class: true`): one more softmax class for the unknown pixels, trained like the
  prototype head's unknown logit. It is the reference that says what the data and the budget allow,
  with the prototype head replaced by a linear classifier (benchmarks/bench_baseline_quality.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.backbones import DenseFeatures, merge_levels, validate_body
from baselines.heads import conv_gn_relu, predict_closed_set, predict_open_set
from baselines.losses import open_set_cross_entropy, open_set_targets
from baselines.openset import (
    describe_open_set,
    evaluate_open_set,
    open_set_datasets,
    open_set_panels,
    results_table,
)
from baselines.spec import ConfigError, ModelSpec
from vca_data.labels import NUM_TRAIN_CLASSES, UNKNOWN, VOID


class SoftmaxSegmenter(nn.Module):
    def __init__(
        self,
        num_classes: int = NUM_TRAIN_CLASSES,
        backbone: str = "resnet50",
        weights: str | Path | None = None,
        norm: str = "frozen_bn",
        second_stream: str | None = "depth",
        depth_max: float = 100.0,
        fpn_channels: int = 256,
        head_channels: int = 256,
        num_convs: int = 2,
        unknown_class: bool = False,
        unknown_weight: float = 1.0,
    ):
        super().__init__()
        if num_classes < 1 or num_convs < 0:
            raise ValueError(f"SoftmaxSegmenter: need num_classes >= 1 and num_convs >= 0, got {num_classes}, {num_convs}")
        self.num_classes = num_classes
        self.unknown_class = bool(unknown_class)
        self.unknown_weight = float(unknown_weight)
        self.body = DenseFeatures(backbone, weights, norm, second_stream, depth_max, fpn_channels)
        width = fpn_channels if num_convs == 0 else head_channels
        self.tower = nn.Sequential(
            *[conv_gn_relu(fpn_channels if i == 0 else head_channels, head_channels) for i in range(num_convs)]
        )
        self.classifier = nn.Conv2d(width, num_classes + int(self.unknown_class), kernel_size=1)

    @property
    def input_keys(self) -> tuple[str, ...]:
        return self.body.input_keys

    @property
    def backbone(self) -> nn.Module:
        return self.body.backbone

    def segment(self, batch: dict) -> dict[str, torch.Tensor]:
        """'logits' (B, K, H, W) at input size (K = 19, or 20 with the unknown class) and 'last_stage'
        (B, C, H/32, W/32), the backbone's last stage (fused when two-stream)."""
        stages, pyramid = self.body(batch)
        logits = self.classifier(self.tower(merge_levels(pyramid)))
        logits = F.interpolate(logits, size=batch["image"].shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "last_stage": stages[-1]}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"logits": self.segment(batch)["logits"]}

    def loss(self, outputs: dict, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Cross entropy, void ignored; unknown pixels are a class of their own with `unknown_class`,
        else ignored like void."""
        labels, logits = batch["label"], outputs["logits"]
        if self.unknown_class:
            ce = open_set_cross_entropy(logits, labels, self.unknown_weight)
        else:
            targets = open_set_targets(labels, self.num_classes)  # checks the values; unknown -> C
            targets = torch.where(targets == self.num_classes, torch.full_like(targets, VOID), targets)
            total = F.cross_entropy(logits.float(), targets, ignore_index=VOID, reduction="sum")
            ce = total / (targets != VOID).sum().clamp_min(1)
        return {"ce": ce, "loss": ce}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """'semantic' (B, H, W) train ids (254 where the unknown class wins, open set only), 'unknown'
        (B, H, W) bool and 'unknown_prob': the unknown class's softmax probability (open set), or the
        closed-set model's 1 - max softmax probability (the usual baseline anomaly score)."""
        logits = self.forward(batch)["logits"].float()
        if not self.unknown_class:
            return predict_closed_set(logits)
        semantic, unknown = predict_open_set(logits, UNKNOWN)
        return {"semantic": semantic, "unknown": unknown, "unknown_prob": logits.softmax(dim=1)[:, -1]}


def segmenter(**kwargs) -> SoftmaxSegmenter:
    return SoftmaxSegmenter(**kwargs)


MODEL_DEFAULTS: dict = {
    "num_classes": NUM_TRAIN_CLASSES,
    "backbone": "resnet50",
    "weights": "imagenet",
    "norm": "frozen_bn",
    "second_stream": "depth",
    "depth_max": 100.0,
    "fpn_channels": 256,
    "head_channels": 256,
    "num_convs": 2,
    "unknown_class": False,      # true: the unknown pixels are a 20th class (the open-set softmax reference)
    "unknown_weight": 1.0,       # with unknown_class: cross-entropy weight of unknown pixels
}


def validate_segmenter(cfg: dict, source: str) -> None:
    m = cfg["model"]
    validate_body(m, source)
    if m["num_classes"] < 1 or m["head_channels"] < 1 or m["num_convs"] < 0 or m["unknown_weight"] <= 0:
        raise ConfigError(f"{source}: model.num_classes, head_channels >= 1, num_convs >= 0, unknown_weight > 0")


SPECS = {"segmenter": ModelSpec(
    build=segmenter, model_defaults=MODEL_DEFAULTS, datasets=open_set_datasets, evaluate=evaluate_open_set,
    table=results_table, validate=validate_segmenter, describe=describe_open_set, panels=open_set_panels,
    nullable=frozenset({"weights", "second_stream"}),
)}
