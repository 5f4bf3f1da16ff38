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

import cv2
import numpy as np
from pycocotools import mask as mask_utils

#: Longest group of characters accepted for one count: 7 * 5 = 35 bits hold any count or difference of
#: a mask up to 2**32 pixels, and keep the cumulative sums below far from int64 overflow.
_MAX_GROUP = 7


class RleError(ValueError):
    """A compressed RLE string that is not valid for the stated mask size; `index` is the position of
    the offending string in a batch."""

    def __init__(self, message: str, index: int = 0):
        super().__init__(message)
        self.index = index


def _segmented_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each segment (segments laid end to end, `lengths` long)."""
    total = np.cumsum(values)
    firsts = np.cumsum(lengths) - lengths
    base = np.zeros(lengths.size, dtype=values.dtype)
    nonempty = lengths > 0
    base[nonempty] = (total - values)[firsts[nonempty]]
    return total - np.repeat(base, lengths)


def decode_counts_batch(counts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many compressed COCO counts strings in one vectorised pass: returns (runs,
    offsets), the runs of string k being runs[offsets[k]:offsets[k+1]] (int64, background first).
    Raises RleError, with `index` = the first bad string, on characters outside the alphabet, a
    truncated last count, an overlong count, or a negative run length."""
    raw = []
    for k, c in enumerate(counts):
        if isinstance(c, str):
            if not c.isascii():
                raise RleError("RLE counts contain non-ASCII characters", k)
            c = c.encode("ascii")
        raw.append(c)
    char_lengths = np.fromiter((len(c) for c in raw), dtype=np.int64, count=len(raw))
    chars = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.int64) - 48
    owner_of_char = np.repeat(np.arange(len(raw)), char_lengths)
    bad = (chars < 0) | (chars > 63)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        k = int(owner_of_char[i])
        offset = i - int(char_lengths[:k].sum())
        raise RleError(f"RLE counts character {chr(chars[i] + 48)!r} at offset {offset} is outside '0'..'o'", k)
    more = (chars & 0x20) != 0
    last_char = np.cumsum(char_lengths) - 1
    truncated = (char_lengths > 0) & more[np.maximum(last_char, 0)]
    if truncated.any():
        raise RleError("RLE counts end in the middle of a number", int(np.flatnonzero(truncated)[0]))
    ends = np.flatnonzero(~more)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.size and lengths.max() > _MAX_GROUP:
        g = int(np.flatnonzero(lengths > _MAX_GROUP)[0])
        raise RleError(f"RLE counts hold a number of {int(lengths[g])} characters (at most {_MAX_GROUP})",
                       int(owner_of_char[ends[g]]))
    position = np.arange(chars.size, dtype=np.int64) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts) if starts.size else starts
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    # Groups never straddle two strings (each string ends a group), so counting group ends per string
    # gives each string's number of runs.
    num_runs = np.bincount(owner_of_char[ends], minlength=len(raw)) if ends.size else np.zeros(len(raw), np.int64)
    j = np.arange(values.size) - np.repeat(np.cumsum(num_runs) - num_runs, num_runs)
    # From the fourth count on, a count is a difference to the count two places back: the odd counts
    # and the even counts from the third on are two cumulative sums per string.
    runs = values.copy()
    odd = j % 2 == 1
    runs[odd] = _segmented_cumsum(values[odd], num_runs // 2)
    even = (j % 2 == 0) & (j >= 2)
    runs[even] = _segmented_cumsum(values[even], np.maximum(num_runs - 1, 0) // 2)
    if runs.size and runs.min() < 0:
        g = int(np.flatnonzero(runs < 0)[0])
        raise RleError("RLE counts decode to a negative run length", int(owner_of_char[ends[g]]))
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum(num_runs, out=offsets[1:])
    return runs, offsets


def decode_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64, alternating background/foreground, background first) of one compressed
    COCO RLE counts string (see `decode_counts_batch`)."""
    return decode_counts_batch([counts])[0]


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


def foreground_runs_batch(counts: Sequence[str | bytes],
                          num_pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, owners) of the non-empty foreground runs of many compressed RLE strings, each
    for a mask of `num_pixels` pixels: run i covers the column-major pixels [starts[i], ends[i]) of
    string owners[i]. Raises RleError (with `index`) if a string is invalid or does not cover exactly
    `num_pixels` pixels."""
    runs, offsets = decode_counts_batch(counts)
    num_runs = np.diff(offsets)
    totals = np.zeros(num_runs.size, dtype=np.int64)
    nonempty = num_runs > 0
    if runs.size:
        totals[nonempty] = np.add.reduceat(runs, offsets[:-1][nonempty])
    wrong = np.flatnonzero(totals != num_pixels)
    if wrong.size:
        k = int(wrong[0])
        raise RleError(f"RLE covers {int(totals[k])} pixels, expected height*width = {num_pixels}", k)
    bounds = _segmented_cumsum(runs, num_runs)
    owner = np.repeat(np.arange(num_runs.size), num_runs)
    j = np.arange(runs.size) - np.repeat(offsets[:-1], num_runs)
    foreground = (j % 2 == 1) & (runs > 0)
    ends = bounds[foreground]
    return ends - runs[foreground], ends, owner[foreground]


def foreground_runs(counts: str | bytes, num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices, in column-major pixel order, of the non-empty foreground runs
    of one compressed RLE for a mask of `num_pixels` pixels (see `foreground_runs_batch`)."""
    starts, ends, _ = foreground_runs_batch([counts], num_pixels)
    return starts, ends


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
    # cv2's blocked transpose is several times faster than numpy's strided copy for this shape.
    return cv2.transpose(flat.reshape(width, height))


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
