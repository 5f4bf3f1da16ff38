"""`vca-carla scenarios --check`: whether the connected server can spawn each catalogue blueprint.

Each blueprint of each unknown class is spawned on the first free spawn point of the loaded map,
20 cm above the ground, in front of an instance-segmentation camera; it passes when the actor
reports a finite non-zero bounding box and at least one pixel of the camera's next frame shows its id.
A `static.prop.mesh` whose mesh_path names no asset of the server fails here (the server spawns it
empty), before any episode records its absence.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

import carla
import numpy as np

from carla_scenarios import decode
from carla_scenarios.cleanup import ROLES
from carla_scenarios.footprints import valid_extent
from carla_scenarios.props import spawn_height
from carla_scenarios.rig import SynchronousMode
from vca_data.labels import Catalogue

CHECK_SIZE = (160, 120)  # camera image, pixels


@dataclass
class BlueprintCheck:
    unknown: str
    blueprint: str
    attributes: dict
    ok: bool
    message: str


def _try(world, library, bp_id: str, attributes: dict, shape: str, spots: list, camera_bp, timeout: float):
    """(ok, message) of one blueprint: spawn it at the first spot that takes it and look at it."""
    try:
        bp = library.find(bp_id)
        for key, value in attributes.items():
            bp.set_attribute(key, str(value))
    except (IndexError, RuntimeError, KeyError) as e:
        return False, f"not in the blueprint library ({e})"
    if bp.has_attribute("role_name"):
        bp.set_attribute("role_name", ROLES["prop"])
    for spot in spots:
        loc = spot.location
        z = spawn_height(world, loc.x, loc.y, loc.z, shape)
        actor = world.try_spawn_actor(bp, carla.Transform(carla.Location(loc.x, loc.y, z), spot.rotation))
        if actor is not None:
            break
    else:
        return False, "could not be spawned at any spawn point"
    spawned = [actor]
    try:
        e = actor.bounding_box.extent
        if not valid_extent(e):
            return False, f"spawned with bounding box extent ({e.x:g}, {e.y:g}, {e.z:g}): the mesh did not load"
        back = spot.get_forward_vector() * -6.0
        eye = carla.Transform(carla.Location(loc.x + back.x, loc.y + back.y, z + 1.5), carla.Rotation(pitch=-10.0, yaw=spot.rotation.yaw))
        camera = world.spawn_actor(camera_bp, eye)
        spawned.insert(0, camera)
        images: queue.Queue = queue.Queue()
        camera.listen(images.put)
        frame = world.tick(timeout)
        try:
            shot = images.get(timeout=timeout)
            while shot.frame < frame:
                shot = images.get(timeout=timeout)
        except queue.Empty:
            return False, "the camera delivered no image"
        pixels = int(np.count_nonzero(decode.decode_instance_ids(shot) == decode.instance_key(actor.id)))
        if pixels == 0:
            return False, "no pixel of it in the camera's image: the mesh did not load"
        return True, f"ok (box {2 * e.x:.2f} x {2 * e.y:.2f} x {2 * e.z:.2f} m, {pixels} px)"
    finally:
        for a in spawned:
            if a.type_id.startswith("sensor."):
                a.stop()
            a.destroy()


def check_blueprints(client, catalogue: Catalogue, timeout: float = 10.0) -> list[BlueprintCheck]:
    """Spawn and look at every blueprint of the catalogue on the client's current world."""
    world = client.get_world()
    library = world.get_blueprint_library()
    camera_bp = library.find("sensor.camera.instance_segmentation")
    camera_bp.set_attribute("image_size_x", str(CHECK_SIZE[0]))
    camera_bp.set_attribute("image_size_y", str(CHECK_SIZE[1]))
    spots = list(world.get_map().get_spawn_points())
    out = []
    with SynchronousMode(world, 0.05):
        for c in catalogue.classes:
            for b in c.blueprints:
                ok, message = _try(world, library, b.id, dict(b.attributes), c.shape, spots, camera_bp, timeout)
                out.append(BlueprintCheck(c.name, b.id, dict(b.attributes), ok, message))
    return out

