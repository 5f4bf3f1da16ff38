"""The background-thread recorder: frames arrive intact and in order; failures and aborts never leave a
file that the episode reader takes for complete."""

import threading
import time

import numpy as np
import pytest

from carla_scenarios import recorder as rec_mod
from carla_scenarios.recorder import EpisodeRecorder, RecorderError
from vca_data.episodes import EpisodeReader, read_manifest, validate

H, W = 12, 16
ATTRS = {"town": "Town01", "scenario": "parking", "split": "train", "seed": 3, "backend": "offline",
         "unknown_objects": [{"actor_id": 5, "fine_id": 8}]}


def frame(i):
    rng = np.random.default_rng(i)
    return {
        "rgb": rng.integers(0, 255, (H, W, 3), dtype=np.uint8), "depth": rng.random((H, W), dtype=np.float32),
        "semantic": np.full((H, W), i % 29, np.uint8), "instance": np.full((H, W), 1000 + i, np.uint32),
        "fine": np.zeros((H, W), np.uint8), "ego_pose": np.eye(4) * (i + 1), "timestamp": 0.1 * i, "frame": 100 + i,
    }


def test_frames_round_trip_in_order_and_manifest(tmp_path):
    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    with EpisodeRecorder(path, ATTRS, H, W, max_queue=2) as r:
        for i in range(7):
            r.put(frame(i))
        assert r.close() == path
    assert validate(path) == []
    with EpisodeReader(path) as ep:
        assert len(ep) == 7
        for i in range(7):
            f = ep[i]
            np.testing.assert_array_equal(f["rgb"], frame(i)["rgb"])
            assert f["frame"] == 100 + i and f["instance"][0, 0] == 1000 + i
    assert [e["file"] for e in read_manifest(tmp_path)] == ["episodes/Town01_parking_3.h5"]


def test_exception_inside_leaves_no_complete_file(tmp_path):
    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    with pytest.raises(KeyboardInterrupt), EpisodeRecorder(path, ATTRS, H, W) as r:
        r.put(frame(0))
        raise KeyboardInterrupt
    assert not path.exists() and not path.with_name(path.name + ".part").exists()
    assert not (tmp_path / "manifest.json").exists()


def test_writer_error_surfaces_in_caller(tmp_path):
    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    bad = frame(1)
    bad["rgb"] = np.zeros((H + 1, W, 3), np.uint8)
    with pytest.raises(RecorderError, match="Town01_parking_3.h5.*shape"), EpisodeRecorder(path, ATTRS, H, W) as r:
        r.put(frame(0))
        r.put(bad)
        time.sleep(0.2)
        r.put(frame(2))
        r.close()
    assert not path.exists() and not path.with_name(path.name + ".part").exists()


def test_put_overlaps_with_a_slow_writer(tmp_path, monkeypatch):
    """The producer keeps running while the writer works: with a bounded queue of 4, putting 4 frames to a
    writer that takes 50 ms each returns well before 4 x 50 ms."""
    real = rec_mod.EpisodeWriter

    class Slow(real):
        def append(self, f):
            time.sleep(0.05)
            super().append(f)

    monkeypatch.setattr(rec_mod, "EpisodeWriter", Slow)
    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    r = EpisodeRecorder(path, ATTRS, H, W, max_queue=4)
    t0 = time.perf_counter()
    for i in range(4):
        r.put(frame(i))
    assert time.perf_counter() - t0 < 0.1
    assert threading.active_count() >= 2
    r.close()
    with EpisodeReader(path) as ep:
        assert len(ep) == 4
