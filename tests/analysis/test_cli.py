import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from analysis.cli import main
from analysis.prototypes import Prototypes
from vca_data.episodes import EpisodeReader, list_episodes
from vca_data.labels import default_catalogue
from vca_data.synthetic_episodes import make_synthetic_episode


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for town, scenario, seed in [("Town01", "parking", 0), ("Town02", "parking", 1), ("Town03", "barrier", 2),
                                 ("Town07", "construction", 3)]:
        make_synthetic_episode(root, town=town, scenario=scenario, seed=seed, num_frames=4, height=64, width=96)
    return root


def test_stats_counts_every_pixel(data, tmp_path, capsys):
    assert main(["stats", str(data), "--out", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())["episodes"]
    total = sum(stats["known_pixels"].values()) + stats["void_pixels"] + sum(stats["unknown_pixels"].values())
    assert total == 4 * 4 * 64 * 96
    # independent count of unknown pixels by class straight from the files
    names = default_catalogue().fine_names()
    expected: dict[str, int] = {}
    for path in list_episodes(data):
        with EpisodeReader(path) as r:
            for i in range(len(r)):
                ids, n = np.unique(r[i]["fine"], return_counts=True)
                for k, c in zip(ids, n):
                    if k:
                        expected[names[int(k)]] = expected.get(names[int(k)], 0) + int(c)
    assert {k: v for k, v in stats["unknown_pixels"].items() if v} == expected
    assert sum(r["frames"] for r in stats["frames"]) == 16
    for fig in ("pixels_per_class.png", "frames_per_town.png"):
        img = mpimg.imread(tmp_path / fig)
        assert img.shape[0] > 200 and img[..., :3].std() > 0.05
    assert "unknown class" in capsys.readouterr().out


def test_prototypes_and_dendrogram_from_dataset(data, tmp_path, capsys):
    out = tmp_path / "protos.npz"
    assert main(["prototypes", str(data), "--out", str(out), "--weights", "none", "--arch", "resnet18", "--layer", "layer2",
                 "--max-images", "3", "--min-pixels", "4", "--device", "cpu"]) == 0
    protos = Prototypes.load(out)
    assert len(protos.names) >= 2 and (protos.counts <= 3).all() and (protos.counts >= 1).all()
    assert protos.vectors.shape == (len(protos.names), 128)
    assert set(protos.splits) == {"train", "test"}
    fig = tmp_path / "dendro.png"
    assert main(["dendrogram", str(out), "--out", str(fig), "--metric", "cosine"]) == 0
    assert mpimg.imread(fig)[..., :3].std() > 0.05
    assert (tmp_path / "dendro.csv").read_text().count("\n") == len(protos.names) + 1


def test_missing_imagenet_weights_is_one_clear_line(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["prototypes", str(data), "--out", str(tmp_path / "p.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not available offline" in err and "put it at" in err
    assert not (tmp_path / "p.npz").exists()


def test_bad_inputs_give_errors(tmp_path, capsys):
    assert main(["stats", str(tmp_path)]) == 2
    assert "manifest" in capsys.readouterr().err
    assert main(["dendrogram", str(tmp_path), "--out", str(tmp_path / "x.png"), "--weights", "none"]) == 2


def test_stats_reports_how_far_moving_and_static_instances_visibly_move(tmp_path, capsys):
    """Beside motion labels with suppressed-flow PNGs, stats reads each instance's residual motion: here
    moving tracks carry a 2 px residual and static ones none, at a 4 px colour scale."""
    import cv2

    from annotator.proposals.sequences import write_flow_scale
    from vca_data import flow as vf
    from vca_data.formats.folders import open_sequence
    from vca_data.synthetic import make_kitti_mots_sequence

    root = make_kitti_mots_sequence(tmp_path / "mots", "0000", num_frames=3, height=48, width=64, num_objects=4,
                                    seed=3, ignore_region=False)
    truth = json.loads((root / "motion_truth.json").read_text())["sequences"]["0000"]
    seq = open_sequence(root, "0000")
    folder = root / "vca_flow" / "flow_suppressed" / "0000"
    folder.mkdir(parents=True)
    expected = {"moving": 0, "static": 0}
    for i in range(seq.num_frames):
        ids = seq.id_map(i)
        flow = np.zeros(ids.shape + (2,), np.float32)
        for track in np.unique(ids[ids > 0]):
            label = truth[str(track)]["label"]
            expected[label] += 1
            flow[ids == track] = (2.0, 0.0) if label == "moving" else (0.0, 0.0)
        cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(vf.flow_to_color(flow, 4.0), cv2.COLOR_RGB2BGR))
    write_flow_scale(folder, 4.0)
    assert main(["stats", "--labels", str(root / "motion_truth.json"), "--out", str(tmp_path / "s")]) == 0
    residual = json.loads((tmp_path / "s" / "stats.json").read_text())["motion"]["kitti-mots"]["residual"]
    assert expected["moving"] > 0 and expected["static"] > 0
    assert residual["moving"]["instances"] == expected["moving"] and residual["static"]["instances"] == expected["static"]
    assert residual["moving"]["median_px"] == pytest.approx(2.0, abs=0.02) and residual["moving"]["above_1px"] == 1.0
    assert residual["static"]["median_px"] == pytest.approx(0.0, abs=0.02) and residual["static"]["above_1px"] == 0.0
    assert "ego-flow-suppressed motion" in capsys.readouterr().out
