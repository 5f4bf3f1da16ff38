"""The VCA open-set baseline (paper section 4.3): a two-stream ResNet (RGB + depth) with an FPN, the
prototype head over the merged pyramid (one mean and scale per known class, a global unknown logit
gamma), and its contrastive variant `prototype-cl` with a separate projection head trained by a
supervised contrastive loss over class-balanced pixel samples.

A model of the engine takes a batch dict ('image' (B,3,H,W) ImageNet-normalised, 'depth' (B,1,H,W)
metres, 'label' (B,H,W) train ids / 254 / 255) and offers `forward`, `loss` and `predict`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.backbones import DenseFeatures, merge_levels, validate_body
from baselines.heads import ProjectionHead, PrototypeHead, predict_open_set
from baselines.losses import open_set_cross_entropy, open_set_targets, sample_pixels_balanced, supcon_loss
from baselines.openset import (
    describe_open_set,
    evaluate_open_set,
    open_set_datasets,
    open_set_panels,
    results_table,
)
from baselines.spec import ConfigError, ModelSpec
from vca_data.labels import NUM_TRAIN_CLASSES, UNKNOWN, VOID


class PrototypeSegmenter(nn.Module):
    """Backbone (RGB, or RGB + depth when `second_stream` is 'depth'), FPN P2..P5 merged at stride 4,
    prototype head; with `contrastive` (a dict: proj_dim, temperature, weight, per_class) also a
    projection head and the SupCon term in the loss. `unknown_weight` weighs unknown pixels in the
    cross entropy (1 = the paper)."""

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
        embed_dim: int = 256,
        num_convs: int = 4,
        eps: float = 1.0,
        unknown_weight: float = 1.0,
        contrastive: dict | None = None,
        sigma_init: float | None = None,
        embed_std: float | None = None,
        gamma_init: float | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.unknown_weight = float(unknown_weight)
        self.body = DenseFeatures(backbone, weights, norm, second_stream, depth_max, fpn_channels)
        self.head = PrototypeHead(fpn_channels, num_classes, head_channels, embed_dim, num_convs, eps,
                                  sigma_init=sigma_init, embed_std=embed_std,
                                  gamma_init=gamma_init)
        self.contrastive = dict(contrastive) if contrastive else None
        if self.contrastive is not None:
            self.projection = ProjectionHead(fpn_channels, head_channels, int(self.contrastive.get("proj_dim", 128)))

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Batch keys the model reads at inference."""
        return self.body.input_keys

    @property
    def backbone(self) -> nn.Module:
        """The (two-stream) ResNet, where `vca-analyze --weights run:RUN` takes its features."""
        return self.body.backbone

    def _features(self, batch: dict) -> torch.Tensor:
        return merge_levels(self.body(batch)[1])

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """'logits' (B, C+1, H, W) at input size, 'embeddings' (B, D, H/4, W/4), and 'projections'
        (B, P, H/4, W/4) for the contrastive variant."""
        features = self._features(batch)
        embeddings, logits = self.head(features)
        out = {
            "logits": F.interpolate(logits, size=batch["image"].shape[-2:], mode="bilinear", align_corners=False),
            "embeddings": embeddings,
        }
        if self.contrastive is not None:
            out["projections"] = self.projection(features)
        return out

    def loss(
        self, outputs: dict[str, torch.Tensor], batch: dict, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """'loss' (the total to minimise) and its terms: 'ce', and 'supcon' for the contrastive variant.
        `generator` draws the contrastive pixel samples (the engine seeds it per step and rank)."""
        labels = batch["label"]
        terms = {"ce": open_set_cross_entropy(outputs["logits"], labels, self.unknown_weight)}
        total = terms["ce"]
        if self.contrastive is not None:
            proj = outputs["projections"]
            small = F.interpolate(labels[:, None].float(), size=proj.shape[-2:], mode="nearest")[:, 0].long()
            targets = open_set_targets(small, self.num_classes)
            idx = sample_pixels_balanced(targets, int(self.contrastive.get("per_class", 64)), generator, VOID)
            flat = proj.permute(0, 2, 3, 1).reshape(-1, proj.shape[1])
            terms["supcon"] = supcon_loss(
                flat[idx], targets.reshape(-1)[idx], float(self.contrastive.get("temperature", 0.07))
            )
            total = total + float(self.contrastive.get("weight", 0.1)) * terms["supcon"]
        terms["loss"] = total
        return terms

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """'semantic' (B, H, W) train ids with 254 where the unknown logit wins, 'unknown' (B, H, W)
        bool, 'unknown_prob' (B, H, W) softmax probability of the unknown class."""
        logits = self.forward(batch)["logits"].float()
        semantic, unknown = predict_open_set(logits, UNKNOWN)
        return {"semantic": semantic, "unknown": unknown, "unknown_prob": logits.softmax(dim=1)[:, -1]}


def prototype(**kwargs) -> PrototypeSegmenter:
    """The prototype baseline without the contrastive loss."""
    kwargs.pop("contrastive", None)
    return PrototypeSegmenter(**kwargs, contrastive=None)


def prototype_cl(contrastive: dict | None = None, **kwargs) -> PrototypeSegmenter:
    """The prototype baseline with the auxiliary contrastive loss (defaults: 128-d projections,
    temperature 0.07, weight 0.1, 64 pixels per class per batch)."""
    settings = {"proj_dim": 128, "temperature": 0.07, "weight": 0.1, "per_class": 64}
    settings.update(contrastive or {})
    return PrototypeSegmenter(**kwargs, contrastive=settings)


MODEL_DEFAULTS: dict = {
    "num_classes": NUM_TRAIN_CLASSES,
    "backbone": "resnet50",
    "weights": "imagenet",       # imagenet | null | path to a state dict
    "norm": "frozen_bn",         # bn | frozen_bn | gn
    "second_stream": "depth",    # depth | null (RGB only)
    "depth_max": 100.0,          # metres mapped to 1 in the depth stream; farther saturates
    "fpn_channels": 256,
    "head_channels": 256,
    "embed_dim": 256,
    "num_convs": 4,
    "eps": 1.0e-10,              # the authors' value (appearance_ca_mahalanobis.py, compute_preds)
    "unknown_weight": 1.0,       # cross-entropy weight of unknown pixels; 1 = the paper
    "sigma_init": None,          # null: scales from N(0, 0.01) as the paper; a value: every scale starts there
    "gamma_init": None,          # null: the unknown logit from N(0, 0.01) as the paper; a value: it starts there
    "embed_std": None,           # null: the embedding conv from N(0, 0.01) like the tower; a value: its std
    "contrastive": {"proj_dim": 128, "temperature": 0.07, "weight": 0.1, "per_class": 64},
}


def validate_prototype(cfg: dict, source: str) -> None:
    m = cfg["model"]
    validate_body(m, source)
    if m["contrastive"]["temperature"] <= 0 or m["contrastive"]["per_class"] < 2:
        raise ConfigError(f"{source}: model.contrastive needs temperature > 0 and per_class >= 2")
    for key in ("num_classes", "head_channels", "embed_dim", "num_convs"):
        if m[key] < 1:
            raise ConfigError(f"{source}: model.{key} must be at least 1, got {m[key]}")
    if m["eps"] <= 0 or m["unknown_weight"] <= 0:
        raise ConfigError(f"{source}: model.eps and model.unknown_weight must be positive")


def _spec(builder) -> ModelSpec:
    return ModelSpec(
        build=builder, model_defaults=MODEL_DEFAULTS, datasets=open_set_datasets, evaluate=evaluate_open_set,
        table=results_table, validate=validate_prototype, describe=describe_open_set, panels=open_set_panels,
        nullable=frozenset({"weights", "second_stream", "sigma_init", "embed_std", "gamma_init"}),
    )


SPECS = {"prototype": _spec(prototype), "prototype-cl": _spec(prototype_cl)}
