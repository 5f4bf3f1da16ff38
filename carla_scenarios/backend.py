"""Choosing the simulator: a CARLA server at host:port, or the in-process offline world.

`--backend auto` takes the offline world only when nothing listens at host:port. A port that accepts
the connection belongs to a server, perhaps one still loading a map, which answers its first RPC only
after tens of seconds: the collector waits for it up to `--connect-timeout` seconds and otherwise stops
with an error, and never collects offline data while a server was reached. A host name that does not
resolve is an error too, whatever the backend.
"""

from __future__ import annotations

import socket

import carla

PROBE_TIMEOUT = 2.0  # seconds for the TCP connect that tells whether anything listens
CONNECT_TIMEOUT = 60.0  # seconds a reached server may take to answer (a map loading)
CLIENT_TIMEOUT = 30.0  # seconds each later RPC may take


class BackendError(RuntimeError):
    """No usable backend (an unresolvable host, a server that does not answer)."""


def port_open(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to host:port succeeds; BackendError when the host does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise BackendError(f"--host {host!r} does not resolve ({e})") from None
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(timeout)
                s.connect(address)
                return True
        except OSError:
            continue
    return False


def probe_carla(host: str, port: int, timeout: float = PROBE_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT):
    """A connected `carla.Client`, or None when nothing listens at host:port. BackendError when something
    listens but does not answer CARLA's RPC within `connect_timeout` seconds."""
    if not port_open(host, port, timeout):
        return None
    client = carla.Client(host, port)
    client.set_timeout(connect_timeout)
    try:
        client.get_server_version()
    except RuntimeError as e:
        raise BackendError(
            f"{host}:{port} accepts connections but no CARLA server answered within {connect_timeout:g} s ({e}); "
            f"a server still loading a map needs longer (--connect-timeout), or another program holds the port"
        ) from None
    return client


def connect(backend: str, host: str, port: int, probe_timeout: float = PROBE_TIMEOUT, timeout: float = CLIENT_TIMEOUT,
            connect_timeout: float = CONNECT_TIMEOUT):
    """(client, description) for backend 'auto', 'carla' or 'offline'; BackendError if a requested or
    reached CARLA server does not answer."""
    if backend not in ("auto", "carla", "offline"):
        raise ValueError(f"--backend must be auto, carla or offline, got {backend!r}")
    if not connect_timeout > 0:
        raise ValueError(f"--connect-timeout must be positive, got {connect_timeout}")
    if backend in ("auto", "carla"):
        client = probe_carla(host, port, probe_timeout, connect_timeout)
        if client is not None:
            client.set_timeout(timeout)
            return client, f"carla (server {client.get_server_version()} at {host}:{port})"
        if backend == "carla":
            raise BackendError(
                f"no CARLA server listens at {host}:{port} "
                f"(start CarlaUE4.sh, check --host/--port, or use --backend offline)"
            )
    from carla_scenarios.offline import Client as OfflineClient  # silences PyBullet's import banner

    client = OfflineClient(host, port)
    client.set_timeout(timeout)
    why = "" if backend == "offline" else f", nothing listens at {host}:{port}"
    return client, f"offline (in-process PyBullet world{why})"


def backend_name(description: str) -> str:
    return description.split(" ", 1)[0]
