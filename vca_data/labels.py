"""Label spaces of the VCA open-set track: CARLA semantic tags, the 19 Cityscapes train ids, the
unknown/void values, colour palettes, and the unknown-object catalogue with its town splits.

Everything that turns a simulator tag or a fine-grained unknown class into a training label goes
through this module, so the collector, the datasets and the metrics agree on one mapping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

VOID = 255
UNKNOWN = 254
NUM_TRAIN_CLASSES = 19

# CARLA 0.9.14+ semantic tags (CityObjectLabel values), index = tag.
CARLA_TAGS: tuple[str, ...] = (
    "Unlabeled", "Roads", "SideWalks", "Building", "Wall", "Fence", "Pole", "TrafficLight",
    "TrafficSign", "Vegetation", "Terrain", "Sky", "Pedestrian", "Rider", "Car", "Truck", "Bus",
    "Train", "Motorcycle", "Bicycle", "Static", "Dynamic", "Other", "Water", "RoadLine", "Ground",
    "Bridge", "RailTrack", "GuardRail",
)
TAG = {name: i for i, name in enumerate(CARLA_TAGS)}

# The 19 Cityscapes train ids, in order.
TRAIN_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
THING_TRAIN_IDS: tuple[int, ...] = tuple(range(11, 19))

# Cityscapes display colours of the train ids.
TRAIN_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)
UNKNOWN_COLOR = (255, 140, 0)
VOID_COLOR = (0, 0, 0)

# CARLA's own palette for its semantic tags (as the semantic camera's CityScapesPalette converter).
CARLA_PALETTE = np.array(
    [
        (0, 0, 0), (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32), (110, 190, 160), (170, 120, 50), (55, 90, 80),
        (45, 60, 150), (157, 234, 50), (81, 0, 81), (150, 100, 100), (230, 150, 140), (180, 165, 180),
    ],
    dtype=np.uint8,
)

_CARLA_TO_TRAIN_PAIRS = {
    "Roads": 0, "RoadLine": 0, "SideWalks": 1, "Building": 2, "Wall": 3, "Fence": 4, "GuardRail": 4,
    "Pole": 5, "TrafficLight": 6, "TrafficSign": 7, "Vegetation": 8, "Terrain": 9, "Ground": 9,
    "Sky": 10, "Pedestrian": 11, "Rider": 12, "Car": 13, "Truck": 14, "Bus": 15, "Train": 16,
    "Motorcycle": 17, "Bicycle": 18,
}

#: Lookup table from any uint8 CARLA tag to a train id (255 for void and for tags beyond the table).
CARLA_TO_TRAIN = np.full(256, VOID, dtype=np.uint8)
for _name, _train in _CARLA_TO_TRAIN_PAIRS.items():
    CARLA_TO_TRAIN[TAG[_name]] = _train


def carla_to_train(tags: np.ndarray) -> np.ndarray:
    """Map an array of CARLA semantic tags (uint8) to Cityscapes train ids (255 = void)."""
    tags = np.asarray(tags)
    if tags.dtype != np.uint8:
        if tags.size and (tags.min() < 0 or tags.max() > 255):
            raise ValueError(f"CARLA tags must lie in 0..255, got range {tags.min()}..{tags.max()}")
        tags = tags.astype(np.uint8)
    return CARLA_TO_TRAIN[tags]


def colorize_train(ids: np.ndarray) -> np.ndarray:
    """RGB image (HxWx3 uint8) of a train-id map; unknown (254) orange, void (255) black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_TRAIN_CLASSES] = TRAIN_PALETTE
    lut[UNKNOWN] = UNKNOWN_COLOR
    lut[VOID] = VOID_COLOR
    return lut[np.asarray(ids, dtype=np.uint8)]


