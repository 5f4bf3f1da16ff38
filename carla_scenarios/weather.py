"""Episode weather: one of CARLA's presets with some of its parameters perturbed from the episode seed.

The weather starts from all 14 fields of the preset (`carla.WeatherParameters(...)` with keywords left
out gives 0 for them, and a `fog_falloff` of 0 fogs the whole scene, sky included, on a real server),
perturbs the chosen ones and records all 14, so an episode says exactly what the server rendered.
"""

from __future__ import annotations

import carla
import numpy as np

WEATHER_PRESETS = (
    "ClearNoon", "CloudyNoon", "WetNoon", "WetCloudyNoon", "SoftRainNoon", "MidRainyNoon", "HardRainNoon",
    "ClearSunset", "CloudySunset", "WetSunset", "SoftRainSunset", "ClearNight", "CloudyNight",
)
# Every field of carla.WeatherParameters in 0.9.16, in the order of its constructor.
WEATHER_FIELDS = (
    "cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
    "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff", "wetness", "scattering_intensity",
    "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm",
)


def weather_fields(weather: carla.WeatherParameters) -> dict[str, float]:
    """The 14 fields of a weather as floats."""
    return {f: float(getattr(weather, f)) for f in WEATHER_FIELDS}


def parse_weather(text: str) -> tuple[str, ...] | None:
    """`--weather`: 'random' (None: every preset, perturbed) or a comma list of preset names, which
    are drawn from and keep their dryness (a preset without rain gets none added)."""
    text = text.strip()
    if text == "random":
        return None
    by_lower = {p.lower(): p for p in WEATHER_PRESETS}
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t.lower() not in by_lower]
    if not names or unknown:
        raise ValueError(f"--weather: unknown preset {', '.join(unknown) or repr(text)}; expected 'random' or a "
                         f"comma list of {', '.join(WEATHER_PRESETS)}")
    return tuple(dict.fromkeys(by_lower[t.lower()] for t in names))


def random_weather(rng: np.random.Generator, presets: tuple[str, ...] | None = None
                   ) -> tuple[carla.WeatherParameters, dict]:
    """A preset (of `presets`, default all), then its continuous parameters perturbed; returns the
    weather and its record (the preset's name and all 14 fields). With `presets` given, a dry preset
    stays dry: no rain, puddles or wetness are added to it (the rain streaks would be flow noise)."""
    choices = presets or WEATHER_PRESETS
    name = choices[int(rng.integers(len(choices)))]
    base = weather_fields(getattr(carla.WeatherParameters, name))
    fields = dict(base)
    clip = lambda v, lo=0.0, hi=100.0: float(np.clip(v, lo, hi))  # noqa: E731
    fields["cloudiness"] = clip(fields["cloudiness"] + rng.uniform(-15, 15))
    fields["precipitation"] = clip(fields["precipitation"] + rng.uniform(-10, 10))
    fields["precipitation_deposits"] = clip(fields["precipitation_deposits"] + rng.uniform(-10, 10))
    fields["wind_intensity"] = clip(fields["wind_intensity"] + rng.uniform(-10, 10))
    fields["sun_azimuth_angle"] = float((fields["sun_azimuth_angle"] + rng.uniform(-40, 40)) % 360)
    fields["sun_altitude_angle"] = clip(fields["sun_altitude_angle"] + rng.uniform(-10, 10), -90, 90)
    fields["fog_density"] = clip(fields["fog_density"] + rng.uniform(0, 10))
    fields["fog_distance"] = max(fields["fog_distance"], 0.0)
    fields["wetness"] = clip(fields["wetness"] + rng.uniform(-10, 10))
    if presets:
        for key in ("precipitation", "precipitation_deposits", "wetness"):
            if base[key] == 0.0:
                fields[key] = 0.0
    weather = carla.WeatherParameters(**fields)
    record = {"preset": name} | {f: round(v, 4) for f, v in weather_fields(weather).items()}
    return weather, record
