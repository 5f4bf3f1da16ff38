"""Decoupled SOLO (Wang et al., "SOLO: Segmenting Objects by Locations"): the instance and class-agnostic
heads of VCANet, with their target assignment, losses and Matrix NMS (SOLOv2, gaussian kernel).

An image is divided into an S x S grid per pyramid level; the cell holding an object's centre (and its
neighbours inside the centre region) predicts the object's category, and the object's mask is the
product of two per-level maps, sigmoid(X_j) * sigmoid(Y_i), for the cell in row i, column j (the
decoupled head: 2S mask channels instead of S^2).

Values (cited in SoloConfig): the VCA authors' `configs/models/bbox_head.py` and `ca_motion_head.py`
(DecoupledSOLOHead: stacked_convs 7, 256 channels, strides [8, 8, 16, 32, 32], scale_ranges
((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048)), sigma 0.2, num_grids [80, 72, 64, 48, 32],
dice weight 3, focal gamma 2 alpha 0.25); test settings from the paper and REFERENCE.md section 5
(score threshold 0.1, mask threshold 0.5, Matrix NMS gaussian sigma 2, keep masks above 0.3).

Levels: the head reads 5 pyramid maps P2..P6 (strides 4..64); P2 is resized to stride 8 and P6 to P5's
size, giving the strides above. Masks come out at twice each level's resolution (stride/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from baselines.heads import conv_gn_relu


@dataclass(frozen=True)
class SoloConfig:
    num_classes: int                      # foreground categories, no background
    in_channels: int = 256
    seg_feat_channels: int = 256          # bbox_head.py: seg_feat_channels=256
    stacked_convs: int = 7                # bbox_head.py: stacked_convs=7
    strides: tuple = (8, 8, 16, 32, 32)
    scale_ranges: tuple = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    num_grids: tuple = (80, 72, 64, 48, 32)
    sigma: float = 0.2                    # centre region: sigma-scaled half box
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    dice_weight: float = 3.0
    score_thr: float = 0.1
    mask_thr: float = 0.5
    update_thr: float = 0.3               # "keep masks above 0.3" (paper / REFERENCE.md section 5)
    nms_pre: int = 500
    max_per_img: int = 100
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0

    def __post_init__(self):
        n = len(self.num_grids)
        if not (len(self.strides) == len(self.scale_ranges) == n == 5):
            raise ValueError(f"SOLO needs 5 levels of strides, scale_ranges and num_grids, got "
                             f"{len(self.strides)}, {len(self.scale_ranges)}, {n}")
        if self.num_classes < 1 or min(self.num_grids) < 1:
            raise ValueError(f"SOLO needs num_classes >= 1 and grids >= 1, got {self.num_classes}, {self.num_grids}")
        if self.nms_kernel not in ("gaussian", "linear"):
            raise ValueError(f"nms_kernel must be gaussian or linear, got {self.nms_kernel!r}")


def dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss (K,) of probabilities against 0/1 targets (K, h, w): 1 - 2 sum(p t) /
    (sum(p^2) + sum(t^2)), each sum smoothed by 1e-3 as SOLO does."""
    p, t = pred.flatten(1), target.flatten(1).to(pred.dtype)
    a = (p * t).sum(1)
    b = (p * p).sum(1) + 1e-3
    c = (t * t).sum(1) + 1e-3
    return 1 - 2 * a / (b + c)


def matrix_nms(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, kernel: str = "gaussian",
               sigma: float = 2.0) -> torch.Tensor:
    """Matrix NMS (SOLOv2): each mask's score decays by its IoU with every higher-scored mask of the same
    class, compensated by how much that higher mask was itself suppressed. `masks` bool (N, H, W) sorted
    by score, descending. Returns the decayed scores (N,)."""
    n = masks.shape[0]
    if n == 0:
        return scores.clone()
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter)).triu(diagonal=1)
    same = (labels[:, None] == labels[None, :]).float().triu(diagonal=1)
    decay_iou = iou * same                              # [i, j]: IoU of mask j with the higher mask i
    compensate = decay_iou.max(dim=0).values            # how much each mask i overlaps a higher one itself
    compensate = compensate[:, None].expand(n, n)
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (decay_iou ** 2 - compensate ** 2))
    else:
        decay = (1 - decay_iou) / (1 - compensate).clamp_min(1e-6)
    return scores * decay.min(dim=0).values