def colorize_carla(tags: np.ndarray) -> np.ndarray:
    """RGB image of a CARLA tag map, in CARLA's own palette (unlisted tags black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(CARLA_PALETTE)] = CARLA_PALETTE
    return lut[np.asarray(tags, dtype=np.uint8)]


# ---------------------------------------------------------------------------------------------
# Towns
# ---------------------------------------------------------------------------------------------

def normalize_town(name: str) -> str:
    """CARLA town name in its canonical spelling: 'Town1', 'town01' and 'Town01' give 'Town01';
    'Town10' and 'Town10HD' give 'Town10HD'."""
    raw = str(name).strip()
    low = raw.lower()
    if not low.startswith("town"):
        raise ValueError(f"not a CARLA town name: {name!r} (expected e.g. Town01)")
    rest = low[4:]
    hd = rest.endswith("hd")
    digits = rest[:-2] if hd else rest
    if not digits.isdigit():
        raise ValueError(f"not a CARLA town name: {name!r} (expected e.g. Town01, Town10HD)")
    num = int(digits)
    if num == 10:
        return "Town10HD"
    return f"Town{num:02d}" + ("HD" if hd else "")


# ---------------------------------------------------------------------------------------------
# Unknown-object catalogue
# ---------------------------------------------------------------------------------------------

SCENARIOS: tuple[str, ...] = ("barrier", "construction", "parking")
SPLITS: tuple[str, ...] = ("train", "test")
SHAPES: tuple[str, ...] = ("cone", "pole", "sign", "bin", "bags", "barrier", "trolley")


class CatalogueError(ValueError):
    """The catalogue file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Blueprint:
    id: str
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class UnknownClass:
    name: str
    fine_id: int
    scenario: str
    split: str
    shape: str
    blueprints: tuple[Blueprint, ...]


@dataclass(frozen=True)
class Catalogue:
    classes: tuple[UnknownClass, ...]
    towns: dict  # split -> tuple of town names
    source: str = "<default>"

    def by_fine_id(self, fine_id: int) -> UnknownClass:
        for c in self.classes:
            if c.fine_id == fine_id:
                return c
        raise KeyError(f"no unknown class with fine id {fine_id} in {self.source}")

    def by_name(self, name: str) -> UnknownClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"no unknown class named {name!r} in {self.source}")

    def unknown_classes(self, split: str | None = None, scenario: str | None = None) -> list[UnknownClass]:
        """Classes of a split and/or scenario (None = any)."""
        return [
            c for c in self.classes
            if (split is None or c.split == split) and (scenario is None or c.scenario == scenario)
        ]

    def split_of_town(self, town: str) -> str:
        town = normalize_town(town)
        for split, towns in self.towns.items():
            if town in towns:
                return split
        raise KeyError(f"town {town} is in no split of {self.source}")

    def all_towns(self) -> list[str]:
        return [t for split in SPLITS for t in self.towns[split]]

    def fine_names(self) -> dict[int, str]:
        return {c.fine_id: c.name for c in self.classes}

    def class_of_blueprint(self, blueprint_id: str, attributes: dict | None = None) -> UnknownClass | None:
        """The unknown class whose blueprint list holds this id (and matching attributes), if any."""
        attributes = attributes or {}
        for c in self.classes:
            for bp in c.blueprints:
                if bp.id == blueprint_id and all(attributes.get(k) == v for k, v in bp.attributes.items()):
                    return c
        return None


def _fail(source: str, where: str, msg: str) -> CatalogueError:
    return CatalogueError(f"{source}: {where}: {msg}")


