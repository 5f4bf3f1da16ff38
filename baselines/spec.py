"""What a model family declares to the engine: how to build it, the config keys it takes, the data it
reads and how it is evaluated (ModelSpec), and the error a bad configuration raises (ConfigError).

This module imports nothing of the project, so model modules, the config schema and the registry can
all import it. Model modules import ModelSpec and ConfigError from here, never from baselines.config
(which imports the registry, which imports the models).

A family's model is an nn.Module with `forward(batch) -> outputs`, `loss(outputs, batch, generator) ->
dict` ('loss' plus named terms), `predict(batch) -> dict` and `input_keys` (the batch keys it reads at
inference). Batches are dicts of tensors, or of lists / dicts of tensors (the engine moves them to the
device recursively); 'image' (B, 3, H, W) is always there. Before each training forward the engine sets
`model.current_step` (the number of steps already taken) for losses that change over training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source and the key."""


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    - `build(**model_section_without_name) -> nn.Module`.
    - `model_defaults`: the family's keys of the config's `model` section with their defaults (not
      'name'); any other key in a file or override is an error.
    - `datasets(cfg, data_dir, split, train) -> Dataset`. A training dataset has a settable `.seed`
      attribute and augments sample i only from np.random.default_rng((seed, i)), so a resumed run sees
      exactly the samples it would have seen.
    - `evaluate(model, dataset, device, cfg, *, max_images=None, progress=True, save_dir=None) ->
      {'overall': {...}, 'groups': {name: {...}}, 'headline': {metric: float}, 'images': int}`; the
      headline metrics go to the training history, TensorBoard and the progress line.
    - `table(result, title) -> str`: the result as a text table.
    - `collate`: the DataLoader's collate_fn (None: torch's default).
    - `validate(cfg, source)`: the family's own checks, raising ConfigError naming source and key.
    - `data_defaults`: extra keys of the config's `data` section.
    - `trainable(model) -> parameters`: what the optimiser updates (None: every parameter that requires
      a gradient).
    - `describe(cfg, data_dir) -> list[str]`: lines naming the data a run reads, printed before training.
    - `panels(model, dataset, device, count, size) -> list[(name, HxWx3 uint8)]`: pictures of predictions.
    - `predict(model, cfg, inputs, out_dir, device, progress, frames, panel, sheet) -> [paths]`: the
      family's own `vca-baseline predict` for inputs that are not images or episodes (VCANet: motion
      sequence folders); None: the open-set prediction of images and episode files.
    """

    build: Callable
    model_defaults: dict
    datasets: Callable
    evaluate: Callable
    table: Callable
    collate: Callable | None = None
    validate: Callable | None = None
    data_defaults: dict = field(default_factory=dict)
    trainable: Callable | None = None
    describe: Callable | None = None
    panels: Callable | None = None
    predict: Callable | None = None
    nullable: frozenset = frozenset()  # model keys (without 'model.') whose value may be null
