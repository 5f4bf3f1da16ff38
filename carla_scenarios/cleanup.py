"""Releasing what an episode took on the server, fast also when the server is gone, and finding what a
killed run left behind.

Every RPC to an unreachable server waits the full client timeout, so cleanup that makes one call per
actor takes tens of minutes after a crash. `ServerLink` remembers the first time-out and skips every
later call; actors are destroyed with one batch of `DestroyActor` commands.

Every actor the collector spawns carries a role name of ours (`ROLES`), so that an episode can destroy
the leftovers of a run that died without cleaning up (SIGKILL, out of memory) in a reused world: the
`--resume` case.
"""

from __future__ import annotations

import logging

import carla

log = logging.getLogger(__name__)

ROLE_PREFIX = "vca_"
# Role names of the collector's actors; the ego keeps CARLA's "hero", which the server treats specially.
ROLES = {
    "ego": "hero",
    "traffic": "vca_autopilot",
    "parked": "vca_parked",
    "walker": "vca_walker",
    "scene_walker": "vca_scene_walker",
    "prop": "vca_prop",
    "sensor": "vca_sensor",
}


def is_timeout(error: BaseException | None) -> bool:
    """Whether an error is the client's time-out waiting for the simulator (the server is gone)."""
    text = str(error).lower() if error is not None else ""
    return isinstance(error, RuntimeError) and ("time-out" in text or "timed out" in text)


class ServerLink:
    """Calls to the server during cleanup; after the first time-out the server counts as gone and
    further calls are skipped (each would wait the full client timeout)."""

    def __init__(self) -> None:
        self.dead = False
        self.skipped = 0

    def note(self, error: BaseException | None) -> None:
        """Mark the server gone when `error` is a time-out (e.g. the one that ended the episode)."""
        if is_timeout(error):
            self.dead = True

    def call(self, what: str, fn, *args):
        """fn(*args), or None when the server is gone or the call fails (a warning says what failed)."""
        if self.dead:
            self.skipped += 1
            return None
        try:
            return fn(*args)
        except Exception as e:  # a lost server must not hide the error that got us here
            self.note(e)
            log.warning("could not %s: %s", what, e)
            return None


def destroy_command_module(client):
    """`carla.command` for a server's client, the offline world's command module otherwise."""
    if isinstance(client, carla.Client):
        return carla.command
    from carla_scenarios.offline import command

    return command


def destroy_actors(client, actors: list, link: ServerLink) -> int:
    """Stop sensors and walker controllers, then destroy all `actors` with one batch; returns how many
    could not be destroyed (all of them when the server is gone)."""
    if not actors:
        return 0
    for actor in actors:
        if actor.type_id.startswith(("sensor.", "controller.")):
            link.call(f"stop {actor.type_id} {actor.id}", actor.stop)
    cmd = destroy_command_module(client)
    ids = [int(a.id) for a in actors]
    responses = link.call(f"destroy {len(ids)} actors", client.apply_batch_sync, [cmd.DestroyActor(i) for i in ids], False)
    if responses is None:
        return len(ids)
    return sum(1 for r in responses if r.error)


def is_ours(actor) -> bool:
    """Whether an actor carries one of the collector's role names."""
    role = actor.attributes.get("role_name", "") if hasattr(actor, "attributes") else ""
    return role.startswith(ROLE_PREFIX) or (role == ROLES["ego"] and actor.type_id.startswith("vehicle."))


def leftovers(world) -> list:
    """Actors of an earlier run still in the world: ours by role name, and the walker controllers and
    sensors attached to them (controllers carry no role name)."""
    actors = list(world.get_actors())
    ours = {a.id for a in actors if is_ours(a)}
    out = []
    for a in actors:
        parent = getattr(a, "parent", None)
        if a.id in ours or (parent is not None and parent.id in ours):
            out.append(a)
    return out


def destroy_leftovers(client, world) -> int:
    """Destroy what an earlier run of ours left in the world; returns how many actors it found."""
    found = leftovers(world)
    if found:
        link = ServerLink()
        failed = destroy_actors(client, found, link)
        log.warning("destroyed %d actors left by an earlier run%s", len(found) - failed,
                    f" ({failed} could not be destroyed)" if failed else "")
    return len(found)
