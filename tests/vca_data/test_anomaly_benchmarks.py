"""The anomaly benchmark readers on tiny fixtures in each published layout, and their errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from vca_data.formats.anomaly_benchmarks import BenchmarkError, discover, iter_benchmark


def _image(path: Path, seed: int = 0, size=(6, 8)) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def _label(path: Path, values, size=(6, 8), palette=False) -> np.ndarray:
    label = np.zeros(size, np.uint8)
    label[1:3, 2:5] = values[1]
    label[-1, :] = values[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:  # indices with a colour table, as some releases store them
        im = Image.frombytes("P", (size[1], size[0]), label.tobytes())
        im.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    else:
        im = Image.fromarray(label)
    im.save(path)
    return label


def _expected(size=(6, 8), void=True):
    out = np.zeros(size, np.uint8)
    out[1:3, 2:5] = 1
    out[-1, :] = 255 if void else 1
    return out


def test_fishyscapes_layout(tmp_path):
    for subset in ("LostAndFound", "Static"):
        for k in range(2):
            _image(tmp_path / subset / "original" / f"{k:04d}.png", k)
            _label(tmp_path / subset / "labels" / f"{k:04d}.png", (0, 1, 255), palette=k == 1)
    bench = discover(tmp_path, "fishyscapes")
    assert [f.name for f in bench.frames] == ["LostAndFound/0000", "LostAndFound/0001", "Static/0000", "Static/0001"]
    for name, rgb, label in iter_benchmark(tmp_path, "fishyscapes"):
        assert rgb.shape == (6, 8, 3) and np.array_equal(label, _expected()), name
    rgb = next(iter(bench))[1]
    assert np.array_equal(rgb, _image(tmp_path / "check.png", 0))  # RGB order, not BGR
    assert len(discover(tmp_path / "Static", "fishyscapes")) == 2  # one subset folder as root


def test_road_anomaly_layouts(tmp_path):
    released = tmp_path / "RoadAnomaly"
    _image(released / "frames" / "animals01.jpg")
    _label(released / "frames" / "animals01.labels" / "labels_semantic.png", (0, 2, 2))
    (name, rgb, label), = iter_benchmark(released, "road-anomaly")
    assert name == "animals01" and rgb.shape == (6, 8, 3) and np.array_equal(label, _expected(void=False))
    redistributed = tmp_path / "road_anomaly"
    _image(redistributed / "original" / "a.jpg")
    _label(redistributed / "labels" / "a.png", (0, 1, 1))
    assert np.array_equal(next(iter_benchmark(redistributed, "road-anomaly"))[2], _expected(void=False))


@pytest.mark.parametrize("track, suffix", [("dataset_AnomalyTrack", ".jpg"), ("dataset_ObstacleTrack", ".webp")])
def test_smiyc_layout_skips_unlabelled_test_frames(tmp_path, track, suffix):
    root = tmp_path / track
    _image(root / "images" / f"validation0000{suffix}")
    _label(root / "labels_masks" / "validation0000_labels_semantic.png", (0, 1, 255))
    _image(root / "images" / f"test0000{suffix}")
    bench = discover(root, "smiyc")
    assert [f.name for f in bench.frames] == ["validation0000"] and bench.frames[0].subset == track[8:]
    assert [p.name for p in bench.unlabelled] == [f"test0000{suffix}"]
    assert np.array_equal(next(iter(bench))[2], _expected())


def test_errors_name_the_file(tmp_path):
    root = tmp_path / "dataset_AnomalyTrack"
    _image(root / "images" / "a.jpg")
    (root / "labels_masks").mkdir()
    with pytest.raises(BenchmarkError, match=r"images: 1 images and no label files"):
        discover(root, "smiyc")
    _label(root / "labels_masks" / "a_labels_semantic.png", (0, 1, 7))
    with pytest.raises(BenchmarkError, match=r"a_labels_semantic.png: label values \[7\] outside"):
        list(iter_benchmark(root, "smiyc"))
    _label(root / "labels_masks" / "a_labels_semantic.png", (0, 1, 255), size=(5, 8))
    with pytest.raises(BenchmarkError, match=r"a_labels_semantic.png: label is 8x5, its image a.jpg is 8x6"):
        list(iter_benchmark(root, "smiyc"))
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "labels_masks" / "a_labels_semantic.png")
    with pytest.raises(BenchmarkError, match="mode RGB"):
        list(iter_benchmark(root, "smiyc"))
    with pytest.raises(BenchmarkError, match="not a Fishyscapes folder"):
        discover(root, "fishyscapes")
    with pytest.raises(BenchmarkError, match="format must be one of"):
        discover(root, "cityscapes")
    road = tmp_path / "ra"
    _image(road / "frames" / "x.jpg")
    _label(road / "frames" / "x.labels" / "labels_semantic.png", (0, 1, 1))  # 1 is not a released value
    with pytest.raises(BenchmarkError, match=r"values \[1\] outside the documented \[0, 2\]"):
        list(iter_benchmark(road, "road-anomaly"))
