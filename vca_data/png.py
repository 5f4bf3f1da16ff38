"""Reading COCO panoptic PNGs (segment id = R + 256 G + 256^2 B) into id maps, as fast as the machine allows.

Decoding the PNG is most of the cost of evaluating panoptic predictions from files, so the decoder is
chosen with care: libspng (`pyspng`, when installed) decodes straight into RGBA, whose bytes read as one
little-endian uint32 are the id plus the alpha byte; OpenCV's libpng is the fallback, and the one used
from several threads, since only OpenCV releases the GIL while it decodes. Both give identical ids.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

try:
    import pyspng
except ImportError:  # optional: OpenCV decodes every PNG too
    pyspng = None

DECODERS = ("auto", "spng", "opencv")
_ID_MASK = np.uint32(0xFFFFFF)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale with alpha", 6: "RGBA"}


def _check_header(data: bytes, source: str) -> None:
    """Panoptic PNGs are 8-bit RGB(A) or palette images; anything else (a 16-bit or greyscale map, some
    other file) is refused before decoding, whichever decoder runs."""
    if len(data) < 33 or not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError(f"{source}: not a PNG file")
    depth, colour = data[24], data[25]
    if colour not in (2, 3, 6) or (colour != 3 and depth != 8):
        kind = _COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise ValueError(f"{source}: panoptic PNGs hold 8-bit RGB colours, got a {depth}-bit {kind} image")


def _ids_from_rgba(rgba: np.ndarray) -> np.ndarray:
    # the four bytes of a pixel read as one little-endian uint32: R + 256 G + 256^2 B + 256^3 A
    return (rgba.view("<u4")[..., 0] & _ID_MASK).view(np.int32)


def panoptic_ids_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """HxW int32 segment ids (R + 256 G + 256^2 B) of an HxWx3 or HxWx4 uint8 array in RGB(A) order."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"panoptic colours must be an HxWx3 or HxWx4 uint8 array, got {rgb.dtype} {rgb.shape}")
    if rgb.shape[2] == 3:
        rgb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA)
    return _ids_from_rgba(np.ascontiguousarray(rgb))


def panoptic_rgb(ids: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB colours of segment ids in 0..2^24-1 (R = id mod 256, G, B the next bytes): the
    inverse of `panoptic_ids_of_rgb`, what a panoptic PNG stores. The caller checks the range."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def panoptic_ids(data: bytes, source: str = "<bytes>", decoder: str = "auto") -> np.ndarray:
    """HxW int32 segment ids of the PNG bytes `data` (8-bit RGB or RGBA; alpha is ignored).
    `decoder`: "spng" (pyspng; holds the GIL), "opencv" (releases it), or "auto" (spng when installed)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "spng" and pyspng is None:
        raise ValueError("decoder 'spng' needs the pyspng package (pip install pyspng)")
    _check_header(data, source)
    if decoder != "opencv" and pyspng is not None:
        try:
            rgba = pyspng.load(data, "RGBA")
        except Exception as err:  # pyspng raises plain RuntimeError/ValueError with libspng's message
            raise ValueError(f"{source}: cannot decode as a PNG image: {err}") from err
        return _ids_from_rgba(np.ascontiguousarray(rgba))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{source}: cannot decode as a PNG image")
    code = cv2.COLOR_BGR2RGBA if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return _ids_from_rgba(cv2.cvtColor(image, code))


def read_panoptic_png(path: str | Path, decoder: str = "auto") -> np.ndarray:
    """HxW int32 segment ids of a COCO panoptic PNG file; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read: {err.strerror or err}") from err
    return panoptic_ids(data, str(path), decoder)
