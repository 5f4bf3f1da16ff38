"""The offline world's blueprint library: CARLA's blueprint ids, tags and attributes for the vehicles,
walkers, props (every prop of the unknown-object catalogue and the other stock props), cameras and the
collision sensor that the offline world can spawn, each with the look it is rendered with."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import carla

from vca_data.labels import TAG, default_catalogue

from .shapes import Box, boxes_extent, prop_boxes, vehicle_boxes, walker_boxes


class ActorAttribute:
    """One attribute of a blueprint: id, value, recommended values, whether it may be changed."""

    def __init__(self, id: str, value: str, recommended_values: list[str] | None = None, is_modifiable: bool = True,
                 type: carla.ActorAttributeType = carla.ActorAttributeType.String) -> None:
        self.id = id
        self._value = str(value)
        self.recommended_values = list(recommended_values or [])
        self.is_modifiable = is_modifiable
        self.type = type

    def as_bool(self) -> bool:
        return self._value.lower() in ("true", "1")

    def as_int(self) -> int:
        return int(float(self._value))

    def as_float(self) -> float:
        return float(self._value)

    def as_str(self) -> str:
        return self._value

    def as_color(self) -> carla.Color:
        r, g, b = (int(v) for v in self._value.split(","))
        return carla.Color(r, g, b)

    def __str__(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ActorAttribute):
            return self._value == other._value
        return self._value == str(other)

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"ActorAttribute(id={self.id}, type={self.type}, value={self._value})"


class ActorBlueprint:
    """A blueprint: id, tags, attributes (set_attribute changes a copy handed out by the library)."""

    def __init__(self, id: str, tags: list[str], attributes: list[ActorAttribute], look: dict) -> None:
        self.id = id
        self.tags = list(tags)
        self._attributes = {a.id: a for a in attributes}
        self._look = look  # how the offline world builds and tags the actor

    def has_attribute(self, id: str) -> bool:
        return id in self._attributes

    def has_tag(self, tag: str) -> bool:
        return tag in self.tags

    def match_tags(self, wildcard_pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(t, wildcard_pattern) for t in self.tags)

    def get_attribute(self, id: str) -> ActorAttribute:
        if id not in self._attributes:
            raise IndexError(f"blueprint {self.id!r} has no attribute {id!r}")
        return self._attributes[id]

    def set_attribute(self, id: str, value: str) -> None:
        attr = self.get_attribute(id)
        if not attr.is_modifiable:
            raise RuntimeError(f"attribute {id!r} of blueprint {self.id!r} is not modifiable")
        self._attributes[id] = ActorAttribute(id, value, attr.recommended_values, True, attr.type)

    def _copy(self) -> ActorBlueprint:
        return ActorBlueprint(self.id, self.tags, list(self._attributes.values()), self._look)

    def __iter__(self) -> Iterator[ActorAttribute]:
        return iter(list(self._attributes.values()))

    def __len__(self) -> int:
        return len(self._attributes)

    def __repr__(self) -> str:
        return f"ActorBlueprint(id={self.id},tags={self.tags})"


class BlueprintLibrary:
    """The blueprints, filtered by fnmatch on id or tags like CARLA's library."""

    def __init__(self, blueprints: list[ActorBlueprint]) -> None:
        self._blueprints = list(blueprints)

    def find(self, id: str) -> ActorBlueprint:
        for bp in self._blueprints:
            if bp.id == id:
                return bp._copy()
        raise IndexError(f"blueprint {id!r} not found")

    def filter(self, wildcard_pattern: str) -> BlueprintLibrary:
        return BlueprintLibrary(
            [bp for bp in self._blueprints if fnmatch.fnmatchcase(bp.id, wildcard_pattern) or bp.match_tags(wildcard_pattern)]
        )

    def filter_by_attribute(self, name: str, value: str) -> BlueprintLibrary:
        return BlueprintLibrary(
            [bp for bp in self._blueprints if bp.has_attribute(name) and bp.get_attribute(name).as_str() == str(value)]
        )

    def __getitem__(self, pos: int) -> ActorBlueprint:
        return self._blueprints[pos]._copy()

    def __iter__(self) -> Iterator[ActorBlueprint]:
        return iter([bp._copy() for bp in self._blueprints])

    def __len__(self) -> int:
        return len(self._blueprints)

    def __repr__(self) -> str:
        return f"BlueprintLibrary({[bp.id for bp in self._blueprints]})"


