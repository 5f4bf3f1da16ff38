"""Behaviours of a real CARLA 0.9.16 server that the collector must handle (issue 21), each imitated by the
offline world or by a fake client here: full weather records, a None walker destination, the time-step
limit, the loaded map's name, instance ids of scenery, prop footprints, leftovers of a killed run,
batch destruction on a dead server, `--backend auto` against a silent port, spawn heights, empty props,
traffic lights and the authors' layouts."""

from __future__ import annotations

import math
import queue

import carla
import numpy as np
import pytest

from carla_scenarios.offline.client import synchronous_world
from carla_scenarios.weather import WEATHER_FIELDS, random_weather

PORT = 2947  # an address of our own: offline clients at one address share one world
W, H = 96, 64


def _bgra(image):
    return np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4)


# -- 4: weather ---------------------------------------------------------------------------------

def test_weather_keeps_the_presets_fog_falloff_and_scattering_and_records_all_14_fields():
    for seed in range(20):
        weather, record = random_weather(np.random.default_rng(seed))
        preset = getattr(carla.WeatherParameters, record["preset"])
        assert set(record) == {"preset", *WEATHER_FIELDS} and len(WEATHER_FIELDS) == 14
        for f in ("fog_falloff", "scattering_intensity", "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm"):
            assert getattr(weather, f) == pytest.approx(getattr(preset, f)), f
            assert record[f] == pytest.approx(getattr(preset, f), abs=1e-4), f
        assert weather.fog_falloff > 0


def test_offline_world_fogs_the_sky_when_fog_falloff_is_zero():
    """A server fogs the whole scene with fog_falloff 0 (no thinning with height); so does the offline world."""
    _, world, _ = synchronous_world("Town01", PORT, dt=0.05)
    wp = world.get_map().get_waypoint(world.get_map().get_spawn_points()[0].location)
    bp = world.get_blueprint_library().find("sensor.camera.rgb")
    bp.set_attribute("image_size_x", str(W))
    bp.set_attribute("image_size_y", str(H))
    cam = world.spawn_actor(bp, carla.Transform(wp.transform.location + carla.Location(z=2.0),
                                                carla.Rotation(pitch=20.0, yaw=wp.transform.rotation.yaw)))
    q: queue.Queue = queue.Queue()
    cam.listen(q.put)
    fields = {f: getattr(carla.WeatherParameters.ClearNoon, f) for f in WEATHER_FIELDS}
    images = []
    for falloff in (0.1, 0.0):
        world.set_weather(carla.WeatherParameters(**(fields | {"fog_density": 5.0, "fog_falloff": falloff})))
        world.tick()
        images.append(_bgra(q.get_nowait())[..., :3].astype(np.float64))
    cam.destroy()
    thin, thick = images
    # the sky turns to the fog's grey: its blue lead over red shrinks
    assert (thin[..., 0] - thin[..., 2]).mean() > 1.3 * (thick[..., 0] - thick[..., 2]).mean()


# -- 10: a None walker destination ----------------------------------------------------------------

class _NavigationFails:
    """A world whose navigation query fails (returns None) every other call, as a server's may."""

    def __init__(self, world):
        self._world = world
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._world, name)

    def get_random_location_from_navigation(self):
        self.calls += 1
        return None if self.calls % 2 else self._world.get_random_location_from_navigation()


def test_walkers_get_a_destination_when_the_navigation_query_returns_none():
    from carla_scenarios.collector import spawn_walkers
    from carla_scenarios.offline.actors import WalkerAIController
    from carla_scenarios.rig import ActorRegistry

    client, world, _ = synchronous_world("Town01", PORT, dt=0.05)
    with ActorRegistry(world) as registry:
        walkers = spawn_walkers(client, _NavigationFails(world), registry, np.random.default_rng(0), 6, [])
        controllers = [a for a in registry.actors if isinstance(a, WalkerAIController)]
        assert walkers and len(controllers) == len(walkers)
        assert all(c._route for c in controllers)
    # the offline controller rejects None as Boost does
    with pytest.raises(TypeError):
        WalkerAIController.go_to_location(controllers[0], None)


