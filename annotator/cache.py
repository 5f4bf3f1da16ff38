"""Least-recently-used cache of decoded frames and rendered overlays, filled ahead of the player by
a background thread, so that stepping through a long sequence shows cached frames instead of
decoding PNGs and masks on the UI thread. Qt-free: values are whatever the loader returns."""

from __future__ import annotations

import os
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
    """Thread-safe LRU map from keys to `loader(key)`, with a prefetch queue served by `workers`
    threads. A key being loaded by a worker is never loaded twice: `get` waits for it."""

    def __init__(self, loader: Callable[[K], V], capacity: int = 64, workers: int = 1):
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
        self._workers = [threading.Thread(target=self._serve_prefetch, name=f"lru-prefetch-{k}", daemon=True)
                         for k in range(workers)]
        for worker in self._workers:
            worker.start()

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
        for worker in self._workers:
            worker.join(timeout=5)

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
    """One frame ready to draw: the RGB image and, per pixel, the position (1-based) in `track_ids`
    of the track covering it (0 background). uint8 when the frame holds at most 127 tracks, so that
    the overlay is rendered with OpenCV look-up tables, which release the GIL (the UI thread keeps
    running while the prefetch thread renders); uint16 otherwise."""

    index: int
    rgb: np.ndarray              # HxWx3 uint8
    local: np.ndarray            # HxW uint8 or uint16
    track_ids: list[int]
    contours: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def position(self, track: int) -> int:
        """1-based position of `track` in this frame, 0 when absent."""
        try:
            return self.track_ids.index(track) + 1
        except ValueError:
            return 0


