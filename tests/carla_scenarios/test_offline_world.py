"""The offline world against known answers: depth of a placed object, semantic and instance images of
placed actors, weather, determinism, waypoints on lane centres, spawn collisions, collision events,
the Traffic Manager and walkers."""

from __future__ import annotations

import math
import queue

import carla
import cv2
import numpy as np
import pytest

from carla_scenarios.offline import Client, command
from carla_scenarios.offline.client import synchronous_world
from carla_scenarios.offline.map import LANE_WIDTH, TOWN_NAMES
from carla_scenarios.offline.shapes import rotation_matrix
from vca_data.labels import TAG, colorize_carla, default_catalogue

PORT = 2931  # an address of our own: offline clients at one address share one world
W, H = 96, 64


@pytest.fixture
def world():
    return synchronous_world("Town01", PORT, dt=0.05)[1]


def _camera(world, kind, transform, attach_to=None, fov=90, size=(W, H)):
    bp = world.get_blueprint_library().find(f"sensor.camera.{kind}")
    bp.set_attribute("image_size_x", str(size[0]))
    bp.set_attribute("image_size_y", str(size[1]))
    bp.set_attribute("fov", str(fov))
    cam = world.spawn_actor(bp, transform, attach_to=attach_to)
    q: queue.Queue = queue.Queue()
    cam.listen(q.put)
    return cam, q


def _bgra(image):
    return np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4)


def _depth(image):
    a = _bgra(image).astype(np.float64)
    return 1000.0 * (a[..., 2] + a[..., 1] * 256 + a[..., 0] * 256**2) / (256**3 - 1)


def _instance(image):
    a = _bgra(image).astype(np.int64)
    return a[..., 2], a[..., 1] + 256 * a[..., 0]


def _lane_transform(world, distance_ahead=0.0):
    """A transform on the first spawn point's lane centre, `distance_ahead` metres along the lane."""
    wp = world.get_map().get_waypoint(world.get_map().get_spawn_points()[0].location)
    if distance_ahead:
        wp = wp.next(distance_ahead)[0]
    return wp.transform


