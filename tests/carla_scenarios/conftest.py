"""Fixtures of the collector tests: a small dataset collected once through the CLI, and a fault-injecting
wrapper around a CARLA-API client (the offline world's), whose camera drops a frame, whose tick raises,
or which loses its server after some ticks."""

from __future__ import annotations

import contextlib
import io
import time
from types import SimpleNamespace

import pytest

SERVER_LOST = "time-out of {ms}ms while waiting for the simulator, make sure the simulator is ready and connected to localhost:2000"


class Faults:
    """What to break and when: `kind` is 'drop_frame', 'tick_raises' or 'disconnect'; `at_tick` counts
    world ticks from the first one. A lost server answers no call: each waits the client `timeout`
    (seconds; short in tests) before it raises, as a real client does."""

    def __init__(self, kind: str, at_tick: int, sensor: str = "sensor.camera.depth", timeout: float = 0.5):
        if kind not in ("drop_frame", "tick_raises", "disconnect"):
            raise ValueError(kind)
        self.kind = kind
        self.at_tick = at_tick
        self.sensor = sensor
        self.ticks = 0
        self.disconnected = False
        self.timeout = timeout
        self.waits = 0  # calls that waited for the lost server

    def check(self) -> None:
        if self.disconnected:
            self.waits += 1
            time.sleep(self.timeout)
            raise RuntimeError(SERVER_LOST.format(ms=int(self.timeout * 1000)))


class _Proxy:
    def __init__(self, inner, faults: Faults):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_faults", faults)

    def __getattr__(self, name):
        value = getattr(self._inner, name)  # attributes (id, type_id) are the client's; calls go to the server
        if callable(value):
            def call(*args, **kwargs):
                self._faults.check()
                return value(*args, **kwargs)
            return call
        return value

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)


class FaultySensor(_Proxy):
    def listen(self, callback):
        self._faults.check()
        faults = self._faults
        drop = faults.kind == "drop_frame" and self._inner.type_id == faults.sensor

        def deliver(data):
            if drop and faults.ticks == faults.at_tick:
                return  # this frame never arrives
            callback(data)

        self._inner.listen(deliver)


class FaultyWorld(_Proxy):
    def tick(self, *args, **kwargs):
        f = self._faults
        f.check()
        f.ticks += 1
        if f.ticks == f.at_tick and f.kind == "tick_raises":
            raise RuntimeError("simulated server error during tick")
        if f.ticks == f.at_tick and f.kind == "disconnect":
            f.disconnected = True
            f.check()
        return self._inner.tick(*args, **kwargs)

    def spawn_actor(self, *args, **kwargs):
        self._faults.check()
        actor = self._inner.spawn_actor(*args, **kwargs)
        return FaultySensor(actor, self._faults) if actor.type_id.startswith("sensor.") else actor


class FaultyClient(_Proxy):
    def get_world(self):
        self._faults.check()
        return FaultyWorld(self._inner.get_world(), self._faults)

    def load_world(self, *args, **kwargs):
        self._faults.check()
        return FaultyWorld(self._inner.load_world(*args, **kwargs), self._faults)


@pytest.fixture
def offline_client():
    from carla_scenarios.offline import Client

    client = Client("localhost", 2000)
    client.set_timeout(10.0)
    return client


@pytest.fixture
def faulty_actor():
    """Wraps an actor so that its calls go to the fault-injecting server: `faulty_actor(actor, faults)`."""
    return _Proxy


@pytest.fixture
def faulty_client(offline_client):
    """Factory of fault-injecting clients. Afterwards the world is reset as a restarted server would be
    (a lost server leaves actors and synchronous mode behind), so later tests start clean."""
    world = offline_client.get_world()
    before = {a.id for a in world.get_actors()}
    settings = world.get_settings()

    def make(kind: str, at_tick: int, sensor: str = "sensor.camera.depth"):
        faults = Faults(kind, at_tick, sensor)
        return FaultyClient(offline_client, faults), faults

    yield make
    world = offline_client.get_world()
    for actor in world.get_actors():
        if actor.id not in before:
            actor.destroy()
    world.apply_settings(settings)


@pytest.fixture(scope="session")
def collected(tmp_path_factory):
    """Six episodes (every scenario in a train and a test town), collected once through `vca-carla collect`
    on the offline world; with the command line, its exit code and its standard output."""
    from carla_scenarios import cli

    out = tmp_path_factory.mktemp("data")
    argv = ["collect", "--town", "Town01,Town02", "--scenario", "all", "--backend", "offline", "--out", str(out),
            "--frames", "5", "--frame-step", "2", "--width", "128", "--height", "72", "--seed", "3",
            "--vehicles", "3", "--walkers", "3"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(argv)
    return SimpleNamespace(out=out, argv=argv, rc=rc, stdout=buf.getvalue())