def _centre_region(mask: torch.Tensor, grid: int, sigma: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) grid cells (inclusive) of a mask's centre region on an S x S grid: the
    centre-of-mass cell and its neighbours, clipped to the sigma-scaled half box around the centre."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    cy, cx = ys.float().mean().item(), xs.float().mean().item()
    half_h = 0.5 * sigma * (ys.max() - ys.min() + 1).item()
    half_w = 0.5 * sigma * (xs.max() - xs.min() + 1).item()

    def cell(v: float, size: int) -> int:
        return min(grid - 1, max(0, int(v / size * grid)))

    ch, cw = cell(cy, h), cell(cx, w)
    top = max(cell(cy - half_h, h), ch - 1)
    bottom = min(cell(cy + half_h, h), ch + 1)
    left = max(cell(cx - half_w, w), cw - 1)
    right = min(cell(cx + half_w, w), cw + 1)
    return top, bottom, left, right


def solo_targets(masks: torch.Tensor, labels: torch.Tensor, featmap_sizes: list[tuple[int, int]],
                 cfg: SoloConfig) -> list[dict]:
    """Per level {'cate': long (S, S), num_classes = background; 'positives': long (K,) flat cell
    indices; 'masks': float (K, h, w) targets at that level's mask size}. An object goes to each level
    whose scale range holds sqrt(box width * box height); a cell keeps the last object assigned to it."""
    out = []
    device = labels.device
    areas = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        areas.append(math.sqrt((ys.max() - ys.min() + 1).item() * (xs.max() - xs.min() + 1).item()) if len(ys) else 0.0)
    for (lower, upper), grid, size in zip(cfg.scale_ranges, cfg.num_grids, featmap_sizes, strict=True):
        cate = torch.full((grid, grid), cfg.num_classes, dtype=torch.long, device=device)
        cells: dict[int, torch.Tensor] = {}
        for k, area in enumerate(areas):
            if not lower <= area <= upper:
                continue
            top, bottom, left, right = _centre_region(masks[k], grid, cfg.sigma)
            small = F.interpolate(masks[k][None, None].float(), size=size, mode="bilinear",
                                  align_corners=False)[0, 0]
            small = (small >= 0.5).float()
            for i in range(top, bottom + 1):
                for j in range(left, right + 1):
                    cate[i, j] = labels[k]
                    cells[i * grid + j] = small
        order = sorted(cells)
        out.append({
            "cate": cate,
            "positives": torch.tensor(order, dtype=torch.long, device=device),
            "masks": torch.stack([cells[c] for c in order]) if order else torch.zeros((0, *size), device=device),
        })
    return out


