"""Episode files: exact round trips, crash safety of the writer, validation of bad files, the manifest."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vca_data.episodes import (
    DEFAULT_COMPRESSION,
    FIELDS,
    EpisodeError,
    EpisodeReader,
    EpisodeWriter,
    episode_filename,
    list_episodes,
    read_manifest,
    rebuild_manifest,
    update_manifest,
    validate,
)
from vca_data.labels import TAG, default_catalogue
from vca_data.synthetic_episodes import make_synthetic_episode

H, W = 12, 16

ATTRS = {
    "town": "Town03", "scenario": "construction", "split": "train", "seed": 5,
    "weather": {"preset": "WetNoon", "precipitation": 30.0, "nested": {"a": [1, 2]}},
    "backend": "offline", "fov": 90.0, "intrinsics": [[8.0, 0.0, 8.0], [0.0, 8.0, 6.0], [0.0, 0.0, 1.0]],
    "extrinsics": np.eye(4).tolist(), "dt": 0.05, "frame_step": 2, "note": "[not json, a plain string",
    "flag": True, "missing": None,
    "unknown_objects": [{"actor_id": 301, "fine_id": 3, "class": "construction cone",
                         "blueprint": "static.prop.constructioncone", "transform": [1.0, 2.0, 0.0, 0.0, 90.0, 0.0]}],
}


def random_frame(rng, i):
    return {
        "rgb": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 1000.0, (H, W)).astype(np.float32),
        "semantic": rng.integers(0, 29, (H, W), dtype=np.uint8),
        "instance": rng.integers(0, 2**32, (H, W), dtype=np.uint32),
        "fine": rng.integers(0, 9, (H, W), dtype=np.uint8),
        "ego_pose": rng.normal(size=(4, 4)),
        "timestamp": 0.05 * i + 1e-9,
        "frame": 4000 + 2 * i,
    }


def write_episode(data_dir: Path, seed=5, n=4, attrs=None):
    attrs = dict(attrs or ATTRS, seed=seed)
    rng = np.random.default_rng(seed)
    frames = [random_frame(rng, i) for i in range(n)]
    path = data_dir / "episodes" / episode_filename(attrs["town"], attrs["scenario"], seed)
    with EpisodeWriter(path, attrs, H, W) as writer:
        for frame in frames:
            writer.append(frame)
    return path, frames


def test_episode_filename():
    assert episode_filename("Town1", "parking", 7) == "Town01_parking_7.h5"
    assert episode_filename("town10", "barrier", 0) == "Town10HD_barrier_0.h5"
    with pytest.raises(ValueError, match="scenario"):
        episode_filename("Town01", "a_b", 1)


def test_round_trip_is_exact_for_every_field_and_attribute(tmp_path):
    path, frames = write_episode(tmp_path)
    assert path.is_file() and not path.with_name(path.name + ".part").exists()
    with EpisodeReader(path) as reader:
        assert len(reader) == 4
        for key, value in ATTRS.items():
            if key != "seed":
                assert reader.attrs[key] == value, key
        assert reader.attrs["seed"] == 5 and reader.attrs["format_version"] == 1
        assert (reader.attrs["width"], reader.attrs["height"]) == (W, H)
        for i in [2, 0, 3, 1]:  # random access order
            got = reader[i]
            assert set(got) == set(FIELDS)
            for key in FIELDS:
                np.testing.assert_array_equal(got[key], frames[i][key], err_msg=key)
                if isinstance(got[key], np.ndarray):
                    assert got[key].dtype == np.asarray(frames[i][key]).dtype, key
        assert isinstance(reader[1]["timestamp"], float) and reader[1]["frame"] == 4002
        np.testing.assert_array_equal(reader[-1]["rgb"], frames[3]["rgb"])
        subset = reader.read(2, ["semantic", "ego_pose"])
        assert set(subset) == {"semantic", "ego_pose"}
        np.testing.assert_array_equal(reader.column("frame"), [4000, 4002, 4004, 4006])
        with pytest.raises(IndexError, match="frame 4 out of range"):
            reader[4]
        with pytest.raises(KeyError, match="no field"):
            reader.read(0, ["flow"])
    assert validate(path) == []
    assert validate(path, deep=True) == []


def test_layout_is_chunked_per_frame_compressed_and_resizable(tmp_path):
    path, _ = write_episode(tmp_path)
    with h5py.File(path, "r") as h5:
        for name in ("rgb", "depth", "semantic", "instance", "fine"):
            assert h5[name].chunks[0] == 1 and h5[name].chunks[1:] == h5[name].shape[1:]
            assert h5[name].compression == DEFAULT_COMPRESSION[name].get("compression") and h5[name].maxshape[0] is None
        assert h5["semantic"].compression == "gzip"
        assert h5["semantic"].id.get_storage_size() < h5["semantic"].size  # label maps do shrink
        assert json.loads(h5.attrs["weather"])["nested"] == {"a": [1, 2]}


def test_writer_rejects_bad_frames_naming_frame_and_field(tmp_path):
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(tmp_path / "episodes" / "Town03_construction_1.h5", ATTRS, H, W)
    writer.append(random_frame(rng, 0))
    bad = random_frame(rng, 1)
    bad["depth"] = bad["depth"][:, :5]
    with pytest.raises(ValueError, match=r"frame 1: field 'depth': expected shape \(12, 16\)"):
        writer.append(bad)
    bad = random_frame(rng, 1)
    bad["semantic"] = np.full((H, W), 300, dtype=np.int32)
    with pytest.raises(ValueError, match="do not fit uint8"):
        writer.append(bad)
    bad = random_frame(rng, 1)
    del bad["fine"]
    with pytest.raises(ValueError, match="field 'fine' missing"):
        writer.append(bad)
    assert writer.num_frames == 1  # rejected frames wrote nothing
    writer.abort()
    assert not any((tmp_path / "episodes").iterdir())
    with pytest.raises(ValueError, match="split"):
        EpisodeWriter(tmp_path / "x.h5", dict(ATTRS, split="val"), H, W)
    with pytest.raises(ValueError, match="set by the writer"):
        EpisodeWriter(tmp_path / "x.h5", dict(ATTRS, num_frames=3), H, W)
    with pytest.raises(ValueError, match="width=20 differs"):
        EpisodeWriter(tmp_path / "x.h5", dict(ATTRS, width=20), H, W)
    assert not (tmp_path / "x.h5.part").exists()


def test_exception_in_with_block_leaves_only_an_ignored_part(tmp_path):
    write_episode(tmp_path, seed=1)
    rng = np.random.default_rng(2)
    target = tmp_path / "episodes" / "Town03_construction_2.h5"
    with pytest.raises(RuntimeError, match="sensor lost"):
        with EpisodeWriter(target, dict(ATTRS, seed=2), H, W) as writer:
            writer.append(random_frame(rng, 0))
            raise RuntimeError("sensor lost")
    part = target.with_name(target.name + ".part")
    assert part.is_file() and not target.exists()
    assert [p.name for p in list_episodes(tmp_path)] == ["Town03_construction_1.h5"]
    assert [e["seed"] for e in read_manifest(tmp_path)] == [1]
    problems = validate(part)
    assert problems and all(str(part) in p for p in problems)
    assert any("unfinished" in p for p in problems)
    with pytest.raises(EpisodeError, match="incomplete"):
        EpisodeReader(part)
    with EpisodeReader(part, allow_incomplete=True) as reader:  # frames written before the crash survive
        assert len(reader) == 1


KILLED_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    from vca_data.episodes import EpisodeWriter
    attrs = {"town": "Town01", "scenario": "parking", "split": "train", "seed": 9}
    rng = np.random.default_rng(0)
    with EpisodeWriter(Path(sys.argv[1]), attrs, 120, 160) as writer:
        for i in range(100000):
            writer.append({"rgb": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
                           "depth": rng.uniform(1, 50, (120, 160)).astype(np.float32),
                           "semantic": np.full((120, 160), 1, np.uint8), "instance": np.zeros((120, 160), np.uint32),
                           "fine": np.zeros((120, 160), np.uint8), "ego_pose": np.eye(4), "timestamp": i * 0.05,
                           "frame": i})
            if i == 3:
                print("writing", flush=True)
""")