# -- 11: time steps over the sub-stepping limit -----------------------------------------------------

def test_time_steps_over_the_substepping_limit_are_rejected():
    from carla_scenarios.collector import CollectOptions
    from carla_scenarios.rig import SynchronousMode

    _, world, _ = synchronous_world("Town01", PORT, dt=0.05)
    with pytest.raises(ValueError, match=r"0\.1"):
        SynchronousMode(world, 0.2)
    with pytest.raises(ValueError, match="--dt"):
        CollectOptions(dt=0.15).validate()
    settings = world.get_settings()
    settings.max_substeps = 5  # 5 x 0.01 s: a server's physics cannot step 0.08 s
    world.apply_settings(settings)
    with pytest.raises(ValueError, match="max_substeps"):
        SynchronousMode(world, 0.08).__enter__()
    assert world.get_settings().max_substeps == 5
    settings.max_substeps = 10
    world.apply_settings(settings)
    with SynchronousMode(world, 0.08):
        assert world.get_settings().fixed_delta_seconds == pytest.approx(0.08)


# -- 13: the map actually loaded ----------------------------------------------------------------

def test_episode_records_the_map_the_server_loaded(tmp_path):
    """A fresh 0.9.16 server shows Town10HD_Opt; an episode in Town10HD reuses it and says so."""
    from carla_scenarios.collector import CollectOptions, EpisodeSpec, collect_episode
    from carla_scenarios.offline import Client
    from vca_data.episodes import EpisodeReader

    client = Client("localhost", PORT + 1)
    assert client.get_world().get_map().name == "Carla/Maps/Town10HD_Opt"
    assert "/Game/Carla/Maps/Town10HD_Opt" in client.get_available_maps()
    options = CollectOptions(frames=1, frame_step=1, width=32, height=24, vehicles=0, walkers=0)
    result = collect_episode(client, EpisodeSpec("Town10HD", "parking", 0, "test"), options, tmp_path, "offline")
    with EpisodeReader(result.path) as ep:
        assert ep.attrs["map"] == "Carla/Maps/Town10HD_Opt" and ep.attrs["town"] == "Town10HD"


# -- 1: instance ids of scenery ---------------------------------------------------------------------

def test_scenery_with_a_props_instance_id_is_not_counted_as_the_prop():
    """0.9.16 gives scenery engine-internal 16-bit ids (the offline world: random non-zero ones); a
    building whose id equals a spawned prop's must not count as the prop: the pixel's semantic tag must
    be one of the prop's semantic tags too."""
    from carla_scenarios import decode
    from vca_data.labels import TAG

    _, world, _ = synchronous_world("Town01", PORT, dt=0.05)
    wp = world.get_map().get_waypoint(world.get_map().get_spawn_points()[0].location).next(10.0)[0]
    cone = world.spawn_actor(world.get_blueprint_library().find("static.prop.constructioncone"), wp.transform)
    lib = world.get_blueprint_library()
    cams, queues = [], []
    for kind in ("semantic_segmentation", "instance_segmentation"):
        bp = lib.find(f"sensor.camera.{kind}")
        bp.set_attribute("image_size_x", str(W))
        bp.set_attribute("image_size_y", str(H))
        back = wp.transform.location - wp.transform.get_forward_vector() * 6.0 + carla.Location(z=1.5)
        cams.append(world.spawn_actor(bp, carla.Transform(back, wp.transform.rotation)))
        queues.append(queue.Queue())
        cams[-1].listen(queues[-1].put)
    world.tick()
    semantic = decode.decode_semantic(queues[0].get_nowait())
    instance = decode.decode_instance_ids(queues[1].get_nowait())
    for a in cams + [cone]:
        a.destroy()
    building = instance[semantic == TAG["Building"]]
    assert len(building) and (building > 0).all()
    # a prop whose id equals the building's engine id (ids are 16-bit: this happens on a server)
    clash = int(building[0])
    objects = {cone.id: (3, cone.semantic_tags), clash: (5, [TAG["Static"]])}
    lut = decode.fine_lookup({k: f for k, (f, _) in objects.items()})
    tag_lut = decode.tag_lookup({k: t for k, (_, t) in objects.items()})
    fine = decode.fine_map(instance, lut, semantic, tag_lut)
    assert (fine[semantic == TAG["Building"]] == 0).all()
    assert (fine == 3).sum() > 5 and set(np.unique(semantic[fine == 3])) == {TAG["Static"]}
    assert (decode.fine_map(instance, lut) == 5).sum() > 0  # by the id alone, the building would count


