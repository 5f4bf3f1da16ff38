"""Backbones, prototype head, losses and the two model variants on tiny inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.backbones import FPN, TwoStreamBackbone, WeightsError, imagenet_weights_path, resnet
from baselines.heads import PrototypeHead, predict_open_set, prototype_logits
from baselines.losses import open_set_cross_entropy, sample_pixels_balanced, supcon_loss
from baselines.models.prototype import prototype, prototype_cl

TINY = dict(num_classes=4, backbone="resnet18", norm="gn", fpn_channels=32, head_channels=32, embed_dim=16)


def test_prototype_logits_match_formula():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(2, 5, 3, 4, generator=g)
    mu = torch.randn(3, 5, generator=g)
    sigma = torch.randn(3, generator=g)
    gamma = torch.tensor(0.7)
    eps = 0.3
    out = prototype_logits(m, mu, sigma, gamma, eps)
    assert out.shape == (2, 4, 3, 4)
    for b in range(2):
        for y in range(3):
            for x in range(4):
                for c in range(3):
                    d = math.sqrt(sum((m[b, k, y, x].item() - mu[c, k].item()) ** 2 for k in range(5)))
                    expect = -d / (2 * sigma[c].item() ** 2 + eps)
                    assert out[b, c, y, x].item() == pytest.approx(expect, rel=1e-5, abs=1e-5)
                assert out[b, 3, y, x].item() == pytest.approx(0.7)


def test_head_init_and_unknown_prediction():
    torch.manual_seed(0)
    head = PrototypeHead(8, num_classes=5, channels=16, embed_dim=6)
    # parameters from N(0, 0.01): a std far from 0.01 means the initialisation was not applied
    assert 0.005 < head.means.std().item() < 0.02
    assert abs(head.gamma.item()) < 0.05
    logits = torch.tensor([[1.0, 3.0, 0.5], [2.0, 0.0, 5.0]]).T.reshape(1, 3, 1, 2)
    semantic, unknown = predict_open_set(logits, 254)
    assert semantic.tolist() == [[[1, 254]]] and unknown.tolist() == [[[False, True]]]


def test_logits_stay_float32_under_autocast():
    torch.manual_seed(0)
    head = PrototypeHead(8, num_classes=3, channels=16, embed_dim=6)
    x = torch.randn(1, 8, 5, 5)
    reference = head(x)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, logits = head(x)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, reference, atol=0.05)


def test_cross_entropy_maps_unknown_and_ignores_void():
    logits = torch.randn(1, 4, 2, 2)
    labels = torch.tensor([[[0, 254], [255, 2]]])
    logp = logits.log_softmax(dim=1)
    expect = -(logp[0, 0, 0, 0] + logp[0, 3, 0, 1] + logp[0, 2, 1, 1]) / 3
    assert open_set_cross_entropy(logits, labels).item() == pytest.approx(expect.item(), rel=1e-6)
    weighted = -(logp[0, 0, 0, 0] + 4 * logp[0, 3, 0, 1] + logp[0, 2, 1, 1]) / 6
    assert open_set_cross_entropy(logits, labels, unknown_weight=4.0).item() == pytest.approx(weighted.item(), rel=1e-6)
    assert open_set_cross_entropy(logits, torch.full((1, 2, 2), 255)).item() == 0.0
    with pytest.raises(ValueError, match="outside"):
        open_set_cross_entropy(logits, torch.tensor([[[0, 7], [1, 2]]]))


def test_supcon_matches_direct_loop():
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    t = 0.5
    terms = []
    for i in range(7):
        pos = [p for p in range(7) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = sum(math.exp(z[i] @ z[a] / t) for a in range(7) if a != i)
        terms.append(-sum(math.log(math.exp(z[i] @ z[p] / t) / denom) for p in pos) / len(pos))
    assert supcon_loss(z, y, t).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_balanced_sampling_counts():
    labels = torch.tensor([0] * 50 + [1] * 3 + [4] * 20 + [255] * 30)[torch.randperm(103)]
    idx = sample_pixels_balanced(labels, per_class=10, generator=torch.Generator().manual_seed(0))
    picked = labels[idx]
    assert len(set(idx.tolist())) == len(idx)
    assert {c: int((picked == c).sum()) for c in (0, 1, 4, 255)} == {0: 10, 1: 3, 4: 10, 255: 0}


def test_weights_loader(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match=str(imagenet_weights_path("resnet18"))):
        resnet("resnet18", "imagenet")
    src = resnet("resnet18")
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    depth = resnet("resnet18", tmp_path / "r18.pt", in_channels=1, norm="frozen_bn")
    assert torch.allclose(depth.conv1.weight, src.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(depth.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    with pytest.raises(WeightsError, match="r50"):
        torch.save(src.state_dict(), tmp_path / "r50.pt")
        resnet("resnet50", tmp_path / "r50.pt")


def test_two_stream_fpn_shapes():
    net = TwoStreamBackbone("resnet18", None, second_channels=1, norm="gn")
    feats = net(torch.randn(1, 3, 64, 96), torch.randn(1, 1, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 24), (128, 8, 12), (256, 4, 6), (512, 2, 3)]
    levels = FPN(net.channels, 32, extra_level=True)(feats)
    assert [tuple(p.shape[1:]) for p in levels] == [(32, 16, 24), (32, 8, 12), (32, 4, 6), (32, 2, 3), (32, 1, 2)]


@pytest.mark.parametrize("build", [prototype, prototype_cl])
def test_overfit_tiny_batch(build):
    # RGB-only keeps it fast; the two-stream path is checked by the shapes test and the engine tests
    torch.manual_seed(0)
    model = build(**TINY, second_stream=None)
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(2, 32, 32, dtype=torch.long)
    label[:, 16:] = 1
    label[:, :, :10] = 2
    label[0, 4:10, 20:28] = 254
    label[1, 20:26, 12:20] = 3
    label[:, :2] = 255
    image = torch.randn(2, 3, 32, 32, generator=g) * 0.1
    image[:, 0] += (label == 1).float()
    image[:, 1] += (label == 254).float()
    image[:, 2] += (label == 3).float() - (label == 2).float()
    batch = {"image": image, "depth": torch.rand(2, 1, 32, 32, generator=g) * 50, "label": label}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(20):
        terms = model.loss(model(batch), batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert ("supcon" in terms) == (build is prototype_cl)
    assert losses[-1] < 0.85 * losses[0] and losses[-1] == min(losses[3:])
    model.eval()
    pred = model.predict(batch)
    valid = label != 255
    majority = label[valid].bincount(minlength=255).max() / valid.sum()
    assert (pred["semantic"][valid] == label[valid]).float().mean() > majority + 0.1
