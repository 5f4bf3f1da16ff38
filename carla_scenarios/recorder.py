"""Episode recorder: hands decoded frames to the `vca_data` episode writer on a background thread, so
compression and disk writes overlap the simulation loop.

The queue is bounded: a slow disk slows the loop down instead of filling memory. An error in the writer
thread is raised again in the caller's thread at the next `put` or at `close`. Leaving the context
without `close()` (an exception, Ctrl-C) aborts: the writer's `.part` file is deleted, so nothing the
reader would take for complete is left behind.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from vca_data.episodes import EpisodeWriter

_STOP = object()


class RecorderError(RuntimeError):
    """The writer thread failed; the message carries the episode file and the original error."""


class EpisodeRecorder:
    def __init__(self, path: Path, attrs: dict, height: int, width: int, max_queue: int = 8):
        self.path = Path(path)
        self._writer = EpisodeWriter(self.path, attrs, height, width)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self._closed = False
        self._aborting = False
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.path.stem}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._aborting:
                continue  # keep draining so that the producer never blocks on a dead writer
            try:
                self._writer.append(item)
            except BaseException as e:
                self._error = e

    def _check(self) -> None:
        if self._error is not None:
            raise RecorderError(f"{self.path}: writing the episode failed: {self._error}") from self._error

    def put(self, frame: dict) -> None:
        """Queue one frame (blocks while the queue is full)."""
        self._check()
        if self._closed:
            raise RecorderError(f"{self.path}: recorder already closed")
        while True:
            try:
                self._queue.put(frame, timeout=0.5)
                break
            except queue.Full:
                self._check()
        self.frames += 1

    def _stop_thread(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def close(self) -> Path:
        """Write the remaining frames and complete the file; returns the final episode path."""
        self._stop_thread()
        self._closed = True
        try:
            self._check()
        except RecorderError:
            self._writer.abort()
            raise
        return self._writer.close()

    def abort(self) -> None:
        """Stop writing and delete the partial file."""
        self._closed = True
        self._aborting = True
        self._stop_thread()
        self._writer.abort()

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.abort()
