"""Run configurations of the baselines: the schema with its defaults, YAML files (a `base:` key names
a file to start from), `key.sub=value` overrides, and validation with messages that name the file and
the key. The resolved configuration is a plain nested dict, saved as RUN/config.yaml."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

from baselines.registry import MODELS
from baselines.spec import ConfigError
from vca_data.io import atomic_write_text
from vca_data.labels import SCENARIOS, SPLITS

# Every key a configuration may hold, with its default; a file or override naming any other key is an
# error, so a typo cannot silently fall back to a default. The `model` section (and extra `data` keys)
# come from the model family's ModelSpec (baselines.registry); these are the keys every family shares.
COMMON: dict = {
    "data": {
        "train_split": "train",
        "eval_split": "test",
        "scenarios": None,           # list of scenarios, null = all
        "frame_step": 1,             # use every n-th frame of the training episodes
        "resize": None,              # [height, width] before augmentation, null = native size
        "crop": [320, 512],          # [height, width]
        "min_scale": 0.8,
        "max_scale": 1.3,
        "flip": True,
        "batch_size": 8,             # per process
        "workers": 4,
    },
    "train": {
        "epochs": 15,                # exactly one of epochs / iters; milestones are in the same unit
        "iters": None,
        "milestones": [6, 8],
        "lr_gamma": 0.1,
        "lr": 0.005,
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
        "warmup_iters": 500,
        "warmup_factor": 0.001,
        "grad_clip": 0.0,            # max gradient norm, 0 = off
        "amp": True,                 # mixed precision, used on CUDA only
        "seed": 0,
        "threads": 0,                # CPU threads of torch per process, 0 = torch's default
        "log_every": 20,
        "checkpoint_every": 1000,
        "keep_checkpoints": 2,
        "eval_every": 0,             # evaluate every k steps on data.eval_split, 0 = only at the end
        "eval_max_images": 200,      # images of a periodic evaluation (the final one uses all)
        "optimizer": "sgd",          # sgd (the papers) | adamw
        "schedule": "step",          # step: lr_gamma at milestones | poly: (1 - step/total) ** poly_power
        "poly_power": 0.9,
        "tensorboard": True,         # TensorBoard event files in RUN/tensorboard beside log.csv
        "panels": 3,                 # prediction panels written to TensorBoard at each evaluation
        "init_from": None,           # a run folder whose newest weights a new run starts from (VCANet phase 2)
    },
    "eval": {
        "resize": None,              # [height, width], null = native size
        "batch_size": 1,
        "frame_step": 1,
        "workers": 2,
    },
}

# Keys whose value may be null although the default is not (or the reverse); a family adds its own.
NULLABLE = {"data.scenarios", "data.resize", "train.epochs", "train.iters", "eval.resize"}
MODEL_NAMES = tuple(MODELS)
SCHEDULES, OPTIMIZERS = ("step", "poly"), ("sgd", "adamw")


def schema(name: str) -> dict:
    """The full defaults of a config for model family `name`."""
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {list(MODELS)}, got {name!r}")
    spec = MODELS[name]
    out = copy.deepcopy(COMMON)
    out["model"] = {"name": name, **copy.deepcopy(spec.model_defaults)}
    out["data"].update(copy.deepcopy(spec.data_defaults))
    return out


#: The defaults of the prototype family (what most tools start from).
DEFAULTS: dict = schema("prototype")


def config_dir() -> Path:
    return Path(str(resources.files("baselines").joinpath("configs")))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A packaged config name ('paper', 'tiny') or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return path
    packaged = config_dir() / f"{name_or_path}.yaml"
    if not packaged.is_file():
        names = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise ConfigError(f"no config named {name_or_path!r} (packaged: {', '.join(names)}; or give a YAML path)")
    return packaged


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "parse error"
        raise ConfigError(f"{path}: {where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, train, eval)")
    return doc


def merge(base: dict, update: dict, source: str, prefix: str = "") -> dict:
    """`base` with `update` merged in recursively; keys absent from the schema are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in out:
            raise ConfigError(f"{source}: unknown key {name!r} (known: {', '.join(sorted(out))})")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {name} must be a mapping")
            out[key] = merge(out[key], value, source, f"{name}.")
        else:
            out[key] = value
    return out