def test_killed_writer_process_leaves_an_invalid_part(tmp_path):
    target = tmp_path / "episodes" / "Town01_parking_9.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    part = target.with_name(target.name + ".part")
    assert part.is_file() and not target.exists()
    assert list_episodes(tmp_path) == [] and read_manifest(tmp_path) == []
    problems = validate(part)
    assert problems and all(str(part) in p for p in problems)
    with pytest.raises(EpisodeError):
        EpisodeReader(part)


def test_validate_reports_bad_files_without_raising(tmp_path):
    path, _ = write_episode(tmp_path)

    truncated = tmp_path / "truncated.h5"
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    problems = validate(truncated)
    assert len(problems) >= 1 and str(truncated) in problems[0] and "truncated" in problems[0]
    with pytest.raises(EpisodeError, match="truncated"):
        EpisodeReader(truncated)

    text = tmp_path / "notes.h5"
    text.write_text("hello")
    assert validate(text) == [f"{text}: not an HDF5 file (foreign or empty file)"]

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5.create_dataset("images", data=np.zeros((2, 4, 4)))
    [problem] = validate(foreign)
    assert str(foreign) in problem and "foreign" in problem

    newer = tmp_path / "newer.h5"
    shutil.copy(path, newer)
    with h5py.File(newer, "a") as h5:
        h5.attrs["format_version"] = 2
    assert "version 2" in validate(newer)[0]

    missing = tmp_path / "missing.h5"
    shutil.copy(path, missing)
    with h5py.File(missing, "a") as h5:
        del h5["fine"]
    assert validate(missing) == [f"{missing}: missing field 'fine'"]

    short = tmp_path / "short.h5"
    shutil.copy(path, short)
    with h5py.File(short, "a") as h5:
        h5["depth"].resize(3, axis=0)
    assert validate(short) == [f"{short}: field 'depth' has 3 frames, attribute num_frames says 4"]

    assert validate(tmp_path / "absent.h5") == [f"{tmp_path / 'absent.h5'}: no such file"]


