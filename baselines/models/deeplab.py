"""The closed-set segmenter of the SLEEG paper's family: torchvision's DeepLabV3 with a dilated
ResNet-50 (output stride 8, ASPP head), over the 19 train ids with the split's unknown pixels ignored,
so it never sees an unknown label. RGB only. The ImageNet backbone weights come from the same local
file the other baselines read (baselines.backbones.load_backbone_weights); nothing is downloaded.

`segment(batch)` gives what SLEEG sits on: 'logits' (B, 19, H, W) at input size and 'last_stage'
(B, 2048, H/8, W/8), the backbone's last stage (the authors' OoD head reads in_index 3 of the same
dilated ResNet, configs/exps/deeplabv3_res50.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50
from torchvision.ops import FrozenBatchNorm2d

from baselines.backbones import load_backbone_weights
from baselines.heads import predict_closed_set
from baselines.losses import open_set_targets
from baselines.openset import (
    describe_open_set,
    evaluate_open_set,
    open_set_datasets,
    open_set_panels,
    results_table,
)
from baselines.spec import ConfigError, ModelSpec
from vca_data.labels import NUM_TRAIN_CLASSES, VOID

DEEPLAB_NORMS = ("bn", "frozen_bn")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding its statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def closed_set_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross entropy over the known classes; unknown (254) and void (255) pixels ignored."""
    targets = open_set_targets(labels, num_classes)  # checks the values; unknown -> num_classes
    targets = torch.where(targets == num_classes, torch.full_like(targets, VOID), targets)
    total = F.cross_entropy(logits.float(), targets, ignore_index=VOID, reduction="sum")
    return total / (targets != VOID).sum().clamp_min(1)


class DeepLabSegmenter(nn.Module):
    """torchvision DeepLabV3-ResNet50 (weights=None, weights_backbone=None) with `num_classes`
    outputs; `weights` ('imagenet', a state-dict path or None) initialise the backbone; `norm`
    'frozen_bn' fixes the backbone's BatchNorm statistics after loading (small batches)."""

    input_keys = ("image",)

    def __init__(self, num_classes: int = NUM_TRAIN_CLASSES, weights: str | Path | None = None, norm: str = "bn"):
        super().__init__()
        if norm not in DEEPLAB_NORMS:
            raise ValueError(f"norm must be one of {DEEPLAB_NORMS}, got {norm!r}")
        self.num_classes = int(num_classes)
        net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=self.num_classes, aux_loss=False)
        load_backbone_weights(net.backbone, "resnet50", weights)
        if norm == "frozen_bn":
            freeze_batchnorm(net.backbone)
        self.backbone, self.classifier = net.backbone, net.classifier

    def segment(self, batch: dict) -> dict[str, torch.Tensor]:
        image = batch["image"]
        last = self.backbone(image)["out"]
        logits = F.interpolate(self.classifier(last), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "last_stage": last}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"logits": self.segment(batch)["logits"]}

    def loss(self, outputs: dict, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ce = closed_set_cross_entropy(outputs["logits"], batch["label"], self.num_classes)
        return {"ce": ce, "loss": ce}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """'semantic' train ids, 'unknown' (all False) and 'unknown_prob' = 1 - max softmax probability."""
        return predict_closed_set(self.forward(batch)["logits"])


def deeplabv3(**kwargs) -> DeepLabSegmenter:
    return DeepLabSegmenter(**kwargs)


MODEL_DEFAULTS: dict = {
    "num_classes": NUM_TRAIN_CLASSES,
    "weights": "imagenet",   # imagenet | null | path to a ResNet-50 state dict (backbone only)
    "norm": "bn",            # bn (torchvision's) | frozen_bn (backbone statistics fixed)
}


def validate_deeplab(cfg: dict, source: str) -> None:
    m = cfg["model"]
    if m["num_classes"] < 1 or m["norm"] not in DEEPLAB_NORMS:
        raise ConfigError(f"{source}: model.num_classes must be >= 1 and model.norm one of {list(DEEPLAB_NORMS)}")


# for baselines/registry.py (the lead registers it)
SPECS = {"deeplabv3": ModelSpec(
    build=deeplabv3, model_defaults=MODEL_DEFAULTS, datasets=open_set_datasets, evaluate=evaluate_open_set,
    table=results_table, validate=validate_deeplab, describe=describe_open_set, panels=open_set_panels,
    nullable=frozenset({"weights"}),
)}
