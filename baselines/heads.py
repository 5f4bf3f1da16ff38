"""Dense heads of the open-set baselines: the prototype head (embeddings, one learnable mean and scale
per known class, and a global learnable unknown logit gamma) and the projection head of the
contrastive variant.

Prototype logits (VCA benchmark, section 4.3): for an embedding m and class c,
    logit_c = -||m - mu_c|| / (2 sigma_c^2 + eps),  c = 0..C-1,
    logit_C = gamma                                  (the unknown class),
and a softmax over the C + 1 logits gives the class probabilities. A pixel is unknown when gamma wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def prototype_logits(
    embeddings: torch.Tensor, means: torch.Tensor, sigmas: torch.Tensor, gamma: torch.Tensor, eps: float
) -> torch.Tensor:
    """Logits (B, C+1, H, W) of embeddings (B, D, H, W) against class means (C, D), per-class scales
    (C,) and the unknown constant gamma (scalar). The distance is expanded as |m|^2 - 2 m.mu + |mu|^2
    (one matrix product instead of a (B, C, D, H, W) difference tensor), clamped at 0 against rounding,
    and a tiny floor inside the square root keeps the gradient finite at m == mu."""
    if embeddings.ndim != 4 or embeddings.shape[1] != means.shape[1]:
        raise ValueError(f"embeddings must be (B, {means.shape[1]}, H, W), got {tuple(embeddings.shape)}")
    sq_m = (embeddings * embeddings).sum(dim=1, keepdim=True)
    cross = torch.einsum("bdhw,cd->bchw", embeddings, means)
    sq_mu = (means * means).sum(dim=1)[None, :, None, None]
    dist = (sq_m - 2 * cross + sq_mu).clamp_min(0).add(1e-12).sqrt()
    known = -dist / (2 * sigmas.square()[None, :, None, None] + eps)
    unknown = gamma.reshape(1, 1, 1, 1).expand(known.shape[0], 1, *known.shape[2:])
    return torch.cat([known, unknown.to(known.dtype)], dim=1)


def conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.GroupNorm(min(32, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class PrototypeHead(nn.Module):
    """`num_convs` 3x3 conv + GroupNorm + ReLU modules, a 1x1 convolution to `embed_dim`-d pixel
    embeddings, and the prototype parameters (means, scales, gamma) initialised from N(0, 0.01).

    `eps` keeps the logit scale finite: with the paper's initialisation the scales start near 0, so at
    the start 2 sigma^2 << eps and the logits are about -distance / eps."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        embed_dim: int = 256,
        num_convs: int = 4,
        eps: float = 1.0,
        init_std: float = 0.01,
        sigma_init: float | None = None,
        embed_std: float | None = None,
        gamma_init: float | None = None,
    ):
        super().__init__()
        if num_classes < 1 or embed_dim < 1 or num_convs < 1 or eps <= 0:
            raise ValueError(
                f"PrototypeHead: need num_classes, embed_dim, num_convs >= 1 and eps > 0, got "
                f"{num_classes}, {embed_dim}, {num_convs}, {eps}"
            )
        self.num_classes = num_classes
        self.eps = float(eps)
        self.tower = nn.Sequential(
            *[conv_gn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        )
        self.embed = nn.Conv2d(channels, embed_dim, kernel_size=1)
        self.means = nn.Parameter(torch.randn(num_classes, embed_dim) * init_std)
        # the paper draws the scales from N(0, 0.01) too (logit scale 1 / (2 sigma^2 + eps) ~ 5000 with the
        # authors' eps); `sigma_init` starts every scale at that value instead (scale 1 / (2 s^2 + eps))
        self.sigmas = nn.Parameter(torch.randn(num_classes) * init_std if sigma_init is None
                                   else torch.full((num_classes,), float(sigma_init)))
        self.gamma = nn.Parameter(torch.randn(()) * init_std if gamma_init is None else torch.tensor(float(gamma_init)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if embed_std is not None:  # the embedding layer alone drawn wider: embeddings of order 1, not 0.01
            nn.init.normal_(self.embed.weight, std=float(embed_std))

    def embeddings(self, features: torch.Tensor) -> torch.Tensor:
        return self.embed(self.tower(features))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        # distances in float32 even under autocast: the squared-norm expansion cancels too much in half precision
        with torch.autocast(embeddings.device.type, enabled=False):
            return prototype_logits(
                embeddings.float(), self.means.float(), self.sigmas.float(), self.gamma.float(), self.eps
            )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings (B, D, h, w), logits (B, C+1, h, w))."""
        m = self.embeddings(features)
        return m, self.logits(m)


class ProjectionHead(nn.Module):
    """1x1 conv - ReLU - 1x1 conv to `out_dim`, L2-normalised per pixel: the contrastive variant's
    separate projection, so the contrastive loss shapes the shared features without pulling the
    prototype embeddings onto the unit sphere."""

    def __init__(self, in_channels: int, hidden: int = 256, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_dim, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=1)


def predict_open_set(logits: torch.Tensor, unknown_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic prediction (argmax over C+1, the unknown index C replaced by `unknown_value`) and the
    boolean unknown mask (argmax == C) from logits (B, C+1, H, W)."""
    c = logits.shape[1] - 1
    arg = logits.argmax(dim=1)
    unknown = arg == c
    return torch.where(unknown, torch.full_like(arg, unknown_value), arg), unknown


def predict_closed_set(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """A closed-set segmenter's prediction from logits (B, C, H, W): 'semantic' train ids, 'unknown'
    (all False: no unknown class) and 'unknown_prob' = 1 - the maximum softmax probability, the usual
    baseline anomaly score."""
    prob = logits.float().softmax(dim=1)
    semantic = prob.argmax(dim=1)
    return {"semantic": semantic, "unknown": torch.zeros_like(semantic, dtype=torch.bool),
            "unknown_prob": 1 - prob.max(dim=1).values}
