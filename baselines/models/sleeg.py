"""SLEEG (`--model sleeg`): an OoD head trained on a frozen closed-set segmenter with pasted anomalies
(baselines.sleeg). The paper's method is the default; every place where the authors' public code
(github.com/yuanpengtu/SLEEG) differs is one model or data key (REFERENCE.md section 6):

| key                          | paper (default)            | code (sleeg-code.yaml)                      |
|------------------------------|----------------------------|---------------------------------------------|
| data.patch_shape             | harris                     | random (15 points)                          |
| model.refine_score           | learned, after refine_warmup 6000 iterations on JEM | energy, always  |
| model.refine_bins            | 256 (skimage's default; the paper gives none) | 25                       |
| model.margin, model.gamma    | dynamic, 15                | dynamic, 20 (LikelihoodLoss margin 20 on h1 + energy) |
| model.score                  | paper: log p_a + 0.5 log p_t | code: energy + 0.5 h1                     |
| model.tore_weight            | 1 (the paper gives none)   | 0.05 (logit_loss_cfg loss_weight)           |
| model.head_dropout           | 0                          | 0.1 (FCNHead dropout_ratio)                 |
| data.patch_noise             | 0                          | 0.1 (patch_cfg noise_ratio)                 |
| schedule (train section)     | 40k iters, batch 8         | 40k iters, batch 1 per GPU, SGD poly lr 0.01 |

The segmenter (`model.segmenter`) is 'deeplabv3' (torchvision DeepLabV3-ResNet50, the paper's family),
'fpn' (the segmenter family's two-stream ResNet + FPN) or 'run:RUN_DIR', a trained `vca-baseline`
segmenter run (deeplabv3 or segmenter family, closed set over the same classes) loaded from its
newest checkpoint. It is frozen: no parameter requires a gradient and it stays in eval mode (BatchNorm
statistics fixed) even under model.train().
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.sleeg.losses import (
    MARGINS,
    SCORES,
    anomaly_score,
    jem,
    kept_fraction,
    otsu_refine,
    tae_loss,
    tore_loss,
)
from baselines.spec import ConfigError, ModelSpec
from vca_data.labels import NUM_TRAIN_CLASSES

REFINE_SCORES = ("learned", "energy")


class OoDHead(nn.Module):
    """`num_convs` 3x3 Conv-BN-ReLU (`channels`) then a 1x1 conv to 2 logits (normal, anomaly), with
    optional Dropout2d before the classifier (the code's FCNHead, dropout 0.1)."""

    def __init__(self, in_channels: int, channels: int = 256, num_convs: int = 3, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels if num_convs else in_channels, 2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.convs(x)))


