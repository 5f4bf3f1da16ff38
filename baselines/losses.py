"""Losses of the open-set baselines: cross entropy over the C known classes plus the unknown index
(ignore 255, unknown 254 mapped to C), the supervised contrastive (SupCon) loss over pixel embeddings,
and the class-balanced pixel sampler that feeds it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vca_data.labels import UNKNOWN, VOID


def open_set_targets(labels: torch.Tensor, num_known: int) -> torch.Tensor:
    """Training targets from label maps: train ids 0..C-1 stay, unknown (254) becomes C, void (255)
    stays 255; any other value is an error (it would silently become a wrong class)."""
    bad = ((labels >= num_known) & (labels != UNKNOWN) & (labels != VOID)) | (labels < 0)
    if bool(bad.any()):
        raise ValueError(
            f"labels hold values outside 0..{num_known - 1}, {UNKNOWN} (unknown), {VOID} (void): "
            f"{sorted(set(labels[bad].unique().tolist()))[:5]}"
        )
    return torch.where(labels == UNKNOWN, torch.full_like(labels, num_known), labels)


def open_set_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, unknown_weight: float = 1.0) -> torch.Tensor:
    """Mean cross entropy over non-void pixels of logits (B, C+1, H, W) against label maps (B, H, W)
    with train ids, 254 unknown (-> index C) and 255 void. `unknown_weight` weighs the unknown pixels
    (1 = the paper's plain cross entropy); the mean is then over pixel weights, as torch's weighted
    mean. A batch without a single valid pixel gives 0 (with a graph), not the NaN of an empty mean,
    so it cannot trip the NaN stop."""
    c = logits.shape[1] - 1
    targets = open_set_targets(labels, c)
    if unknown_weight == 1.0:
        total = F.cross_entropy(logits.float(), targets, ignore_index=VOID, reduction="sum")
        return total / (targets != VOID).sum().clamp_min(1)
    weight = torch.ones(c + 1, device=logits.device)
    weight[c] = unknown_weight
    total = F.cross_entropy(logits.float(), targets, weight=weight, ignore_index=VOID, reduction="sum")
    valid = targets != VOID
    return total / weight[targets[valid]].sum().clamp_min(1e-12)


def sample_pixels_balanced(
    labels: torch.Tensor, per_class: int, generator: torch.Generator | None = None, ignore: int = VOID
) -> torch.Tensor:
    """Flat indices into `labels` (any shape): up to `per_class` pixels of every class present,
    drawn uniformly without replacement, so rare classes (and the unknowns) weigh as much as road.
    Returns a 1-D int64 tensor, grouped by class in ascending order."""
    flat = labels.reshape(-1)
    picked = []
    for cls in flat.unique(sorted=True).tolist():
        if cls == ignore:
            continue
        where = (flat == cls).nonzero(as_tuple=True)[0]
        if where.numel() > per_class:
            order = torch.randperm(where.numel(), generator=generator, device="cpu").to(where.device)
            where = where[order[:per_class]]
        picked.append(where)
    if not picked:
        return torch.zeros(0, dtype=torch.long, device=labels.device)
    return torch.cat(picked)


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form) of L2-normalised embeddings
    (N, D) with labels (N,): for each anchor i with positives P(i) (same label, not i),
        -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) ),
    averaged over anchors that have a positive; 0 (with a graph) when none has."""
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"need embeddings (N, D) and labels (N,), got {tuple(embeddings.shape)}, {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = embeddings.float()
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(dim=1)
    has = count > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(pos_log_prob[has] / count[has]).mean()
