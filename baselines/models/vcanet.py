"""VCANet, the motion track's baseline network (VCA benchmark, section 3.2): a two-stream ResNet
(appearance RGB + motion as colour-coded flow, normalised like RGB) fused per stage by concatenation
and a 1x1 projection, one 5-level FPN (256 channels) shared by both streams' stages, and three heads:

- an instance head (Decoupled SOLO, the 8 Cityscapes thing classes) on the appearance pyramid;
- a semantic head (19 train ids, cross entropy, ignore 255) on the appearance pyramid;
- a class-agnostic head (Decoupled SOLO, categories moving / static) on the fused pyramid.

Training has two phases, as the paper's: phase 1 the panoptic part (appearance stream, FPN, instance
and semantic heads); phase 2 the class-agnostic part (motion stream, fusion convolutions and the
class-agnostic head) with every other weight frozen, BatchNorm included. The split follows the
authors' `configs/infer_kittimots.py` (`freeze_vars`: backbone.appearance_stream, neck, bbox_head,
panoptic_head) and `mmdet/models/detectors/single_stage_ins.py` (the same neck over the merged and the
appearance stages; bbox and panoptic heads on appearance, ca_head on merged). Head settings follow
`configs/models/bbox_head.py`, `ca_motion_head.py` and `panoptic_head.py` (5 stacked convs, 256 ch).

Batches (see `baselines/motion.py` for the dataset side): 'image' and 'flow' (B, 3, H, W); 'semantic'
(B, H, W) train ids with 255 where a source has no semantic labels; 'instances' a list of per-image
dicts {'masks': bool (N, H, W), 'things': long (N,) thing index 0..7 or -1, 'motion': long (N,)
0 moving / 1 static / -1 not labelled}.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.backbones import FPN, TwoStreamBackbone, merge_levels
from baselines.heads import conv_gn_relu
from baselines.solo import DecoupledSoloHead, SoloConfig
from vca_data.labels import NUM_TRAIN_CLASSES, THING_TRAIN_IDS, VOID

#: The class-agnostic head's categories (the authors' ca_head num_classes=3: background + these two).
MOTION_CATEGORIES = ("moving", "static")
PHASES = (1, 2)


class SemanticHead(nn.Module):
    """Pyramid levels P2..P5 summed at stride 4, a tower of 3x3 conv + GroupNorm + ReLU, a 1x1
    classifier; logits upsampled to the input size."""

    def __init__(self, in_channels: int, channels: int = 256, num_convs: int = 5, num_classes: int = NUM_TRAIN_CLASSES):
        super().__init__()
        self.tower = nn.Sequential(*[conv_gn_relu(in_channels if i == 0 else channels, channels)
                                     for i in range(num_convs)])
        self.classifier = nn.Conv2d(channels if num_convs else in_channels, num_classes, kernel_size=1)

    def forward(self, levels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.classifier(self.tower(merge_levels(levels[:4])))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _targets(instances: list[dict], key: str) -> list[dict]:
    """Per-image SOLO targets from the batch's instances: the masks whose `key` label is >= 0."""
    out = []
    for inst in instances:
        keep = inst[key] >= 0
        out.append({"masks": inst["masks"][keep], "labels": inst[key][keep]})
    return out


class VCANet(nn.Module):
    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str | Path | None = None,
        norm: str = "frozen_bn",
        fpn_channels: int = 256,
        phase: int = 1,
        instance: SoloConfig | None = None,
        class_agnostic: SoloConfig | None = None,
        semantic_channels: int = 256,
        semantic_convs: int = 5,
        semantic_weight: float = 1.0,
    ):
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f"VCANet: phase must be 1 (panoptic) or 2 (class-agnostic), got {phase!r}")
        self.phase = int(phase)
        self.semantic_weight = float(semantic_weight)
        self.body = TwoStreamBackbone(backbone, weights, 3, norm)
        self.fpn = FPN(self.body.channels, fpn_channels, extra_level=True)
        instance = instance or SoloConfig(num_classes=len(THING_TRAIN_IDS))
        class_agnostic = class_agnostic or SoloConfig(num_classes=len(MOTION_CATEGORIES))
        self.instance_head = DecoupledSoloHead(replace(instance, num_classes=len(THING_TRAIN_IDS),
                                                       in_channels=fpn_channels))
        self.semantic_head = SemanticHead(fpn_channels, semantic_channels, semantic_convs)
        self.ca_head = DecoupledSoloHead(replace(class_agnostic, num_classes=len(MOTION_CATEGORIES),
                                                 in_channels=fpn_channels))
        if self.phase == 2:
            for module in self.frozen_modules():
                module.requires_grad_(False)

    input_keys = ("image", "flow")

    def panoptic_modules(self) -> list[nn.Module]:
        return [self.body.appearance, self.fpn, self.instance_head, self.semantic_head]

    def class_agnostic_modules(self) -> list[nn.Module]:
        return [self.body.second, self.body.fuse, self.ca_head]

    def frozen_modules(self) -> list[nn.Module]:
        return self.panoptic_modules() if self.phase == 2 else []

    def trainable_parameters(self):
        modules = self.panoptic_modules() if self.phase == 1 else self.class_agnostic_modules()
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> VCANet:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen BatchNorm statistics stay as phase 1 left them
        return self

    def forward(self, batch: dict) -> dict:
        image = batch["image"]
        size = tuple(image.shape[-2:])
        out: dict = {"size": size}
        if self.phase == 1 and self.training:
            appearance = self.body.appearance(image)  # phase 1 never reads the motion stream
            fused = None
        else:
            if "flow" not in batch:
                raise KeyError("VCANet takes a 'flow' input (colour-coded optical flow) and the batch has none")
            fused, appearance = self.body.streams(image, batch["flow"])
        levels = self.fpn(appearance)
        if self.phase == 1 or not self.training:
            out["instance"] = self.instance_head(levels)
            out["semantic"] = self.semantic_head(levels, size)
        if fused is not None:
            out["class_agnostic"] = self.ca_head(self.fpn(fused))
        return out

    def loss(self, outputs: dict, batch: dict, generator: torch.Generator | None = None) -> dict:
        if self.phase == 1:
            terms = {f"instance_{k.removeprefix('loss_')}": v
                     for k, v in self.instance_head.loss(outputs["instance"], _targets(batch["instances"], "things")).items()}
            labels = batch["semantic"]
            valid = labels != VOID
            if valid.any():
                terms["semantic"] = self.semantic_weight * F.cross_entropy(outputs["semantic"], labels, ignore_index=VOID)
            else:  # no source of this batch has semantic labels: the term is skipped, not faked
                terms["semantic"] = outputs["semantic"].sum() * 0.0
        else:
            terms = {f"ca_{k.removeprefix('loss_')}": v
                     for k, v in self.ca_head.loss(outputs["class_agnostic"], _targets(batch["instances"], "motion")).items()}
        terms["loss"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def predict(self, batch: dict) -> dict:
        """{'semantic': (B, H, W) train ids, 'instances': per image {masks, labels (thing index), scores},
        'class_agnostic': per image {masks, labels (0 moving, 1 static), scores}}."""
        was = self.training
        self.eval()
        try:
            out = self.forward(batch)
        finally:
            self.train(was)
        size = out["size"]
        return {
            "semantic": out["semantic"].argmax(dim=1),
            "instances": self.instance_head.predict(out["instance"], size),
            "class_agnostic": self.ca_head.predict(out["class_agnostic"], size),
        }
