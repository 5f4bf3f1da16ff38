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
from baselines.spec import ConfigError, ModelSpec
from vca_data.labels import NUM_TRAIN_CLASSES, THING_TRAIN_IDS, VOID

#: The class-agnostic head's categories (the authors' ca_head num_classes=3: background + these two).
MOTION_CATEGORIES = ("moving", "static")
PHASES = (1, 2)
#: How phase 2 starts its class-agnostic head: random (the authors') or from the phase-1 instance head.
CA_INITS = ("random", "instance")


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
        fuse_init: str = "kaiming",
        class_agnostic_init: str = "random",
    ):
        super().__init__()
        if class_agnostic_init not in CA_INITS:
            raise ValueError(f"VCANet: class_agnostic_init must be one of {CA_INITS}, got {class_agnostic_init!r}")
        self.class_agnostic_init = class_agnostic_init
        self.fuse_init = fuse_init
        if phase not in PHASES:
            raise ValueError(f"VCANet: phase must be 1 (panoptic) or 2 (class-agnostic), got {phase!r}")
        self.phase = int(phase)
        self.semantic_weight = float(semantic_weight)
        self.body = TwoStreamBackbone(backbone, weights, 3, norm, fuse_init)
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

    def after_init_from(self) -> list[str]:
        """Called once a new run has loaded another run's weights (train.init_from). In phase 2 the
        fusion convolutions, which phase 1 never trains, get this run's fuse_init; with
        class_agnostic_init 'instance' the class-agnostic head starts from the phase-1 instance head
        (towers and mask convolutions; the category convolution, whose classes differ, keeps its
        focal-loss prior). Returns the names of the head's tensors copied."""
        if self.phase != 2:
            return []
        self.body.init_fuse(self.fuse_init)
        if self.class_agnostic_init != "instance":
            return []
        source, copied = self.instance_head.state_dict(), []
        own = self.ca_head.state_dict()
        for name, value in source.items():
            if name.startswith("cate.") or name not in own or own[name].shape != value.shape:
                continue
            own[name] = value.clone()
            copied.append(name)
        self.ca_head.load_state_dict(own)
        return copied

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
    def predict(self, batch: dict, size: tuple[int, int] | None = None) -> dict:
        """{'semantic': (B, H, W) train ids, 'instances': per image {masks, labels (thing index), scores},
        'class_agnostic': per image {masks, labels (0 moving, 1 static), scores}}, at `size` (default:
        the input's)."""
        was = self.training
        self.eval()
        try:
            out = self.forward(batch)
        finally:
            self.train(was)
        size = tuple(size) if size is not None else out["size"]
        semantic = out["semantic"]
        if tuple(semantic.shape[-2:]) != size:
            semantic = F.interpolate(semantic, size=size, mode="bilinear", align_corners=False)
        return {
            "semantic": semantic.argmax(dim=1),
            "instances": self.instance_head.predict(out["instance"], size),
            "class_agnostic": self.ca_head.predict(out["class_agnostic"], size),
        }


# ---------------------------------------------------------------------------------------------
# Building from a config
# ---------------------------------------------------------------------------------------------

def _solo_section(cfg: SoloConfig) -> dict:
    """The config keys of a SOLO head (every SoloConfig field but the two set by the network)."""
    return {k: (list(map(list, v)) if k == "scale_ranges" else list(v)) if isinstance(v, tuple) else v
            for k, v in cfg.__dict__.items() if k not in ("num_classes", "in_channels")}


def solo_config(section: dict, num_classes: int, in_channels: int) -> SoloConfig:
    values = dict(section)
    for key in ("strides", "num_grids"):
        values[key] = tuple(int(v) for v in values[key])
    values["scale_ranges"] = tuple(tuple(float(x) for x in r) for r in values["scale_ranges"])
    return SoloConfig(num_classes=num_classes, in_channels=in_channels, **values)


def vcanet(backbone: str = "resnet50", weights=None, norm: str = "frozen_bn", fpn_channels: int = 256, phase: int = 1,
           instance: dict | None = None, class_agnostic: dict | None = None, semantic_channels: int = 256,
           semantic_convs: int = 5, semantic_weight: float = 1.0, fuse_init: str = "kaiming",
           class_agnostic_init: str = "random") -> VCANet:
    """VCANet from the config's model section (see MODEL_DEFAULTS)."""
    inst = solo_config(instance or MODEL_DEFAULTS["instance"], len(THING_TRAIN_IDS), fpn_channels)
    ca = solo_config(class_agnostic or MODEL_DEFAULTS["class_agnostic"], len(MOTION_CATEGORIES), fpn_channels)
    return VCANet(backbone=backbone, weights=weights, norm=norm, fpn_channels=fpn_channels, phase=phase,
                  instance=inst, class_agnostic=ca, semantic_channels=semantic_channels,
                  semantic_convs=semantic_convs, semantic_weight=semantic_weight, fuse_init=fuse_init,
                  class_agnostic_init=class_agnostic_init)


