"""Reading evaluation inputs ahead of the metric: image decoding (PNG, npy) dominates the time of an
evaluation from files and releases the GIL, so a few threads decode the next frames while the metric
counts the current one."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def read_ahead(load: Callable[[Item], Result], items: Iterable[Item], workers: int = 1) -> Iterator[Result]:
    """`map(load, items)` in order, with up to `2 * workers` items loaded ahead by `workers` threads
    (memory stays at a few frames); `workers <= 1` loads in the calling thread. An exception raised by
    `load` surfaces when its item is reached."""
    if workers <= 1:
        yield from map(load, items)
        return
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metrics-read") as pool:
        pending = deque(pool.submit(load, item) for item in islice(iterator, 2 * workers))
        while pending:
            result = pending.popleft().result()
            for item in islice(iterator, 1):
                pending.append(pool.submit(load, item))
            yield result