def test_validate_deep_finds_a_damaged_chunk(tmp_path):
    path, _ = write_episode(tmp_path, n=6)
    with h5py.File(path, "r") as h5:
        offset = h5["depth"].id.get_chunk_info(2).byte_offset
    with open(path, "r+b") as f:
        f.seek(offset + 5)
        f.write(b"\xff" * 64)
    assert validate(path) == []  # the shallow check decodes only the first and last frames
    problems = validate(path, deep=True)
    assert any("frame 2: field 'depth'" in p for p in problems)


def test_manifest_lists_updates_and_filters(tmp_path):
    a, _ = write_episode(tmp_path, seed=1)
    b, _ = write_episode(tmp_path, seed=2, attrs=dict(ATTRS, town="Town02", split="test", scenario="barrier",
                                                     unknown_objects=[]))
    entries = read_manifest(tmp_path)
    assert [e["file"] for e in entries] == ["episodes/Town02_barrier_2.h5", "episodes/Town03_construction_1.h5"]
    assert entries[1] == {"file": "episodes/Town03_construction_1.h5", "town": "Town03", "scenario": "construction",
                          "split": "train", "seed": 1, "frames": 4, "backend": "offline", "width": W, "height": H}
    update_manifest(tmp_path, a)  # refreshing keeps one entry per file
    assert len(read_manifest(tmp_path)) == 2
    assert list_episodes(tmp_path, split="test") == [b]
    assert list_episodes(tmp_path, scenario="construction") == [a]
    assert list_episodes(tmp_path, split="train", scenario="barrier") == []
    b.unlink()  # a deleted episode drops out of the listing
    assert list_episodes(tmp_path) == [a]
    (tmp_path / "manifest.json").unlink()  # without a manifest the episodes folder is scanned
    assert list_episodes(tmp_path) == [a]
    assert rebuild_manifest(tmp_path) == []
    assert json.loads((tmp_path / "manifest.json").read_text())["episodes"][0]["file"] == "episodes/Town03_construction_1.h5"
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(EpisodeError, match="manifest.json: line 1"):
        read_manifest(tmp_path)


def _write_in_process(args):
    data_dir, seed = args
    write_episode(Path(data_dir), seed=seed, n=1)


def test_manifest_survives_several_writer_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        pool.map(_write_in_process, [(str(tmp_path), s) for s in range(6)])
    assert sorted(e["seed"] for e in read_manifest(tmp_path)) == list(range(6))


def test_synthetic_episode_is_valid_and_labels_its_unknowns(tmp_path):
    path = make_synthetic_episode(tmp_path, town="Town2", scenario="parking", seed=3, num_frames=5)
    assert path.name == "Town02_parking_3.h5" and validate(path) == []
    assert list_episodes(tmp_path, split="test") == [path]
    catalogue = default_catalogue()
    test_ids = {c.fine_id for c in catalogue.unknown_classes("test", "parking")}
    with EpisodeReader(path) as reader:
        objects = reader.attrs["unknown_objects"]
        assert 1 <= len(objects) <= 2 and {o["fine_id"] for o in objects} <= test_ids
        poses = reader.column("ego_pose")
        assert np.all(np.diff(poses[:, 0, 3]) > 0)  # the ego drives forward along world x
        for i in range(len(reader)):
            frame = reader[i]
            for obj in objects:
                mask = frame["instance"] == obj["actor_id"]
                assert mask.sum() > 0
                assert np.all(frame["fine"][mask] == obj["fine_id"])
                assert np.all(frame["semantic"][mask] == TAG["Static"])
            assert np.all((frame["fine"] > 0) == np.isin(frame["instance"], [o["actor_id"] for o in objects]))
            assert {TAG["Roads"], TAG["Sky"], TAG["Building"], TAG["SideWalks"], TAG["Car"]} <= set(np.unique(frame["semantic"]))
            sky = frame["semantic"] == TAG["Sky"]
            assert np.all(frame["depth"][sky] == 1000.0) and np.all((frame["depth"][~sky] > 1.0) & (frame["depth"][~sky] < 1000.0))
