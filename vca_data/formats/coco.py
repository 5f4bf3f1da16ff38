"""COCO run-length encoding (RLE) helpers: parse the compressed counts string into run lengths with
numpy, paint many RLE masks into one id map, and convert masks to and from pycocotools RLE dicts.

The compressed string is COCO's: each count is written in groups of 5 bits (low bits first), one
character per group (value + 48), bit 0x20 set while more groups follow and bit 0x10 of the last group
the sign; from the fourth count on, a count is stored as the difference to the count two places
before it (pycocotools ``rleToString``/``rleFrString``). Parsing it here rather than calling
``pycocotools.mask.decode`` per object lets a whole frame be painted in one cumulative sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

#: Longest group of characters accepted for one count: 12 * 5 = 60 bits still fits an int64.
_MAX_GROUP = 12


class RleError(ValueError):
    """A compressed RLE string that is not valid for the stated mask size."""


def decode_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64, alternating background/foreground, background first) of a compressed
    COCO RLE counts string. Raises RleError on characters outside the alphabet, a truncated last
    count, or a negative run length."""
    if isinstance(counts, str):
        if not counts.isascii():
            raise RleError("RLE counts contain non-ASCII characters")
        counts = counts.encode("ascii")
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if chars.min() < 0 or chars.max() > 63:
        bad = int(np.flatnonzero((chars < 0) | (chars > 63))[0])
        raise RleError(f"RLE counts character {chr(counts[bad])!r} at offset {bad} is outside '0'..'o'")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise RleError("RLE counts end in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > _MAX_GROUP:
        raise RleError(f"RLE counts hold a number of {int(lengths.max())} characters (at most {_MAX_GROUP})")
    position = np.arange(chars.size, dtype=np.int64) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    # Counts from index 3 on are deltas to the count two places back: two interleaved cumulative sums.
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0:
        raise RleError("RLE counts decode to a negative run length")
    return runs


def encode_counts(runs: Sequence[int] | np.ndarray) -> bytes:
    """Compressed COCO counts string of run lengths (inverse of `decode_counts`)."""
    runs = [int(r) for r in runs]
    out = bytearray()
    for i, r in enumerate(runs):
        x = r - runs[i - 2] if i > 2 else r
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(c + 48)
    return bytes(out)


def foreground_runs(counts: str | bytes, num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices, in column-major pixel order, of the non-empty foreground runs
    of a compressed RLE for a mask of `num_pixels` pixels. Raises RleError if the runs do not cover
    exactly `num_pixels` pixels."""
    runs = decode_counts(counts)
    total = int(runs.sum())
    if total != num_pixels:
        raise RleError(f"RLE covers {total} pixels, expected height*width = {num_pixels}")
    bounds = np.cumsum(runs)
    ends = bounds[1::2]
    lengths = runs[1::2]
    keep = lengths > 0
    return (ends - lengths)[keep], ends[keep]


def first_overlap(starts: np.ndarray, ends: np.ndarray, owners: np.ndarray) -> tuple[int, int] | None:
    """Owners of two intervals [start, end) that overlap, or None. Intervals of one owner must be
    disjoint (as those of one RLE are); the check is a sort, not a paint."""
    if starts.size < 2:
        return None
    order = np.argsort(starts, kind="stable")
    s, e, o = starts[order], ends[order], owners[order]
    # With sorted starts, an overlap exists iff some start lies before the furthest end seen so far.
    reach = np.maximum.accumulate(e)
    clash = np.flatnonzero(s[1:] < reach[:-1])
    if clash.size == 0:
        return None
    k = int(clash[0]) + 1
    earlier = int(np.flatnonzero(e[:k] > s[k])[0])
    return int(o[earlier]), int(o[k])


def paint_runs(starts: np.ndarray, ends: np.ndarray, values: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW int32 map holding `values[i]` on the column-major interval [starts[i], ends[i]) and 0
    elsewhere. The intervals must not overlap (check with `first_overlap`)."""
    n = height * width
    delta = np.zeros(n + 1, dtype=np.int32)
    # Starts are unique and ends are unique when intervals are non-empty and disjoint, so fancy-index
    # updates do not lose repeated indices; a start may equal another interval's end, hence two steps.
    delta[starts] += values
    delta[ends] -= values
    flat = np.cumsum(delta[:n], dtype=np.int32)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def mask_to_rle(mask: np.ndarray) -> dict:
    """pycocotools RLE dict {'size': [h, w], 'counts': bytes} of a boolean HxW mask."""
    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def rle_to_mask(rle: dict) -> np.ndarray:
    """Boolean HxW mask of a pycocotools RLE dict."""
    return mask_utils.decode(rle).astype(bool)


def id_map_to_rles(id_map: np.ndarray, ids: Sequence[int] | None = None) -> dict[int, dict]:
    """RLE dict of every non-zero id of an HxW id map (or of the given ids), keyed by id."""
    if ids is None:
        ids = [int(v) for v in np.unique(id_map) if v != 0]
    return {int(i): mask_to_rle(id_map == i) for i in ids}


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(rle))


def rle_bbox(rle: dict) -> list[float]:
    """COCO bbox [x, y, w, h] of an RLE mask."""
    return [float(v) for v in mask_utils.toBbox(rle)]
