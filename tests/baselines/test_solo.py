"""Decoupled SOLO pieces against hand-worked cases and direct formulas: target assignment (levels and
grid cells), Matrix NMS, dice and focal losses, and a head that overfits one target."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.solo import DecoupledSoloHead, SoloConfig, dice_loss, matrix_nms, solo_targets

CFG = SoloConfig(num_classes=3, in_channels=8, seg_feat_channels=8, stacked_convs=1, num_grids=(10, 8, 6, 4, 2),
                 scale_ranges=((1, 16), (8, 32), (16, 64), (32, 128), (64, 256)))
SIZES = [(32, 32), (32, 32), (16, 16), (8, 8), (8, 8)]  # mask sizes (stride/2) of a 128x128 image


def square(y0, x0, side, size=128):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_small_square_fires_on_the_fine_level_only_at_its_centre_cell():
    # a 6x6 square centred at (y, x) = (66, 14): scale 6 -> level 0 only (range 1-16).
    t = solo_targets(square(63, 11, 6)[None], torch.tensor([2]), SIZES, CFG)
    assert [len(level["positives"]) for level in t] == [1, 0, 0, 0, 0]
    # centre (65.5, 13.5) on a 10x10 grid of 12.8 px cells: row 5, column 1; the half box 0.2*3 px stays in it
    assert t[0]["positives"].tolist() == [5 * 10 + 1]
    assert t[0]["cate"][5, 1] == 2 and (t[0]["cate"] == 3).sum() == 99
    assert t[0]["masks"].shape == (1, 32, 32) and t[0]["masks"].sum() == pytest.approx(1.5 * 1.5, abs=3)


def test_large_mask_fires_on_coarse_levels_and_overlapping_ranges_on_both():
    t = solo_targets(square(0, 0, 100)[None], torch.tensor([0]), SIZES, CFG)   # scale 100: levels 3 and 4
    fired = [len(level["positives"]) > 0 for level in t]
    assert fired == [False, False, False, True, True]
    # level 3, grid 4 (32 px cells): centre (49.5, 49.5) -> cell (1, 1); half box 0.2 * 50 = 10 px -> cells 1..1
    assert t[3]["positives"].tolist() == [1 * 4 + 1]
    # a sigma large enough to reach the neighbours: the centre cell and its 8 neighbours at most
    wide = SoloConfig(**{**CFG.__dict__, "sigma": 1.0})
    t = solo_targets(square(0, 0, 100)[None], torch.tensor([0]), SIZES, wide)
    assert sorted(t[3]["positives"].tolist()) == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def direct_matrix_nms(masks, labels, scores, sigma):
    n = len(scores)
    iou = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            inter = (masks[i] & masks[j]).sum().item()
            union = (masks[i] | masks[j]).sum().item()
            iou[i, j] = inter / union if union else 0.0
    out = scores.clone()
    for j in range(n):
        factors = [1.0]
        for i in range(j):
            if labels[i] != labels[j]:
                continue
            comp = max([iou[k, i].item() for k in range(i) if labels[k] == labels[i]], default=0.0)
            factors.append(math.exp(-sigma * iou[i, j].item() ** 2) / math.exp(-sigma * comp ** 2))
        out[j] = scores[j] * min(factors)
    return out


def test_matrix_nms_hand_case_and_direct_computation():
    a = square(0, 0, 10, 20)
    masks = torch.stack([a, a, a])
    scores = torch.tensor([0.9, 0.8, 0.7])
    decayed = matrix_nms(masks, torch.tensor([0, 0, 1]), scores, sigma=2.0)
    assert decayed[0] == pytest.approx(0.9)
    assert decayed[1] == pytest.approx(0.8 * math.exp(-2.0))   # same class, IoU 1
    assert decayed[2] == pytest.approx(0.7)                    # other class: untouched
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        masks = torch.rand(6, 12, 12, generator=g) > 0.5
        labels = torch.randint(0, 2, (6,), generator=g)
        scores = torch.sort(torch.rand(6, generator=g), descending=True).values
        assert torch.allclose(matrix_nms(masks, labels, scores, sigma=2.0),
                              direct_matrix_nms(masks, labels, scores, 2.0), atol=1e-6)


def test_dice_and_focal_against_formulas():
    p = torch.tensor([[[0.5, 1.0], [0.0, 0.25]]])
    t = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    expected = 1 - 2 * 1.5 / ((0.25 + 1 + 0.0625 + 1e-3) + (2 + 1e-3))
    assert dice_loss(p, t).item() == pytest.approx(expected)
    from torchvision.ops import sigmoid_focal_loss

    x, y = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    pt = torch.sigmoid(x)
    manual = (-0.25 * (1 - pt[0]) ** 2 * torch.log(pt[0])) + (-(0.75) * pt[1] ** 2 * torch.log(1 - pt[1]))
    assert sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum").item() == pytest.approx(manual.item(), rel=1e-5)


def levels(batch=1, size=64, channels=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, size // s, size // s, generator=g) for s in (4, 8, 16, 32, 64)]


def test_head_overfits_one_target_and_predicts_it():
    torch.manual_seed(0)
    cfg = SoloConfig(num_classes=2, in_channels=8, seg_feat_channels=16, stacked_convs=2, num_grids=(8, 6, 5, 4, 3))
    head = DecoupledSoloHead(cfg)
    feats = levels()
    target = [{"masks": square(16, 8, 24, 64)[None], "labels": torch.tensor([1])}]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        terms = head.loss(head(feats), target)
        loss = terms["loss_mask"] + terms["loss_cate"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    pred = head.predict(head(feats), (64, 64))[0]
    assert len(pred["scores"]) >= 1 and pred["labels"][0] == 1
    m = pred["masks"][0]
    iou = (m & target[0]["masks"][0]).sum() / (m | target[0]["masks"][0]).sum()
    assert iou > 0.5


def test_empty_targets_give_a_finite_loss_and_bad_levels_are_refused():
    head = DecoupledSoloHead(SoloConfig(num_classes=1, in_channels=8, seg_feat_channels=8, stacked_convs=1,
                                        num_grids=(4, 4, 3, 2, 2)))
    out = head(levels())
    terms = head.loss(out, [{"masks": torch.zeros(0, 64, 64, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.long)}])
    assert all(torch.isfinite(v) for v in terms.values())
    (terms["loss_mask"] + terms["loss_cate"]).backward()
    # cells above the score threshold whose masks all fall below update_thr after Matrix NMS: none kept
    strict = DecoupledSoloHead(SoloConfig(**{**head.cfg.__dict__, "score_thr": 0.0, "mask_thr": 0.0, "update_thr": 2.0}))
    (pred,) = strict.predict(strict(levels()), (64, 64))
    assert pred["masks"].shape == (0, 64, 64) and pred["scores"].numel() == 0
    with pytest.raises(ValueError, match="5 pyramid levels"):
        head(levels()[:4])
    with pytest.raises(ValueError, match="5 levels"):
        SoloConfig(num_classes=1, num_grids=(4, 4))