_SOLO = _solo_section(SoloConfig(num_classes=1))
MODEL_DEFAULTS: dict = {
    "backbone": "resnet50",      # the authors' TwoStreamResNet depth 50 (configs/models/backbone_2stream.py)
    "weights": "imagenet",       # both streams start from ImageNet (the motion stream too, as the authors)
    "norm": "frozen_bn",
    "fpn_channels": 256,         # configs/models/neck.py: out_channels 256, 5 outputs
    "phase": 1,                  # 1: panoptic heads | 2: class-agnostic head, everything else frozen
    "semantic_channels": 256,    # configs/models/panoptic_head.py: 256 channels
    "semantic_convs": 5,
    "semantic_weight": 1.0,
    "fuse_init": "kaiming",      # per-stage fusion 1x1 convs: kaiming | appearance (identity on RGB, 0 on flow)
    "class_agnostic_init": "random",  # phase 2's class-agnostic head: random | instance (phase 1's instance head)
    "instance": dict(_SOLO),     # configs/models/bbox_head.py (DecoupledSOLOHead), see baselines/solo.py
    "class_agnostic": dict(_SOLO),  # configs/models/ca_motion_head.py: the same head, 2 categories
}


def validate_vcanet(cfg: dict, source: str) -> None:
    from baselines.motion import FLOW_MODES

    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    if m["phase"] not in PHASES:
        raise ConfigError(f"{source}: model.phase must be 1 (panoptic) or 2 (class-agnostic), got {m['phase']!r}")
    if m["phase"] == 2 and not t["init_from"]:
        raise ConfigError(f"{source}: model.phase 2 trains only the class-agnostic head on a trained panoptic part: "
                          "start it from the phase-1 run with --set train.init_from=RUN")
    for head in ("instance", "class_agnostic"):
        try:
            solo_config(m[head], 1, m["fpn_channels"])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: model.{head}: {e}") from None
        if not 0 <= m[head]["score_thr"] <= 1 or not 0 <= m[head]["mask_thr"] <= 1 or m[head]["stacked_convs"] < 0:
            raise ConfigError(f"{source}: model.{head}: score_thr and mask_thr in [0, 1], stacked_convs >= 0")
    if m["fpn_channels"] < 1 or m["semantic_channels"] < 1 or m["semantic_convs"] < 0 or m["semantic_weight"] < 0:
        raise ConfigError(f"{source}: model.fpn_channels, semantic_channels >= 1, semantic_convs, semantic_weight >= 0")
    from baselines.backbones import FUSE_INITS

    if m["fuse_init"] not in FUSE_INITS:
        raise ConfigError(f"{source}: model.fuse_init must be one of {list(FUSE_INITS)}, got {m['fuse_init']!r}")
    if m["class_agnostic_init"] not in CA_INITS:
        raise ConfigError(f"{source}: model.class_agnostic_init must be one of {list(CA_INITS)}, "
                          f"got {m['class_agnostic_init']!r}")
    if d["flow"] not in FLOW_MODES:
        raise ConfigError(f"{source}: data.flow must be one of {list(FLOW_MODES)} (suppressed = ego-flow "
                          f"suppression, Table 4's EFS), got {d['flow']!r}")
    for key in ("flow_max", "suppressed_max"):
        if not isinstance(d[key], (int, float)) or not d[key] > 0:
            raise ConfigError(f"{source}: data.{key} must be a positive number of pixels (the flow drawn at full "
                              f"colour saturation), got {d[key]!r}")
    for key in ("train_sequences", "test_sequences"):
        if d[key] is not None and (not d[key] or not all(isinstance(s, str) for s in d[key])):
            raise ConfigError(f"{source}: data.{key} must be null or a non-empty list of sequence names (quoted: '0002')")
    if not all(isinstance(r, str) for r in d["extra_roots"]):
        raise ConfigError(f"{source}: data.extra_roots must be a list of folder paths")


def trainable(model: VCANet):
    return model.trainable_parameters()


def _spec() -> ModelSpec:
    from baselines.motion import DATA_DEFAULTS, collate_motion, motion_datasets
    from baselines.vcanet_eval import (
        describe_motion,
        vcanet_evaluate,
        vcanet_panels,
        vcanet_predict,
        vcanet_table,
    )

    return ModelSpec(
        build=vcanet, model_defaults=MODEL_DEFAULTS, datasets=motion_datasets, evaluate=vcanet_evaluate,
        table=vcanet_table, collate=collate_motion, validate=validate_vcanet, data_defaults=DATA_DEFAULTS,
        trainable=trainable, describe=describe_motion, panels=vcanet_panels, predict=vcanet_predict,
        nullable=frozenset({"weights"}),
    )


SPECS = {"vcanet": _spec()}
