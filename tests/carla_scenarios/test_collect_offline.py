"""End-to-end collection on the offline world: episodes are valid, labelled and collision-free; faults
(a dropped sensor frame, a failing tick, a lost server) give a clear error and leave no complete-looking
file; a killed run finishes with --resume; shards merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import carla
import numpy as np
import pytest

from carla_scenarios import cli
from carla_scenarios.collector import (
    CollectOptions,
    EpisodeSpec,
    collect_episode,
    merge_datasets,
    read_tracks,
)
from carla_scenarios.rig import SensorTimeout
from vca_data.episodes import EpisodeReader, read_manifest, validate
from vca_data.labels import default_catalogue

SMALL = dict(frames=4, frame_step=2, width=96, height=64, vehicles=3, walkers=2)
REPO = Path(__file__).resolve().parents[2]


def test_cli_collects_valid_labelled_episodes(collected):
    out = collected.out
    assert collected.rc == 0
    lines = collected.stdout.strip().splitlines()
    assert lines[0].startswith("backend: offline")
    assert lines[-1].startswith("collected 6 episodes") and " 0 collisions" in lines[-1] and str(out) in lines[-1]
    entries = read_manifest(out)
    assert len(entries) == 6 and {e["backend"] for e in entries} == {"offline"}
    cat = default_catalogue()
    seen_all = 0
    for e in entries:
        path = out / e["file"]
        assert validate(path) == []
        with EpisodeReader(path) as ep:
            a = ep.attrs
            assert len(ep) == 5 and a["split"] == cat.split_of_town(a["town"])
            allowed = {c.fine_id for c in cat.unknown_classes(a["split"], a["scenario"])}
            ids = {o["fine_id"] for o in a["unknown_objects"]}
            assert ids and ids <= allowed
            fine = np.stack([ep.read(i, ["fine"])["fine"] for i in range(len(ep))])
            assert set(np.unique(fine)) - {0} <= allowed
            inst = np.stack([ep.read(i, ["instance"])["instance"] for i in range(len(ep))])
            objs = {o["actor_id"] & 0xFFFF for o in a["unknown_objects"]}
            seen_all += objs <= set(np.unique(inst[fine > 0]).tolist())
            # fine labels exactly where the instance camera shows a spawned unknown object
            np.testing.assert_array_equal(fine > 0, np.isin(inst, list(objs)))
            poses = ep.column("ego_pose")
            assert np.allclose(np.linalg.det(poses[:, :3, :3]), 1.0, atol=1e-5)
            # the camera drives forward: along its own z axis (OpenCV)
            step = np.linalg.inv(poses[0]) @ poses[-1]
            assert step[2, 3] > 0.5 and abs(step[0, 3]) < step[2, 3]
            assert np.asarray(a["intrinsics"]).shape == (3, 3) and a["pose_convention"]
        assert read_tracks(path)["tracks"]
    assert seen_all >= 5


def test_resume_skips_complete_episodes(collected, capsys):
    out, argv = collected.out, collected.argv
    before = {p.name: p.stat().st_mtime_ns for p in (out / "episodes").glob("*.h5")}
    assert cli.main(argv + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "6 of 6 episodes already complete" in text and text.strip().splitlines()[-1].startswith("collected 0 episodes")
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "episodes").glob("*.h5")}


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------

def _our_actors(world, before: set[int]) -> list:
    return [a for a in world.get_actors() if a.id not in before]


@pytest.mark.parametrize("kind, error, match", [
    ("drop_frame", SensorTimeout, "sensor 'depth' .*frame"),
    ("tick_raises", RuntimeError, "simulated server error"),
])
def test_fault_gives_clear_error_restores_settings_and_actors(kind, error, match, faulty_client, offline_client, tmp_path):
    client, faults = faulty_client(kind, at_tick=9)
    options = CollectOptions(**SMALL, sensor_timeout=1.0)
    good = collect_episode(offline_client, EpisodeSpec("Town01", "parking", 0, "train"), options, tmp_path, "offline")
    world = offline_client.get_world()
    settings = world.get_settings()
    before = {a.id for a in world.get_actors()}
    spec = EpisodeSpec("Town01", "parking", 1, "train")
    with pytest.raises(error, match=match):
        collect_episode(client, spec, options, tmp_path, "offline")
    assert faults.ticks >= 9
    world = offline_client.get_world()
    after = world.get_settings()
    assert after.synchronous_mode == settings.synchronous_mode
    assert after.fixed_delta_seconds == settings.fixed_delta_seconds
    assert _our_actors(world, before) == []
    # the dataset holds the earlier episode only, valid, and nothing of the failed one
    assert [e["file"] for e in read_manifest(tmp_path)] == [f"episodes/{good.path.name}"]
    assert validate(good.path) == []
    assert sorted(p.name for p in (tmp_path / "episodes").glob("*")) == sorted(
        [good.path.name, good.path.stem + ".tracks.json"])


def test_lost_server_gives_clear_error_and_no_complete_file(faulty_client, tmp_path, capsys):
    client, faults = faulty_client("disconnect", at_tick=9)
    spec = EpisodeSpec("Town02", "barrier", 1, "test")
    with pytest.raises(RuntimeError, match="waiting for the simulator"):
        collect_episode(client, spec, CollectOptions(**SMALL), tmp_path, "offline")
    assert faults.disconnected
    for p in (tmp_path / "episodes").glob("*"):
        assert validate(p) != []
    assert not (tmp_path / "episodes" / spec.filename).exists()


def test_killed_run_completes_with_resume(tmp_path):
    out = tmp_path / "data"
    argv = [sys.executable, "-m", "carla_scenarios.cli", "collect", "--town", "Town01", "--scenario", "parking",
            "--episodes", "3", "--backend", "offline", "--out", str(out), "--frames", "12", "--frame-step", "2",
            "--width", "96", "--height", "64", "--vehicles", "2", "--walkers", "2"]
    # the second episode's writer holds after its 3rd frame, with the first episode complete: a kill point
    # that no timing decides
    marker = tmp_path / "held"
    part = out / "episodes" / "Town01_parking_1.h5.part"
    env = dict(os.environ, PYTHONUNBUFFERED="1", VCA_WRITER_HOLD=f"Town01_parking_1.h5:3:{marker}")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert marker.exists(), "collection never reached its second episode"
    assert part.exists() and [e["seed"] for e in read_manifest(out)] == [0]
    env.pop("VCA_WRITER_HOLD")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert validate(part) != []
    assert all(validate(out / e["file"]) == [] for e in read_manifest(out))

    result = subprocess.run(argv + ["--resume"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[0].startswith("backend: offline")  # first line, stderr included
    assert "already complete" in result.stdout
    entries = read_manifest(out)
    assert sorted(e["seed"] for e in entries) == [0, 1, 2]
    assert all(validate(out / e["file"]) == [] for e in entries)
    assert list((out / "episodes").glob("*.part")) == []


def test_shards_merge_into_one_dataset(offline_client, tmp_path):
    options = CollectOptions(**SMALL)
    specs = [EpisodeSpec("Town01", "barrier", s, "train") for s in (0, 1)]
    for i, spec in enumerate(specs):
        collect_episode(offline_client, spec, options, tmp_path / f"shard{i}", "offline")
    assert cli.main(["merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--out", str(tmp_path / "all")]) == 0
    entries = read_manifest(tmp_path / "all")
    assert [e["file"] for e in entries] == [f"episodes/{s.filename}" for s in specs]
    for e in entries:
        assert validate(tmp_path / "all" / e["file"]) == []
        assert json.loads((tmp_path / "all" / "episodes" / (Path(e["file"]).stem + ".tracks.json")).read_text())
    assert merge_datasets([tmp_path / "shard0"], tmp_path / "all") == 1  # re-merging is idempotent


def test_ctrl_c_cleans_up_and_says_how_to_resume(tmp_path):
    out = tmp_path / "data"
    argv = [sys.executable, "-m", "carla_scenarios.cli", "collect", "--town", "Town02", "--scenario", "barrier",
            "--backend", "offline", "--out", str(out), "--frames", "3000", "--frame-step", "1",
            "--width", "96", "--height", "64", "--vehicles", "2", "--walkers", "2"]
    # 3000 frames (about 10 s here) so that a loaded machine, which may see the .part file late, still
    # signals a running collection (200 frames once finished before the SIGINT came: rc 0, not 130)
    proc = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((out / "episodes").glob("*.part")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert stdout.startswith("backend: offline")
    time.sleep(0.5)  # the writer process ends on its own after the abort
    assert list((out / "episodes").glob("*")) == []


def test_cli_reports_a_lost_server_without_traceback(faulty_client, monkeypatch, tmp_path, capsys):
    from carla_scenarios import collector

    client, _ = faulty_client("disconnect", at_tick=8)
    monkeypatch.setattr(collector, "connect", lambda *a, **k: (client, "offline (fault-injecting wrapper)"))
    rc = cli.main(["collect", "--town", "Town02", "--scenario", "parking", "--out", str(tmp_path), "--frames", "4",
                   "--width", "64", "--height", "48", "--vehicles", "1", "--walkers", "1"])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("vca-carla: error: Town02_parking_0.h5:") and "waiting for the simulator" in last
    assert "--resume" in last
    assert not list(tmp_path.glob("episodes/*.h5"))


def test_same_seed_same_episode(offline_client, tmp_path):
    """Everything random in an episode comes from its seed: weather, objects, traffic, route, frames."""
    options = CollectOptions(frames=3, frame_step=2, width=64, height=48, vehicles=3, walkers=3)
    spec = EpisodeSpec("Town02", "construction", 5, "test")
    a = collect_episode(offline_client, spec, options, tmp_path / "a", "offline")
    collect_episode(offline_client, EpisodeSpec("Town02", "parking", 1, "test"), options, tmp_path / "x", "offline")
    b = collect_episode(offline_client, spec, options, tmp_path / "b", "offline")
    with EpisodeReader(a.path) as ea, EpisodeReader(b.path) as eb:
        assert ea.attrs["weather"] == eb.attrs["weather"]
        strip = [{k: v for k, v in o.items() if k != "actor_id"} for o in ea.attrs["unknown_objects"]]
        assert strip == [{k: v for k, v in o.items() if k != "actor_id"} for o in eb.attrs["unknown_objects"]]
        np.testing.assert_allclose(ea.column("ego_pose"), eb.column("ego_pose"), atol=1e-6)
        for i in range(len(ea)):
            np.testing.assert_array_equal(ea.read(i, ["semantic"])["semantic"], eb.read(i, ["semantic"])["semantic"])


def test_parked_cars_stand_at_the_kerb_and_are_recorded_as_static_tracks(offline_client, tmp_path):
    """--parked N: cars parked along the kerbs of the ego's road stand still for the whole episode, out
    of the lane centres that traffic drives on, and their states are recorded like the traffic's."""
    options = CollectOptions(frames=6, frame_step=2, width=64, height=48, vehicles=2, walkers=0, parked=6)
    result = collect_episode(offline_client, EpisodeSpec("Town01", "barrier", 3, "train"), options, tmp_path, "offline")
    tracks = read_tracks(result.path)["tracks"]
    parked = [t for t in tracks.values() if t["kind"] == "parked"]
    with EpisodeReader(result.path) as ep:
        assert ep.attrs["parked_vehicles"] == len(parked) >= 4
    carla_map = offline_client.get_world().get_map()
    for t in parked:
        states = np.array(t["states"])
        assert len(states) == 6 and t["blueprint"].startswith("vehicle.")
        np.testing.assert_allclose(states[:, :4], np.repeat(states[:1, :4], 6, axis=0), atol=1e-6)  # never moves
        assert np.abs(states[:, 4:]).max() < 1e-6                               # and no velocity
        x, y = states[0, :2]
        lane = carla_map.get_waypoint(carla.Location(x=float(x), y=float(y), z=0.0))
        offset = np.hypot(lane.transform.location.x - x, lane.transform.location.y - y)
        assert offset > 0.5 * lane.lane_width   # beside the nearest lane's centre line, at its edge
    assert not result.collisions
    with pytest.raises(ValueError, match="--parked"):
        CollectOptions(parked=-1).validate()


