import numpy as np
import pytest
import torch
from scipy.cluster import hierarchy

from analysis.dendrogram import cluster, distance_matrix, plot_dendrogram
from analysis.prototypes import PrototypeAccumulator, Prototypes, masked_average_pool


def test_masked_average_pool_equals_per_pixel_computation():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 6, 8, generator=g)
    stride = 4
    masks = torch.rand(2, 3, 6 * stride, 8 * stride, generator=g) > 0.7
    masks[1, 2] = False  # an absent class
    pooled, mass = masked_average_pool(feats, masks)
    # direct: every pixel takes the feature of the cell it falls in; average over mask pixels
    per_pixel = feats.repeat_interleave(stride, dim=2).repeat_interleave(stride, dim=3)
    for b in range(2):
        for k in range(3):
            m = masks[b, k]
            if m.any():
                direct = per_pixel[b][:, m].mean(dim=1)
                torch.testing.assert_close(pooled[b, k], direct, rtol=1e-5, atol=1e-6)
                assert mass[b, k] == pytest.approx(m.sum().item() / stride**2)
            else:
                assert torch.all(pooled[b, k] == 0) and mass[b, k] == 0


def test_thin_mask_keeps_weight_under_area_downsampling():
    feats = torch.arange(4.0).reshape(1, 1, 2, 2)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 5, 6] = True  # one pixel in the bottom-right cell
    pooled, mass = masked_average_pool(feats, mask)
    assert pooled.item() == 3.0 and mass.item() == pytest.approx(1 / 16)


def test_identical_objects_give_identical_prototypes():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 4, 4, 4, generator=g)
    feats = torch.cat([feats, feats], dim=3)  # left half == right half
    mask = torch.zeros(1, 2, 4, 8, dtype=torch.bool)
    mask[0, 0, 1:3, 0:3] = True
    mask[0, 1, 1:3, 4:7] = True
    pooled, _ = masked_average_pool(feats, mask)
    torch.testing.assert_close(pooled[0, 0], pooled[0, 1])


def test_accumulator_caps_images_and_means():
    acc = PrototypeAccumulator(2, 3, max_images=2)
    for v in ([1, 1, 1], [3, 3, 3], [100, 100, 100]):
        acc.add(0, np.array(v, float))
    assert acc.counts.tolist() == [2, 0] and not acc.full()
    assert acc.means()[0].tolist() == [2, 2, 2]


def _protos(vectors, names=None):
    k = len(vectors)
    names = names or [f"c{i}" for i in range(k)]
    return Prototypes(names, np.asarray(vectors, np.float32), np.ones(k, int), ["train", "test"] * (k // 2) + ["train"] * (k % 2),
                      ["parking"] * k, {"weights": "test"})


def test_prototypes_save_load_round_trip(tmp_path):
    p = _protos([[0, 1], [2, 3], [4, 5]])
    p.save(tmp_path / "p.npz")
    q = Prototypes.load(tmp_path / "p.npz")
    assert q.names == p.names and q.splits == p.splits and q.provenance == p.provenance
    np.testing.assert_array_equal(q.vectors, p.vectors)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.npz"):
        Prototypes.load(tmp_path / "bad.npz")


def test_merge_order_follows_known_distances():
    # points on a line: a-b close (1), c-d closer (0.5), the two pairs far apart
    vectors = np.array([[0.0], [1.0], [10.0], [10.5]])
    d = distance_matrix(vectors)
    assert d[0, 1] == 1.0 and d[2, 3] == 0.5
    links = cluster(d, "single")
    first, second, third = links[:, :2].astype(int).tolist()
    assert sorted(first) == [2, 3] and links[0, 2] == 0.5
    assert sorted(second) == [0, 1] and links[1, 2] == 1.0
    assert links[2, 2] == pytest.approx(9.0)
    np.testing.assert_allclose(hierarchy.cophenet(links), [1, 9, 9, 9, 9, 0.5])


def test_cosine_distance_ignores_scale():
    d = distance_matrix(np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 1.0]]), "cosine")
    assert d[0, 1] == pytest.approx(0) and d[0, 2] == pytest.approx(1)
    with pytest.raises(ValueError, match="metric"):
        distance_matrix(np.eye(2), "manhattan")


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_dendrogram_figure_written(tmp_path, suffix):
    out, csv_path, links = plot_dendrogram(_protos(np.random.default_rng(0).normal(size=(5, 8))), tmp_path / f"d{suffix}")
    assert out.stat().st_size > 1000 and links.shape == (4, 4)
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("class,c0")
    if suffix == ".png":
        import matplotlib.image as mpimg
        img = mpimg.imread(out)
        assert img.shape[0] > 100 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05  # not blank
