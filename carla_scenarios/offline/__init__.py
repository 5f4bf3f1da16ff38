"""The offline world: an in-process, CARLA-compatible simulator on PyBullet.

`from carla_scenarios.offline import Client, command` stands in for `from carla import Client, command`
for the part of the API the collector uses; values (Location, Transform, WeatherParameters,
VehicleControl, ...) are CARLA's own types from the `carla` wheel, maps are CARLA's own `carla.Map`
built from each town's OpenDRIVE text, and camera images use CARLA's BGRA encodings.

Differences from a CARLA server, by design: vehicles move kinematically (a bicycle model under
VehicleControl, or the Traffic Manager along lane centres) and stop on contact instead of bouncing;
walkers follow the sidewalk network; a few junctions per town have traffic lights (which the Traffic
Manager's cars do not obey); batch spawning needs this package's
`command` module, because `carla.command.SpawnActor` accepts only a server's blueprints.
"""

from . import command
from .client import Client
from .map import TOWN_NAMES

__all__ = ["Client", "TOWN_NAMES", "command"]
