"""Torch dataset of the open-set track: every frame of a dataset's episodes as an (image, depth, label,
fine) sample, with training labels in the 19 Cityscapes train ids, 254 on the episode split's unknown
objects and 255 void (vca_data.labels.episode_labels)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from vca_data.episodes import EpisodeError, EpisodeReader, read_manifest
from vca_data.labels import SPLITS, Catalogue, default_catalogue, episode_labels
from vca_data.transforms import Normalize, ToTensor

EPISODE_KEYS = ("rgb", "depth", "semantic", "fine")


class OpenSetDataset(Dataset):
    """Frames of the manifest's complete episodes, optionally of one split and some scenarios.

    A sample is a dict:
      - `image`: 3xHxW float32 tensor, ImageNet-normalised RGB;
      - `depth`: 1xHxW float32 tensor in metres (the sky is at CARLA's far plane, 1000 m); with
        `max_depth` set it is clipped to [0, max_depth], and with `normalize_depth` also divided by
        max_depth, giving [0, 1];
      - `label`: HxW int64 train ids, 254 on unknown objects of the episode's split, 255 void (including
        unknown objects of the other split and padding from augmentation);
      - `fine`: HxW int64 fine-grained unknown class ids (0 none);
      - `instance`: HxW int64 actor ids, only with `with_instance=True`;
      - `meta`: {episode (file path), frame (index in the episode), town, scenario, split}.

    `transform` is a callable (sample, rng) -> sample over numpy arrays with the keys image, depth,
    label, fine (and instance), e.g. vca_data.transforms.train_transform(...). When it leaves numpy
    arrays (geometric transforms only), they are converted to normalised tensors afterwards. With `seed`
    set, sample i of epoch e always gets the same augmentation (default_rng((seed, e, i))); call
    set_epoch(e) before each epoch so epochs differ (DataLoader workers must be re-created, i.e. not
    persistent, to see the new epoch). Without a seed each call draws fresh randomness.

    Episode files are opened lazily, once per process, so every DataLoader worker gets its own h5py
    handle. With `check_files` (the default) each listed file's header is checked when the dataset
    opens, so a truncated, foreign or shorter-than-listed episode fails at once with an EpisodeError
    naming the file, not inside a DataLoader worker after the first steps.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str | None = None,
        scenarios: Sequence[str] | str | None = None,
        transform: Callable | None = None,
        catalogue: Catalogue | None = None,
        frame_step: int = 1,
        max_depth: float | None = None,
        normalize_depth: bool = False,
        with_instance: bool = False,
        seed: int | None = None,
        check_files: bool = True,
    ):
        self.data_dir = Path(data_dir)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)} or None, got {split!r}")
        if frame_step < 1:
            raise ValueError(f"frame_step must be at least 1, got {frame_step}")
        if normalize_depth and not max_depth:
            raise ValueError("normalize_depth needs max_depth (the depth that maps to 1)")
        if max_depth is not None and max_depth <= 0:
            raise ValueError(f"max_depth must be positive, got {max_depth}")
        if isinstance(scenarios, str):
            scenarios = [scenarios]
        self.split = split
        self.scenarios = None if scenarios is None else tuple(scenarios)
        self.transform = transform
        self.catalogue = catalogue or default_catalogue()
        self.frame_step = int(frame_step)
        self.max_depth = max_depth
        self.normalize_depth = normalize_depth
        self.with_instance = with_instance
        self.seed = seed
        self.epoch = 0
        self.episodes = [
            e for e in read_manifest(self.data_dir)
            if (split is None or e["split"] == split) and (self.scenarios is None or e["scenario"] in self.scenarios)
        ]
        if not self.episodes:
            raise ValueError(
                f"{self.data_dir}: no complete episodes with split={split!r}, scenarios={self.scenarios!r} "
                f"in {self.data_dir / 'manifest.json'}"
            )
        if check_files:
            for entry in self.episodes:
                self._check_file(entry)
        counts = [len(range(0, e["frames"], self.frame_step)) for e in self.episodes]
        self._episode_of = np.repeat(np.arange(len(self.episodes)), counts)
        self._frame_of = np.concatenate([np.arange(0, e["frames"], self.frame_step) for e in self.episodes])
        self._finish = [ToTensor(label_keys=("label", "fine", "instance")), Normalize()]
        self._readers: dict[int, EpisodeReader] = {}
        self._pid = os.getpid()

    def _check_file(self, entry: dict) -> None:
        path = self.data_dir / entry["file"]
        manifest = self.data_dir / "manifest.json"
        if not path.is_file():
            raise EpisodeError(f"{path}: listed in {manifest} but missing")
        with EpisodeReader(path) as reader:  # checks format, version, attributes and layout
            if len(reader) < entry["frames"]:
                raise EpisodeError(f"{path}: {len(reader)} frames, {manifest} lists {entry['frames']}")

    def __len__(self) -> int:
        return len(self._frame_of)

    def _reader(self, episode: int) -> EpisodeReader:
        if self._pid != os.getpid():  # forked into a worker: handles of the parent must not be shared
            self._readers = {}
            self._pid = os.getpid()
        reader = self._readers.get(episode)
        if reader is None:
            reader = EpisodeReader(self.data_dir / self.episodes[episode]["file"])
            self._readers[episode] = reader
        return reader

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range (dataset has {len(self)} frames)")
        index = int(index) % len(self)
        episode, frame = int(self._episode_of[index]), int(self._frame_of[index])
        entry = self.episodes[episode]
        reader = self._reader(episode)
        keys = EPISODE_KEYS + (("instance",) if self.with_instance else ())
        data = reader.read(frame, keys)
        depth = data["depth"]
        if self.max_depth is not None:
            depth = np.clip(depth, 0.0, self.max_depth)
            if self.normalize_depth:
                depth = depth / np.float32(self.max_depth)
        sample = {
            "image": data["rgb"],
            "depth": depth,
            "label": episode_labels(data["semantic"], data["fine"], entry["split"], self.catalogue),
            "fine": data["fine"],
        }
        if self.with_instance:
            sample["instance"] = data["instance"]
        if self.transform is not None:
            rng = (np.random.default_rng((self.seed, self.epoch, index)) if self.seed is not None
                   else np.random.default_rng())
            sample = self.transform(sample, rng)
        if isinstance(sample["image"], np.ndarray):
            for step in self._finish:
                sample = step(sample)
        sample["meta"] = {
            "episode": str(reader.path), "frame": frame, "town": entry["town"], "scenario": entry["scenario"],
            "split": entry["split"],
        }
        return sample

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch (only matters with a seed)."""
        self.epoch = int(epoch)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = {}  # h5py handles cannot be pickled; each process opens its own
        return state