# -- 2: prop footprints -------------------------------------------------------------------------------

def _long_axis_deg(corners: np.ndarray) -> float:
    edges = np.roll(corners, -1, axis=0) - corners
    longest = edges[int(np.argmax(np.hypot(edges[:, 0], edges[:, 1])))]
    return float(np.degrees(np.arctan2(longest[1], longest[0])) % 180.0)


def test_prop_footprint_turns_by_the_spawn_yaw_once(caplog):
    """A server's static prop reports its box already turned by its yaw (carla #8663, imitated by the
    offline world): get_world_vertices turns it twice, the collector's footprint once."""
    from types import SimpleNamespace

    from carla_scenarios.agent import obstacles_from_actors
    from carla_scenarios.footprints import SHAPE_EXTENTS, prop_extent, scenario_footprints
    from vca_data.labels import UnknownClass

    _, world, _ = synchronous_world("Town01", PORT, dt=0.05)
    wp = world.get_map().get_waypoint(world.get_map().get_spawn_points()[0].location).next(10.0)[0]
    tf = carla.Transform(wp.transform.location, carla.Rotation(yaw=wp.transform.rotation.yaw + 45.0))
    barrier = world.spawn_actor(world.get_blueprint_library().find("static.prop.streetbarrier"), tf)
    try:
        assert barrier.bounding_box.rotation.yaw == pytest.approx(tf.rotation.yaw)
        ext = barrier.bounding_box.extent
        assert max(ext.x, ext.y) > 2 * min(ext.x, ext.y)  # an elongated prop
        long_axis = (tf.rotation.yaw + (0.0 if ext.x > ext.y else 90.0)) % 180.0
        record = {"actor_id": barrier.id, "class": "street barrier", "transform": [0, 0, 0, 0, tf.rotation.yaw, 0]}
        cls = UnknownClass("street barrier", 7, "barrier", "train", "barrier", ())
        fps = scenario_footprints([barrier], [record], [cls])
        (ob,) = [o for o in obstacles_from_actors([barrier], -1, fps)]
        assert _long_axis_deg(ob.corners_xy) == pytest.approx(long_axis, abs=0.5)
        (twice,) = obstacles_from_actors([barrier], -1)
        assert abs(_long_axis_deg(twice.corners_xy) - long_axis) > 30  # the double turn
        # the footprint covers the box the world collides with: a second prop in its middle cannot spawn
        assert world.try_spawn_actor(world.get_blueprint_library().find("static.prop.constructioncone"), tf) is None
    finally:
        barrier.destroy()
    # zero, infinite or NaN extents: the catalogue shape's size, with a warning
    for bad in (carla.Vector3D(0, 0, 0), carla.Vector3D(float("inf"), 1, 1), carla.Vector3D(float("nan"), 1, 1)):
        fake = SimpleNamespace(id=9, type_id="static.prop.mesh", bounding_box=carla.BoundingBox(carla.Location(), bad))
        with caplog.at_level("WARNING"):
            extent, measured = prop_extent(fake, "pole")
        assert extent == SHAPE_EXTENTS["pole"] and not measured
        assert "static.prop.mesh" in caplog.text


# -- 5: cleanup after a dead server -----------------------------------------------------------------

