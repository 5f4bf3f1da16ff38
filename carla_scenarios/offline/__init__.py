"""The offline world: an in-process, CARLA-compatible simulator on PyBullet.

`from carla_scenarios.offline import Client, command` is a drop-in for `from carla import Client, command`
for the part of the API the collector uses; values (Location, Transform, WeatherParameters, ...) are
CARLA's own types from the `carla` wheel.
"""

from . import command
from .client import Client
from .map import TOWN_NAMES

__all__ = ["Client", "TOWN_NAMES", "command"]
