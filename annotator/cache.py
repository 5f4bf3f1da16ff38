"""Least-recently-used cache of decoded frames and rendered overlays, filled ahead of the player by
a background thread, so that stepping through a long sequence shows cached frames instead of
decoding PNGs and masks on the UI thread. Qt-free: values are whatever the loader returns."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import cv2
import numpy as np

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """Thread-safe LRU map from keys to `loader(key)`, with a prefetch queue served by one worker
    thread. A key being loaded by the worker is never loaded twice: `get` waits for it."""

    def __init__(self, loader: Callable[[K], V], capacity: int = 64):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.loader = loader
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._loading: set[K] = set()
        self._pending: list[K] = []
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve_prefetch, name="lru-prefetch", daemon=True)
        self._worker.start()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __contains__(self, key: K) -> bool:
        with self._cond:
            return key in self._items

    def get(self, key: K) -> V:
        """The cached value of `key`, loading it on this thread when it is neither cached nor being
        prefetched."""
        with self._cond:
            while key in self._loading:
                self._cond.wait()
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            self._loading.add(key)
        try:
            value = self.loader(key)
        finally:
            with self._cond:
                self._loading.discard(key)
                self._cond.notify_all()
        self._store(key, value)
        return value

    def prefetch(self, keys: Iterable[K]) -> None:
        """Replace the prefetch queue by `keys` (loaded in order, skipping cached ones): the newest
        request wins, so a player that jumps ahead does not wait behind stale work."""
        with self._cond:
            self._pending = [k for k in keys if k not in self._items]
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()
            self._pending.clear()

    def discard_if(self, stale: Callable[[K], bool]) -> None:
        """Drop every cached key for which `stale(key)` is true."""
        with self._cond:
            for key in [k for k in self._items if stale(k)]:
                del self._items[key]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the prefetch queue is empty and nothing is loading (for tests and benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._loading, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._worker.join(timeout=5)

    def _store(self, key: K, value: V) -> None:
        with self._cond:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def _serve_prefetch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._pending)
                if self._closed:
                    return
                key = self._pending.pop(0)
                if key in self._items or key in self._loading:
                    continue
                self._loading.add(key)
            try:
                value = self.loader(key)
            except Exception:  # a prefetch failure resurfaces when the UI asks for the key itself
                with self._cond:
                    self._loading.discard(key)
                    self._cond.notify_all()
                continue
            with self._cond:
                self._loading.discard(key)
                self._cond.notify_all()
            self._store(key, value)


@dataclass
class DecodedFrame:
    """One frame ready to draw: the RGB image and, per pixel, the slot (1-based position in the
    session's track-id list, 0 background) of the track covering it."""

    index: int
    rgb: np.ndarray          # HxWx3 uint8
    slots: np.ndarray        # HxW uint16
    contours: dict[int, list[np.ndarray]] = field(default_factory=dict)


class FrameStore:
    """Decoded frames and rendered overlays of one sequence, each in its own LRU cache, with the
    frames after the current one prefetched on a worker thread.

    `styles(frame)` gives {track_id: (rgb colour, unconfirmed)} for the tracks of a frame; overlays
    are cached under (frame, version), so a label change (new version) re-renders lazily."""

    def __init__(self, sequence, track_ids: list[int],
                 styles: Callable[[int], dict[int, tuple[tuple[int, int, int], bool]]],
                 capacity: int = 96, prefetch: int = 12, alpha: float = 0.45):
        self.sequence = sequence
        self.track_ids = list(track_ids)
        self.styles = styles
        self.prefetch_count = prefetch
        self.alpha = alpha
        self._slot_of = {tid: i + 1 for i, tid in enumerate(self.track_ids)}
        self._slot_lut = _slot_lookup(self.track_ids)
        h, w = sequence.height, sequence.width
        yy, xx = np.mgrid[0:h, 0:w]
        # Unconfirmed (proposal) overlays are drawn on diagonal stripes only: a hatch.
        self._hatch = (((xx + yy) // 5) % 2).astype(np.uint16)
        self._dash = (((xx + yy) // 6) % 2).astype(np.uint16)
        self.frames: LRUCache[int, DecodedFrame] = LRUCache(self._decode, capacity)
        self.overlays: LRUCache[tuple[int, int], np.ndarray] = LRUCache(self._render, capacity)

    def close(self) -> None:
        self.frames.close()
        self.overlays.close()

    def slot(self, track: int) -> int:
        return self._slot_of[track]

    def frame(self, index: int) -> DecodedFrame:
        return self.frames.get(index)

    def overlay(self, index: int, version: int) -> np.ndarray:
        """The frame with its instance overlays (HxWx3 uint8), and the next frames queued."""
        image = self.overlays.get((index, version))
        self.overlays.discard_if(lambda key: key[1] != version)
        self.prefetch_from(index, version)
        return image

    def prefetch_from(self, index: int, version: int, step: int = 1) -> None:
        n = self.sequence.num_frames
        ahead = [(index + step * k, version) for k in range(1, self.prefetch_count + 1)]
        self.overlays.prefetch(key for key in ahead if 0 <= key[0] < n)

    def track_at(self, index: int, x: float, y: float) -> int | None:
        """Track id under image pixel (x, y) of frame `index`, None for background or outside."""
        frame = self.frame(index)
        xi, yi = int(x), int(y)
        if not (0 <= yi < frame.slots.shape[0] and 0 <= xi < frame.slots.shape[1]):
            return None
        slot = int(frame.slots[yi, xi])
        return self.track_ids[slot - 1] if slot else None

    def contours(self, index: int, track: int) -> list[np.ndarray]:
        """Outline polygons (Nx2 image coordinates) of `track` in frame `index`."""
        frame = self.frame(index)
        if track not in frame.contours:
            mask = (frame.slots == self._slot_of.get(track, -1)).astype(np.uint8)
            found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            frame.contours[track] = [c.reshape(-1, 2) for c in found if len(c) >= 2]
        return frame.contours[track]

    def _decode(self, index: int) -> DecodedFrame:
        rgb = np.ascontiguousarray(self.sequence.read_image(index))
        ids = self.sequence.id_map(index)
        if rgb.shape[:2] != ids.shape:
            raise ValueError(f"{self.sequence.image_path(index)}: image is {rgb.shape[:2]} but its "
                             f"instance map is {ids.shape}")
        return DecodedFrame(index, rgb, self._slots(ids))

    def _slots(self, ids: np.ndarray) -> np.ndarray:
        if self._slot_lut is not None:
            clipped = np.where((ids >= 0) & (ids < len(self._slot_lut)), ids, 0)
            return self._slot_lut[clipped]
        known = np.asarray(self.track_ids, dtype=np.int64)
        pos = np.searchsorted(known, ids)
        pos = np.minimum(pos, len(known) - 1)
        hit = (known[pos] == ids) & (ids != 0)
        return np.where(hit, pos + 1, 0).astype(np.uint16)

    def _render(self, key: tuple[int, int]) -> np.ndarray:
        index, _version = key
        frame = self.frame(index)
        styles = self.styles(index)
        n = len(self.track_ids) + 1
        # Row 2*slot + pattern bit of the look-up tables: the colour and whether that pixel is tinted.
        colours = np.zeros((2 * n, 3), dtype=np.uint8)
        tint = np.zeros(2 * n, dtype=bool)
        outline = np.zeros(2 * n, dtype=bool)
        for tid, (colour, unconfirmed) in styles.items():
            s = self._slot_of.get(tid)
            if s is None:
                continue
            colours[2 * s: 2 * s + 2] = colour
            tint[2 * s + 1] = True
            tint[2 * s] = not unconfirmed      # unconfirmed: hatched, every other stripe
            outline[2 * s + 1] = True
            outline[2 * s] = not unconfirmed   # unconfirmed: dashed outline
        slots = frame.slots
        key_map = slots * 2 + self._hatch
        tinted = cv2.addWeighted(frame.rgb, 1.0 - self.alpha, colours[key_map], self.alpha, 0.0)
        out = frame.rgb.copy()
        np.copyto(out, tinted, where=tint[key_map][..., None])
        edge = _boundary(slots)
        dash_key = slots * 2 + self._dash
        np.copyto(out, colours[dash_key], where=(edge & outline[dash_key])[..., None])
        return out


def _slot_lookup(track_ids: list[int]) -> np.ndarray | None:
    """Dense id -> slot table when ids are small enough (KITTI-MOTS, Cityscapes-VPS); else None."""
    if not track_ids:
        return np.zeros(1, dtype=np.uint16)
    top = max(track_ids)
    if top >= 1 << 24 or min(track_ids) < 0 or len(track_ids) >= 1 << 16:
        return None
    lut = np.zeros(top + 1, dtype=np.uint16)
    lut[np.asarray(track_ids)] = np.arange(1, len(track_ids) + 1, dtype=np.uint16)
    return lut


def _boundary(slots: np.ndarray) -> np.ndarray:
    """Pixels of an instance whose 4-neighbourhood holds another slot (its outline, one pixel wide)."""
    edge = np.zeros(slots.shape, dtype=bool)
    horizontal = slots[:, 1:] != slots[:, :-1]
    vertical = slots[1:, :] != slots[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge & (slots > 0)
