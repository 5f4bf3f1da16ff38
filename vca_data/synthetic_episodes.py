"""Small but meaningful synthetic episodes for tests and benchmarks, written in the real episode format
before (or without) a simulator: a straight street rendered by ray casting from a forward-driving ego
camera, with road, lane markings, sidewalks, buildings, trees, sky, a parked car and one or two
unknown objects of the town's split (fine-grained ids and blueprints from the catalogue).

Geometry: the scene is laid out in CARLA world axes (x forward, y right, z up, metres); poses follow
vca_data.episodes.POSE_CONVENTION (right-handed world, CARLA's with y negated), like the collector's; a
pinhole camera from the horizontal field of view (f = w / (2 tan(fov/2))), depth as z-depth in metres
(1000 for the sky, CARLA's far plane), `ego_pose` = world from camera with OpenCV camera axes
(x right, y down, z forward), props tagged Static (20) as CARLA tags spawned props.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vca_data.episodes import EPISODES_DIR, POSE_CONVENTION, EpisodeWriter, episode_filename
from vca_data.labels import CARLA_PALETTE, TAG, Catalogue, default_catalogue, normalize_town

CAMERA_HEIGHT = 1.6       # metres above the road
CAMERA_FORWARD = 1.5      # metres ahead of the vehicle origin
SPEED = 4.0               # ego speed, m/s
DT = 0.05                 # simulation step, s (CARLA's usual fixed_delta_seconds)
FAR = 1000.0              # depth of sky pixels, CARLA's far plane
ROAD_HALF_WIDTH = 3.5
SIDEWALK_OUTER = 6.0
CAR_ACTOR_ID = 120

# OpenCV camera axes (x right, y down, z forward) in the episodes' right-handed world (CARLA's with y
# negated: x forward, y left, z up), as POSE_CONVENTION states: a proper rotation.
WORLD_FROM_CV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

# Rough prop sizes (forward, lateral, height in metres) by catalogue shape.
SHAPE_SIZE = {
    "cone": (0.4, 0.4, 0.7), "pole": (0.25, 0.25, 1.2), "sign": (0.3, 1.2, 1.5), "bin": (0.6, 0.6, 1.0),
    "bags": (0.9, 0.6, 1.0), "barrier": (0.3, 1.6, 1.0), "trolley": (0.9, 0.6, 1.0),
}


@dataclass(frozen=True)
class Box:
    """An axis-aligned object standing on the road: forward range, lateral range, height; world metres."""
    x0: float
    x1: float
    y0: float
    y1: float
    height: float
    tag: int
    actor_id: int
    fine_id: int


def intrinsics(width: int, height: int, fov: float = 90.0) -> np.ndarray:
    """3x3 pinhole matrix of a CARLA camera from its horizontal field of view in degrees."""
    f = width / (2.0 * np.tan(np.radians(fov) / 2.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def render_frame(boxes: list[Box], cam_x: float, height: int, width: int, fov: float,
                 rng: np.random.Generator) -> dict:
    """Ray-cast one frame from a camera at world (cam_x, 0, CAMERA_HEIGHT) looking along +x; returns
    rgb, depth, semantic, instance and fine arrays."""
    k = intrinsics(width, height, fov)
    f, cx, cy = k[0, 0], k[0, 2], k[1, 2]
    a = ((np.arange(width) + 0.5 - cx) / f)[None, :].repeat(height, 0)   # lateral per unit depth
    b = ((np.arange(height) + 0.5 - cy) / f)[:, None].repeat(width, 1)   # downward per unit depth
    depth = np.full((height, width), FAR)
    semantic = np.full((height, width), TAG["Sky"], dtype=np.uint8)

    # walls of the street at |y| = SIDEWALK_OUTER: buildings and trees whose height varies along x
    with np.errstate(divide="ignore"):
        t_wall = np.where(np.abs(a) > 1e-9, SIDEWALK_OUTER / np.abs(a), np.inf)
    wall_x = cam_x + t_wall
    block = np.floor(np.where(np.isfinite(wall_x), wall_x, 0) / 12.0).astype(np.int64)
    side = (a > 0).astype(np.int64)
    tree = (block + side) % 4 == 0
    wall_top = np.where(tree, 6.0, 8.0 + 5.0 * ((block * 7 + side * 3) % 3))
    wall_z = CAMERA_HEIGHT - b * t_wall
    hit_wall = np.isfinite(t_wall) & (wall_z <= wall_top) & (wall_z >= 0)
    depth[hit_wall] = t_wall[hit_wall]
    semantic[hit_wall] = np.where(tree, TAG["Vegetation"], TAG["Building"])[hit_wall]

    # the ground plane below the horizon, where nearer than the walls
    with np.errstate(divide="ignore"):
        t_ground = np.where(b > 1e-9, CAMERA_HEIGHT / b, np.inf)
    hit_ground = np.isfinite(t_ground) & (t_ground < depth)
    finite_t = np.where(np.isfinite(t_ground), t_ground, 0.0)
    lateral = a * finite_t
    ground_x = cam_x + finite_t
    ground = np.where(np.abs(lateral) < ROAD_HALF_WIDTH, TAG["Roads"], TAG["SideWalks"])
    marking = (np.abs(lateral) < 0.08) & (np.mod(ground_x, 6.0) < 3.0)
    ground = np.where(marking, TAG["RoadLine"], ground)
    depth[hit_ground] = t_ground[hit_ground]
    semantic[hit_ground] = ground[hit_ground]

    instance = np.zeros((height, width), dtype=np.uint32)
    fine = np.zeros((height, width), dtype=np.uint8)
    for box in boxes:
        # slab test of the ray (1, a, -b) * t from (cam_x, 0, CAMERA_HEIGHT); t is the z-depth
        t_near = np.full((height, width), box.x0 - cam_x)
        t_far = np.full((height, width), box.x1 - cam_x)
        with np.errstate(divide="ignore", invalid="ignore"):
            ty0, ty1 = box.y0 / a, box.y1 / a
            tz0, tz1 = (CAMERA_HEIGHT - box.height) / b, CAMERA_HEIGHT / b
        ty_lo, ty_hi = np.minimum(ty0, ty1), np.maximum(ty0, ty1)
        tz_lo, tz_hi = np.minimum(tz0, tz1), np.maximum(tz0, tz1)
        t_near = np.maximum.reduce([t_near, ty_lo, tz_lo])
        t_far = np.minimum.reduce([t_far, ty_hi, tz_hi])
        hit = (t_near <= t_far) & (t_near > 0.1) & (t_near < depth)
        depth[hit] = t_near[hit]
        semantic[hit] = box.tag
        instance[hit] = box.actor_id
        fine[hit] = box.fine_id

    # colour: the tag's palette colour, darker with distance, with per-pixel sensor noise
    colour = CARLA_PALETTE[semantic].astype(np.float32)
    colour *= (0.55 + 0.45 * np.exp(-np.minimum(depth, 200.0) / 60.0))[..., None]
    colour += rng.normal(0.0, 6.0, colour.shape).astype(np.float32)
    rgb = np.clip(colour, 0, 255).astype(np.uint8)
    return {"rgb": rgb, "depth": depth.astype(np.float32), "semantic": semantic, "instance": instance, "fine": fine}


def world_from_camera(cam_x: float) -> np.ndarray:
    """4x4 pose of the camera at world (cam_x, 0, CAMERA_HEIGHT), OpenCV camera axes to world axes."""
    pose = np.eye(4)
    pose[:3, :3] = WORLD_FROM_CV
    pose[:3, 3] = (cam_x, 0.0, CAMERA_HEIGHT)
    return pose


def synthetic_scene(town: str, scenario: str, seed: int, num_frames: int,
                    catalogue: Catalogue | None = None) -> tuple[list[Box], list[dict], str]:
    """The objects of a synthetic episode: a parked car and one or two unknown objects of the town's
    split for the scenario, ahead of the ego; returns (boxes, unknown_objects attrs, split)."""
    catalogue = catalogue or default_catalogue()
    split = catalogue.split_of_town(town)
    classes = catalogue.unknown_classes(split, scenario)
    if not classes:
        raise ValueError(f"catalogue {catalogue.source} has no {split} unknown class for scenario {scenario!r}")
    rng = np.random.default_rng([seed, 7])
    travel = SPEED * DT * num_frames
    boxes = [Box(travel + 16.0, travel + 20.5, 1.6, 3.4, 1.5, TAG["Car"], CAR_ACTOR_ID, 0)]
    unknown_objects = []
    count = int(rng.integers(1, 3))
    for j in range(count):
        cls = classes[int(rng.integers(len(classes)))]
        blueprint = cls.blueprints[int(rng.integers(len(cls.blueprints)))]
        length, breadth, tall = SHAPE_SIZE[cls.shape]
        x = travel + 9.0 + 5.0 * j + float(rng.uniform(0.0, 2.0))
        y = -1.8 + 2.4 * j + float(rng.uniform(-0.3, 0.3))
        actor_id = 200 + 17 * j + int(rng.integers(0, 10))
        boxes.append(Box(x - length / 2, x + length / 2, y - breadth / 2, y + breadth / 2, tall,
                         TAG["Static"], actor_id, cls.fine_id))
        unknown_objects.append({
            "actor_id": actor_id, "fine_id": cls.fine_id, "class": cls.name, "blueprint": blueprint.id,
            "attributes": dict(blueprint.attributes), "transform": [x, y, 0.0, 0.0, 0.0, 0.0],
        })
    return boxes, unknown_objects, split


def make_synthetic_episode(data_dir: Path, town: str = "Town01", scenario: str = "parking", seed: int = 0,
                           num_frames: int = 8, height: int = 60, width: int = 80,
                           catalogue: Catalogue | None = None) -> Path:
    """Write DATA/episodes/<town>_<scenario>_<seed>.h5 with `num_frames` frames, update DATA/manifest.json,
    and return the episode path."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    town = normalize_town(town)
    fov = 90.0
    boxes, unknown_objects, split = synthetic_scene(town, scenario, seed, num_frames, catalogue)
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = WORLD_FROM_CV
    extrinsics[:3, 3] = (CAMERA_FORWARD, 0.0, CAMERA_HEIGHT)
    attrs = {
        "town": town, "scenario": scenario, "split": split, "seed": int(seed),
        "weather": {"preset": "ClearNoon", "cloudiness": 5.0, "precipitation": 0.0, "sun_altitude_angle": 45.0},
        "backend": "synthetic", "fov": fov, "intrinsics": intrinsics(width, height, fov).tolist(),
        "extrinsics": extrinsics.tolist(), "pose_convention": POSE_CONVENTION, "dt": DT, "frame_step": 1, "unknown_objects": unknown_objects,
    }
    path = Path(data_dir) / EPISODES_DIR / episode_filename(town, scenario, seed)
    rng = np.random.default_rng([seed, 11])
    with EpisodeWriter(path, attrs, height, width) as writer:
        for i in range(num_frames):
            cam_x = CAMERA_FORWARD + SPEED * DT * i
            frame = render_frame(boxes, cam_x, height, width, fov, rng)
            frame.update(ego_pose=world_from_camera(cam_x), timestamp=i * DT, frame=1000 + i)
            writer.append(frame)
    return path