def _attr(id: str, value: str, recommended: list[str] | None = None, modifiable: bool = True) -> ActorAttribute:
    return ActorAttribute(id, value, recommended, modifiable)


# (id, base_type, semantic tag name, extent, colours, wheels)
VEHICLES = (
    ("vehicle.tesla.model3", "car", "Car", (2.39, 1.08, 0.75), ("200,20,20", "240,240,240", "30,30,35", "20,60,150")),
    ("vehicle.audi.a2", "car", "Car", (1.86, 0.9, 0.77), ("90,110,130", "220,200,40", "240,240,240")),
    ("vehicle.lincoln.mkz_2020", "car", "Car", (2.45, 1.07, 0.74), ("20,20,20", "120,120,125", "130,20,30")),
    ("vehicle.nissan.patrol_2021", "car", "Car", (2.78, 1.07, 1.01), ("230,230,230", "60,80,60", "25,25,30")),
    ("vehicle.carlamotors.carlacola", "truck", "Truck", (2.6, 1.3, 1.3), ("200,30,30",)),
    ("vehicle.mitsubishi.fusorosa", "bus", "Bus", (5.1, 1.4, 1.95), ("230,200,40", "40,90,160")),
)

# (id, shape, variant, tag name) for the stock props
STOCK_PROPS = (
    ("static.prop.constructioncone", "cone", 1, "Static"),
    ("static.prop.trafficcone01", "cone", 0, "Static"),
    ("static.prop.trafficcone02", "cone", 0, "Static"),
    ("static.prop.trafficwarning", "sign", 0, "Static"),
    ("static.prop.streetbarrier", "barrier", 0, "Static"),
    ("static.prop.shoppingtrolley", "trolley", 0, "Dynamic"),
    ("static.prop.shoppingcart", "bags", 0, "Dynamic"),
    ("static.prop.shoppingbag", "bag", 0, "Dynamic"),
    ("static.prop.plasticbag", "bag", 0, "Dynamic"),
    ("static.prop.trashbag", "bag", 1, "Dynamic"),
    ("static.prop.bin", "bin", 0, "Static"),
    ("static.prop.container", "container", 0, "Static"),
    ("static.prop.trashcan01", "bin", 1, "Static"),
    ("static.prop.trashcan02", "bin", 0, "Static"),
    ("static.prop.trashcan03", "bin", 1, "Static"),
    ("static.prop.trashcan04", "bin", 0, "Static"),
    ("static.prop.trashcan05", "bin", 1, "Static"),
    ("static.prop.barrel", "barrel", 0, "Static"),
    ("static.prop.warningconstruction", "warning", 0, "Static"),
    ("static.prop.warningaccident", "warning", 1, "Static"),
    ("static.prop.chainbarrier", "chain", 0, "Static"),
    ("static.prop.dirtdebris01", "debris", 0, "Static"),
    ("static.prop.dirtdebris02", "debris", 0, "Static"),
    ("static.prop.dirtdebris03", "debris", 0, "Static"),
)

WALKER_COUNT = 8
CAMERAS = ("rgb", "depth", "semantic_segmentation", "instance_segmentation")


def _rgb(text: str) -> tuple[float, float, float, float]:
    r, g, b = (int(v) / 255 for v in text.split(","))
    return (r, g, b, 1.0)


def vehicle_look(look: dict, colour: str) -> list[Box]:
    return vehicle_boxes(look["extent"], _rgb(colour), look["tag"], look["kind"])


def _mesh_shape() -> dict[str, str]:
    """mesh_path -> shape for `static.prop.mesh`, from the catalogue (the pole has no stock prop)."""
    shapes = {}
    for c in default_catalogue().classes:
        for bp in c.blueprints:
            if bp.id == "static.prop.mesh" and "mesh_path" in bp.attributes:
                shapes[bp.attributes["mesh_path"]] = c.shape
    return shapes


MESH_SHAPES = _mesh_shape()


