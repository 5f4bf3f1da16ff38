"""VCANet network: both phases learn on a fixed batch, phase 2 changes only the class-agnostic part,
and predictions come back at the input size."""

from __future__ import annotations

import pytest
import torch

from baselines.models.vcanet import VCANet
from baselines.solo import SoloConfig

H, W = 64, 96
TINY_SOLO = SoloConfig(num_classes=1, in_channels=16, seg_feat_channels=16, stacked_convs=1,
                       num_grids=(8, 6, 5, 4, 3))


def tiny(phase: int = 1, **kw) -> VCANet:
    torch.manual_seed(0)
    return VCANet(backbone="resnet18", weights=None, norm="bn", fpn_channels=16, phase=phase, instance=TINY_SOLO,
                  class_agnostic=TINY_SOLO, semantic_channels=16, semantic_convs=1, **kw)


def batch() -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 10:40, 20:50] = True   # a car, moving
    masks[1, 30:60, 60:90] = True   # a person, static
    semantic = torch.zeros(2, H, W, dtype=torch.long)
    semantic[:, H // 2:] = 1
    semantic[0][masks[0]] = 13
    semantic[0][masks[1]] = 11
    inst = {"masks": masks, "things": torch.tensor([2, 0]), "motion": torch.tensor([0, 1])}
    return {"image": torch.randn(2, 3, H, W, generator=g), "flow": torch.randn(2, 3, H, W, generator=g),
            "semantic": semantic, "instances": [inst, {k: v.clone() for k, v in inst.items()}]}


def fit(model: VCANet, steps: int = 25) -> list[float]:
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    model.train()
    b, losses = batch(), []
    for _ in range(steps):
        terms = model.loss(model(b), b)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    return losses


def test_phase_one_loss_falls_and_reads_no_flow():
    model = tiny(1)
    b = batch()
    del b["flow"]
    model.train()
    terms = model.loss(model(b), b)
    assert {"instance_mask", "instance_cate", "semantic", "loss"} <= set(terms)
    losses = fit(model)
    assert losses[-1] < 0.6 * losses[0], losses


def test_phase_two_changes_only_the_class_agnostic_part():
    first = tiny(1)
    fit(first, steps=2)
    second = tiny(2)
    second.load_state_dict(first.state_dict())
    before = {k: v.clone() for k, v in second.state_dict().items()}
    losses = fit(second, steps=25)
    assert losses[-1] < 0.6 * losses[0], losses
    after = second.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    ca = ("body.second.", "body.fuse.", "ca_head.")
    assert changed and all(k.startswith(ca) for k in changed), sorted(k for k in changed if not k.startswith(ca))[:5]
    assert any(k.startswith("ca_head.") for k in changed) and any(k.startswith("body.second.") for k in changed)
    assert not any(p.requires_grad for m in second.panoptic_modules() for p in m.parameters())


def test_predict_shapes_and_phase_check():
    model = tiny(2)
    pred = model.predict(batch())
    assert pred["semantic"].shape == (2, H, W)
    for per_image in pred["class_agnostic"] + pred["instances"]:
        assert per_image["masks"].shape[1:] == (H, W)
        assert per_image["masks"].shape[0] == per_image["scores"].shape[0] == per_image["labels"].shape[0]
    with pytest.raises(ValueError, match="phase"):
        VCANet(backbone="resnet18", phase=3)
    with pytest.raises(KeyError, match="flow"):
        model.predict({"image": torch.zeros(1, 3, H, W)})



def test_phase_two_can_start_from_the_appearance_pyramid_and_the_instance_head():
    """fuse_init 'appearance': at the start of phase 2 the fused stages equal the appearance stages (the
    flow's part of each 1x1 fusion is zero, whatever phase 1 saved there), and class_agnostic_init
    'instance' copies the phase-1 instance head's towers and mask convolutions into the class-agnostic
    head (not its category convolution). Training then brings the flow in."""
    first = tiny(1)
    fit(first, steps=3)
    second = tiny(2, fuse_init="appearance", class_agnostic_init="instance")
    second.load_state_dict(first.state_dict())
    copied = second.after_init_from()
    assert copied and not any(name.startswith("cate.") for name in copied)
    inst, ca = first.instance_head.state_dict(), second.ca_head.state_dict()
    assert all(torch.equal(inst[name], ca[name]) for name in copied)
    assert {n for n in inst if n.startswith(("mask_x_tower.", "mask_y_tower.", "cate_tower.", "mask_x.", "mask_y."))
            } <= set(copied)
    b = batch()
    second.eval()
    with torch.no_grad():
        fused, appearance = second.body.streams(b["image"], b["flow"])
    for f, a in zip(fused, appearance, strict=True):
        torch.testing.assert_close(f, a)
    losses = fit(second, steps=25)
    assert losses[-1] < 0.6 * losses[0], losses
    second.eval()
    with torch.no_grad():
        fused, appearance = second.body.streams(b["image"], b["flow"])
    assert not torch.allclose(fused[0], appearance[0])  # the flow's part has grown
    with pytest.raises(ValueError, match="class_agnostic_init"):
        tiny(2, class_agnostic_init="copy")
    with pytest.raises(ValueError, match="fuse_init"):
        tiny(1, fuse_init="zeros")
    assert tiny(1, class_agnostic_init="instance").after_init_from() == []  # phase 1 keeps its own heads
