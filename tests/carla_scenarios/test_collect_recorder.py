"""The background-thread recorder: frames arrive intact and in order; failures and aborts never leave a
file that the episode reader takes for complete."""

import time

import numpy as np
import pytest

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


def test_bad_attributes_fail_clearly(tmp_path):
    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    with pytest.raises(RecorderError, match="split"), EpisodeRecorder(path, {**ATTRS, "split": "val"}, H, W) as r:
        r.close()
    assert list((tmp_path / "episodes").glob("*")) == []


def test_writer_gives_up_when_its_owner_dies(tmp_path):
    """The writer process leaves only an incomplete .part when the collector is killed."""
    import subprocess
    import sys

    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    code = (
        "import sys, os, signal, numpy as np\n"
        "from carla_scenarios.recorder import EpisodeRecorder\n"
        f"r = EpisodeRecorder({str(path)!r}, {ATTRS!r}, {H}, {W})\n"
        "f = dict(rgb=np.zeros(({H}, {W}, 3), np.uint8), depth=np.zeros(({H}, {W}), np.float32), "
        "semantic=np.zeros(({H}, {W}), np.uint8), instance=np.zeros(({H}, {W}), np.uint32), "
        "fine=np.zeros(({H}, {W}), np.uint8), ego_pose=np.eye(4), timestamp=0.0, frame=0)\n"
        "r.put(f)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ).replace("{H}", str(H)).replace("{W}", str(W))
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == -9
    deadline = time.time() + 10
    while time.time() < deadline and path.with_name(path.name + ".part").exists():
        time.sleep(0.1)
    assert not path.exists()
    assert not (tmp_path / "manifest.json").exists()


def test_encoded_images_are_decoded_by_the_writer(tmp_path):
    from types import SimpleNamespace

    from carla_scenarios.decode import EncodedImage, depth_to_bgra

    metres = np.random.default_rng(1).uniform(1, 200, (H, W)).astype(np.float32)
    img = SimpleNamespace(width=W, height=H, frame=5, raw_data=depth_to_bgra(metres).tobytes())
    f = frame(0)
    f["depth"] = EncodedImage.of("depth", img)
    path = tmp_path / "episodes" / "Town01_parking_3.h5"
    with EpisodeRecorder(path, ATTRS, H, W) as r:
        r.put(f)
        r.close()
    with EpisodeReader(path) as ep:
        np.testing.assert_allclose(ep[0]["depth"], metres, atol=1e-4)