def test_dead_server_with_50_actors_cleans_up_within_two_client_timeouts(faulty_client, faulty_actor, offline_client):
    """Every call to a lost server waits the client timeout (the fault imitates it): destroying 50 actors
    one call each took 50 timeouts; one batch, and nothing more after the first time-out."""
    import time

    from carla_scenarios.rig import ActorRegistry, SynchronousMode

    client, faults = faulty_client("disconnect", at_tick=10**6)
    faults.timeout = 0.5
    world = client.get_world()
    lib = offline_client.get_world().get_blueprint_library()
    points = world.get_map().get_spawn_points()
    sync = SynchronousMode(world, 0.05)
    sync.__enter__()
    registry = ActorRegistry(world, client, sync.link)
    cameras = 0
    for k in range(60):
        if len(registry.actors) == 50:
            break
        bp = lib.find("sensor.camera.rgb") if k % 10 == 0 else lib.find("static.prop.constructioncone")
        tf = points[k % len(points)]
        tf = carla.Transform(tf.location + carla.Location(x=0.7 * (k // len(points)), z=0.3), tf.rotation)
        actor = offline_client.get_world().try_spawn_actor(bp, tf)
        if actor is not None:
            cameras += bp.id.startswith("sensor.")
            registry.add(faulty_actor(actor, faults))  # its calls go to the (lost) server too
    assert len(registry.actors) == 50 and cameras >= 3
    faults.disconnected = True
    start = time.perf_counter()
    registry.__exit__(None, None, None)
    sync.__exit__(None, None, None)
    assert time.perf_counter() - start < 2 * faults.timeout
    assert faults.waits == 1


def test_cleanup_after_a_lost_server_asks_nothing_more(faulty_client, tmp_path):
    from carla_scenarios.collector import CollectOptions, EpisodeSpec, collect_episode

    client, faults = faulty_client("disconnect", at_tick=8)
    with pytest.raises(RuntimeError, match="waiting for the simulator"):
        collect_episode(client, EpisodeSpec("Town02", "barrier", 2, "test"),
                        CollectOptions(frames=4, frame_step=2, width=48, height=32, vehicles=2, walkers=2), tmp_path, "offline")
    assert faults.waits == 1  # the tick that found the server gone; cleanup made no call


# -- 6: leftovers of a killed run --------------------------------------------------------------------

def test_leftovers_of_a_killed_run_are_destroyed_and_asynchronous_mode_restored(tmp_path):
    """A killed run leaves its actors (role names of ours) and synchronous mode in a reused world; the
    next episode destroys them, leaves other clients' actors alone and ends in asynchronous mode."""
    from carla_scenarios.cleanup import ROLES
    from carla_scenarios.collector import CollectOptions, EpisodeSpec, collect_episode
    from carla_scenarios.offline import Client, command

    client = Client("localhost", PORT + 2)
    world = client.load_world("Town01")
    lib = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()

    def spawn(bp_id, role, tf, parent=None):
        bp = lib.find(bp_id)
        if role is not None:
            bp.set_attribute("role_name", role)
        return world.spawn_actor(bp, tf, attach_to=parent) if parent else world.spawn_actor(bp, tf)

    hero = spawn("vehicle.audi.a2", "hero", points[0])
    camera = spawn("sensor.camera.rgb", ROLES["sensor"], carla.Transform(), hero)
    traffic = spawn("vehicle.audi.a2", ROLES["traffic"], points[1])
    prop = spawn("static.prop.constructioncone", ROLES["prop"], carla.Transform(points[2].location + carla.Location(x=3)))
    walker = spawn("walker.pedestrian.0001", ROLES["walker"], carla.Transform(world.get_random_location_from_navigation()))
    (res,) = client.apply_batch_sync([command.SpawnActor(lib.find("controller.ai.walker"), carla.Transform(), walker.id)])
    foreign = spawn("vehicle.audi.a2", "someone_else", points[3])
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
    world.apply_settings(settings)  # the killed run's synchronous mode

    seen_roles: set[str] = set()

    def roles(_tick):
        for a in world.get_actors():
            if a.id != foreign.id and not a.type_id.startswith(("controller.", "spectator")):
                seen_roles.add(a.attributes.get("role_name", "?"))

    options = CollectOptions(frames=2, frame_step=1, width=32, height=24, vehicles=2, walkers=2, parked=1)
    collect_episode(client, EpisodeSpec("Town01", "barrier", 0, "train"), options, tmp_path, "offline", on_tick=roles)
    left = {a.id for a in world.get_actors()}
    for a in (hero, camera, traffic, prop, walker):
        assert a.id not in left and not a.is_alive
    assert res.actor_id not in left
    assert foreign.id in left
    assert seen_roles and seen_roles <= set(ROLES.values())
    assert not world.get_settings().synchronous_mode


# -- 7: --backend auto ------------------------------------------------------------------------------

def test_backend_auto_waits_for_a_server_that_accepts_but_does_not_answer():
    """A port that accepts connections but never answers (a server loading a map) is a server: auto
    waits --connect-timeout and fails with a clear error instead of collecting offline."""
    import socket
    import time

    from carla_scenarios.backend import BackendError, connect

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        for backend in ("auto", "carla"):
            start = time.perf_counter()
            with pytest.raises(BackendError, match="accepts connections but no CARLA server answered within 0.5 s"):
                connect(backend, "127.0.0.1", port, connect_timeout=0.5)
            assert time.perf_counter() - start < 5.0
    finally:
        silent.close()
    # nothing listens: auto takes the offline world and says why; carla fails
    client, description = connect("auto", "127.0.0.1", port, connect_timeout=0.5)
    assert description.startswith("offline") and f"nothing listens at 127.0.0.1:{port}" in description
    with pytest.raises(BackendError, match="no CARLA server listens"):
        connect("carla", "127.0.0.1", port)
    # a host that does not resolve is an error, not a silent fallback
    with pytest.raises(BackendError, match="does not resolve"):
        connect("auto", "no-such-host.invalid", 2000)


def test_cli_connect_timeout_reaches_the_backend(monkeypatch, tmp_path, capsys):
    from carla_scenarios import cli, collector

    seen = {}

    def fake_connect(backend, host, port, connect_timeout=60.0, **kw):
        seen["connect_timeout"] = connect_timeout
        raise RuntimeError("stop here")

    monkeypatch.setattr(collector, "connect", fake_connect)
    assert cli.main(["collect", "--town", "Town01", "--out", str(tmp_path), "--connect-timeout", "7"]) == 1
    assert seen == {"connect_timeout": 7.0}


# -- 8: spawn heights and failed spawns --------------------------------------------------------------

def test_props_on_the_sidewalk_spawn_above_it_settle_on_it_and_failures_are_reported(tmp_path, caplog):
    """A prop spawned at road height where a sidewalk is collides with the kerb (the offline world refuses
    it, as a server does): props spawn above the ground below them, fall onto it with physics on, and
    the spawns that still fail are counted in the episode and logged as warnings."""
    from carla_scenarios.collector import CollectOptions, EpisodeSpec, collect_episode
    from carla_scenarios.offline import Client
    from vca_data.episodes import EpisodeReader

    client = Client("localhost", PORT + 3)
    world = client.load_world("Town01")
    options = CollectOptions(frames=1, frame_step=1, width=32, height=24, vehicles=0, walkers=0)
    result = collect_episode(client, EpisodeSpec("Town01", "parking", 3, "train"), options, tmp_path, "offline")
    with EpisodeReader(result.path) as ep:
        objects = ep.attrs["unknown_objects"]
        assert ep.attrs["failed_spawns"] == {"objects": 0, "vehicles": 0, "walkers": 0, "parked": 0}
    heights = []
    for o in objects:
        x, y, z = o["transform"][:3]
        ground = world.ground_projection(carla.Location(x=x, y=y, z=z + 1.0), 5.0)
        assert z == pytest.approx(ground.location.z, abs=0.01)  # resting on the ground
        heights.append(ground.location.z)
    assert max(heights) > 0.1 and min(heights) == 0.0  # on the sidewalk and on the road
    with caplog.at_level("WARNING"):
        result = collect_episode(client, EpisodeSpec("Town01", "parking", 0, "train"), options, tmp_path, "offline")
    assert result.failed_spawns == {"objects": 1}
    assert "could not spawn a cart with bags" in caplog.text


# -- 3: a prop that spawns but is empty ----------------------------------------------------------------

def _bad_mesh_catalogue(tmp_path):
    import json
    from importlib import resources

    doc = json.loads(resources.files("vca_data").joinpath("data/catalogue.json").read_text())
    for c in doc["classes"]:
        for b in c["blueprints"]:
            if b["id"] == "static.prop.mesh":
                b["attributes"]["mesh_path"] = "/Game/Carla/Static/NoSuchPole.NoSuchPole"
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_mesh_prop_that_spawns_empty_stops_the_episode_naming_blueprint_and_path(tmp_path):
    """A server spawns static.prop.mesh with a wrong mesh_path as an empty actor with an infinite box
    (the offline world too); the episode stops with an error naming the blueprint and the path."""
    from carla_scenarios.collector import CollectOptions, EpisodeSpec, collect_episode
    from carla_scenarios.offline import Client
    from carla_scenarios.props import EmptyPropError
    from vca_data.labels import load_catalogue

    catalogue = load_catalogue(_bad_mesh_catalogue(tmp_path))
    assert any(b.id == "static.prop.mesh" for c in catalogue.unknown_classes("test", "barrier") for b in c.blueprints)
    client = Client("localhost", PORT + 4)
    world = client.load_world("Town02")
    before = {a.id for a in world.get_actors()}
    options = CollectOptions(frames=1, frame_step=1, width=32, height=24, vehicles=0, walkers=0)
    with pytest.raises(EmptyPropError, match=r"static\.prop\.mesh with mesh_path /Game/Carla/Static/NoSuchPole.*inf"):
        collect_episode(client, EpisodeSpec("Town02", "barrier", 0, "test"), options, tmp_path, "offline", catalogue)
    assert {a.id for a in world.get_actors()} == before  # cleaned up
    assert not list((tmp_path / "episodes").glob("*.h5"))


def test_scenarios_check_lists_each_blueprint_and_whether_it_spawns(tmp_path, capsys):
    from carla_scenarios import cli

    assert cli.main(["scenarios", "--check", "--backend", "offline"]) == 0
    out = capsys.readouterr().out
    assert "11 of 11 blueprints can be spawned" in out and "FAIL" not in out
    assert cli.main(["--catalogue", str(_bad_mesh_catalogue(tmp_path)), "scenarios", "--check", "--backend", "offline"]) == 1
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "FAIL" in x]
    assert "static.prop.mesh mesh_path=/Game/Carla/Static/NoSuchPole.NoSuchPole" in line and "did not load" in line
    assert "10 of 11 blueprints can be spawned" in out


def test_a_mesh_prop_in_view_without_pixels_stops_the_episode():
    from carla_scenarios.props import EmptyPropError, in_view, require_seen

    camera = carla.Transform(carla.Location(0, 0, 1.5), carla.Rotation())
    assert in_view(camera, carla.Location(10, 0, 1.0), 0.2, 320, 180, 90.0)
    assert not in_view(camera, carla.Location(-10, 0, 1.0), 0.2, 320, 180, 90.0)  # behind
    assert not in_view(camera, carla.Location(10, 20, 1.0), 0.2, 320, 180, 90.0)  # beside
    assert not in_view(camera, carla.Location(200, 0, 1.0), 0.2, 320, 180, 90.0)  # too small there
    record = {"actor_id": 7, "blueprint": "static.prop.mesh", "class": "traffic pole", "attributes": {"mesh_path": "/P"}}
    require_seen([record], seen={7}, expected={7})
    require_seen([record], seen=set(), expected=set())  # never in view: nothing to say
    with pytest.raises(EmptyPropError, match="static.prop.mesh with mesh_path /P showed no pixel"):
        require_seen([record], seen=set(), expected={7})


# -- 9: traffic lights -----------------------------------------------------------------------------

def test_agent_stops_at_a_red_light_and_goes_on_green():
    """The offline towns have a few signalised junctions; the ego's agent brakes while a red (or yellow)
    light holds it (ego.is_at_traffic_light) and drives on when it turns green."""
    from carla_scenarios.agent import AvoidingAgent, must_stop_at_light, obstacles_from_actors
    from carla_scenarios.route import lane_route

    _, world, _ = synchronous_world("Town01", PORT, dt=0.05)
    lights = world._lights
    assert 2 <= len(lights.junctions) <= 4  # a few signalised junctions
    carla_map = world.get_map()
    (n, (cx, cy)), *_ = lights.junctions.items()
    # a lane 35 m before the junction, heading into it
    start = None
    for wp in carla_map.generate_waypoints(2.0):
        nxt = wp.next(35.0)
        if not wp.is_junction and nxt and nxt[0].is_junction and nxt[0].get_junction().id == 1000 + n \
                and not any(w.is_junction for w in wp.next(30.0)):
            start = wp
            break
    assert start is not None
    ego = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"), start.transform)
    route = lane_route(start, 90.0)
    ext = ego.bounding_box.extent
    agent = AvoidingAgent(route, half_length=ext.x, half_width=ext.y, target_speed=7.0, wheelbase=1.2 * ext.x)
    tf = start.transform
    axis = 0 if abs(math.cos(math.radians(tf.rotation.yaw))) > 0.5 else 1
    while lights.state(n, axis, world._elapsed) != carla.TrafficLightState.Red:
        world.tick()
    world.freeze_all_traffic_lights(True)

    def drive(ticks):
        stops = 0
        for _ in range(ticks):
            t = ego.get_transform()
            v = ego.get_velocity()
            stop = must_stop_at_light(ego)
            stops += stop
            c = agent.run_step(obstacles_from_actors(world.get_actors(), ego.id), t.location.x, t.location.y,
                               t.rotation.yaw, math.hypot(v.x, v.y), 0.05, stop)
            ego.apply_control(carla.VehicleControl(throttle=c.throttle, steer=c.steer, brake=c.brake))
            world.tick()
        return stops

    try:
        assert drive(160) > 0
        loc = ego.get_location()
        gap = math.hypot(cx - loc.x, cy - loc.y)
        assert gap >= lights.half - 1.0 and gap < lights.half + 8.0  # waiting at the stop line
        assert math.hypot(ego.get_velocity().x, ego.get_velocity().y) < 0.1
        assert ego.get_traffic_light_state() == carla.TrafficLightState.Red and ego.is_at_traffic_light()
        world.freeze_all_traffic_lights(False)
        while lights.state(n, axis, world._elapsed) != carla.TrafficLightState.Green:
            world.tick()
        world.freeze_all_traffic_lights(True)
        drive(120)
        assert agent.progress > 35.0 + lights.half  # through the junction on green
    finally:
        world.freeze_all_traffic_lights(False)
        ego.destroy()


# -- 12: the authors' layouts -----------------------------------------------------------------------

def test_collect_layout_vca_authors_places_the_authors_construction_l(tmp_path, capsys):
    """`vca-carla collect --scenario construction --layout vca-authors`: a sign 5 m before the reference
    point on the lane centre turned 270 degrees, debris 2 m after it, 6 cones every 2 m along the left
    lane edge and 3 cones 1 m apart across the lane at the far end (the authors' ConstructionSetupCrossing)."""
    from carla_scenarios import cli
    from vca_data.episodes import EpisodeReader, read_manifest

    argv = ["collect", "--town", "Town01", "--scenario", "construction", "--layout", "vca-authors", "--backend", "offline",
            "--out", str(tmp_path), "--frames", "2", "--frame-step", "1", "--width", "32", "--height", "24",
            "--vehicles", "0", "--walkers", "0", "--seed", "1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    (entry,) = read_manifest(tmp_path)
    with EpisodeReader(tmp_path / entry["file"]) as ep:
        objects, extras, layout = ep.attrs["unknown_objects"], ep.attrs["scenery_props"], ep.attrs["layout"]
    assert layout == "vca-authors" and len(objects) == 10
    edge = sorted((o for o in objects[1:] if abs(o["route_t"] + 1.75) < 1e-6), key=lambda o: o["route_s"])
    across = sorted((o for o in objects[1:] if o not in edge), key=lambda o: o["route_t"])
    sign = objects[0]
    assert len(edge) == 6 and len(across) == 3
    pts = np.array([o["transform"][:2] for o in edge])
    steps = np.diff(pts, axis=0)
    np.testing.assert_allclose(np.hypot(*steps.T), 2.0, atol=0.05)          # every 2 m
    along = steps[0] / np.hypot(*steps[0])
    np.testing.assert_allclose(steps / 2.0, np.repeat(along[None], 5, 0), atol=0.02)  # on one line
    side = np.array([-along[1], along[0]])  # CARLA's right of the lane direction
    cross = np.array([o["transform"][:2] for o in across]) - pts[-1]
    np.testing.assert_allclose(cross @ along, 0.0, atol=0.05)                # at the far end
    np.testing.assert_allclose(cross @ side, [1.0, 2.0, 3.0], atol=0.05)     # 1 m apart, into the lane
    sign_rel = np.array(sign["transform"][:2]) - pts[0]
    assert sign_rel @ along == pytest.approx(-7.0, abs=0.05)                  # 35 m vs cones from 42 m
    assert sign_rel @ side == pytest.approx(1.75, abs=0.05)                   # on the lane centre
    lane_yaw = math.degrees(math.atan2(along[1], along[0]))
    assert (sign["transform"][4] - lane_yaw - 270.0) % 360.0 == pytest.approx(0.0, abs=0.5)
    (debris,) = extras
    assert debris["blueprint"] == "static.prop.dirtdebris02"
    debris_rel = np.array(debris["transform"][:2]) - pts[0]
    assert debris_rel @ along == pytest.approx(0.0, abs=0.05) and debris_rel @ side == pytest.approx(1.75, abs=0.05)


def test_layout_vca_authors_parking_and_ours_by_default():
    from carla_scenarios.scenarios import plan_layout
    from vca_data.labels import default_catalogue

    classes = default_catalogue().unknown_classes("train", "parking")
    ours = plan_layout("parking", classes, 3.5, np.random.default_rng(0), (20.0, 38.0))
    assert ours.style == "ours" and not ours.extras
    authors = plan_layout("parking", classes, 3.5, np.random.default_rng(0), (20.0, 38.0), "vca-authors")
    (container,) = authors.extras
    (walker,) = authors.walkers
    assert container.blueprint == "static.prop.container" and (container.s, container.t) == (25.0, 0.0)
    assert (walker.s, walker.t, walker.speed, walker.trigger_s) == (11.5, 5.0, 4.0, 5.0)
    assert len(authors.objects) == 1 and authors.objects[0].unknown.scenario == "parking"
    with pytest.raises(ValueError, match="--layout"):
        plan_layout("parking", classes, 3.5, np.random.default_rng(0), (20.0, 38.0), "theirs")


def test_the_authors_walker_starts_crossing_when_the_ego_is_5_s_away():
    from types import SimpleNamespace

    from carla_scenarios.scenarios import WalkerPlacement
    from carla_scenarios.spawning import start_crossings

    applied = []
    walker = SimpleNamespace(apply_control=applied.append)
    crossings = [(walker, WalkerPlacement(50.0, 5.0, -90.0, speed=4.0, trigger_s=5.0), carla.Vector3D(0, -1, 0))]
    start_crossings(crossings, ego_s=10.0, ego_speed=7.0)  # 40 m at 7 m/s: 5.7 s away
    assert not applied and crossings
    start_crossings(crossings, ego_s=16.0, ego_speed=7.0)  # 34 m: 4.9 s away
    assert not crossings and applied[0].speed == pytest.approx(4.0) and applied[0].direction.y == -1.0
