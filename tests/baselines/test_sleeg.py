"""SLEEG: patches, losses against direct formulas, refinement against scikit-image, score rules, the
frozen segmenter and OoD head, the overfit check, the training dataset and the evaluation."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from skimage.filters import threshold_otsu
from skimage.morphology import convex_hull_image
from torch import nn

from baselines.config import COMMON, config_dir, merge
from baselines.models.deeplab import DeepLabSegmenter
from baselines.models.segmenter import SoftmaxSegmenter
from baselines.models.sleeg import DATA_DEFAULTS, MODEL_DEFAULTS, OoDHead, Sleeg, validate_sleeg
from baselines.sleeg import losses as L
from baselines.sleeg.data import SleegTrainDataset
from baselines.sleeg.evaluate import anomaly_labels, sleeg_evaluate, sleeg_table
from baselines.sleeg.patches import PatchSettings, harris_hull, paste_patches
from baselines.spec import ConfigError
from vca_data.datasets import OpenSetDataset
from vca_data.metrics.anomaly import AnomalyPixelMetrics
from vca_data.synthetic_episodes import make_synthetic_episode
from vca_data.transforms import Compose, RandomCrop


def _textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = (rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3))).astype(np.uint8)
    return np.kron(img, np.ones((8, 8, 1), np.uint8))[:h, :w].copy()


# --------------------------------------------------------------------------------------- patches
@pytest.mark.parametrize("shape", ["harris", "random"])
def test_patches_area_aspect_convex_and_inside(shape):
    h, w = 180, 320
    target, donor = np.zeros((h, w, 3), np.uint8), _textured(200, 300, 1)
    settings = PatchSettings(shape=shape)
    res = paste_patches(target, donor, np.random.default_rng(3), settings)
    assert len(res.rectangles) == 10 and res.mask.dtype == np.uint8 and set(np.unique(res.mask)) <= {0, 1}
    for (y, x, ph, pw), poly in zip(res.rectangles, res.shapes, strict=True):
        slack = (ph + pw + 1) / (h * w)  # rounding to whole pixels
        assert 0.03 - slack <= ph * pw / (h * w) <= 0.06 + slack
        assert 0.8 - 1.5 / ph <= pw / ph <= 1.2 + 1.5 / ph
        assert 0 <= y and y + ph <= h and 0 <= x and x + pw <= w
        assert poly.shape == (ph, pw) and 0 < poly.sum() <= ph * pw
        hull = convex_hull_image(poly)
        assert (hull & ~poly).sum() <= ph + pw  # convex up to the rasterisation of the boundary
        for line in (*poly, *poly.T):  # every row and column of a convex shape is one run
            assert np.count_nonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]]))) in (0, 2)
    assert res.fallbacks == 0
    # pasted pixels come from the donor, the others are untouched
    assert (res.image[res.mask == 0] == 0).all() and res.image[res.mask == 1].any()


@pytest.mark.parametrize("shape", ["harris", "random"])
def test_patches_deterministic_per_seed(shape):
    target, donor = _textured(90, 160, 2), _textured(90, 160, 3)
    settings = PatchSettings(shape=shape)
    a = paste_patches(target, donor, np.random.default_rng((5, 7)), settings)
    b = paste_patches(target, donor, np.random.default_rng((5, 7)), settings)
    c = paste_patches(target, donor, np.random.default_rng((5, 8)), settings)
    assert np.array_equal(a.mask, b.mask) and np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, c.mask)


def test_harris_shape_follows_corners_and_flat_patch_falls_back():
    patch = np.zeros((40, 40, 3), np.uint8)
    patch[10:20, 12:30] = 255  # a bright rectangle: its four corners
    hull = harris_hull(patch, 0.01)
    ys, xs = np.nonzero(hull)
    assert 8 <= ys.min() <= 12 and 17 <= ys.max() <= 22 and 10 <= xs.min() <= 14 and 27 <= xs.max() <= 32
    assert harris_hull(np.full((40, 40, 3), 90, np.uint8), 0.01) is None
    res = paste_patches(np.zeros((90, 160, 3), np.uint8), np.full((90, 160, 3), 90, np.uint8),
                        np.random.default_rng(0), PatchSettings(count=3))
    assert res.fallbacks == 3 and res.mask.sum() > 0


def test_patch_noise_and_extra_channels():
    target = np.zeros((60, 80, 3), np.float32)
    donor = _textured(60, 80)
    depth_t, depth_d = np.zeros((60, 80), np.float32), np.full((60, 80), 7.0, np.float32)
    res = paste_patches(target, donor, np.random.default_rng(1), PatchSettings(shape="random", noise=1.0, count=2),
                        lambda x: x.astype(np.float32), [(depth_t, depth_d)])
    assert np.array_equal(depth_t > 0, res.mask == 1)
    assert not np.isin(res.image[res.mask == 1], donor.astype(np.float32)).all()  # noise, not donor values


# --------------------------------------------------------------------------------------- losses
def test_jem_matches_formula_and_is_stable():
    g = torch.randn(2, 5, 3, 4)
    assert torch.allclose(L.jem(g), -torch.log(torch.exp(g).sum(1)), atol=1e-5)
    big = torch.full((1, 3, 1, 1), 1000.0)
    assert torch.allclose(L.jem(big), torch.tensor(-1000.0 - math.log(3)).reshape(1, 1, 1))


def test_tae_matches_formula():
    h = torch.randn(2, 2, 3, 3)
    t = torch.randint(0, 2, (2, 3, 3))
    t[0, 0, 0] = 255
    logp = F.log_softmax(h, 1)
    valid = t != 255
    direct = -(logp.gather(1, t.clamp(max=1)[:, None])[:, 0][valid]).mean()
    assert torch.allclose(L.tae_loss(h, t), direct)


def _tore_direct(h1, t, jem_map, gamma, rule):
    out = []
    for i in range(h1.shape[0]):
        n, a = t[i] == 0, t[i] == 1
        margin = gamma + (jem_map[i][n].mean() - jem_map[i][a].mean() if rule == "dynamic" else 0.0)
        out.append(torch.clamp(h1[i][n].mean() - h1[i][a].mean() + margin, min=0))
    return torch.stack(out).mean()


@pytest.mark.parametrize("rule", ["dynamic", "fixed"])
def test_tore_matches_formula_both_margins(rule):
    torch.manual_seed(0)
    h1, jem_map = torch.randn(3, 4, 4) * 10, torch.randn(3, 4, 4) * 10
    t = torch.randint(0, 2, (3, 4, 4))
    t[:, 0, 0], t[:, 0, 1], t[:, 1, 1] = 0, 1, 255
    gamma = 15.0 if rule == "dynamic" else 20.0
    assert torch.allclose(L.tore_loss(h1, t, jem_map, gamma, rule), _tore_direct(h1, t, jem_map, gamma, rule), atol=1e-5)
    margins = L.tore_margin(jem_map, t, gamma, rule)
    if rule == "fixed":
        assert torch.equal(margins, torch.full((3,), 20.0))
    else:
        assert not torch.allclose(margins, torch.full((3,), 15.0))
    # an image with anomaly logits far above the normal ones costs nothing
    h_sep = torch.where(t == 1, torch.full_like(h1, 1e3), torch.zeros_like(h1))
    assert L.tore_loss(h_sep, t, jem_map, gamma, rule) == 0


def test_code_tore_equals_dynamic_margin_with_its_gamma():
    """The authors' LikelihoodLoss (margin 20 on anomaly logit + energy, energy = 1 - logsumexp) is
    the dynamic rule with gamma 20."""
    torch.manual_seed(1)
    g, h1 = torch.randn(2, 6, 5, 5) * 3, torch.randn(2, 5, 5)
    t = torch.randint(0, 2, (2, 5, 5))
    t[:, 0, 0], t[:, 0, 1] = 0, 1
    energy = 1 - torch.logsumexp(g, 1)
    code = _tore_direct(h1 + energy, t, torch.zeros_like(h1), 20.0, "fixed")
    assert torch.allclose(L.tore_loss(h1, t, L.jem(g), 20.0, "dynamic"), code, atol=1e-5)


def test_otsu_refinement_matches_scikit_image():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0, 0.3, 300), rng.normal(5, 0.3, 200)
    scores = np.zeros((1, 25, 40), np.float32)
    target = np.zeros((1, 25, 40), np.int64)
    idx = rng.permutation(1000)
    flat_s, flat_t = scores.reshape(-1), target.reshape(-1)
    flat_s[idx[:300]], flat_s[idx[300:500]] = low, high
    flat_t[idx[:500]] = 1                            # pasted: a bimodal histogram
    flat_s[idx[500:]] = rng.normal(10, 1, 500)        # normal pixels: never touch the threshold
    for bins in (25, 256):
        refined = L.otsu_refine(torch.from_numpy(scores), torch.from_numpy(target), bins).numpy()
        threshold = threshold_otsu(flat_s[idx[:500]], nbins=bins)
        assert 0 < threshold < 4
        pasted = target == 1
        assert np.array_equal(refined == 1, pasted & (scores > threshold))
        assert np.array_equal(refined == 255, pasted & (scores <= threshold))
        assert ((refined == 0) == (target == 0)).all()
        assert (refined == 1).sum() == 200
    # constant scores: nothing to split, everything kept
    same = L.otsu_refine(torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.long), 25)
    assert (same == 1).all()


def test_score_rules():
    torch.manual_seed(2)
    h, g = torch.randn(2, 2, 3, 3), torch.randn(2, 7, 3, 3)
    log_pa = torch.log(torch.exp(h[:, 1]) / torch.exp(h).sum(1))
    j = -torch.log(torch.exp(g).sum(1))
    assert torch.allclose(L.anomaly_score(h, g, "paper", 0.5), log_pa + 0.5 * (h[:, 1] + j), atol=1e-5)
    assert torch.allclose(L.anomaly_score(h, g, "code", 0.5), 1 + j + 0.5 * h[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="score rule"):
        L.anomaly_score(h, g, "other")


# --------------------------------------------------------------------------------------- model
def _segmenter(norm="bn"):
    torch.manual_seed(0)
    return SoftmaxSegmenter(backbone="resnet18", weights=None, norm=norm, second_stream=None, fpn_channels=16,
                            head_channels=16, num_convs=1)


def _batch(n=2, h=64, w=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    anomaly = torch.zeros(n, h, w, dtype=torch.long)
    rows, cols = slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4)
    anomaly[:, rows, cols] = 1
    image = torch.randn(n, 3, h, w, generator=gen)
    image[:, :, rows, cols] += 2.0  # the pasted area looks different
    return {"image": image, "label": torch.zeros(n, h, w, dtype=torch.long), "anomaly": anomaly}


def test_ood_head_shape():
    head = OoDHead(512, 256, 3)
    assert head(torch.zeros(2, 512, 5, 7)).shape == (2, 2, 5, 7)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.modules()) == 3
    model = Sleeg(_segmenter(), 512, head_channels=8)
    out = model(_batch())
    assert out["ood_logits"].shape == (2, 2, 64, 64) and out["seg_logits"].shape == (2, 19, 64, 64)
    pred = model.predict(_batch())
    assert pred["semantic"].shape == (2, 64, 64) and pred["anomaly_score"].shape == (2, 64, 64)
    assert pred["anomaly_score"].dtype == torch.float32


def test_segmenter_frozen_weights_and_batchnorm_statistics():
    model = Sleeg(_segmenter("bn"), 512, head_channels=8, refine_warmup=1)
    before = copy.deepcopy(model.segmenter.state_dict())
    head_before = copy.deepcopy(model.head.state_dict())
    assert not any(p.requires_grad for p in model.segmenter.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    assert not model.segmenter.training and model.head.training
    for step in range(3):
        model.current_step = step
        batch = _batch(seed=step)
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.segmenter.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running_mean / var included
    assert any("running_mean" in k for k in before)
    assert any(not torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())


def test_overfit_fixed_batch():
    model = Sleeg(_segmenter("gn"), 512, head_channels=16, tore_weight=0.05, refine_warmup=10)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    batch = _batch(h=128, w=128, seed=4)  # a 4x4 last stage
    model.train()
    losses = []
    for step in range(60):
        model.current_step = step
        terms = model.loss(model(batch), batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < 0.2 * losses[0], losses[::5]
    score = model.predict(batch)["anomaly_score"]
    assert score[batch["anomaly"] == 1].mean() > score[batch["anomaly"] == 0].mean()


def test_refinement_switches_from_energy_to_learned_score(monkeypatch):
    model = Sleeg(_segmenter("gn"), 512, head_channels=8, refine_warmup=5)
    seen = []
    monkeypatch.setattr("baselines.models.sleeg.otsu_refine", lambda score, target, bins: seen.append(score) or target)
    batch = _batch()
    out = model(batch)
    for step in (4, 5):
        model.current_step = step
        model.loss(out, batch)
    assert torch.allclose(seen[0], L.jem(out["seg_logits"]))
    assert torch.allclose(seen[1], L.anomaly_score(out["ood_logits"], out["seg_logits"], "paper", 0.5))
    model.refine_score = "energy"
    model.loss(out, batch)
    assert torch.allclose(seen[2], L.jem(out["seg_logits"]))


def test_deeplab_segment_interface_and_backbone_weights(tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "r50.pt"
    reference = torchvision.models.resnet50()
    torch.save(reference.state_dict(), weights)
    seg = DeepLabSegmenter(weights=weights, norm="frozen_bn").eval()
    assert torch.equal(seg.backbone.conv1.weight, reference.conv1.weight)
    out = seg.segment({"image": torch.zeros(1, 3, 64, 64)})
    assert out["logits"].shape == (1, 19, 64, 64) and out["last_stage"].shape == (1, 2048, 8, 8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in seg.backbone.modules())
    loss = seg.loss(seg({"image": torch.zeros(1, 3, 64, 64)}), {"label": torch.full((1, 64, 64), 254)})
    assert float(loss["loss"].detach()) == 0.0  # unknown pixels never count


# --------------------------------------------------------------------------------------- configs
def _sleeg_config(name):
    cfg = copy.deepcopy(COMMON)
    cfg["model"] = {"name": "sleeg", **copy.deepcopy(MODEL_DEFAULTS)}
    cfg["data"].update(copy.deepcopy(DATA_DEFAULTS))
    chain, path = [], config_dir() / f"{name}.yaml"
    while True:
        doc = yaml.safe_load(path.read_text())
        chain.insert(0, (str(path), doc))
        if "base" not in doc:
            break
        path = config_dir() / f"{doc.pop('base')}.yaml"
    for source, doc in chain:
        cfg = merge(cfg, doc, source)
    return cfg


def test_configs_hold_only_known_keys_and_differ_as_documented():
    paper, code, tiny = (_sleeg_config(n) for n in ("sleeg-paper", "sleeg-code", "sleeg-tiny"))
    for cfg in (paper, code, tiny):
        validate_sleeg(cfg, "test")
    assert {k: paper["model"][k] for k in MODEL_DEFAULTS} == MODEL_DEFAULTS
    assert (code["data"]["patch_shape"], code["model"]["refine_score"], code["model"]["refine_bins"],
            code["model"]["score"], code["model"]["gamma"]) == ("random", "energy", 25, "code", 20.0)
    bad = copy.deepcopy(paper)
    bad["model"]["segmenter"] = "run:/nonexistent/run"
    with pytest.raises(ConfigError, match="config.yaml not found"):
        validate_sleeg(bad, "test")
    bad["model"]["segmenter"], bad["data"]["patch_area"] = "fpn", [0.06, 0.03]
    with pytest.raises(ConfigError, match="patch_"):
        validate_sleeg(bad, "test")


# --------------------------------------------------------------------------------------- data
def _train_set(data, seed=0):
    base = OpenSetDataset(data, split="train", transform=Compose([RandomCrop(32, 48)]), seed=seed)
    return SleegTrainDataset(base, PatchSettings(count=3))


def test_training_dataset_pastes_deterministically(open_set_data):
    ds = _train_set(open_set_data)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["anomaly"], b["anomaly"])
    assert a["meta"]["donor"] != 1 and a["anomaly"].dtype == torch.long
    assert set(a["anomaly"].unique().tolist()) <= {0, 1, 255} and (a["anomaly"] == 1).any()
    assert (a["label"][a["anomaly"] == 1] == 255).all()
    plain = ds.base[1]
    changed = (a["image"] != plain["image"]).any(0)
    assert not changed[a["anomaly"] != 1].any()  # only pasted pixels change
    depth_changed = (a["depth"] != plain["depth"])[0]
    assert depth_changed.any() and not depth_changed[a["anomaly"] != 1].any()  # the donor's depth too
    ds.seed = 5
    c = ds[1]
    assert ds.base.seed == 5 and not torch.equal(a["anomaly"], c["anomaly"])
    assert (a["anomaly"][plain["label"] == 254] != 0).all()  # training unknowns ignored (or pasted over)


def test_training_dataset_needs_two_frames(tmp_path):
    make_synthetic_episode(tmp_path, "Town01", "parking", 0, num_frames=1, height=40, width=56)
    base = OpenSetDataset(tmp_path)
    with pytest.raises(ValueError, match="another frame"):
        SleegTrainDataset(base, PatchSettings())


# --------------------------------------------------------------------------------------- evaluation
class _Oracle(nn.Module):
    """Scores unknown pixels high (plus noise): a known answer for the evaluation."""

    input_keys = ("image",)

    def predict(self, batch):
        label = batch["label"]
        gen = torch.Generator().manual_seed(int(label.sum()) % 1000)
        score = (label == 254).float() + 0.6 * torch.rand(label.shape, generator=gen)
        return {"semantic": label.clamp(max=18), "anomaly_score": score}


def test_evaluation_matches_the_accumulators_and_writes_files(open_set_data, tmp_path):
    ds = OpenSetDataset(open_set_data, split="test")
    result = sleeg_evaluate(_Oracle(), ds, "cpu", None, progress=False, save_dir=tmp_path)
    direct = AnomalyPixelMetrics()
    for i in range(len(ds)):
        s = ds[i]
        direct.update(_Oracle().predict({"label": s["label"][None]})["anomaly_score"][0], anomaly_labels(s["label"]))
    expect = direct.compute()
    assert result["overall"]["ap"] == pytest.approx(expect["ap"]) and result["overall"]["fpr95"] == pytest.approx(expect["fpr_at_tpr"])
    assert result["images"] == len(ds) and set(result["headline"]) == {"ap", "auroc", "fpr95"}
    assert set(result["scenarios"]) == {e["scenario"] for e in ds.episodes}
    assert len(list(tmp_path.glob("*_anomalyScore.npy"))) == len(ds) == len(list(tmp_path.glob("*_labelTrainIds.png")))
    assert "AUROC" in sleeg_table(result, "t")


# --------------------------------------------------------------------------------------- engine
@pytest.fixture
def sleeg_registered(monkeypatch):
    """The sleeg family in the registry, as baselines/registry.py will hold it."""
    from baselines import registry
    from baselines.models import sleeg as sleeg_module

    monkeypatch.setitem(registry.MODELS, "sleeg", sleeg_module.SPECS["sleeg"])


def test_resume_exact_with_pasted_anomalies(sleeg_registered, open_set_data, tmp_path):
    from baselines.config import build_config
    from baselines.engine import train
    from baselines.runs import latest_checkpoint, load_checkpoint

    cfg = build_config("sleeg-tiny", ["data.crop=[32,48]", "data.batch_size=2", "data.workers=1", "train.iters=4",
                                      "train.log_every=1", "model.refine_warmup=2", "model.head_channels=8",
                                      "data.patch_count=3", "model.segmenter=fpn"], model="sleeg")
    full = train(cfg, tmp_path / "full", open_set_data, progress=False)
    first = train(cfg, tmp_path / "split", open_set_data, stop_at=2, progress=False)
    rest = train(cfg, tmp_path / "split", open_set_data, resume=True, progress=False)
    assert first.losses + rest.losses == pytest.approx(full.losses, abs=1e-6)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "split"))["model"]
    assert all(torch.allclose(v, b[k], atol=1e-6) for k, v in a.items())


def test_segmenter_run_of_another_model_or_other_classes_is_refused(open_set_data, micro_config, tmp_path):
    from baselines.engine import train
    from baselines.models.sleeg import segmenter_from_run

    train(micro_config("prototype", "train.iters=1", "model.second_stream=null"), tmp_path / "proto", open_set_data,
          progress=False)
    with pytest.raises(ConfigError, match=r"proto/config.yaml: a run of model 'prototype'"):
        segmenter_from_run(tmp_path / "proto", 19)
    train(micro_config("segmenter", "train.iters=1", "model.second_stream=null", "model.unknown_class=true"),
          tmp_path / "open", open_set_data, progress=False)
    with pytest.raises(ConfigError, match=r"open/config.yaml: the segmenter predicts 19 classes plus an unknown class"):
        segmenter_from_run(tmp_path / "open", 19)
    train(micro_config("segmenter", "train.iters=1", "model.second_stream=null"), tmp_path / "closed", open_set_data,
          progress=False)
    seg = segmenter_from_run(tmp_path / "closed", 19)
    assert hasattr(seg, "segment")
    with pytest.raises(ConfigError, match="closed-set segmenter over 20 classes"):
        segmenter_from_run(tmp_path / "closed", 20)
