"""`Client` of the offline world: the in-process stand-in for a CARLA server at host:port.

One simulated server exists per (host, port) in a process, so clients created with the same address
share its world and Traffic Managers, as they would share a real server.
"""

from __future__ import annotations

from importlib import metadata

import carla

from . import command as offline_command
from .map import TOWN_NAMES, map_path, town_of_map_name
from .traffic import TrafficManager
from .world import World

# Towns that a 0.9.16 server also offers as a layered '_Opt' map (Town10HD_Opt is its default map).
OPT_TOWNS = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town10HD")


def map_basename(map_name: str) -> str:
    """'Town10HD_Opt' of '/Game/Carla/Maps/Town10HD_Opt' (or of 'Town10HD_Opt')."""
    return str(map_name).rstrip("/").split("/")[-1].split(".")[0]


VERSION = metadata.version("carla")  # the offline world speaks the API of the installed client
DEFAULT_MAP = "Town10HD_Opt"  # what a fresh CARLA 0.9.16 server loads (the layered Town10HD)


class _Server:
    """State behind one address: the current world and the Traffic Managers by port."""

    def __init__(self) -> None:
        self.world: World | None = None
        self._traffic_managers: dict[int, TrafficManager] = {}
        self._episode = 0

    def load(self, map_name: str) -> World:
        """Load a map ('Town01', 'Town10HD_Opt'): the town it shows, under the name it was asked by."""
        if self.world is not None:
            self.world._close()
        for tm in self._traffic_managers.values():
            tm.shut_down()
        self._episode += 1
        town = town_of_map_name(map_name)
        self.world = World(self, town, self._episode, town + "_Opt" if map_basename(map_name).endswith("_Opt") else town)
        return self.world

    def traffic_manager(self, port: int) -> TrafficManager:
        if port not in self._traffic_managers:
            self._traffic_managers[port] = TrafficManager(port)
        return self._traffic_managers[port]

    def traffic_managers(self) -> list[TrafficManager]:
        return [self._traffic_managers[p] for p in sorted(self._traffic_managers)]


_SERVERS: dict[tuple[str, int], _Server] = {}


class Client:
    """CARLA's Client interface over the offline world (no network; host and port name the world)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> None:
        self._address = (str(host), int(port))
        self._timeout = 10.0
        self._server = _SERVERS.setdefault(self._address, _Server())

    def set_timeout(self, second: float) -> None:
        self._timeout = float(second)

    def get_client_version(self) -> str:
        return VERSION

    def get_server_version(self) -> str:
        return VERSION

    def get_available_maps(self) -> list[str]:
        return [map_path(t) for t in TOWN_NAMES] + [map_path(f"{t}_Opt") for t in TOWN_NAMES if t in OPT_TOWNS]

    def get_world(self) -> World:
        if self._server.world is None:
            self._server.load(DEFAULT_MAP)
        return self._server.world

    def load_world(self, map_name: str, reset_settings: bool = True, map_layers: carla.MapLayer = carla.MapLayer.All) -> World:
        """Destroy every actor and load the town ('Town01' or '/Game/Carla/Maps/Town01')."""
        previous = self._server.world
        settings = previous.get_settings() if previous is not None and not reset_settings else None
        town_of_map_name(map_name)  # a ValueError names a map that is not here
        world = self._server.load(map_name)
        if settings is not None:
            world.apply_settings(settings)
        return world

    def reload_world(self, reset_settings: bool = True) -> World:
        return self.load_world(self.get_world().get_map().name, reset_settings)

    def get_trafficmanager(self, client_connection: int = 8000) -> TrafficManager:
        return self._server.traffic_manager(int(client_connection))

    def apply_batch(self, commands: list, do_tick: bool = False) -> None:
        self.apply_batch_sync(commands, do_tick)

    def apply_batch_sync(self, commands: list, do_tick: bool = False) -> list[offline_command.Response]:
        """Run the commands in order; each gives a Response (actor id or error). `then` commands run after
        a successful spawn with FutureActor replaced by the new actor's id."""
        world = self.get_world()
        responses = [self._run(world, c, None) for c in commands]
        if do_tick:
            world.tick()
        return responses

    def _run(self, world: World, cmd, future_id: int | None) -> offline_command.Response:
        name = type(cmd).__name__
        if isinstance(cmd, offline_command.SpawnActor):
            parent = world.get_actor(cmd.parent_id) if cmd.parent_id else None
            actor, error = world._spawn(cmd._blueprint, cmd.transform, parent)
            if actor is None:
                return offline_command.Response(0, error)
            for follow in cmd._then:
                result = self._run(world, follow, actor.id)
                if result.has_error():
                    return offline_command.Response(actor.id, result.error)
            return offline_command.Response(actor.id)
        actor_id = getattr(cmd, "actor_id", None)
        if actor_id is None:
            return offline_command.Response(0, f"command {name} is not supported by the offline world")
        if actor_id == offline_command.FutureActor and future_id is not None:
            actor_id = future_id
        actor = world.get_actor(actor_id)
        if actor is None:
            return offline_command.Response(actor_id, f"{name}: actor {actor_id} not found")
        if name == "DestroyActor":
            actor.destroy()
        elif name == "SetAutopilot":
            port = getattr(cmd, "tm_port", getattr(cmd, "port", 8000))
            if not hasattr(actor, "set_autopilot"):
                return offline_command.Response(actor_id, f"SetAutopilot: actor {actor_id} is not a vehicle")
            actor.set_autopilot(cmd.enabled, port)
        elif name == "SetSimulatePhysics":
            actor.set_simulate_physics(cmd.enabled)
        elif name == "ApplyTransform":
            actor.set_transform(cmd.transform)
        elif name in ("ApplyVehicleControl", "ApplyWalkerControl"):
            actor.apply_control(cmd.control)
        elif name == "ApplyTargetVelocity":
            actor.set_target_velocity(cmd.velocity)
        else:
            return offline_command.Response(actor_id, f"command {name} is not supported by the offline world")
        return offline_command.Response(actor_id)


def synchronous_world(town: str, port: int, dt: float, seed: int = 0) -> tuple[Client, World, TrafficManager]:
    """Load `town` on the offline server at localhost:`port` and run it in synchronous mode with a fixed
    step `dt` (seconds), its Traffic Manager (port 8000) synchronous and seeded with `seed`, as are the
    walkers: the set-up of CARLA's synchronous_mode.py example, for previews, benchmarks and tests that
    drive a world directly (the collector's rig does it with settings restored on exit)."""
    client = Client("localhost", port)
    world = client.load_world(town)
    settings = world.get_settings()
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = dt
    world.apply_settings(settings)
    traffic_manager = client.get_trafficmanager(8000)
    traffic_manager.set_synchronous_mode(True)
    traffic_manager.set_random_device_seed(seed)
    world.set_pedestrians_seed(seed)
    return client, world, traffic_manager
