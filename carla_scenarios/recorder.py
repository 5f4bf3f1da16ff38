"""Episode recorder: hands decoded frames to the `vca_data` episode writer running in a writer process,
so compression and disk writes overlap the simulation loop.

A process rather than a thread alone: h5py holds the GIL while it compresses and writes, which would
stall the simulation loop (the offline world renders in-process). A feeder thread takes frames from a
bounded queue (a slow disk slows the loop down instead of filling memory) and streams them, pickled,
into the writer's stdin; the writer answers on its stdout.

An error in the writer is raised again in the caller at the next `put` or at `close`. Leaving the
context without `close()` (an exception, Ctrl-C) aborts: the writer is stopped and the `.part` file
deleted. The writer runs in its own session, so Ctrl-C reaches only the collector, which decides; if
the collector dies, the writer reads end of file and deletes its `.part`. Nothing that the reader
takes for complete is ever left behind.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from carla_scenarios.decode import EncodedImage
from vca_data.episodes import PART_SUFFIX, EpisodeWriter

_POLL_S = 0.5
WRITER_NICENESS = 5
QUEUE_BYTES = 256 * 2**20  # frames waiting for the writer take at most about this much memory
BYTES_PER_PIXEL = 3 + 4 + 1 + 4 + 1  # rgb, depth, semantic, instance, fine
_DONE = object()
# Test hook: "NAME:K:MARKER" makes the writer of episode file NAME, after its K-th frame, create the file
# MARKER and wait until the collector is gone (so a test can kill a run at a known point, not by timing).
HOLD_ENV = "VCA_WRITER_HOLD"


class RecorderError(RuntimeError):
    """The writer failed; the message carries the episode file and the original error."""


class EpisodeRecorder:
    def __init__(self, path: Path, attrs: dict, height: int, width: int, max_queue: int | None = None):
        self.path = Path(path)
        self.part_path = self.path.with_name(self.path.name + PART_SUFFIX)
        self.frames = 0
        self._closed = False
        self._error: str | None = None
        if max_queue is None:
            max_queue = int(min(32, max(4, QUEUE_BYTES // (height * width * BYTES_PER_PIXEL))))
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._replies: queue.Queue = queue.Queue()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "carla_scenarios.recorder"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._feeder = threading.Thread(target=self._feed, name=f"feed-{self.path.stem}", daemon=True)
        self._listener = threading.Thread(target=self._listen, name=f"listen-{self.path.stem}", daemon=True)
        self._feeder.start()
        self._listener.start()
        self._queue.put(("open", str(self.path), dict(attrs), int(height), int(width)))

    # -- threads ----------------------------------------------------------------------------------

    def _feed(self) -> None:
        pipe = self._process.stdin
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    break
                pickle.dump(item, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the writer is gone; its reply (or exit code) says why
        finally:
            try:
                pipe.close()
            except (BrokenPipeError, OSError):
                pass

    def _listen(self) -> None:
        try:
            while True:
                self._replies.put(pickle.load(self._process.stdout))
        except (EOFError, OSError, pickle.UnpicklingError):
            self._replies.put(("exit", None))

    # -- caller side ------------------------------------------------------------------------------

    def _take_reply(self, block: bool) -> tuple | None:
        try:
            return self._replies.get(timeout=_POLL_S) if block else self._replies.get_nowait()
        except queue.Empty:
            return None

    def _note(self, reply: tuple) -> None:
        kind, value = reply[0], reply[1]
        if kind == "error":
            self._error = value
        elif kind == "exit" and self._error is None:
            self._error = f"writer process ended unexpectedly (exit code {self._process.wait()})"

    def _check(self) -> None:
        while self._error is None:
            reply = self._take_reply(block=False)
            if reply is None:
                break
            self._note(reply)
        if self._error is not None:
            raise RecorderError(f"{self.path}: writing the episode failed: {self._error}")

    def put(self, frame: dict) -> None:
        """Queue one frame (blocks while the queue is full). Values may be `EncodedImage`s: the writer
        process decodes them."""
        if self._closed:
            raise RecorderError(f"{self.path}: recorder already closed")
        self._check()
        while True:
            try:
                self._queue.put(("frame", frame), timeout=_POLL_S)
                break
            except queue.Full:
                self._check()
        self.frames += 1

    def close(self) -> Path:
        """Write the remaining frames and complete the file; returns the final episode path."""
        if self._closed:
            raise RecorderError(f"{self.path}: recorder already closed")
        self._check()
        self._queue.put(("close",))
        self._queue.put(_DONE)
        result = None
        while result is None and self._error is None:
            reply = self._take_reply(block=True)
            if reply is None:
                continue
            if reply[0] == "closed":
                result = Path(reply[1])
            elif reply[0] != "ready":
                self._note(reply)
        self._closed = True
        self._shutdown()
        if result is None:
            self.part_path.unlink(missing_ok=True)
            raise RecorderError(f"{self.path}: writing the episode failed: {self._error}")
        return result

    def abort(self) -> None:
        """Stop the writer and delete the partial file."""
        self._closed = True
        if self._process.poll() is None:
            self._process.terminate()
        self._shutdown()
        self.part_path.unlink(missing_ok=True)

    def _shutdown(self) -> None:
        try:
            self._process.wait(timeout=30.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        while True:  # unblock the feeder if it still waits on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_DONE)
        self._feeder.join(timeout=5.0)
        self._listener.join(timeout=5.0)
        self._process.stdout.close()

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.abort()


def _serve(source, sink) -> int:
    """The writer process: open, append frames, close, answering on `sink`; end of input aborts."""

    def reply(*msg) -> None:
        pickle.dump(msg, sink, protocol=pickle.HIGHEST_PROTOCOL)
        sink.flush()

    writer = None
    hold = _hold_point(os.environ.get(HOLD_ENV))
    parent = os.getppid()
    try:
        while True:
            try:
                msg = pickle.load(source)
            except EOFError:  # the collector is gone or gave up: never complete this episode
                if writer is not None:
                    writer.abort()
                return 1
            if msg[0] == "open":
                writer = EpisodeWriter(Path(msg[1]), msg[2], msg[3], msg[4])
                reply("ready", None)
            elif msg[0] == "frame":
                frame = {k: (v.decode() if isinstance(v, EncodedImage) else v) for k, v in msg[1].items()}
                writer.append(frame)
                if hold is not None and Path(writer.path).name == hold[0] and writer.num_frames == hold[1]:
                    Path(hold[2]).write_text(str(writer.num_frames))
                    while os.getppid() == parent:  # held until the collector dies; then its pipe ends
                        time.sleep(0.05)
            elif msg[0] == "close":
                reply("closed", str(writer.close()))
                return 0
    except Exception as e:
        if writer is not None:
            writer.abort()
        reply("error", f"{type(e).__name__}: {e}")
        return 1


def _hold_point(text: str | None) -> tuple[str, int, str] | None:
    """(episode file name, frame count, marker path) of the test hook's value, None when unset."""
    if not text:
        return None
    name, _, rest = text.partition(":")
    count, _, marker = rest.partition(":")
    if not (name and count.isdigit() and int(count) > 0 and marker):
        raise ValueError(f"{HOLD_ENV}={text!r}: expected NAME:K:MARKER (episode file, frame count >= 1, marker file)")
    return name, int(count), marker


if __name__ == "__main__":
    # the protocol owns the real stdout; anything else printed goes to stderr
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # the simulation loop comes first on a busy machine; the queue absorbs the writer's lag
    os.nice(WRITER_NICENESS)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.exit(_serve(sys.stdin.buffer, protocol_out))
