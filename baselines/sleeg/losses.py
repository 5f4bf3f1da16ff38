"""SLEEG's estimators, losses, mask refinement and anomaly scores (paper section "Methodology").

Notation: g the frozen segmenter's class logits (B, K, H, W), h the OoD head's two logits (B, 2, H, W),
channel 1 the anomaly logit. Targets: 1 anomaly (pasted), 0 normal, 255 ignored.

- JEM(z) = -log sum_y exp(g(z)[y])  (Eq. 6), computed with torch.logsumexp (stable for large logits).
- TAE, the task-agnostic estimator p_a(o|z) = softmax(h)[o] (Eq. 4), trained by 2-class cross entropy
  (Eq. 5), ignoring 255.
- TORE, the task-oriented residual estimator log p_t(o=1|z) = h[1] + JEM(z) + C (Eq. 6), trained by
  the hinge of Eq. 7 on per-image means: {E_normal[log p_t] - E_anomaly[log p_t] + gamma}_+. With the
  constant C cancelled this is Eq. 8: {E_normal[h1] - E_anomaly[h1] + gamma_hat}_+ with the dynamic
  margin gamma_hat = gamma + E_normal[JEM] - E_anomaly[JEM], gamma 15 ("dynamic", the paper); "fixed"
  uses gamma alone (the paper's static-margin ablation, Table 6). The authors' code
  (core/modeling/losses.py LikelihoodLoss, margin 20, applied in codec.py _ood_head_forward_train to
  `ood_logit + energy` with energy = 1 - logsumexp(g)) is the dynamic rule with gamma 20.
- Refinement (Eqs. 10-11): inside the pasted area of each image, Otsu's threshold on a score splits
  kept anomaly pixels (score > threshold) from ignored ones (255); pixels outside stay normal.
- Anomaly score at test time (Eq. 9): A = log p_a(o=1|z) + lambda log p_t(o=1|z)
  = log_softmax(h)[1] + lambda (h[1] + JEM), C omitted ("In Eq. (9) we omit the constant term");
  lambda 0.5 (Implementation Details). The code's score (codec.py PatchEncoderDecoder.
  _get_ood_segmentation_score, merge_weight 0.5 in configs/exps/deeplabv3_res50.py) is
  energy + lambda h[1] with energy = 1 - logsumexp(g), i.e. 1 + JEM + lambda h[1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu

IGNORE = 255
MARGINS = ("dynamic", "fixed")
SCORES = ("paper", "code")


def jem(seg_logits: torch.Tensor) -> torch.Tensor:
    """(B, H, W) JEM(z) = -logsumexp over the class dimension, in float32."""
    return -torch.logsumexp(seg_logits.float(), dim=1)


def tae_loss(ood_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2-class cross entropy of the OoD head, mean over the pixels that are not 255 (0 when none)."""
    valid = target != IGNORE
    total = F.cross_entropy(ood_logits.float(), target.long(), ignore_index=IGNORE, reduction="sum")
    return total / valid.sum().clamp_min(1)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of x (B, H, W) over mask (B, H, W), shape (B,); 0 where the mask is empty."""
    m = mask.float()
    return (x * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def tore_margin(jem_map: torch.Tensor, target: torch.Tensor, gamma: float, rule: str = "dynamic") -> torch.Tensor:
    """(B,) margins: gamma + E_normal[JEM] - E_anomaly[JEM] per image ('dynamic') or gamma ('fixed')."""
    if rule not in MARGINS:
        raise ValueError(f"margin rule must be one of {MARGINS}, got {rule!r}")
    gamma_t = torch.full((target.shape[0],), float(gamma), device=target.device)
    if rule == "fixed":
        return gamma_t
    j = jem_map.detach().float()
    return gamma_t + _masked_mean(j, target == 0) - _masked_mean(j, target == 1)


def tore_loss(anomaly_logit: torch.Tensor, target: torch.Tensor, jem_map: torch.Tensor, gamma: float = 15.0,
              rule: str = "dynamic") -> torch.Tensor:
    """Mean over images of {E_normal[h1] - E_anomaly[h1] + margin}_+; images without both normal and
    anomaly pixels do not count (0 when no image has both)."""
    h1 = anomaly_logit.float()
    normal, anomaly = target == 0, target == 1
    both = normal.flatten(1).any(1) & anomaly.flatten(1).any(1)
    hinge = (_masked_mean(h1, normal) - _masked_mean(h1, anomaly) + tore_margin(jem_map, target, gamma, rule)).clamp_min(0)
    return (hinge * both).sum() / both.sum().clamp_min(1)


def anomaly_score(ood_logits: torch.Tensor, seg_logits: torch.Tensor, rule: str = "paper", lam: float = 0.5) -> torch.Tensor:
    """(B, H, W) anomaly score, higher = more anomalous: 'paper' log p_a + lam (h1 + JEM), 'code'
    (1 - logsumexp g) + lam h1."""
    if rule not in SCORES:
        raise ValueError(f"score rule must be one of {SCORES}, got {rule!r}")
    h = ood_logits.float()
    j = jem(seg_logits)
    if rule == "paper":
        return F.log_softmax(h, dim=1)[:, 1] + lam * (h[:, 1] + j)
    return (1.0 + j) + lam * h[:, 1]


def otsu_refine(score: torch.Tensor, target: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """The target with each image's pasted pixels (1) at or below Otsu's threshold of their scores set
    to 255 (skimage.filters.threshold_otsu with `bins` bins). An image whose pasted scores are all
    equal keeps them all (no split to make)."""
    out = target.clone()
    pasted = target == 1
    score_np = score.detach().float().cpu().numpy()
    pasted_np = pasted.cpu().numpy()
    for i in range(target.shape[0]):
        values = score_np[i][pasted_np[i]]
        if values.size < 2 or not values.max() > values.min():
            continue
        threshold = float(threshold_otsu(values, nbins=int(bins)))
        drop = torch.from_numpy(pasted_np[i] & (score_np[i] <= threshold)).to(target.device)
        out[i][drop] = IGNORE
    return out


def kept_fraction(refined: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of pasted pixels the refinement kept as anomaly (1 when nothing was pasted)."""
    pasted = (target == 1).sum()
    return ((refined == 1).sum().float() / pasted.clamp_min(1)).where(pasted > 0, torch.ones((), device=target.device))

