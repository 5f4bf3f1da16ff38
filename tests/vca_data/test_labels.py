import json

import numpy as np
import pytest

from vca_data import labels as L


def test_carla_to_train_known_pairs():
    tags = np.array([L.TAG["Roads"], L.TAG["RoadLine"], L.TAG["GuardRail"], L.TAG["Ground"], L.TAG["Car"],
                     L.TAG["Static"], L.TAG["Dynamic"], L.TAG["Unlabeled"], 200], dtype=np.uint8)
    out = L.carla_to_train(tags)
    assert out.tolist() == [0, 0, 4, 9, 13, 255, 255, 255, 255]


def test_every_train_id_reached_once_by_name():
    reached = {int(L.CARLA_TO_TRAIN[t]) for t in range(len(L.CARLA_TAGS))} - {L.VOID}
    assert reached == set(range(L.NUM_TRAIN_CLASSES))
    for tag, name in enumerate(L.CARLA_TAGS):
        train = int(L.CARLA_TO_TRAIN[tag])
        if name in ("Roads", "Car", "Sky", "Pedestrian", "Bicycle"):
            assert L.TRAIN_NAMES[train].replace(" ", "") in name.lower().replace("pedestrian", "person").replace("roads", "road")


def test_carla_to_train_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..255"):
        L.carla_to_train(np.array([300]))


@pytest.mark.parametrize("raw,canon", [("Town1", "Town01"), ("town01", "Town01"), ("Town10", "Town10HD"),
                                       ("Town10HD", "Town10HD"), ("Town07", "Town07")])
def test_normalize_town(raw, canon):
    assert L.normalize_town(raw) == canon


@pytest.mark.parametrize("bad", ["Tokyo", "Town", "TownX1"])
def test_normalize_town_rejects(bad):
    with pytest.raises(ValueError, match="town"):
        L.normalize_town(bad)


def test_default_catalogue_splits_disjoint():
    cat = L.load_catalogue()
    assert set(cat.towns["train"]) == {"Town01", "Town03", "Town05"}
    assert set(cat.towns["test"]) == {"Town02", "Town07", "Town10HD"}
    train = {c.name for c in cat.unknown_classes("train")}
    test = {c.name for c in cat.unknown_classes("test")}
    assert not train & test
    assert {c.name for c in cat.unknown_classes("test", "parking")} == {"garbage bin"}
    assert cat.class_of_blueprint("static.prop.trafficcone02").name == "traffic cone"
    assert cat.class_of_blueprint("static.prop.mesh") is None
    assert cat.split_of_town("Town1") == "train"


def _doc():
    return json.loads(L.resources.files("vca_data").joinpath("data/catalogue.json").read_text())


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.update(version=2), "version"),
    (lambda d: d["classes"][0].update(fine_id=0), r"classes\[0\].*fine_id"),
    (lambda d: d["classes"][1].update(fine_id=1), r"classes\[1\].*duplicate"),
    (lambda d: d["classes"][0].update(split="val"), r"classes\[0\].*split"),
    (lambda d: d["classes"][0].pop("blueprints"), r"classes\[0\].*blueprints"),
    (lambda d: d["towns"]["test"].append("Town01"), "both splits"),
])
def test_catalogue_validation_names_the_entry(tmp_path, mutate, msg):
    doc = _doc()
    mutate(doc)
    p = tmp_path / "cat.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(L.CatalogueError, match=msg) as e:
        L.load_catalogue(p)
    assert str(p) in str(e.value)


def test_catalogue_invalid_json_names_line(tmp_path):
    p = tmp_path / "cat.json"
    p.write_text('{\n "version": 1,\n oops }')
    with pytest.raises(L.CatalogueError, match="line 3"):
        L.load_catalogue(p)


def test_episode_labels_unknown_and_other_split():
    cat = L.default_catalogue()
    sem = np.full((2, 3), L.TAG["Roads"], dtype=np.uint8)
    sem[0, 0] = L.TAG["Static"]
    fine = np.zeros((2, 3), dtype=np.uint8)
    fine[0, 0] = cat.by_name("street barrier").fine_id  # train unknown
    fine[0, 1] = cat.by_name("traffic pole").fine_id  # test unknown
    out = L.episode_labels(sem, fine, "train", cat)
    assert out[0, 0] == L.UNKNOWN and out[0, 1] == L.VOID and out[1, 0] == 0
    out = L.episode_labels(sem, fine, "test", cat)
    assert out[0, 0] == L.VOID and out[0, 1] == L.UNKNOWN


def test_colorize_train():
    rgb = L.colorize_train(np.array([[0, 254, 255]], dtype=np.uint8))
    assert rgb.shape == (1, 3, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == L.UNKNOWN_COLOR and tuple(rgb[0, 2]) == (0, 0, 0)