class Sleeg(nn.Module):
    """A frozen segmenter (any module with `segment(batch) -> {'logits', 'last_stage'}`, `input_keys`
    and `num_classes`) and the OoD head on its last stage. The engine sets `current_step` before each
    training forward; the refinement switches from JEM to the learned score at `refine_warmup`."""

    def __init__(self, segmenter: nn.Module, in_channels: int, head_channels: int = 256, head_convs: int = 3,
                 head_dropout: float = 0.0, tae_weight: float = 1.0, tore_weight: float = 1.0,
                 margin: str = "dynamic", gamma: float = 15.0, refine: bool = True, refine_score: str = "learned",
                 refine_warmup: int = 6000, refine_bins: int = 256, score: str = "paper", score_lambda: float = 0.5):
        super().__init__()
        if margin not in MARGINS or score not in SCORES or refine_score not in REFINE_SCORES:
            raise ValueError(f"Sleeg: margin {margin!r}, score {score!r}, refine_score {refine_score!r} not known")
        self.segmenter = segmenter
        for p in self.segmenter.parameters():
            p.requires_grad_(False)
        self.segmenter.eval()
        self.num_classes = int(getattr(segmenter, "num_classes", NUM_TRAIN_CLASSES))
        self.head = OoDHead(in_channels, head_channels, head_convs, head_dropout)
        self.tae_weight, self.tore_weight = float(tae_weight), float(tore_weight)
        self.margin, self.gamma = margin, float(gamma)
        self.refine, self.refine_score, self.refine_warmup, self.refine_bins = bool(refine), refine_score, int(refine_warmup), int(refine_bins)
        self.score, self.score_lambda = score, float(score_lambda)
        self.current_step = 0

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.segmenter.input_keys)

    def train(self, mode: bool = True) -> Sleeg:
        super().train(mode)
        self.segmenter.eval()  # BatchNorm statistics and dropout of the segmenter never change
        return self

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """'seg_logits' (B, K, H, W) of the segmenter and 'ood_logits' (B, 2, H, W), both at input size."""
        with torch.no_grad():
            seg = self.segmenter.segment(batch)
        ood = self.head(seg["last_stage"].detach())
        ood = F.interpolate(ood, size=batch["image"].shape[-2:], mode="bilinear", align_corners=False)
        return {"seg_logits": seg["logits"].detach(), "ood_logits": ood}

    def refined_target(self, outputs: dict, target: torch.Tensor) -> torch.Tensor:
        """The anomaly target after refinement: JEM (the energy) scores the pasted pixels before
        `refine_warmup` steps and always with refine_score 'energy', the learned score after."""
        if not self.refine:
            return target
        with torch.no_grad():
            if self.refine_score == "energy" or self.current_step < self.refine_warmup:
                score = jem(outputs["seg_logits"])
            else:
                score = anomaly_score(outputs["ood_logits"], outputs["seg_logits"], self.score, self.score_lambda)
        return otsu_refine(score, target, self.refine_bins)

    def loss(self, outputs: dict, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """'loss' = tae_weight TAE + tore_weight TORE on the refined target, plus 'tae', 'tore' and
        'kept' (share of pasted pixels kept as anomaly)."""
        if "anomaly" not in batch:
            raise KeyError("the SLEEG loss needs the batch's 'anomaly' target (a SLEEG training dataset pastes it)")
        target = batch["anomaly"]
        refined = self.refined_target(outputs, target)
        ood = outputs["ood_logits"]
        tae = tae_loss(ood, refined)
        tore = tore_loss(ood[:, 1], refined, jem(outputs["seg_logits"]), self.gamma, self.margin)
        return {"tae": tae, "tore": tore, "kept": kept_fraction(refined, target).detach(),
                "loss": self.tae_weight * tae + self.tore_weight * tore}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """'semantic' (B, H, W) closed-set train ids and 'anomaly_score' (B, H, W) float32."""
        out = self.forward(batch)
        return {"semantic": out["seg_logits"].argmax(dim=1),
                "anomaly_score": anomaly_score(out["ood_logits"], out["seg_logits"], self.score, self.score_lambda)}


# ---------------------------------------------------------------------------------------------
# Building from a config
# ---------------------------------------------------------------------------------------------

def _last_stage_channels(segmenter: nn.Module, input_keys: tuple[str, ...]) -> int:
    """Channels of the segmenter's last stage, from one forward of a small dummy batch."""
    batch = {"image": torch.zeros(1, 3, 64, 64)}
    if "depth" in input_keys:
        batch["depth"] = torch.zeros(1, 1, 64, 64)
    was = segmenter.training
    segmenter.eval()
    with torch.no_grad():
        channels = int(segmenter.segment(batch)["last_stage"].shape[1])
    segmenter.train(was)
    return channels


def segmenter_from_run(run_dir: str | Path, num_classes: int) -> nn.Module:
    """The trained closed-set segmenter of a `vca-baseline` run folder (newest checkpoint)."""
    # a circle by nature (tests/test_house.py ALLOWED_CIRCLES): a run of any family is rebuilt by the registry
    from baselines.runs import load_run

    run_dir = Path(run_dir)
    cfg, model, _ = load_run(run_dir)
    where = run_dir / "config.yaml"
    if not hasattr(model, "segment"):
        raise ConfigError(f"{where}: a run of model {cfg['model']['name']!r}, which has no closed-set segment(); "
                          "SLEEG needs a segmenter or deeplabv3 run")
    if cfg["model"].get("unknown_class") or int(getattr(model, "num_classes", -1)) != num_classes:
        raise ConfigError(f"{where}: the segmenter predicts {getattr(model, 'num_classes', '?')} classes"
                          f"{' plus an unknown class' if cfg['model'].get('unknown_class') else ''}; SLEEG needs a "
                          f"closed-set segmenter over {num_classes} classes")
    return model


def build_segmenter(segmenter: str, weights, backbone: str, num_classes: int) -> nn.Module:
    if segmenter.startswith("run:"):
        return segmenter_from_run(segmenter[4:], num_classes)
    if segmenter == "deeplabv3":
        from baselines.models.deeplab import DeepLabSegmenter

        return DeepLabSegmenter(num_classes=num_classes, weights=weights)
    if segmenter == "fpn":
        from baselines.models.segmenter import SoftmaxSegmenter

        return SoftmaxSegmenter(num_classes=num_classes, backbone=backbone, weights=weights)
    raise ValueError(f"model.segmenter must be deeplabv3, fpn or run:RUN_DIR, got {segmenter!r}")


def sleeg(segmenter: str = "deeplabv3", weights=None, backbone: str = "resnet50", num_classes: int = NUM_TRAIN_CLASSES,
          **kwargs) -> Sleeg:
    """SLEEG on the segmenter the config names (see the module docs)."""
    seg = build_segmenter(segmenter, weights, backbone, num_classes)
    return Sleeg(seg, _last_stage_channels(seg, tuple(seg.input_keys)), **kwargs)


MODEL_DEFAULTS: dict = {
    "segmenter": "deeplabv3",    # deeplabv3 | fpn | run:RUN_DIR (a trained closed-set segmenter run)
    "weights": "imagenet",       # backbone weights of a fresh deeplabv3 / fpn segmenter (unused with run:)
    "backbone": "resnet50",      # the fpn segmenter's ResNet
    "num_classes": NUM_TRAIN_CLASSES,
    "head_channels": 256,
    "head_convs": 3,
    "head_dropout": 0.0,         # code: 0.1
    "tae_weight": 1.0,
    "tore_weight": 1.0,          # code: 0.05
    "margin": "dynamic",         # dynamic: gamma + E[JEM normal] - E[JEM anomaly] | fixed: gamma
    "gamma": 15.0,               # code: 20 (its margin 20 on h1 + energy is the dynamic rule)
    "refine": True,              # false: every pasted pixel is anomaly (the paper's no-refinement ablation)
    "refine_score": "learned",   # learned (after refine_warmup steps on JEM) | energy (the code: always)
    "refine_warmup": 6000,
    "refine_bins": 256,          # Otsu histogram bins; code: 25
    "score": "paper",            # paper: log p_a + lambda (h1 + JEM) | code: energy + lambda h1
    "score_lambda": 0.5,
}

DATA_DEFAULTS: dict = {
    "patch_shape": "harris",     # harris (paper) | random (code: hull of patch_points random points)
    "patch_count": 10,
    "patch_area": [0.03, 0.06],  # rectangle area, share of the training crop
    "patch_aspect": [0.8, 1.2],  # rectangle width / height
    "patch_points": 15,
    "patch_noise": 0.0,          # probability that a patch is N(0, 1) noise; code: 0.1
    "paste_depth": True,         # paste the donor's depth with its RGB (two-stream segmenters)
    "train_unknowns": "ignore",  # the training split's labelled unknown pixels: ignore | normal | anomaly
}


def validate_sleeg(cfg: dict, source: str) -> None:
    m, d = cfg["model"], cfg["data"]
    seg = m["segmenter"]
    if not (seg in ("deeplabv3", "fpn") or (seg.startswith("run:") and len(seg) > 4)):
        raise ConfigError(f"{source}: model.segmenter must be deeplabv3, fpn or run:RUN_DIR, got {seg!r}")
    if seg.startswith("run:") and not (Path(seg[4:]) / "config.yaml").is_file():
        raise ConfigError(f"{source}: model.segmenter {seg!r}: {Path(seg[4:]) / 'config.yaml'} not found "
                          "(expected a run folder of vca-baseline train --model segmenter|deeplabv3)")
    for key, choices in (("margin", MARGINS), ("score", SCORES), ("refine_score", REFINE_SCORES)):
        if m[key] not in choices:
            raise ConfigError(f"{source}: model.{key} must be one of {list(choices)}, got {m[key]!r}")
    if m["head_channels"] < 1 or m["head_convs"] < 0 or not 0 <= m["head_dropout"] < 1:
        raise ConfigError(f"{source}: model.head_channels >= 1, head_convs >= 0, 0 <= head_dropout < 1")
    if m["tae_weight"] < 0 or m["tore_weight"] < 0 or m["refine_warmup"] < 0 or m["refine_bins"] < 2:
        raise ConfigError(f"{source}: model.tae_weight, tore_weight, refine_warmup >= 0 and refine_bins >= 2")
    from baselines.sleeg.data import patch_settings

    try:
        patch_settings(cfg)
    except ValueError as e:
        raise ConfigError(f"{source}: data.patch_*: {e}") from None
    if d["train_unknowns"] not in ("ignore", "normal", "anomaly"):
        raise ConfigError(f"{source}: data.train_unknowns must be ignore, normal or anomaly, got {d['train_unknowns']!r}")


def trainable(model: Sleeg):
    return model.head.parameters()


def _spec() -> ModelSpec:
    from baselines.openset import describe_open_set
    from baselines.sleeg.data import sleeg_datasets
    from baselines.sleeg.evaluate import sleeg_evaluate, sleeg_panels, sleeg_table

    return ModelSpec(
        build=sleeg, model_defaults=MODEL_DEFAULTS, datasets=sleeg_datasets, evaluate=sleeg_evaluate,
        table=sleeg_table, validate=validate_sleeg, data_defaults=DATA_DEFAULTS, trainable=trainable,
        describe=describe_open_set, panels=sleeg_panels, nullable=frozenset({"weights"}),
    )


SPECS = {"sleeg": _spec()}
