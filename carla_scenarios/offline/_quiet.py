"""Silence C-level writes to standard output and error for the duration of a block (PyBullet's import
banner), so command-line tools keep control of their first line of output."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_fds() -> Iterator[None]:
    saved: list[tuple[int, int]] = []
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # replaced stream (pytest capture, notebooks)
                continue
            stream.flush()
            saved.append((fd, os.dup(fd)))
        null = os.open(os.devnull, os.O_WRONLY)
        for fd, _ in saved:
            os.dup2(null, fd)
        os.close(null)
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