def test_traffic_radius_and_weather_presets_give_close_traffic_in_dry_daylight(offline_client, tmp_path):
    """--traffic-radius M: NPC vehicles and walkers start near the ego's road ahead (not anywhere in the
    town); --weather PRESETS: the episode's weather is one of them and a dry preset stays dry."""
    def first_distances(result):
        tracks = read_tracks(result.path)["tracks"]
        with EpisodeReader(result.path) as ep:
            x, y = np.asarray(ep.column("ego_pose"))[0, :2, 3]
        ego = np.array([x, -y])  # ego_pose's world has CARLA's y negated; the tracks are in CARLA's frame
        return [float(np.hypot(*(np.array(t["states"][0][:2]) - ego)))
                for t in tracks.values() if t["kind"] in ("vehicle", "walker")]

    spec = EpisodeSpec("Town03", "parking", 2, "train")
    base = dict(frames=2, frame_step=2, width=64, height=48, vehicles=8, walkers=8)
    near = collect_episode(offline_client, spec, CollectOptions(**base, traffic_radius=25.0, weather=("ClearNoon",)),
                           tmp_path / "near", "offline")
    far = collect_episode(offline_client, spec, CollectOptions(**base), tmp_path / "far", "offline")
    d_near, d_far = first_distances(near), first_distances(far)
    reach = 25.0 + CollectOptions(**base).drive_distance() + 60.0 + 5.0  # radius + the road ahead + warm-up motion
    assert len(d_near) >= 8 and max(d_near) <= reach, d_near
    assert np.median(d_far) > 2 * np.median(d_near), (d_far, d_near)
    with EpisodeReader(near.path) as ep:
        w = ep.attrs["weather"]
    assert w["preset"] == "ClearNoon" and w["precipitation"] == w["precipitation_deposits"] == w["wetness"] == 0.0
    with pytest.raises(ValueError, match="--traffic-radius"):
        CollectOptions(traffic_radius=0.0).validate()