def test_rotation_matrix_is_carlas():
    for pitch, yaw, roll in [(0, 90, 0), (10, -35, 5), (-20, 170, -30)]:
        t = carla.Transform(carla.Location(), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
        assert np.allclose(rotation_matrix(pitch, yaw, roll), np.array(t.get_matrix())[:3, :3], atol=1e-6)


def test_depth_decodes_to_true_distance(world):
    lane = _lane_transform(world, 10.0)
    container = world.spawn_actor(world.get_blueprint_library().find("static.prop.container"), lane)
    camera_tf = carla.Transform(lane.location - lane.get_forward_vector() * 12.0 + carla.Location(z=0.7), lane.rotation)
    _, q = _camera(world, "depth", camera_tf)
    frame = world.tick()
    image = q.get_nowait()
    assert image.frame == frame and (image.width, image.height) == (W, H)
    depth = _depth(image)
    # container front face: 1 m (its half length) before its centre, which is 12 m ahead of the camera
    front = 12.0 - container.bounding_box.extent.x
    assert depth[H // 2, W // 2] == pytest.approx(front, abs=0.03)
    # the road seen in the bottom row lies where a ray through that row meets the ground plane
    f = W / (2 * math.tan(math.radians(45)))
    v = H - 0.5
    expected = camera_tf.location.z * f / (v - H / 2)
    assert depth[-1, 2] == pytest.approx(expected, rel=0.01)
    assert depth[0, W // 2] == pytest.approx(1000.0, abs=0.01)  # sky


def test_semantic_and_instance_images_agree_with_actors(world):
    lib = world.get_blueprint_library()
    lane = _lane_transform(world, 12.0)
    car = world.spawn_actor(lib.find("vehicle.audi.a2"), lane)
    beside = carla.Transform(lane.location + lane.get_right_vector() * -LANE_WIDTH, lane.rotation)
    cone = world.spawn_actor(lib.find("static.prop.constructioncone"), beside)
    walker_spot = lane.location + lane.get_forward_vector() * 8.0 + lane.get_right_vector() * LANE_WIDTH
    walker = world.spawn_actor(lib.find("walker.pedestrian.0003"), carla.Transform(walker_spot, lane.rotation))
    camera_tf = carla.Transform(lane.location - lane.get_forward_vector() * 10.0 + carla.Location(z=1.5), lane.rotation)
    _, qs = _camera(world, "semantic_segmentation", camera_tf)
    _, qi = _camera(world, "instance_segmentation", camera_tf)
    frame = world.tick()
    sem_image, inst_image = qs.get_nowait(), qi.get_nowait()
    assert sem_image.frame == inst_image.frame == frame
    semantic = _bgra(sem_image)[..., 2]
    assert not _bgra(sem_image)[..., :2].any()  # G and B are zero in CARLA's semantic encoding
    tag, ids = _instance(inst_image)
    assert (tag == semantic).all()
    ours = np.isin(ids, [car.id, cone.id, walker.id])
    assert {car.id, cone.id, walker.id} <= set(np.unique(ids))
    assert set(np.unique(semantic[ids == car.id])) == {TAG["Car"]}
    assert set(np.unique(semantic[ids == walker.id])) == {TAG["Pedestrian"]}
    assert set(np.unique(semantic[ids == cone.id])) == set(cone.semantic_tags) == {TAG["Static"]}
    assert car.semantic_tags == [TAG["Car"]]
    for scenery in ("Roads", "RoadLine", "Sky", "Building"):
        assert (semantic[~ours] == TAG[scenery]).any(), scenery
    # buildings carry engine-internal non-zero ids, as in 0.9.16 (the ground and the sky carry 0 here)
    assert (ids[semantic == TAG["Building"]] > 0).all() and len(np.unique(ids[semantic == TAG["Building"]])) > 1
    # the car is in the middle of the image, the cone on the left, the walker on the right
    cols = {a.id: np.nonzero(ids == a.id)[1].mean() for a in (car, cone, walker)}
    assert cols[cone.id] < cols[car.id] < cols[walker.id]


def test_image_converters_and_save_to_disk(world, tmp_path):
    lane = _lane_transform(world)
    camera_tf = carla.Transform(lane.location + carla.Location(z=2.0), lane.rotation)
    _, qd = _camera(world, "depth", camera_tf)
    _, qs = _camera(world, "semantic_segmentation", camera_tf)
    world.tick()
    depth_image, sem_image = qd.get_nowait(), qs.get_nowait()
    metres = _depth(depth_image)
    tags = _bgra(sem_image)[..., 2].copy()
    depth_image.save_to_disk(str(tmp_path / "depth.png"), carla.ColorConverter.Depth)
    saved = cv2.imread(str(tmp_path / "depth.png"), cv2.IMREAD_UNCHANGED)
    assert saved.shape == (H, W, 4)
    assert np.abs(saved[..., 0].astype(float) - np.round(metres / 1000 * 255)).max() <= 1
    sem_image.convert(carla.ColorConverter.CityScapesPalette)
    assert (_bgra(sem_image)[..., 2::-1] == colorize_carla(tags)).all()
    depth_image.convert(carla.ColorConverter.LogarithmicDepth)
    log_grey = _bgra(depth_image)[..., 0].astype(float)
    expected = np.clip(1 + np.log(metres / 1000) / 5.70378, 0, 1) * 255
    assert np.abs(log_grey - expected).max() <= 1.0


def test_attached_camera_follows_its_parent(world):
    lib = world.get_blueprint_library()
    spot = world.get_map().get_spawn_points()[0]
    ego = world.spawn_actor(lib.find("vehicle.tesla.model3"), spot)
    above = carla.Transform(carla.Location(x=0.5, z=12.0), carla.Rotation(pitch=-90))
    cam, qd = _camera(world, "depth", above, attach_to=ego)
    _, qi = _camera(world, "instance_segmentation", above, attach_to=ego)
    roof = ego.bounding_box.location.z + ego.bounding_box.extent.z
    for yaw, forward in ((0.0, 0.0), (90.0, 5.0)):
        tf = ego.get_transform()
        ego.set_transform(carla.Transform(tf.location + tf.get_forward_vector() * forward, carla.Rotation(yaw=yaw)))
        world.tick()
        depth, (tag, ids) = _depth(qd.get_nowait()), _instance(qi.get_nowait())
        assert ids[H // 2, W // 2] == ego.id and tag[H // 2, W // 2] == TAG["Car"]
        assert depth[H // 2, W // 2] == pytest.approx(12.0 - roof, abs=0.05)
        ego_at = ego.get_location()
        assert cam.get_transform().location.distance(ego_at + ego.get_transform().get_forward_vector() * 0.5
                                                     + carla.Location(z=12.0)) < 1e-3
        # the car lies along the image's vertical axis (its forward is the image's up): rows span more
        rows, cols = np.nonzero(ids == ego.id)
        assert np.ptp(rows) > np.ptp(cols)


def test_a_rig_of_four_cameras_renders_once_per_tick(world, monkeypatch):
    import carla_scenarios.offline.render as render

    calls = []
    real = render.pybullet.getCameraImage
    monkeypatch.setattr(render.pybullet, "getCameraImage", lambda *a, **k: calls.append(1) or real(*a, **k))
    ego = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"), world.get_map().get_spawn_points()[0])
    mount = carla.Transform(carla.Location(x=1.5, z=2.4))
    queues = [_camera(world, kind, mount, attach_to=ego)[1]
              for kind in ("rgb", "depth", "semantic_segmentation", "instance_segmentation")]
    for _ in range(3):
        frame = world.tick()
        assert all(q.get_nowait().frame == frame for q in queues)
    assert len(calls) == 3
    _camera(world, "rgb", mount, attach_to=ego, size=(W + 2, H))  # another size is another render
    world.tick()
    assert len(calls) == 5


def test_weather_changes_the_image(world):
    lane = _lane_transform(world)
    camera_tf = carla.Transform(lane.location + carla.Location(z=2.0), lane.rotation)
    _, q = _camera(world, "rgb", camera_tf)
    _, qs = _camera(world, "semantic_segmentation", camera_tf)
    images = {}
    for name in ("ClearNoon", "HardRainNoon", "ClearSunset", "ClearNight", "CloudyNoon"):
        world.set_weather(getattr(carla.WeatherParameters, name))
        world.tick()
        images[name] = _bgra(q.get_nowait())[..., :3].astype(np.float64)
        sky = _bgra(qs.get_nowait())[..., 2] == TAG["Sky"]
    noon = images["ClearNoon"]
    for name, image in images.items():
        if name != "ClearNoon":
            assert np.abs(image - noon).mean() > 5.0, name
    assert images["ClearNight"].mean() < 0.5 * noon.mean()
    # sunset sky is redder than noon's, which is blue
    assert sky.sum() > 100
    assert images["ClearSunset"][sky][:, 2].mean() > images["ClearSunset"][sky][:, 0].mean() + 20  # BGR
    assert noon[sky][:, 0].mean() > noon[sky][:, 2].mean() + 20
    fog = carla.WeatherParameters.ClearNoon
    fog.fog_density = 80.0
    world.set_weather(fog)
    world.tick()
    foggy = _bgra(q.get_nowait())[..., :3].astype(np.float64)
    assert foggy.std() < noon.std()  # fog washes out contrast
    assert world.get_weather().fog_density == pytest.approx(80.0)


def _run_scene(seed: int, ticks: int = 6):
    client, world, _ = synchronous_world("Town02", PORT, dt=0.1, seed=seed)
    lib = world.get_blueprint_library()
    spawns = world.get_map().get_spawn_points()
    ego = world.spawn_actor(lib.find("vehicle.tesla.model3"), spawns[0])
    batch = [command.SpawnActor(lib.find("vehicle.lincoln.mkz_2020"), spawns[i]).then(
        command.SetAutopilot(command.FutureActor, True, 8000)) for i in (3, 9, 15)]
    client.apply_batch_sync(batch, True)
    for _ in range(3):
        walker = world.spawn_actor(lib.find("walker.pedestrian.0001"), carla.Transform(world.get_random_location_from_navigation()))
        controller = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
        controller.start()
        controller.go_to_location(world.get_random_location_from_navigation())
    _, q = _camera(world, "rgb", carla.Transform(carla.Location(x=1.5, z=2.4)), attach_to=ego)
    _, qi = _camera(world, "instance_segmentation", carla.Transform(carla.Location(x=1.5, z=2.4)), attach_to=ego)
    frames = []
    for _ in range(ticks):
        ego.apply_control(carla.VehicleControl(throttle=0.6, steer=0.05))
        world.tick()
        frames.append(q.get_nowait().raw_data + qi.get_nowait().raw_data)
    poses = sorted((a.id, round(a.get_location().x, 6), round(a.get_location().y, 6)) for a in world.get_actors())
    return frames, poses


def test_same_seed_gives_the_same_frames():
    frames_a, poses_a = _run_scene(seed=3)
    frames_b, poses_b = _run_scene(seed=3)
    assert poses_a == poses_b
    assert all(a == b for a, b in zip(frames_a, frames_b, strict=True))
    assert frames_a[0] != frames_a[-1]  # the ego moved


def test_waypoints_follow_lane_centres():
    client = Client("localhost", PORT)
    m = client.load_world("Town03").get_map()
    waypoints = m.generate_waypoints(4.0)
    assert len(waypoints) > 200
    for wp in waypoints[::7]:
        loc = wp.transform.location
        assert wp.lane_width == pytest.approx(LANE_WIDTH)
        assert wp.lane_type == carla.LaneType.Driving
        if wp.is_junction or any(w.is_junction for w in wp.next(0.5) + wp.previous(0.5)):
            continue  # connecting lanes of a junction overlap each other and the lane ends
        # the waypoint is the centre of the lane the map projects its location to
        again = m.get_waypoint(loc)
        assert (again.road_id, again.lane_id) == (wp.road_id, wp.lane_id)
        assert again.transform.location.distance(loc) < 1e-3
        # the neighbour lane in the same direction lies one lane width to the side
        side = wp.get_right_lane() if abs(wp.lane_id) == 1 else wp.get_left_lane()
        if side is not None and side.lane_type == carla.LaneType.Driving:
            assert side.transform.location.distance(loc) == pytest.approx(LANE_WIDTH, abs=1e-3)
    # following next() for 600 m never dead-ends, passes junctions and keeps 2 m steps
    wp = m.get_waypoint(m.get_spawn_points()[0].location)
    junctions = 0
    for i in range(300):
        nxt = wp.next(2.0)
        assert nxt, f"dead end after {2 * i} m at {wp.transform.location}"
        step = nxt[0].transform.location.distance(wp.transform.location)
        assert 0.5 < step <= 2.01  # shorter only where a lane hands over to the next road
        junctions += nxt[0].is_junction and not wp.is_junction
        wp = nxt[i % len(nxt)]
    assert junctions >= 3
    assert m.get_waypoint(carla.Location(0, 0, 0)).get_junction() is not None  # a grid node is a junction


def test_spawning_on_an_occupied_spot_fails(world):
    lib = world.get_blueprint_library()
    spot = world.get_map().get_spawn_points()[0]
    first = world.try_spawn_actor(lib.find("vehicle.tesla.model3"), spot)
    assert first is not None and first.is_alive
    assert world.try_spawn_actor(lib.find("vehicle.audi.a2"), spot) is None
    with pytest.raises(RuntimeError, match="collision"):
        world.spawn_actor(lib.find("static.prop.streetbarrier"), spot)
    ahead = carla.Transform(spot.location + spot.get_forward_vector() * 6.0, spot.rotation)
    assert world.try_spawn_actor(lib.find("vehicle.audi.a2"), ahead) is not None
    first.destroy()
    assert not first.is_alive
    assert world.try_spawn_actor(lib.find("vehicle.audi.a2"), spot) is not None


def test_collision_sensor_fires_and_the_car_stops(world):
    lib = world.get_blueprint_library()
    lane = _lane_transform(world)
    ego = world.spawn_actor(lib.find("vehicle.tesla.model3"), lane)
    barrier = world.spawn_actor(lib.find("static.prop.streetbarrier"),
                                carla.Transform(lane.location + lane.get_forward_vector() * 7.0, lane.rotation))
    sensor = world.spawn_actor(lib.find("sensor.other.collision"), carla.Transform(), attach_to=ego)
    events = []
    sensor.listen(events.append)
    for _ in range(60):
        ego.apply_control(carla.VehicleControl(throttle=1.0))
        world.tick()
    assert len(events) == 1  # one event when the contact begins
    event = events[0]
    assert event.actor.id == ego.id and event.other_actor.id == barrier.id
    assert event.normal_impulse.length() > 0
    gap = barrier.get_location().distance(ego.get_location())
    assert gap < 7.0 and gap > ego.bounding_box.extent.x  # it advanced, but not through the barrier
    assert ego.get_velocity().length() == pytest.approx(0.0, abs=1e-6)


def test_obstacle_sensor_reports_the_nearest_actor_ahead(world):
    lib = world.get_blueprint_library()
    lane = _lane_transform(world)
    ego = world.spawn_actor(lib.find("vehicle.tesla.model3"), lane)
    ahead = lane.get_forward_vector()
    near = world.spawn_actor(lib.find("static.prop.bin"), carla.Transform(lane.location + ahead * 9.0, lane.rotation))
    world.spawn_actor(lib.find("static.prop.bin"), carla.Transform(lane.location + ahead * 14.0, lane.rotation))
    world.spawn_actor(lib.find("static.prop.bin"), carla.Transform(lane.location + ahead * 6.0 + lane.get_right_vector() * 3.0
                                                                   + carla.Location(z=0.2), lane.rotation))  # beside the corridor, on the sidewalk
    bp = lib.find("sensor.other.obstacle")
    bp.set_attribute("distance", "20")
    sensor = world.spawn_actor(bp, carla.Transform(carla.Location(x=ego.bounding_box.extent.x)), attach_to=ego)
    events = []
    sensor.listen(events.append)
    world.tick()
    assert len(events) == 1 and events[0].other_actor.id == near.id and events[0].actor.id == ego.id
    # from the front bumper to the bin's near face
    expected = 9.0 - ego.bounding_box.extent.x - near.bounding_box.extent.x
    assert events[0].distance == pytest.approx(expected, abs=0.05)


def test_traffic_manager_drives_lanes_and_stops_behind_props():
    client = Client("localhost", PORT)
    world = client.load_world("Town01")
    tm = client.get_trafficmanager(8000)
    tm.set_random_device_seed(1)
    tm.global_percentage_speed_difference(0.0)
    lib = world.get_blueprint_library()
    spawns = world.get_map().get_spawn_points()
    batch = [command.SpawnActor(lib.find("vehicle.audi.a2"), spawns[i]).then(command.SetAutopilot(command.FutureActor, True, 8000))
             for i in range(0, 40, 8)]
    responses = client.apply_batch_sync(batch, True)
    assert not any(r.has_error() for r in responses)
    npcs = [world.get_actor(r.actor_id) for r in responses]
    # block the lane of the first one 25 m ahead
    blocked = npcs[0]
    wp = world.get_map().get_waypoint(blocked.get_location()).next(25.0)[0]
    cones = [world.spawn_actor(lib.find("static.prop.trafficcone01"), wp.transform)]
    start = {v.id: v.get_location() for v in npcs}
    for _ in range(120):
        world.tick()
        for v in npcs:
            lane = world.get_map().get_waypoint(v.get_location())
            assert lane.transform.location.distance(v.get_location()) < 0.5, "off the lane centre"
    moved = [v.get_location().distance(start[v.id]) for v in npcs[1:]]
    assert min(moved) > 20.0  # 6 s at up to 30 km/h
    assert blocked.get_velocity().length() < 0.1
    gap = blocked.get_location().distance(cones[0].get_location())
    assert blocked.bounding_box.extent.x < gap < 8.0


def test_walkers_walk_the_sidewalks_to_their_destination(world):
    lib = world.get_blueprint_library()
    world.set_pedestrians_seed(5)
    start = world.get_random_location_from_navigation()
    goal = world.get_random_location_from_navigation()
    walker = world.spawn_actor(lib.find("walker.pedestrian.0002"), carla.Transform(start))
    assert walker.get_location().z == pytest.approx(0.15 + walker.bounding_box.extent.z)  # feet on the sidewalk
    controller = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
    controller.start()
    controller.set_max_speed(3.0)
    controller.go_to_location(goal)
    town = world._town
    route = town.walk_route(np.array([start.x, start.y]), np.array([goal.x, goal.y]))
    length = sum(math.dist(a, b) for a, b in zip(route[:-1], route[1:], strict=True))
    on_sidewalk = []
    for _ in range(int(length / (3.0 * 0.05) * 1.2) + 20):
        world.tick()
        here = walker.get_location()
        on_sidewalk.append(town.on_sidewalk(np.array([[here.x, here.y]]))[0])
        if here.distance(carla.Location(goal.x, goal.y, here.z)) < 0.5:
            break
    assert here.distance(carla.Location(goal.x, goal.y, here.z)) < 0.5
    assert np.mean(on_sidewalk) > 0.7  # off the sidewalk only while crossing roads and corners


def test_maps_and_blueprints():
    client = Client("localhost", PORT)
    maps = client.get_available_maps()
    assert maps[:len(TOWN_NAMES)] == [f"/Game/Carla/Maps/{t}" for t in TOWN_NAMES]
    assert "/Game/Carla/Maps/Town10HD_Opt" in maps  # the layered maps of 0.9.16
    assert client.load_world("Town01_Opt").get_map().name == "Carla/Maps/Town01_Opt"
    assert client.load_world("/Game/Carla/Maps/Town07").get_map().name == "Carla/Maps/Town07"
    with pytest.raises(ValueError, match="Town04"):
        client.load_world("Town04")
    world = client.load_world("Town10")
    assert world.get_map().name == "Carla/Maps/Town10HD"
    lib = world.get_blueprint_library()
    assert len(lib.filter("vehicle.*")) >= 4 and len(lib.filter("walker.pedestrian.*")) >= 4
    assert {bp.id for bp in lib.filter("truck")} == {"vehicle.carlamotors.carlacola"}
    model3 = lib.find("vehicle.tesla.model3")
    model3.set_attribute("color", "10,20,30")
    assert model3.get_attribute("color").as_str() == "10,20,30"
    assert lib.find("vehicle.tesla.model3").get_attribute("color").as_str() != "10,20,30"  # the library keeps its own
    assert lib.find("sensor.camera.rgb").get_attribute("image_size_x").as_int() == 800
    with pytest.raises(IndexError):
        lib.find("vehicle.does.not_exist")
    # every blueprint of the unknown-object catalogue spawns, on its own spot, as a Static/Dynamic prop
    spots = world.get_map().get_spawn_points()
    k = 0
    for cls in default_catalogue().classes:
        for entry in cls.blueprints:
            bp = lib.find(entry.id)
            for key, value in entry.attributes.items():
                bp.set_attribute(key, value)
            actor = world.spawn_actor(bp, spots[k])
            k += 1
            assert actor.type_id == entry.id
            assert actor.semantic_tags[0] in (TAG["Static"], TAG["Dynamic"])
            assert actor.bounding_box.extent.z > 0.2


def test_towns_look_different():
    client = Client("localhost", PORT)
    looks = {}
    for town in ("Town01", "Town02", "Town07", "Town10HD"):
        world = client.load_world(town)
        spot = world.get_map().get_spawn_points()[0]
        _, q = _camera(world, "rgb", carla.Transform(spot.location + carla.Location(z=2.0), spot.rotation))
        world.tick()
        looks[town] = _bgra(q.get_nowait())[..., :3].astype(np.float64)
    names = list(looks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(looks[a] - looks[b]).mean() > 8.0, (a, b)


def test_occlusion_culling_never_changes_the_image():
    """Buildings hidden before PyBullet draws are exactly those that would not show."""
    from carla_scenarios.offline import render

    client = Client("localhost", PORT)
    world = client.load_world("Town10HD")
    renderer = world._renderer
    occlusion = renderer.occlusion
    weather = carla.WeatherParameters.ClearNoon
    spawns = world.get_map().get_spawn_points()
    hidden = 0
    for k, yaw in zip(range(0, len(spawns), len(spawns) // 4), (0, 35, -70, 180), strict=False):
        camera = render.camera_transform(spawns[k], carla.Transform(carla.Location(x=1.5, z=2.4), carla.Rotation(yaw=yaw)))
        culled = renderer.render(camera, W, H, 90, weather, 0)
        hidden += int((~occlusion.shown).sum())
        for i, (body, link) in enumerate(occlusion.links):  # show everything and draw again, unculled
            render.pybullet.changeVisualShape(body, link, rgbaColor=occlusion.rgba[i], physicsClientId=renderer.client)
        occlusion.shown[:] = True
        full = occlusion.links
        occlusion.links = []
        unculled = renderer.render(camera, W, H, 90, weather, 0)
        occlusion.links = full
        assert (culled["id"] == unculled["id"]).all() and (culled["tag"] == unculled["tag"]).all()
        assert np.abs(culled["depth"] - unculled["depth"]).max() < 1e-3
    assert hidden > 0


def test_hybrid_rendering_agrees_with_pybullet():
    """The boxes that are large on screen, drawn by the renderer's own rasteriser, give the images
    PyBullet gives when it draws every box: tags and ids on all but edge pixels, the same depth."""
    from carla_scenarios.offline import render

    client = Client("localhost", PORT)
    world = client.load_world("Town10HD")
    renderer = world._renderer
    weather = carla.WeatherParameters.ClearNoon
    spawns = world.get_map().get_spawn_points()
    truck = world.spawn_actor(world.get_blueprint_library().find("vehicle.carlamotors.carlacola"), spawns[1])
    world.tick()
    # beside the truck, its faces straddling the camera plane; behind it; then along the streets
    beside = carla.Transform(truck.get_transform().transform(carla.Location(x=-1.0, y=-1.6, z=1.2)), truck.get_transform().rotation)
    cameras = [beside, render.camera_transform(spawns[1], carla.Transform(carla.Location(x=-12, z=2.4)))]
    cameras += [render.camera_transform(spawns[k], carla.Transform(carla.Location(x=1.5, z=2.4), carla.Rotation(yaw=yaw)))
                for k, yaw in zip(range(0, len(spawns), len(spawns) // 4), (0, 35, -70, 180), strict=False)]
    drawn = []
    real_draw = renderer.raster.draw
    renderer.raster.draw = lambda corners, *a, **k: drawn.append(len(corners)) or real_draw(corners, *a, **k)
    w, h = 320, 180
    ground = list(render.GROUND_TAGS) + [TAG["Sky"]]
    for camera in cameras:
        renderer.hybrid_area = render.HYBRID_AREA
        hybrid = renderer.render(camera, w, h, 90, weather, 0)
        renderer.hybrid_area = None
        plain = renderer.render(camera, w, h, 90, weather, 0)
        assert (hybrid["tag"] == plain["tag"]).mean() >= 0.99
        assert (hybrid["id"] == plain["id"]).mean() >= 0.99
        box = (hybrid["id"] == plain["id"]) & ~np.isin(plain["tag"], ground)
        assert box.mean() > 0.05
        # the same to 0.1% but at edges, where two faces (or two parts of one actor) share a pixel
        error = np.abs(hybrid["depth"] - plain["depth"])[box] / plain["depth"][box]
        assert (error < 1e-3).mean() >= 0.99 and (error < 1e-2).mean() >= 0.999
        assert np.abs(hybrid["rgb"].astype(int) - plain["rgb"].astype(int))[box].mean() < 20
    assert len(drawn) == len(cameras) and min(drawn) > 0  # every view had large boxes to draw
    renderer.raster.draw = real_draw
    renderer.hybrid_area = render.HYBRID_AREA
