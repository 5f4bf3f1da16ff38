"""What every accumulator of this package shares: merging is adding counters (numbers or arrays)."""

from __future__ import annotations

from typing import TypeVar

Accumulator = TypeVar("Accumulator")


def add_counts(target: Accumulator, other: Accumulator, *fields: str) -> Accumulator:
    """Add `other`'s counters named `fields` (plus `num_images`) into `target`, e.g. the shards of a
    parallel evaluation; returns `target`. The caller checks first that the two count the same way."""
    for name in (*fields, "num_images"):
        setattr(target, name, getattr(target, name) + getattr(other, name))
    return target
