"""Episode planning: seeds, splits, sharding, weather from the seed, and the CLI's argument checks."""

import numpy as np
import pytest

from carla_scenarios import cli
from carla_scenarios.collector import (
    EpisodeSpec,
    episode_rng,
    parse_shard,
    plan_episodes,
    random_weather,
    shard_episodes,
)
from carla_scenarios.weather import parse_weather
from vca_data.labels import default_catalogue


def test_plan_covers_towns_scenarios_seeds_with_catalogue_splits():
    specs = plan_episodes(["Town1", "Town10"], ["parking", "barrier"], 3, 5)
    assert len(specs) == 12
    assert {s.town for s in specs} == {"Town01", "Town10HD"}
    assert {s.split for s in specs if s.town == "Town01"} == {"train"}
    assert {s.split for s in specs if s.town == "Town10HD"} == {"test"}
    assert sorted({s.seed for s in specs}) == [5, 6, 7]
    assert len({s.filename for s in specs}) == 12


def test_train_and_test_never_share_towns_or_unknown_classes():
    cat = default_catalogue()
    assert not set(cat.towns["train"]) & set(cat.towns["test"])
    for scenario in ("barrier", "construction", "parking"):
        train = {c.fine_id for c in cat.unknown_classes("train", scenario)}
        test = {c.fine_id for c in cat.unknown_classes("test", scenario)}
        assert train and test and not train & test


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_are_disjoint_and_complete(count):
    specs = plan_episodes(default_catalogue().all_towns(), ["barrier", "construction", "parking"], 4, 0)
    parts = [shard_episodes(specs, i, count) for i in range(count)]
    names = [s.filename for p in parts for s in p]
    assert sorted(names) == sorted(s.filename for s in specs)
    # independent of the list order
    assert shard_episodes(list(reversed(specs)), 0, count) == list(reversed(parts[0]))
    if count > 1:
        assert all(len(p) > 0 for p in parts)


def test_parse_shard_rejects_bad_values():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_episode_randomness_comes_from_the_seed_alone():
    a = EpisodeSpec("Town01", "parking", 3, "train")
    b = EpisodeSpec("Town01", "parking", 4, "train")
    assert episode_rng(a).integers(1 << 30) == episode_rng(a).integers(1 << 30)
    assert episode_rng(a).integers(1 << 30) != episode_rng(b).integers(1 << 30)
    w1, r1 = random_weather(np.random.default_rng(1))
    w2, r2 = random_weather(np.random.default_rng(1))
    assert r1 == r2 and w1.cloudiness == w2.cloudiness
    records = [random_weather(np.random.default_rng(s))[1] for s in range(30)]
    assert len({r["preset"] for r in records}) > 4
    assert all(0 <= r["cloudiness"] <= 100 and -90 <= r["sun_altitude_angle"] <= 90 for r in records)


def test_weather_presets_are_parsed_drawn_from_and_kept_dry():
    assert parse_weather("random") is None
    assert parse_weather(" clearnoon, CloudyNoon ,ClearNoon") == ("ClearNoon", "CloudyNoon")
    for bad in ("Sunny", "ClearNoon,Sunny", ","):
        with pytest.raises(ValueError, match="--weather"):
            parse_weather(bad)
    records = [random_weather(np.random.default_rng(s), ("ClearNoon", "CloudyNoon"))[1] for s in range(40)]
    assert {r["preset"] for r in records} == {"ClearNoon", "CloudyNoon"}
    assert all(r["precipitation"] == r["precipitation_deposits"] == r["wetness"] == 0.0 for r in records)
    assert len({r["cloudiness"] for r in records}) > 10     # still perturbed
    wet = [random_weather(np.random.default_rng(s), ("HardRainNoon",))[1] for s in range(5)]
    assert all(r["precipitation"] > 50 for r in wet)
    # the default draws from all presets and may add a drizzle to a dry one, as before
    assert any(r["preset"].startswith("Clear") and r["precipitation"] > 0
               for r in (random_weather(np.random.default_rng(s))[1] for s in range(200)))


def test_cli_lists_towns_and_scenarios(capsys):
    assert cli.main(["towns"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["train  Town01 Town03 Town05", "test   Town02 Town07 Town10HD"]
    assert cli.main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "traffic warning" in out and out.count("test ") == 3


@pytest.mark.parametrize("argv, message", [
    (["collect"], "give --town"),
    (["collect", "--town", "Town04"], "Town04"),
    (["collect", "--town", "Town01", "--scenario", "racing"], "unknown scenario 'racing'"),
    (["collect", "--town", "Town01", "--frames", "0"], "--frames"),
    (["collect", "--town", "Town01", "--split", "train"], "either --town or --split"),
    (["collect", "--split", "train", "--shard", "3/2"], "--shard"),
])
def test_cli_rejects_bad_arguments_in_one_line(argv, message, capsys):
    assert cli.main(argv + ["--backend", "offline"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cli_backend_carla_without_server_says_so(capsys):
    rc = cli.main(["collect", "--town", "Town01", "--backend", "carla", "--port", "2999"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "no CARLA server listens at localhost:2999" in lines[0]