def _coords(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised x and y coordinate maps (B, 1, h, w) in [-1, 1]."""
    b, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    return xs, ys


class DecoupledSoloHead(nn.Module):
    def __init__(self, cfg: SoloConfig):
        super().__init__()
        self.cfg = cfg
        c, f = cfg.in_channels, cfg.seg_feat_channels

        def tower(first: int) -> nn.Sequential:
            return nn.Sequential(*[conv_gn_relu(first if i == 0 else f, f) for i in range(cfg.stacked_convs)])

        self.mask_x_tower, self.mask_y_tower = tower(c + 1), tower(c + 1)
        self.cate_tower = tower(c)
        width = f if cfg.stacked_convs else c + 1
        self.mask_x = nn.ModuleList(nn.Conv2d(width, s, 3, padding=1) for s in cfg.num_grids)
        self.mask_y = nn.ModuleList(nn.Conv2d(width, s, 3, padding=1) for s in cfg.num_grids)
        self.cate = nn.Conv2d(f if cfg.stacked_convs else c, cfg.num_classes, 3, padding=1)
        for conv in [*self.mask_x, *self.mask_y, self.cate]:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cate.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior 0.01

    @staticmethod
    def split_levels(levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """P2 resized to stride 8, P3..P5 as they are, P6 resized to P5's size."""
        if len(levels) != 5:
            raise ValueError(f"DecoupledSoloHead reads 5 pyramid levels (P2..P6), got {len(levels)}")
        return [F.interpolate(levels[0], size=levels[1].shape[-2:], mode="bilinear", align_corners=False),
                levels[1], levels[2], levels[3],
                F.interpolate(levels[4], size=levels[3].shape[-2:], mode="bilinear", align_corners=False)]

    def forward(self, levels: list[torch.Tensor]) -> dict:
        out = {"mask_x": [], "mask_y": [], "cate": []}
        for k, x in enumerate(self.split_levels(levels)):
            xs, ys = _coords(x)
            mx = self.mask_x_tower(torch.cat([x, xs], 1))
            my = self.mask_y_tower(torch.cat([x, ys], 1))
            mx = F.interpolate(mx, scale_factor=2, mode="bilinear", align_corners=False)
            my = F.interpolate(my, scale_factor=2, mode="bilinear", align_corners=False)
            out["mask_x"].append(self.mask_x[k](mx))
            out["mask_y"].append(self.mask_y[k](my))
            grid = self.cfg.num_grids[k]
            c = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
            out["cate"].append(self.cate(self.cate_tower(c)))
        return out

    def loss(self, outputs: dict, targets: list[dict]) -> dict:
        cfg = self.cfg
        sizes = [tuple(m.shape[-2:]) for m in outputs["mask_x"]]
        per_image = [solo_targets(t["masks"], t["labels"], sizes, cfg) for t in targets]
        dice_terms, cate_pred, cate_true = [], [], []
        for level in range(len(sizes)):
            grid = cfg.num_grids[level]
            for b, levels in enumerate(per_image):
                t = levels[level]
                pos = t["positives"]
                if len(pos):
                    rows, cols = pos // grid, pos % grid
                    prob = (outputs["mask_x"][level][b, cols].sigmoid() * outputs["mask_y"][level][b, rows].sigmoid())
                    dice_terms.append(dice_loss(prob, t["masks"]))
                cate_true.append(t["cate"].flatten())
            cate_pred.append(outputs["cate"][level].permute(0, 2, 3, 1).reshape(-1, cfg.num_classes))
        dices = torch.cat(dice_terms) if dice_terms else None
        labels = torch.cat(cate_true)
        logits = torch.cat(cate_pred)
        onehot = F.one_hot(labels, cfg.num_classes + 1)[:, :cfg.num_classes].to(logits.dtype)
        num_pos = int((labels < cfg.num_classes).sum())
        focal = sigmoid_focal_loss(logits, onehot, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="sum")
        mask_loss = dices.mean() if dices is not None else sum(m.sum() for m in outputs["mask_x"]) * 0.0
        return {"loss_mask": cfg.dice_weight * mask_loss, "loss_cate": focal / (num_pos + 1)}

    @torch.no_grad()
    def predict(self, outputs: dict, image_size: tuple[int, int]) -> list[dict]:
        cfg = self.cfg
        size = tuple(outputs["mask_x"][0].shape[-2:])
        results = []
        for b in range(outputs["cate"][0].shape[0]):
            scores = torch.cat([c[b].sigmoid().permute(1, 2, 0).reshape(-1, cfg.num_classes) for c in outputs["cate"]])
            cell, label = torch.nonzero(scores > cfg.score_thr, as_tuple=True)
            score = scores[cell, label]
            # the level, row and column of each kept cell
            bounds = torch.tensor([0] + [g * g for g in cfg.num_grids], device=scores.device).cumsum(0)
            level = torch.bucketize(cell, bounds[1:], right=True)
            probs = []
            for k in range(len(cfg.num_grids)):
                sel = level == k
                if not sel.any():
                    continue
                local = cell[sel] - bounds[k]
                grid = cfg.num_grids[k]
                mx = outputs["mask_x"][k][b, local % grid].sigmoid()
                my = outputs["mask_y"][k][b, local // grid].sigmoid()
                p = F.interpolate((mx * my)[None], size=size, mode="bilinear", align_corners=False)[0]
                probs.append((sel.nonzero()[:, 0], p))
            device = scores.device
            empty = {"masks": torch.zeros((0, *image_size), dtype=torch.bool, device=device),
                     "labels": torch.zeros(0, dtype=torch.long, device=device), "scores": torch.zeros(0, device=device)}
            if not probs:
                results.append(empty)
                continue
            order = torch.cat([i for i, _ in probs])
            prob = torch.cat([p for _, p in probs])
            score, label, level = score[order], label[order], level[order]
            seg = prob > cfg.mask_thr
            area = seg.flatten(1).sum(1).float()
            strides = torch.tensor(cfg.strides, device=area.device, dtype=area.dtype)[level]
            keep = area > strides
            if not keep.any():
                results.append(empty)
                continue
            seg, prob, score, label, area = seg[keep], prob[keep], score[keep], label[keep], area[keep]
            maskness = (prob * seg).flatten(1).sum(1) / area
            score = score * maskness
            rank = score.argsort(descending=True)[:cfg.nms_pre]
            seg, prob, score, label = seg[rank], prob[rank], score[rank], label[rank]
            score = matrix_nms(seg, label, score, cfg.nms_kernel, cfg.nms_sigma)
            keep = score >= cfg.update_thr
            if not keep.any():
                results.append(empty)
                continue
            rank = score[keep].argsort(descending=True)[:cfg.max_per_img]
            prob, score, label = prob[keep][rank], score[keep][rank], label[keep][rank]
            full = F.interpolate(prob[None], size=image_size, mode="bilinear", align_corners=False)[0] > cfg.mask_thr
            results.append({"masks": full, "labels": label, "scores": score})
        return results
