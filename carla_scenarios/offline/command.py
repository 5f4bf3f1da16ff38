"""Batch commands for the offline world, named and shaped like `carla.command`.

`carla.command.SpawnActor` only accepts a `carla.ActorBlueprint`, which Python cannot construct without
a server, and it does not expose its blueprint; so a collector builds its batch from the command module
of the backend it talks to (`carla.command` or this one). `Client.apply_batch_sync` of the offline world
also accepts `carla.command` objects that need no blueprint (DestroyActor, SetAutopilot,
SetSimulatePhysics, ApplyTransform, ApplyVehicleControl, ApplyWalkerControl, ApplyTargetVelocity).
"""

from __future__ import annotations

import carla

from .blueprints import ActorBlueprint

FutureActor = 0  # like carla.command.FutureActor: "the actor spawned by the command this one follows"


def _actor_id(actor) -> int:
    return actor if isinstance(actor, int) else actor.id


class _Command:
    def __init__(self) -> None:
        self._then: list[_Command] = []

    def then(self, command: _Command) -> _Command:
        """Run `command` after this one, with FutureActor standing for the spawned actor."""
        self._then.append(command)
        return self


class SpawnActor(_Command):
    def __init__(self, blueprint: ActorBlueprint, transform: carla.Transform, parent: object | None = None) -> None:
        super().__init__()
        self._blueprint = blueprint
        self.transform = transform
        self.parent_id = 0 if parent is None else _actor_id(parent)


class DestroyActor(_Command):
    def __init__(self, actor: object) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)


class SetAutopilot(_Command):
    def __init__(self, actor: object, enabled: bool, port: int = 8000) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)
        self.enabled = bool(enabled)
        self.port = int(port)


class SetSimulatePhysics(_Command):
    def __init__(self, actor: object, enabled: bool) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)
        self.enabled = bool(enabled)


class ApplyTransform(_Command):
    def __init__(self, actor: object, transform: carla.Transform) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)
        self.transform = transform


class ApplyVehicleControl(_Command):
    def __init__(self, actor: object, control: carla.VehicleControl) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)
        self.control = control


class ApplyWalkerControl(_Command):
    def __init__(self, actor: object, control: carla.WalkerControl) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)
        self.control = control


class ApplyTargetVelocity(_Command):
    def __init__(self, actor: object, velocity: carla.Vector3D) -> None:
        super().__init__()
        self.actor_id = _actor_id(actor)
        self.velocity = velocity


class Response:
    """Outcome of one batch command: the actor it concerned, or an error message."""

    def __init__(self, actor_id: int, error: str = "") -> None:
        self.actor_id = actor_id
        self.error = error

    def has_error(self) -> bool:
        return bool(self.error)

    def __repr__(self) -> str:
        return f"Response(actor_id={self.actor_id}, error={self.error!r})"
