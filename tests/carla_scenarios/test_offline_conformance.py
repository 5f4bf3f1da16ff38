"""Conformance of the offline world with the `carla` wheel's own type stubs: every public name of an
offline class exists on the CARLA class of the same name (or its bases), so nothing the collector calls
on the offline world is missing from CARLA, and shared methods take the same parameter names."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import carla
import pytest

from carla_scenarios.offline import actors, blueprints, client, command, map, sensors, traffic, world

STUB_DIR = Path(carla.__file__).parent
OFFLINE_CLASSES = [
    (client.Client, "libcarla"), (world.World, "libcarla"), (world.WorldSnapshot, "libcarla"),
    (world.ActorSnapshot, "libcarla"), (map.Map, "libcarla"), (actors.Actor, "libcarla"),
    (actors.Vehicle, "libcarla"), (actors.Walker, "libcarla"), (actors.WalkerAIController, "libcarla"),
    (actors.ActorList, "libcarla"), (sensors.Sensor, "libcarla"), (sensors.SensorData, "libcarla"),
    (sensors.Image, "libcarla"), (sensors.CollisionEvent, "libcarla"), (sensors.ObstacleDetectionEvent, "libcarla"), (blueprints.ActorBlueprint, "libcarla"),
    (blueprints.ActorAttribute, "libcarla"), (blueprints.BlueprintLibrary, "libcarla"),
    (traffic.TrafficManager, "libcarla"), (command.SpawnActor, "command"), (command.DestroyActor, "command"),
    (command.SetAutopilot, "command"), (command.SetSimulatePhysics, "command"), (command.ApplyTransform, "command"),
    (command.ApplyVehicleControl, "command"), (command.ApplyWalkerControl, "command"),
    (command.ApplyTargetVelocity, "command"), (command.Response, "command"),
]


def _stub_classes(module: str) -> dict[str, ast.ClassDef]:
    tree = ast.parse((STUB_DIR / f"{module}.pyi").read_text())
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


STUBS = {"libcarla": _stub_classes("libcarla"), "command": _stub_classes("command")}


def _stub_members(module: str, name: str) -> dict[str, list[list[str]]]:
    """Public member names of a stub class and its stub bases -> parameter-name lists (one per overload;
    empty for properties and attributes)."""
    classes = STUBS[module]
    members: dict[str, list[list[str]]] = {}
    todo = [name]
    while todo:
        cls = classes.get(todo.pop())
        if cls is None:
            continue
        for node in cls.body:
            if isinstance(node, ast.FunctionDef):
                is_property = any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)
                params = [] if is_property else [a.arg for a in node.args.args[1:]]
                members.setdefault(node.name, []).append(params)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                members.setdefault(node.target.id, []).append([])
        todo.extend(b.id for b in cls.bases if isinstance(b, ast.Name))
        if cls.name == "_IsCommand" or any(isinstance(b, ast.Name) and b.id == "_IsCommand" for b in cls.bases):
            members.setdefault("then", []).append(["command"])
    return members


def _offline_members(cls: type) -> dict[str, object]:
    """Public names of an offline class: its (inherited) class attributes and the `self.x = ...`
    attributes its methods set."""
    names: dict[str, object] = {}
    for klass in cls.__mro__:
        if not klass.__module__.startswith("carla_scenarios"):
            continue
        for key, value in vars(klass).items():
            if not key.startswith("_"):
                names.setdefault(key, value)
        source = textwrap.dedent(inspect.getsource(klass))
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
                    and node.value.id == "self" and not node.attr.startswith("_")):
                names.setdefault(node.attr, None)
    return names


@pytest.mark.parametrize("cls,module", OFFLINE_CLASSES, ids=lambda v: getattr(v, "__name__", v))
def test_every_public_name_exists_in_carla(cls, module):
    assert cls.__name__ in STUBS[module], f"CARLA has no class {cls.__name__}"
    stub = _stub_members(module, cls.__name__)
    extra = sorted(set(_offline_members(cls)) - set(stub))
    assert not extra, f"offline {cls.__name__} has names CARLA's {cls.__name__} lacks: {extra}"


@pytest.mark.parametrize("cls,module", OFFLINE_CLASSES, ids=lambda v: getattr(v, "__name__", v))
def test_parameter_names_agree(cls, module):
    stub = _stub_members(module, cls.__name__)
    members = dict(_offline_members(cls))
    if "__init__" in vars(cls):
        members["__init__"] = vars(cls)["__init__"]
        stub.setdefault("__init__", [])
    for name, value in members.items():
        if not inspect.isfunction(value) or not stub.get(name):
            continue
        params = [p for p in inspect.signature(value).parameters if p != "self"]
        params = [p for p in params if p not in ("args", "kwargs")]
        overloads = [o for o in stub[name] if o]
        if not overloads:
            continue
        # the offline method may leave out trailing optional parameters, never rename or reorder them
        assert any(o[: len(params)] == params for o in overloads), (
            f"{cls.__name__}.{name}{tuple(params)} does not match CARLA's {overloads}")


def test_carla_spawn_command_cannot_carry_an_offline_blueprint():
    """Why the offline world ships its own `command` module: CARLA's SpawnActor only takes a
    carla.ActorBlueprint, which Python cannot construct without a server."""
    with pytest.raises(RuntimeError):
        carla.ActorBlueprint()
    bp = blueprints.make_library().find("vehicle.tesla.model3")
    with pytest.raises(Exception):  # noqa: B017 - Boost.Python raises its own ArgumentError type
        carla.command.SpawnActor(bp, carla.Transform())
    ours = command.SpawnActor(bp, carla.Transform(carla.Location(1, 2, 3))).then(command.SetAutopilot(command.FutureActor, True))
    assert ours.transform.location.y == 2 and ours.parent_id == 0
    assert command.FutureActor == carla.command.FutureActor
