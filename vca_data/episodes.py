"""Episode files of the open-set track: one HDF5 file per recorded episode, written frame by frame,
read with random access by frame, validated without crashing on bad files, and listed in the
dataset's manifest.

Layout of `DATA/episodes/<town>_<scenario>_<seed>.h5` (format version 1):

- one dataset per field, frames along the first axis, resizable, per-frame chunks for the image-sized
  fields so a frame is read with one chunk decode per field (codecs: DEFAULT_COMPRESSION):
  `rgb` (N,H,W,3) uint8, `depth` (N,H,W) float32 metres, `semantic` (N,H,W) uint8 CARLA tag,
  `instance` (N,H,W) uint32 actor id (0 none), `fine` (N,H,W) uint8 fine-grained unknown class (0 none),
  `ego_pose` (N,4,4) float64 world from camera, `timestamp` (N,) float64 seconds, `frame` (N,) int64;
- root attributes: `format` = "vca-episode", `format_version`, `complete` (set by close), `num_frames`,
  and the episode attributes given to the writer (town, scenario, split, seed, weather, backend, width,
  height, fov, intrinsics, extrinsics, dt, frame_step, unknown_objects, ...). Scalars are stored as
  HDF5 attributes, nested values (dicts, lists, None) as JSON strings named in the `json_attrs` attribute.

A writer works on `<name>.h5.part` and renames it to `<name>.h5` only in close(), so a file with the
final name is always complete; `DATA/manifest.json` lists the complete episodes and is rewritten
atomically (under a lock file, so several collector processes can finish episodes one after another).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from vca_data.io import atomic_write_json
from vca_data.labels import SPLITS, normalize_town

FORMAT_NAME = "vca-episode"
FORMAT_VERSION = 1
#: How `ego_pose` and `extrinsics` are to be read; writers store it in the `pose_convention` attribute.
POSE_CONVENTION = (
    "ego_pose = world_from_camera; world = CARLA world with y negated (x forward, y left, z up, "
    "right-handed, metres); camera = OpenCV (x right, y down, z forward)"
)
MANIFEST_NAME = "manifest.json"
EPISODES_DIR = "episodes"
PART_SUFFIX = ".part"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: Image-sized fields: name -> (dtype, trailing shape after (H, W)).
IMAGE_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "rgb": (np.dtype(np.uint8), (3,)),
    "depth": (np.dtype(np.float32), ()),
    "semantic": (np.dtype(np.uint8), ()),
    "instance": (np.dtype(np.uint32), ()),
    "fine": (np.dtype(np.uint8), ()),
}
#: Per-frame vectors: name -> (dtype, shape of one frame).
VECTOR_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "ego_pose": (np.dtype(np.float64), (4, 4)),
    "timestamp": (np.dtype(np.float64), ()),
    "frame": (np.dtype(np.int64), ()),
}
FIELDS: tuple[str, ...] = tuple(IMAGE_FIELDS) + tuple(VECTOR_FIELDS)
REQUIRED_ATTRS: tuple[str, ...] = ("town", "scenario", "split", "seed")
MANIFEST_KEYS: tuple[str, ...] = ("file", "town", "scenario", "split", "seed", "frames", "backend", "width", "height")

#: Default codec per image field, chosen by measurement (benchmarks/bench_episodes.py, 800x600):
#: gzip level 1 shrinks depth and the label maps 30-200x and decodes them faster than lzf (h5py's lzf
#: inflates highly compressible data slowly; the shuffle filter costs more than it saves). Rendered RGB
#: with texture and sensor noise barely compresses without PNG's predictive filters (lzf saves 2%,
#: gzip-1 23%) while decoding costs 20-35x a plain read, so RGB is stored raw by default; pass
#: compression={"rgb": {"compression": "gzip", "compression_opts": 1}} to EpisodeWriter for archives.
DEFAULT_COMPRESSION: dict[str, dict] = {
    "rgb": {},
    "depth": {"compression": "gzip", "compression_opts": 1},
    "semantic": {"compression": "gzip", "compression_opts": 1},
    "instance": {"compression": "gzip", "compression_opts": 1},
    "fine": {"compression": "gzip", "compression_opts": 1},
}
_VECTOR_CHUNK = 256


class EpisodeError(ValueError):
    """An episode file or the manifest is malformed; the message names the file and what was expected."""


def episode_filename(town: str, scenario: str, seed: int) -> str:
    """File name of an episode: 'Town01_parking_7.h5' (town in CARLA's canonical spelling)."""
    if not scenario or any(c in scenario for c in "/\\_ "):
        raise ValueError(f"scenario name must be non-empty without '/', '_' or spaces, got {scenario!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return f"{normalize_town(town)}_{scenario}_{int(seed)}.h5"


# ---------------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------------

def _write_attrs(h5: h5py.File, attrs: dict) -> None:
    json_keys = []
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            h5.attrs[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            h5.attrs[key] = np.int64(value)
        elif isinstance(value, (float, np.floating)):
            h5.attrs[key] = np.float64(value)
        elif isinstance(value, str):
            h5.attrs[key] = value
        else:
            try:
                h5.attrs[key] = json.dumps(_jsonable(value))
            except TypeError as e:
                raise EpisodeError(f"episode attribute {key!r} cannot be stored: {e}") from None
            json_keys.append(key)
    h5.attrs["json_attrs"] = json.dumps(json_keys)


def _jsonable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _read_attrs(h5: h5py.File, where: str) -> dict:
    try:
        json_keys = set(json.loads(h5.attrs.get("json_attrs", "[]")))
    except (json.JSONDecodeError, TypeError) as e:
        raise EpisodeError(f"{where}: attribute 'json_attrs' is not a JSON list: {e}") from None
    attrs = {}
    for key, value in h5.attrs.items():
        if key == "json_attrs":
            continue
        if key in json_keys:
            try:
                attrs[key] = json.loads(value)
            except (json.JSONDecodeError, TypeError) as e:
                raise EpisodeError(f"{where}: attribute {key!r} is not valid JSON: {e}") from None
        elif isinstance(value, bytes):
            attrs[key] = value.decode("utf-8")
        elif isinstance(value, np.generic):
            attrs[key] = value.item()
        else:
            attrs[key] = value
    return attrs


def _check_attrs(attrs: dict, where: str) -> list[str]:
    problems = []
    for key in REQUIRED_ATTRS:
        if key not in attrs:
            problems.append(f"{where}: missing attribute {key!r}")
    if "split" in attrs and attrs["split"] not in SPLITS:
        problems.append(f"{where}: attribute 'split' must be one of {list(SPLITS)}, got {attrs['split']!r}")
    if "town" in attrs:
        try:
            normalize_town(attrs["town"])
        except ValueError as e:
            problems.append(f"{where}: attribute 'town': {e}")
    for key, shape in (("intrinsics", (3, 3)), ("extrinsics", (4, 4))):
        if key in attrs and attrs[key] is not None:
            try:
                ok = np.asarray(attrs[key], dtype=np.float64).shape == shape
            except (TypeError, ValueError):
                ok = False
            if not ok:
                problems.append(f"{where}: attribute {key!r} must be a {shape[0]}x{shape[1]} matrix")
    unknowns = attrs.get("unknown_objects", [])
    if not isinstance(unknowns, list):
        problems.append(f"{where}: attribute 'unknown_objects' must be a list")
    else:
        for j, obj in enumerate(unknowns):
            if not isinstance(obj, dict) or not {"actor_id", "fine_id"} <= set(obj):
                problems.append(f"{where}: unknown_objects[{j}] must be an object with actor_id and fine_id")
    return problems


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------

class EpisodeWriter:
    """Append frames to a new episode file. Use as a context manager: a normal exit closes (renames the
    `.part` to the final name and, when the file lies in `DATA/episodes/`, updates `DATA/manifest.json`);
    an exception leaves the `.part` (closed, readable up to the last complete frame, never listed) and
    propagates. abort() deletes the `.part` instead."""

    def __init__(
        self,
        path: Path,
        attrs: dict,
        height: int,
        width: int,
        compression: dict[str, dict] | None = None,
        update_manifest: bool = True,
    ):
        self.path = Path(path)
        if self.path.suffix != ".h5":
            raise ValueError(f"episode path must end in .h5, got {self.path}")
        if height < 1 or width < 1:
            raise ValueError(f"{self.path}: frame size must be positive, got {height}x{width}")
        self.height, self.width = int(height), int(width)
        self.part_path = self.path.with_name(self.path.name + PART_SUFFIX)
        self.update_manifest = update_manifest
        attrs = dict(attrs)
        reserved = sorted({"format", "complete", "num_frames", "json_attrs"} & set(attrs))
        if reserved:
            raise ValueError(f"{self.path}: attributes {reserved} are set by the writer, not by the caller")
        if attrs.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"{self.path}: this writer writes format version {FORMAT_VERSION}, "
                             f"attrs ask for {attrs['format_version']!r}")
        for key in ("width", "height"):
            if key in attrs and int(attrs[key]) != getattr(self, key):
                raise ValueError(f"{self.path}: attribute {key}={attrs[key]} differs from the frame {key} {getattr(self, key)}")
        attrs.update(width=self.width, height=self.height)
        problems = _check_attrs(attrs, str(self.path))
        if problems:
            raise ValueError("; ".join(problems))
        attrs.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, complete=False, num_frames=0)
        codecs = dict(DEFAULT_COMPRESSION)
        codecs.update(compression or {})

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._h5: h5py.File | None = h5py.File(self.part_path, "w")
        self.num_frames = 0
        try:
            _write_attrs(self._h5, attrs)
            for name, (dtype, tail) in IMAGE_FIELDS.items():
                shape = (self.height, self.width) + tail
                self._h5.create_dataset(
                    name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                    chunks=(1,) + shape, **codecs.get(name, {}),
                )
            for name, (dtype, tail) in VECTOR_FIELDS.items():
                self._h5.create_dataset(
                    name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dtype, chunks=(_VECTOR_CHUNK,) + tail,
                )
        except BaseException:
            self._h5.close()
            self._h5 = None
            self.part_path.unlink(missing_ok=True)
            raise

    def _checked(self, frame: dict, name: str) -> np.ndarray:
        where = f"{self.path.name}: frame {self.num_frames}: field {name!r}"
        if name not in frame:
            raise ValueError(f"{where} missing (a frame needs {list(FIELDS)})")
        dtype, tail = IMAGE_FIELDS.get(name) or VECTOR_FIELDS[name]
        shape = (self.height, self.width) + tail if name in IMAGE_FIELDS else tail
        arr = np.asarray(frame[name])
        if arr.shape != shape:
            raise ValueError(f"{where}: expected shape {shape}, got {arr.shape}")
        if arr.dtype == dtype:
            return arr
        if dtype.kind in "ui":
            if arr.dtype.kind not in "uib":
                raise ValueError(f"{where}: expected integer values ({dtype}), got {arr.dtype}")
            info = np.iinfo(dtype)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise ValueError(f"{where}: values {arr.min()}..{arr.max()} do not fit {dtype}")
        elif arr.dtype.kind not in "uif":
            raise ValueError(f"{where}: expected numbers ({dtype}), got {arr.dtype}")
        return arr.astype(dtype)

    def append(self, frame: dict) -> None:
        """Add one frame: rgb, depth, semantic, instance, fine, ego_pose, timestamp, frame (see module doc)."""
        if self._h5 is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        arrays = {name: self._checked(frame, name) for name in FIELDS}  # validate all before writing any
        n = self.num_frames
        for name, arr in arrays.items():
            dset = self._h5[name]
            dset.resize(n + 1, axis=0)
            dset[n] = arr
        self.num_frames = n + 1
        self._h5.attrs["num_frames"] = np.int64(self.num_frames)

    def close(self) -> Path:
        """Mark the file complete, rename `.part` to the final name, update the manifest; return the path."""
        if self._h5 is None:
            if self.path.exists() and not self.part_path.exists():
                return self.path
            raise RuntimeError(f"{self.path}: writer was aborted")
        if self.num_frames == 0:
            self.abort()
            raise ValueError(f"{self.path}: an episode needs at least one frame; nothing was written")
        self._h5.attrs["complete"] = True
        self._h5.flush()
        self._h5.close()
        self._h5 = None
        with open(self.part_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.part_path, self.path)
        if self.update_manifest and self.path.parent.name == EPISODES_DIR:
            update_manifest(self.path.parent.parent, self.path)
        return self.path

    def abort(self) -> None:
        """Discard the episode: close and delete the `.part`."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self.part_path.unlink(missing_ok=True)

    def _leave_part(self) -> None:
        if self._h5 is not None:
            self._h5.flush()
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._leave_part()


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------

def _open_problems(path: Path) -> tuple[h5py.File | None, list[str]]:
    """Open an episode file for reading, or explain why it is not one."""
    if not path.is_file():
        return None, [f"{path}: no such file"]
    with open(path, "rb") as f:
        head = f.read(8)
    if head != HDF5_SIGNATURE:
        return None, [f"{path}: not an HDF5 file (foreign or empty file)"]
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        return None, [f"{path}: cannot open as HDF5, the file is truncated or corrupt ({e})"]
    try:
        name = h5.attrs.get("format")
        version = h5.attrs.get("format_version")
    except Exception as e:  # damaged attribute heap: h5py raises several kinds
        h5.close()
        return None, [f"{path}: cannot read the file's attributes, the file is corrupt ({e})"]
    if name != FORMAT_NAME:
        h5.close()
        return None, [f"{path}: foreign HDF5 file, not a {FORMAT_NAME} (attribute 'format' missing or different)"]
    version = version.item() if isinstance(version, np.generic) else version
    if version != FORMAT_VERSION:
        h5.close()
        return None, [f"{path}: {FORMAT_NAME} format version {version!r}, this reader reads version {FORMAT_VERSION}"]
    return h5, []


def _layout_problems(h5: h5py.File, attrs: dict, path: Path) -> list[str]:
    problems = []
    num = attrs.get("num_frames")
    height, width = attrs.get("height"), attrs.get("width")
    for name in FIELDS:
        if name not in h5:
            problems.append(f"{path}: missing field {name!r}")
            continue
        dset = h5[name]
        if not isinstance(dset, h5py.Dataset):
            problems.append(f"{path}: {name!r} is not a dataset")
            continue
        dtype, tail = IMAGE_FIELDS.get(name) or VECTOR_FIELDS[name]
        expect = ((height, width) + tail) if name in IMAGE_FIELDS else tail
        if dset.dtype != dtype or tuple(dset.shape[1:]) != expect:
            problems.append(f"{path}: field {name!r} is {dset.dtype} {dset.shape}, expected {dtype} (N, {expect})")
        if dset.shape and dset.shape[0] != num:
            problems.append(f"{path}: field {name!r} has {dset.shape[0]} frames, attribute num_frames says {num}")
    return problems


class EpisodeReader:
    """Random access to the frames of one complete episode file; keeps the file open until close().

    Opening checks the format, version, attributes and field layout and raises EpisodeError naming the
    file; use validate() to list problems without raising. The small per-frame vectors (ego_pose,
    timestamp, frame) are read into memory at open."""

    def __init__(self, path: Path, allow_incomplete: bool = False):
        self.path = Path(path)
        h5, problems = _open_problems(self.path)
        if h5 is None:
            raise EpisodeError(problems[0])
        try:
            self.attrs = _read_attrs(h5, str(self.path))
            problems = _check_attrs(self.attrs, str(self.path)) + _layout_problems(h5, self.attrs, self.path)
            if not allow_incomplete and not self.attrs.get("complete", False):
                problems.insert(0, f"{self.path}: incomplete episode (the writer did not finish)")
            if problems:
                raise EpisodeError("; ".join(problems))
            self._vectors = {name: h5[name][()] for name in VECTOR_FIELDS}
        except EpisodeError:
            h5.close()
            raise
        except Exception as e:  # damaged metadata surfaces as various h5py errors
            h5.close()
            raise EpisodeError(f"{self.path}: cannot read ({type(e).__name__}: {e})") from e
        self._h5: h5py.File | None = h5
        self._datasets = {name: h5[name] for name in IMAGE_FIELDS}
        self.num_frames = int(self.attrs["num_frames"])
        self.height, self.width = int(self.attrs["height"]), int(self.attrs["width"])

    def __len__(self) -> int:
        return self.num_frames

    def _index(self, i: int) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{self.path}: frame index must be an integer, got {type(i).__name__}")
        j = int(i) + self.num_frames if i < 0 else int(i)
        if not 0 <= j < self.num_frames:
            raise IndexError(f"{self.path}: frame {i} out of range (episode has {self.num_frames} frames)")
        return j

    def read(self, i: int, keys: Sequence[str]) -> dict:
        """The named fields of frame i (timestamp as float, frame as int, the rest as arrays)."""
        if self._h5 is None:
            raise EpisodeError(f"{self.path}: reader is closed")
        j = self._index(i)
        out: dict = {}
        for key in keys:
            if key in self._datasets:
                dset = self._datasets[key]
                arr = np.empty(dset.shape[1:], dtype=dset.dtype)
                dset.read_direct(arr, np.s_[j])
                out[key] = arr
            elif key == "timestamp":
                out[key] = float(self._vectors[key][j])
            elif key == "frame":
                out[key] = int(self._vectors[key][j])
            elif key in self._vectors:
                out[key] = self._vectors[key][j].copy()
            else:
                raise KeyError(f"{self.path}: no field {key!r} (fields: {list(FIELDS)})")
        return out

    def __getitem__(self, i: int) -> dict:
        return self.read(i, FIELDS)

    def __iter__(self) -> Iterator[dict]:
        for i in range(self.num_frames):
            yield self[i]

    def column(self, key: str) -> np.ndarray:
        """All frames' values of a per-frame vector field (ego_pose, timestamp, frame)."""
        if key not in self._vectors:
            raise KeyError(f"{self.path}: {key!r} is not one of {list(VECTOR_FIELDS)}")
        return self._vectors[key].copy()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def validate(path: Path, deep: bool = False) -> list[str]:
    """Problems of an episode file, each message naming the file; an empty list means a valid complete
    episode. Checks the signature, format, version, completeness, attributes, field layout and frame
    counts, and decodes the first and last frame (every frame with deep=True). Never raises on bad files."""
    path = Path(path)
    problems: list[str] = []
    if path.name.endswith(PART_SUFFIX):
        problems.append(f"{path}: unfinished episode (.part file: the writer was interrupted or is still running)")
    try:
        h5, open_problems = _open_problems(path)
    except OSError as e:
        return problems + [f"{path}: cannot read: {e}"]
    if h5 is None:
        return problems + open_problems
    try:
        try:
            attrs = _read_attrs(h5, str(path))
        except EpisodeError as e:
            return problems + [str(e)]
        if not attrs.get("complete", False) and not path.name.endswith(PART_SUFFIX):
            problems.append(f"{path}: incomplete episode (the writer did not finish)")
        problems += _check_attrs(attrs, str(path))
        layout = _layout_problems(h5, attrs, path)
        problems += layout
        num = attrs.get("num_frames")
        if not layout and isinstance(num, int) and num > 0:
            frames = range(num) if deep else sorted({0, num - 1})
            for i in frames:
                for name in FIELDS:
                    try:
                        h5[name][i]
                    except Exception as e:  # any decode failure of a damaged file is a finding, not a crash
                        problems.append(f"{path}: frame {i}: field {name!r} cannot be read ({e})")
                        break
        elif not layout and num == 0:
            problems.append(f"{path}: episode has no frames")
    except Exception as e:  # h5py raises many kinds on damaged metadata; report them all
        problems.append(f"{path}: cannot read ({type(e).__name__}: {e})")
    finally:
        with contextlib.suppress(Exception):
            h5.close()
    return problems


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _manifest_lock(data_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of the manifest between processes (POSIX advisory lock)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): updates are still atomic, only not serialised
        yield
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{MANIFEST_NAME}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _load_manifest(data_dir: Path) -> list[dict]:
    path = data_dir / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EpisodeError(f"{path}: line {e.lineno}: invalid JSON ({e.msg}); rebuild it with rebuild_manifest()") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION or not isinstance(doc.get("episodes"), list):
        raise EpisodeError(f"{path}: expected {{'format_version': {FORMAT_VERSION}, 'episodes': [...]}}")
    for j, entry in enumerate(doc["episodes"]):
        if not isinstance(entry, dict) or not set(MANIFEST_KEYS[:7]) <= set(entry):
            raise EpisodeError(f"{path}: episodes[{j}] must be an object with keys {list(MANIFEST_KEYS[:7])}")
    return doc["episodes"]


def _entry(data_dir: Path, episode_path: Path) -> dict:
    with EpisodeReader(episode_path) as reader:
        a = reader.attrs
        try:
            rel = episode_path.resolve().relative_to(data_dir.resolve())
        except ValueError:
            raise EpisodeError(f"{episode_path}: not inside the dataset folder {data_dir}") from None
        return {
            "file": rel.as_posix(), "town": normalize_town(a["town"]), "scenario": a["scenario"],
            "split": a["split"], "seed": a["seed"], "frames": len(reader), "backend": a.get("backend"),
            "width": reader.width, "height": reader.height,
        }


def _write_manifest(data_dir: Path, entries: list[dict]) -> None:
    entries = sorted(entries, key=lambda e: e["file"])
    atomic_write_json(data_dir / MANIFEST_NAME, {"format_version": FORMAT_VERSION, "episodes": entries})


def update_manifest(data_dir: Path, episode_path: Path) -> None:
    """Add (or refresh) a complete episode's entry in DATA/manifest.json, rewriting it atomically."""
    data_dir = Path(data_dir)
    episode_path = Path(episode_path)
    entry = _entry(data_dir, episode_path)  # raises EpisodeError if the episode is not complete and valid
    with _manifest_lock(data_dir):
        entries = _load_manifest(data_dir) if (data_dir / MANIFEST_NAME).exists() else []
        entries = [e for e in entries if e["file"] != entry["file"]] + [entry]
        _write_manifest(data_dir, entries)


def rebuild_manifest(data_dir: Path) -> list[str]:
    """Rewrite DATA/manifest.json from the valid episodes found in DATA/episodes/; return the problems
    of the files that were left out."""
    data_dir = Path(data_dir)
    entries, problems = [], []
    for path in sorted((data_dir / EPISODES_DIR).glob("*.h5")):
        found = validate(path)
        if found:
            problems += found
        else:
            entries.append(_entry(data_dir, path))
    with _manifest_lock(data_dir):
        _write_manifest(data_dir, entries)
    return problems


def read_manifest(data_dir: Path) -> list[dict]:
    """Entries {file, town, scenario, split, seed, frames, backend, width, height} of the complete episodes
    listed in DATA/manifest.json whose files exist (file relative to DATA). Without a manifest, the
    entries are built from the valid episodes in DATA/episodes/ (nothing is written)."""
    data_dir = Path(data_dir)
    if not (data_dir / MANIFEST_NAME).exists():
        return [_entry(data_dir, p) for p in sorted((data_dir / EPISODES_DIR).glob("*.h5")) if not validate(p)]
    return [
        e for e in _load_manifest(data_dir)
        if not e["file"].endswith(PART_SUFFIX) and (data_dir / e["file"]).is_file()
    ]


def list_episodes(data_dir: Path, split: str | None = None, scenario: str | None = None) -> list[Path]:
    """Paths of the dataset's complete episodes, optionally only of one split and/or scenario."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)} or None, got {split!r}")
    data_dir = Path(data_dir)
    return [
        data_dir / e["file"] for e in read_manifest(data_dir)
        if (split is None or e["split"] == split) and (scenario is None or e["scenario"] == scenario)
    ]
