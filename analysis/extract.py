"""Prototype extraction over an episode dataset: choose the frames that show each class (up to N per
class), run the backbone once per chosen frame for all classes in it, and pool under each class mask.
Frames are read and prepared on a background thread so the backbone is never kept waiting."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from analysis.prototypes import ClassSpec, PrototypeAccumulator, Prototypes, masked_average_pool
from vca_data.episodes import EpisodeReader, list_episodes
from vca_data.labels import carla_to_train

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class FrameChoice:
    episode: Path
    index: int
    classes: list[int]  # indices into the class list


def choose_frames(episodes: list[Path], specs: list[ClassSpec], max_images: int | None,
                  min_pixels: int = 16, progress: bool = True) -> list[FrameChoice]:
    """Scan the label maps (cheap) and keep, in dataset order, frames that add at least one class that
    still needs images; each kept frame lists every wanted class visible in it."""
    need_semantic = any(s.train_id is not None for s in specs)
    counts = np.zeros(len(specs), dtype=np.int64)
    chosen: list[FrameChoice] = []
    keys = ("fine", "semantic") if need_semantic else ("fine",)
    for path in tqdm(episodes, desc="scanning episodes", unit="ep", disable=not progress):
        with EpisodeReader(path) as reader:
            for i in range(len(reader)):
                frame = reader.read(i, keys)
                train_ids = carla_to_train(frame["semantic"]) if need_semantic else None
                present = [k for k, s in enumerate(specs)
                           if (max_images is None or counts[k] < max_images)
                           and int(s.mask(frame["fine"], train_ids).sum()) >= min_pixels]
                if present:
                    chosen.append(FrameChoice(path, i, present))
                    counts[present] += 1
        if max_images is not None and (counts >= max_images).all():
            break
    return chosen


def _prepare(reader: EpisodeReader, choice: FrameChoice, specs: list[ClassSpec]) -> tuple[np.ndarray, np.ndarray]:
    keys = ("rgb", "fine", "semantic") if any(specs[k].train_id is not None for k in choice.classes) else ("rgb", "fine")
    frame = reader.read(choice.index, keys)
    train_ids = carla_to_train(frame["semantic"]) if "semantic" in frame else None
    image = ((frame["rgb"].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    masks = np.stack([specs[k].mask(frame["fine"], train_ids) for k in choice.classes])
    return np.ascontiguousarray(image), masks


def _batches(choices: list[FrameChoice], specs: list[ClassSpec], batch_size: int,
             prefetch: int = 4) -> Iterator[tuple[list[FrameChoice], np.ndarray, list[np.ndarray]]]:
    """Yield batches of prepared frames, read by a background thread."""
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        readers: dict[Path, EpisodeReader] = {}
        try:
            for start in range(0, len(choices), batch_size):
                group = choices[start:start + batch_size]
                images, masks = [], []
                for c in group:
                    if c.episode not in readers:
                        readers[c.episode] = EpisodeReader(c.episode)
                    img, m = _prepare(readers[c.episode], c, specs)
                    images.append(img)
                    masks.append(m)
                while not stop.is_set():
                    try:
                        q.put((group, np.stack(images), masks), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(None)
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(e)
        finally:
            for r in readers.values():
                r.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class ExtractionTiming:
    images: int = 0
    total_s: float = 0.0
    backbone_s: float = 0.0

    @property
    def outside_share(self) -> float:
        return 1.0 - self.backbone_s / self.total_s if self.total_s > 0 else 0.0


def extract_prototypes(data_dir: str | Path, extractor: Callable[[torch.Tensor], torch.Tensor],
                       specs: list[ClassSpec], max_images: int | None = 50, batch_size: int = 4,
                       device: str | torch.device = "cpu", min_pixels: int = 16, provenance: dict | None = None,
                       progress: bool = True, timing: ExtractionTiming | None = None) -> Prototypes:
    """Prototypes of `specs` over the episodes under `data_dir` (all splits), one backbone pass per frame."""
    episodes = list_episodes(Path(data_dir))
    if not episodes:
        raise FileNotFoundError(f"{data_dir}: no complete episodes (expected DATA/manifest.json and DATA/episodes/*.h5)")
    choices = choose_frames(episodes, specs, max_images, min_pixels, progress)
    if not choices:
        raise ValueError(f"{data_dir}: no frame shows any of the classes with at least {min_pixels} pixels")
    acc: PrototypeAccumulator | None = None
    timing = timing or ExtractionTiming()
    device = torch.device(device)
    start = time.perf_counter()
    with torch.inference_mode(), tqdm(total=len(choices), desc="prototypes", unit="img", disable=not progress) as bar:
        for group, images, masks in _batches(choices, specs, batch_size):
            t0 = time.perf_counter()
            feats = extractor(torch.from_numpy(images).to(device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timing.backbone_s += time.perf_counter() - t0
            if acc is None:
                acc = PrototypeAccumulator(len(specs), feats.shape[1], max_images)
            for b, (choice, m) in enumerate(zip(group, masks)):
                pooled, mass = masked_average_pool(feats[b:b + 1], torch.from_numpy(m)[None].to(device))
                pooled = pooled[0].double().cpu().numpy()
                for j, k in enumerate(choice.classes):
                    if float(mass[0, j]) > 0:
                        acc.add(k, pooled[j])
            bar.update(len(group))
            timing.images += len(group)
    timing.total_s += time.perf_counter() - start
    assert acc is not None
    keep = acc.counts > 0
    info = dict(provenance or {})
    info.update(data=str(data_dir), max_images=max_images, min_pixels=min_pixels, frames=len(choices))
    return Prototypes(
        names=[s.name for s, k in zip(specs, keep) if k],
        vectors=acc.means()[keep],
        counts=acc.counts[keep],
        splits=[s.split for s, k in zip(specs, keep) if k],
        scenarios=[s.scenario for s, k in zip(specs, keep) if k],
        provenance=info,
    )