class FrameStore:
    """Decoded frames and rendered overlays of one sequence, each in its own LRU cache, with the
    frames after the current one prefetched on a worker thread.

    `styles(frame)` gives {track_id: (rgb colour, unconfirmed)} for the tracks of a frame; overlays
    are cached under (frame, version, scale), so a label change (new version) re-renders lazily. An
    overlay for a view that shrinks the frame is resized here, off the UI thread, so that the view
    only copies pixels instead of filtering the full image on every repaint."""

    def __init__(self, sequence, styles: Callable[[int], dict[int, tuple[tuple[int, int, int], bool]]],
                 memory_mb: int = 256, prefetch: int = 12, alpha: float = 0.45):
        self.sequence = sequence
        self.styles = styles
        self.prefetch_count = prefetch
        self.alpha = alpha
        h, w = sequence.height, sequence.width
        yy, xx = np.mgrid[0:h, 0:w]
        # Unconfirmed (proposal) overlays are tinted on diagonal stripes only (a hatch) and outlined
        # with dashes: one bit per pixel of each pattern, added to twice the track position.
        self._hatch = (((xx + yy) // 5) % 2).astype(np.uint8)
        self._dash = (((xx + yy) // 6) % 2).astype(np.uint8)
        self._cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        # Frames are decoded by the overlay workers (rendering asks for them); PNG decoding and the
        # OpenCV rendering release the GIL, so two workers use two cores when the machine has them.
        # Each cache gets about `memory_mb`: 64 KITTI frames (1242x375), 30 Cityscapes frames (2048x1024).
        capacity = int(np.clip(memory_mb * 2**20 // (h * w * 4), prefetch + 4, 64))
        self.frames: LRUCache[int, DecodedFrame] = LRUCache(self._decode, capacity, workers=0)
        workers = 2 if (os.cpu_count() or 1) >= 4 else 1
        self.overlays: LRUCache[tuple[int, int, float], np.ndarray] = LRUCache(self._render, capacity, workers)

    def close(self) -> None:
        self.frames.close()
        self.overlays.close()

    def frame(self, index: int) -> DecodedFrame:
        return self.frames.get(index)

    def overlay(self, index: int, version: int, scale: float = 1.0, direction: int = 1) -> np.ndarray:
        """Frame `index` with its instance overlays (HxWx3 uint8), resized by `scale` when it is below
        1; the next frames in `direction` (+1 or -1) are queued for the prefetch thread."""
        scale = round(min(float(scale), 1.0), 3)
        image = self.overlays.get((index, version, scale))
        self.overlays.discard_if(lambda key: key[1] != version or key[2] != scale)
        self.prefetch_from(index, version, scale, direction)
        return image

    def prefetch_from(self, index: int, version: int, scale: float = 1.0, direction: int = 1) -> None:
        n = self.sequence.num_frames
        step = 1 if direction >= 0 else -1
        ahead = [(index + step * k, version, scale) for k in range(1, self.prefetch_count + 1)]
        self.overlays.prefetch(key for key in ahead if 0 <= key[0] < n)

    def track_at(self, index: int, x: float, y: float) -> int | None:
        """Track id under image pixel (x, y) of frame `index`, None for background or outside."""
        frame = self.frame(index)
        xi, yi = int(x), int(y)
        if not (0 <= yi < frame.local.shape[0] and 0 <= xi < frame.local.shape[1]):
            return None
        k = int(frame.local[yi, xi])
        return frame.track_ids[k - 1] if k else None

    def contours(self, index: int, track: int) -> list[np.ndarray]:
        """Outline polygons (Nx2 image coordinates) of `track` in frame `index`."""
        frame = self.frame(index)
        if track not in frame.contours:
            k = frame.position(track)
            mask = (frame.local == k).astype(np.uint8) if k else np.zeros(frame.local.shape, np.uint8)
            found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            frame.contours[track] = [c.reshape(-1, 2) for c in found if len(c) >= 2]
        return frame.contours[track]

    def _decode(self, index: int) -> DecodedFrame:
        rgb = np.ascontiguousarray(self.sequence.read_image(index))
        ids = self.sequence.id_map(index)
        if rgb.shape[:2] != ids.shape:
            raise ValueError(f"{self.sequence.image_path(index)}: image is {rgb.shape[:2]} but its "
                             f"instance map is {ids.shape}")
        present = sorted({inst.track_id for inst in self.sequence.instances(index) if not inst.crowd})
        return DecodedFrame(index, rgb, _local_map(ids, present), present)

    def _render(self, key: tuple[int, int, float]) -> np.ndarray:
        index, _version, scale = key
        frame = self.frame(index)
        styles = self.styles(index)
        # Row 2*k + pattern bit of the look-up tables: colour, tinted or not, outlined or not.
        rows = 256 if frame.local.dtype == np.uint8 else 2 * len(frame.track_ids) + 2
        colours = np.zeros((rows, 3), dtype=np.uint8)
        edge_colours = np.zeros((rows, 3), dtype=np.uint8)
        tint = np.zeros(rows, dtype=np.uint8)
        outline = np.zeros(rows, dtype=np.uint8)
        for k, tid in enumerate(frame.track_ids, start=1):
            if tid not in styles:
                continue
            colour, unconfirmed = styles[tid]
            colours[2 * k: 2 * k + 2] = colour
            # A dashed outline in a paler shade stands out against the proposal's own hatch.
            edge_colours[2 * k: 2 * k + 2] = [(c + 255) // 2 for c in colour] if unconfirmed else colour
            tint[2 * k + 1] = outline[2 * k + 1] = 255
            tint[2 * k] = outline[2 * k] = 0 if unconfirmed else 255
        local = frame.local
        tint_key = _twice_plus(local, self._hatch)
        tinted = cv2.addWeighted(frame.rgb, 1.0 - self.alpha, _lookup(tint_key, colours), self.alpha, 0.0)
        out = frame.rgb.copy()
        cv2.copyTo(tinted, _lookup(tint_key, tint), out)
        # Outline: instance pixels with another value in their 4-neighbourhood (max - min != 0).
        edge = cv2.bitwise_and(cv2.compare(cv2.morphologyEx(local, cv2.MORPH_GRADIENT, self._cross), 0, cv2.CMP_NE),
                               cv2.compare(local, 0, cv2.CMP_NE))
        dash_key = _twice_plus(local, self._dash)
        cv2.copyTo(_lookup(dash_key, edge_colours), cv2.bitwise_and(edge, _lookup(dash_key, outline)), out)
        if scale < 1.0:
            h, w = out.shape[:2]
            size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))
            # Area averaging only pays off when shrinking a lot; near 1:1 it is slow and looks the same.
            out = cv2.resize(out, size, interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)
        return out


def _local_map(ids: np.ndarray, present: list[int]) -> np.ndarray:
    """Per pixel, the 1-based position of its track id in `present` (0 elsewhere)."""
    dtype = np.uint8 if len(present) <= 127 else np.uint16
    if not present:
        return np.zeros(ids.shape, dtype=dtype)
    top = int(ids.max())
    if top < 1 << 24 and int(ids.min()) >= 0:
        table = np.zeros(max(top, max(present)) + 1, dtype=dtype)
        table[present] = np.arange(1, len(present) + 1)
        return table[ids]
    known = np.asarray(present, dtype=np.int64)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return np.where(known[pos] == ids, pos + 1, 0).astype(dtype)


def _twice_plus(local: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    if local.dtype == np.uint8:
        return cv2.add(cv2.add(local, local), pattern)
    return local * 2 + pattern


def _lookup(key: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[key]: with OpenCV (GIL released) for uint8 keys, numpy otherwise."""
    if key.dtype != np.uint8:
        return table[key]
    if table.ndim == 1:
        return cv2.LUT(key, table)
    return cv2.LUT(cv2.merge([key] * table.shape[1]), table.reshape(256, 1, table.shape[1]))