def parse_catalogue(doc: object, source: str = "<catalogue>") -> Catalogue:
    """Validate a decoded catalogue document and build a Catalogue."""
    if not isinstance(doc, dict):
        raise _fail(source, "top level", "expected a JSON object")
    if doc.get("version") != 1:
        raise _fail(source, "version", f"expected 1, got {doc.get('version')!r}")
    towns_doc = doc.get("towns")
    if not isinstance(towns_doc, dict) or set(towns_doc) != set(SPLITS):
        raise _fail(source, "towns", f"expected an object with keys {list(SPLITS)}")
    towns: dict[str, tuple[str, ...]] = {}
    for split in SPLITS:
        names = towns_doc[split]
        if not isinstance(names, list) or not names:
            raise _fail(source, f"towns.{split}", "expected a non-empty list of town names")
        try:
            towns[split] = tuple(normalize_town(n) for n in names)
        except ValueError as e:
            raise _fail(source, f"towns.{split}", str(e)) from None
    shared = set(towns["train"]) & set(towns["test"])
    if shared:
        raise _fail(source, "towns", f"towns in both splits: {sorted(shared)}")
    classes_doc = doc.get("classes")
    if not isinstance(classes_doc, list) or not classes_doc:
        raise _fail(source, "classes", "expected a non-empty list")
    classes = []
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    for i, entry in enumerate(classes_doc):
        where = f"classes[{i}]"
        if not isinstance(entry, dict):
            raise _fail(source, where, "expected an object")
        for key in ("name", "fine_id", "scenario", "split", "shape", "blueprints"):
            if key not in entry:
                raise _fail(source, where, f"missing field {key!r}")
        name, fine_id = entry["name"], entry["fine_id"]
        if not isinstance(name, str) or not name:
            raise _fail(source, where, "name must be a non-empty string")
        if not isinstance(fine_id, int) or isinstance(fine_id, bool) or not 1 <= fine_id <= 253:
            raise _fail(source, where, f"fine_id must be an integer in 1..253, got {fine_id!r}")
        if fine_id in seen_ids or name in seen_names:
            raise _fail(source, where, f"duplicate class {name!r} / fine id {fine_id}")
        seen_ids.add(fine_id)
        seen_names.add(name)
        if entry["scenario"] not in SCENARIOS:
            raise _fail(source, where, f"scenario must be one of {list(SCENARIOS)}, got {entry['scenario']!r}")
        if entry["split"] not in SPLITS:
            raise _fail(source, where, f"split must be one of {list(SPLITS)}, got {entry['split']!r}")
        if entry["shape"] not in SHAPES:
            raise _fail(source, where, f"shape must be one of {list(SHAPES)}, got {entry['shape']!r}")
        bps = entry["blueprints"]
        if not isinstance(bps, list) or not bps:
            raise _fail(source, where, "blueprints must be a non-empty list")
        blueprints = []
        for j, bp in enumerate(bps):
            if not isinstance(bp, dict) or not isinstance(bp.get("id"), str) or not bp["id"].startswith("static.prop."):
                raise _fail(source, f"{where}.blueprints[{j}]", "expected {\"id\": \"static.prop....\"}")
            attrs = bp.get("attributes", {})
            if not isinstance(attrs, dict):
                raise _fail(source, f"{where}.blueprints[{j}]", "attributes must be an object")
            blueprints.append(Blueprint(bp["id"], dict(attrs)))
        classes.append(UnknownClass(name, fine_id, entry["scenario"], entry["split"], entry["shape"], tuple(blueprints)))
    for scenario in SCENARIOS:
        for split in SPLITS:
            if not any(c.scenario == scenario and c.split == split for c in classes):
                raise _fail(source, "classes", f"scenario {scenario!r} has no {split} class")
    return Catalogue(tuple(classes), towns, source)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate the unknown-object catalogue (the packaged default when path is None)."""
    if path is None:
        text = resources.files("vca_data").joinpath("data/catalogue.json").read_text()
        source = "vca_data/data/catalogue.json"
    else:
        path = Path(path)
        if not path.is_file():
            raise CatalogueError(f"{path}: no such catalogue file")
        text = path.read_text()
        source = str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CatalogueError(f"{source}: line {e.lineno}: invalid JSON: {e.msg}") from None
    return parse_catalogue(doc, source)


def episode_labels(semantic: np.ndarray, fine: np.ndarray, split: str, catalogue: Catalogue | None = None) -> np.ndarray:
    """Training labels of one episode frame: train ids from the CARLA tags, 254 on unknown objects of
    `split`'s unknown set, 255 on unknown objects of the other split (they are neither known nor the
    unknowns this split is evaluated on)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    semantic = np.asarray(semantic)
    fine = np.asarray(fine)
    if semantic.shape != fine.shape:
        raise ValueError(f"semantic {semantic.shape} and fine {fine.shape} maps differ in shape")
    catalogue = catalogue or default_catalogue()
    labels = carla_to_train(semantic).copy()
    lut = np.zeros(256, dtype=np.uint8)  # 0 keep, 1 unknown of split, 2 other unknown
    for c in catalogue.classes:
        lut[c.fine_id] = 1 if c.split == split else 2
    kind = lut[fine.astype(np.uint8)]
    labels[kind == 1] = UNKNOWN
    labels[kind == 2] = VOID
    return labels


_DEFAULT: Catalogue | None = None


def default_catalogue() -> Catalogue:
    """The packaged catalogue, loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_catalogue()
    return _DEFAULT