def _chain(name_or_path: str | Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """(source, document) of a config file and its `base` chain, the base first."""
    path = resolve_config_path(name_or_path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    doc = _read_yaml(path)
    base_name = doc.pop("base", None)
    if base_name is None:
        return [(str(path), doc)]
    base_ref = base_name if (config_dir() / f"{base_name}.yaml").is_file() else path.parent / str(base_name)
    return _chain(base_ref, seen + (path.resolve(),)) + [(str(path), doc)]


def _named_model(docs: list[tuple[str, dict]]) -> tuple[str, str] | None:
    """(source, model name) of the last document of the chain that names its model."""
    for source, doc in reversed(docs):
        model = doc.get("model")
        if isinstance(model, dict) and "name" in model:
            return source, model["name"]
    return None


def _for_family(doc: dict, family: str) -> dict:
    """A document that names no model is shared by the families (tiny sets the budget of the prototype
    model and of its softmax reference alike): its model keys that another family takes and this one
    does not are left out. Keys no family takes stay, and are refused by merge."""
    model = doc.get("model")
    if not isinstance(model, dict) or "name" in model:
        return doc
    own = MODELS[family].model_defaults
    known = {k for spec in MODELS.values() for k in spec.model_defaults}
    return {**doc, "model": {k: v for k, v in model.items() if k in own or k not in known}}


def load_config(name_or_path: str | Path = "paper", model: str | None = None) -> dict:
    """The family's defaults, then the file's `base` chain, then the file itself; not yet validated.
    The family is `model`, else the model the files name, else the prototype model. A file written for
    a family with other keys (sleeg-tiny for --model prototype) is refused by name."""
    docs = _chain(name_or_path)
    named = _named_model(docs)
    family = model or (named[1] if named else "prototype")
    if family not in MODELS:
        raise ConfigError(f"model.name must be one of {list(MODELS)}, got {family!r}")
    if named and named[1] in MODELS and MODELS[named[1]].model_defaults is not MODELS[family].model_defaults:
        raise ConfigError(f"{named[0]}: a config for model {named[1]!r}, not {family!r}; pick a config of that "
                          f"model (packaged: {', '.join(sorted(p.stem for p in config_dir().glob('*.yaml')))})")
    cfg = schema(family)
    for source, doc in docs:
        cfg = merge(cfg, _for_family(doc, family), source)
    cfg["model"]["name"] = family
    return cfg


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides (the value parsed as YAML: 3, 0.1, null, [96, 128], true)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.iters=500")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        if isinstance(value, str):
            value = _number(value)
        update: dict = value
        for part in reversed(key.strip().split(".")):
            update = {part: update}
        cfg = merge(cfg, update, f"--set {item}")
    return cfg


def _number(text: str):
    """`text` as a float when Python's float() reads it (YAML 1.1 reads 1e-10 as a string), else as is."""
    try:
        return float(text)
    except ValueError:
        return text


def _check_type(value: object, default: object, key: str, source: str) -> None:
    if value is None:
        if key in NULLABLE or default is None:
            return
        raise ConfigError(f"{source}: {key} must not be null")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{source}: {key} must be a {type(default).__name__}, got {value!r}")


def _size(value: object, key: str, source: str) -> None:
    if value is None:
        return
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ConfigError(f"{source}: {key} must be [height, width] with positive integers, got {value!r}")


def _check_section(values: dict, defaults: dict, prefix: str, nullable: set, source: str) -> None:
    for key, default in defaults.items():
        name = f"{prefix}.{key}"
        value = values[key]
        if isinstance(default, dict):
            _check_section(value, default, name, nullable, source)
            continue
        if isinstance(default, float) and isinstance(value, str):
            value = values[key] = _number(value)
        if value is None and name in nullable:
            continue
        _check_type(value, default, name, source)
        if isinstance(default, float) and value is not None:
            values[key] = float(value)


def validate(cfg: dict, source: str = "config") -> dict:
    """Check every value's type and range, the common sections here and the model family's own keys
    with its ModelSpec.validate; returns `cfg` (float fields as floats)."""
    name = cfg.get("model", {}).get("name")
    if name not in MODELS:
        raise ConfigError(f"{source}: model.name must be one of {list(MODELS)}, got {name!r}")
    spec = MODELS[name]
    defaults = schema(name)
    if set(cfg["model"]) != set(defaults["model"]):
        raise ConfigError(f"{source}: model {name!r} takes the keys {sorted(defaults['model'])}; choose the model "
                          "with --model (or a config made for it), not with --set model.name")
    nullable = NULLABLE | {f"model.{k}" for k in spec.nullable}
    for section, fields in defaults.items():
        _check_section(cfg[section], fields, section, nullable, source)
    d, t, e = cfg["data"], cfg["train"], cfg["eval"]
    for key in ("train_split", "eval_split"):
        if d[key] not in SPLITS:
            raise ConfigError(f"{source}: data.{key} must be one of {list(SPLITS)}, got {d[key]!r}")
    if d["scenarios"] is not None and (not d["scenarios"] or any(s not in SCENARIOS for s in d["scenarios"])):
        raise ConfigError(f"{source}: data.scenarios must be null or a list from {list(SCENARIOS)}")
    _size(d["resize"], "data.resize", source)
    _size(d["crop"], "data.crop", source)
    _size(e["resize"], "eval.resize", source)
    if not 0 < d["min_scale"] <= d["max_scale"]:
        raise ConfigError(f"{source}: need 0 < data.min_scale <= data.max_scale")
    for key, low in (("batch_size", 1), ("workers", 0), ("frame_step", 1)):
        if d[key] < low:
            raise ConfigError(f"{source}: data.{key} must be at least {low}, got {d[key]}")
    if (t["epochs"] is None) == (t["iters"] is None):
        raise ConfigError(f"{source}: set exactly one of train.epochs and train.iters (the other null)")
    length = t["epochs"] if t["iters"] is None else t["iters"]
    if not isinstance(length, int) or length < 1:
        raise ConfigError(f"{source}: train.epochs / train.iters must be a positive integer, got {length!r}")
    ms = t["milestones"]
    if any(not isinstance(v, int) or v < 1 for v in ms) or ms != sorted(ms):
        raise ConfigError(f"{source}: train.milestones must be increasing positive integers, got {ms!r}")
    for key in ("lr", "log_every", "checkpoint_every", "keep_checkpoints", "eval_max_images"):
        if t[key] <= 0:
            raise ConfigError(f"{source}: train.{key} must be positive, got {t[key]}")
    for key in ("momentum", "weight_decay", "warmup_iters", "grad_clip", "eval_every", "threads"):
        if t[key] < 0:
            raise ConfigError(f"{source}: train.{key} must not be negative, got {t[key]}")
    if e["batch_size"] < 1 or e["frame_step"] < 1 or e["workers"] < 0:
        raise ConfigError(f"{source}: eval.batch_size and eval.frame_step must be >= 1, eval.workers >= 0")
    if t["optimizer"] not in OPTIMIZERS or t["schedule"] not in SCHEDULES:
        raise ConfigError(f"{source}: train.optimizer must be one of {list(OPTIMIZERS)} and train.schedule one of "
                          f"{list(SCHEDULES)}, got {t['optimizer']!r}, {t['schedule']!r}")
    if t["panels"] < 0 or t["poly_power"] <= 0:
        raise ConfigError(f"{source}: train.panels must not be negative and train.poly_power must be positive")
    if t["init_from"] is not None and not (isinstance(t["init_from"], str) and t["init_from"]):
        raise ConfigError(f"{source}: train.init_from must be null or a run folder, got {t['init_from']!r}")
    if spec.validate is not None:
        spec.validate(cfg, source)
    return cfg


def build_config(config: str | Path = "paper", overrides: list[str] | None = None, model: str | None = None) -> dict:
    """Load `config` (name or path), set model.name, apply overrides, validate."""
    cfg = load_config(config, model)
    cfg = apply_overrides(cfg, overrides or [])
    return validate(cfg, str(config))


def save_config(cfg: dict, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))


def read_run_config(path: str | Path) -> dict:
    """A run's resolved config.yaml, re-validated against the schema (defaults fill keys that newer
    versions added)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (is {path.parent} a run folder made by 'vca-baseline train'?)")
    doc = _read_yaml(path)
    name = doc.get("model", {}).get("name", "prototype") if isinstance(doc.get("model"), dict) else "prototype"
    if name not in MODELS:
        raise ConfigError(f"{path}: model.name must be one of {list(MODELS)}, got {name!r}")
    return validate(merge(schema(name), doc, str(path)), str(path))