def make_library() -> BlueprintLibrary:
    """All blueprints of the offline world."""
    bps: list[ActorBlueprint] = []
    for bp_id, kind, tag_name, extent, colours in VEHICLES:
        make, model = bp_id.split(".")[1:]
        attrs = [
            _attr("role_name", "autopilot", ["autopilot", "scenario", "ego"]),
            _attr("color", colours[0], list(colours)),
            _attr("number_of_wheels", "4", modifiable=False),
            _attr("base_type", kind, modifiable=False),
            _attr("generation", "2", modifiable=False),
            _attr("object_type", "", modifiable=False),
            _attr("sticky_control", "true", ["true", "false"]),
            _attr("has_dynamic_doors", "false", modifiable=False),
            _attr("has_lights", "true", modifiable=False),
            _attr("special_type", "", modifiable=False),
        ]
        look = {"kind": kind, "tag": TAG[tag_name], "extent": extent}
        bps.append(ActorBlueprint(bp_id, [make, model, kind], attrs, look))
    shirts = ("180,40,40", "40,80,160", "60,140,70", "220,200,60", "90,90,90", "230,230,230", "120,60,140", "200,120,40")
    for i in range(WALKER_COUNT):
        bp_id = f"walker.pedestrian.{i + 1:04d}"
        attrs = [
            _attr("role_name", "pedestrian"),
            _attr("is_invincible", "true", ["true", "false"]),
            _attr("speed", "1.4", ["1.4", "2.8"], modifiable=False),
            _attr("gender", "female" if i % 2 else "male", modifiable=False),
            _attr("age", "adult", modifiable=False),
            _attr("generation", "2", modifiable=False),
        ]
        height = 1.65 + 0.05 * (i % 4)
        boxes = walker_boxes(height, _rgb(shirts[i]), _rgb(("40,40,60", "70,50,40", "20,20,20")[i % 3]),
                             _rgb(("230,190,160", "160,110,80", "100,70,50")[i % 3]))
        look = {"boxes": boxes, "tag": TAG["Pedestrian"], "height": height}
        bps.append(ActorBlueprint(bp_id, ["walker", "pedestrian", f"{i + 1:04d}"], attrs, look))
    bps.append(ActorBlueprint("controller.ai.walker", ["controller", "ai", "walker"], [_attr("role_name", "")], {}))
    for bp_id, shape, variant, tag_name in STOCK_PROPS:
        tag = TAG[tag_name]
        attrs = [_attr("role_name", "prop"), _attr("size", "small", modifiable=False)]
        look = {"boxes": prop_boxes(shape, tag, variant), "tag": tag}
        bps.append(ActorBlueprint(bp_id, ["static", "prop", bp_id.split(".")[-1]], attrs, look))
    mesh_attrs = [_attr("role_name", "prop"), _attr("mesh_path", next(iter(MESH_SHAPES), "")), _attr("mass", "0")]
    bps.append(ActorBlueprint("static.prop.mesh", ["static", "prop", "mesh"], mesh_attrs, {"tag": TAG["Static"], "mesh": True}))
    for camera in CAMERAS:
        attrs = [
            _attr("role_name", "front"),
            _attr("image_size_x", "800"),
            _attr("image_size_y", "600"),
            _attr("fov", "90"),
            _attr("sensor_tick", "0.0"),
        ]
        if camera == "rgb":
            attrs.append(_attr("gamma", "2.2"))
        bps.append(ActorBlueprint(f"sensor.camera.{camera}", ["sensor", "camera", camera], attrs, {"camera": camera}))
    bps.append(ActorBlueprint("sensor.other.collision", ["sensor", "other", "collision"], [_attr("role_name", "front")],
                              {"collision": True}))
    obstacle_attrs = [
        _attr("role_name", "front"),
        _attr("distance", "5"),
        _attr("hit_radius", "0.5"),
        _attr("only_dynamics", "false", ["true", "false"]),
        _attr("debug_linetrace", "false", ["true", "false"]),
        _attr("sensor_tick", "0.0"),
    ]
    bps.append(ActorBlueprint("sensor.other.obstacle", ["sensor", "other", "obstacle"], obstacle_attrs, {"obstacle": True}))
    return BlueprintLibrary(bps)


def prop_look(blueprint: ActorBlueprint) -> tuple[list[Box], int]:
    """Boxes and semantic tag of a prop blueprint (static.prop.mesh takes its shape from mesh_path; none
    for a mesh_path the offline world does not know: the prop spawns empty, as on a server)."""
    look = blueprint._look
    if look.get("mesh"):
        path = blueprint.get_attribute("mesh_path").as_str()
        shape = MESH_SHAPES.get(path)
        if shape is None:  # a server logs "Failed to set the mesh" and still spawns an empty actor
            return [], look["tag"]
        return prop_boxes(shape, look["tag"]), look["tag"]
    return look["boxes"], look["tag"]


def local_bounding_box(boxes: list[Box]) -> carla.BoundingBox:
    centre, half = boxes_extent(boxes)
    return carla.BoundingBox(carla.Location(*centre), carla.Vector3D(*half))
