"""Export collected episodes to the layouts other tools read: a Cityscapes-style PNG tree (images, train-id
labels with 254 on unknown objects, instance ids, fine-grained unknown classes) and KITTI-MOTS-style
motion sequences (one per episode: images, car/pedestrian tracks, depth, semantic train ids
(`semantic/<seq>/<frame>.png`, unknown objects void), calibration, poses, and the simulator's true
moving/static state of every track in `motion_truth.json`; objects under `min_pixels` in a frame are
ignore regions there).

Cityscapes-style layout (`<name>` = `<town>_<scenario>_<seed>_<frame:06d>`):
    OUT/leftImg8bit/<split>/<town>/<name>_leftImg8bit.png            RGB
    OUT/gtFine/<split>/<town>/<name>_gtFine_labelTrainIds.png        uint8 train ids, 254 unknown, 255 void
    OUT/gtFine/<split>/<town>/<name>_gtFine_instanceIds.png          uint16: train id * 1000 + k on things
        (train ids 11-18), 60000 + k on unknown objects, the train id elsewhere (k counts the instances
        of a class in the frame from 1)
    OUT/gtFine/<split>/<town>/<name>_gtFine_fineIds.png              uint8 fine unknown class (0 none)
    OUT/gtFine/<split>/<town>/<name>_gtFine_color.png                the train ids in Cityscapes colours

KITTI-MOTS-style layout: see the module docstring of `vca_data.formats.kitti_mots`; sequences are
numbered `0000`, `0001`, ... and `OUT/sequences.json` maps each to its episode file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from carla_scenarios.collector import CollectError, read_tracks
from vca_data.episodes import EpisodeReader, list_episodes
from vca_data.formats import kitti_mots
from vca_data.formats.motion_labels import MotionLabels
from vca_data.io import atomic_path, atomic_write_json, atomic_write_text
from vca_data.labels import TAG, UNKNOWN, VOID, colorize_train, episode_labels

UNKNOWN_INSTANCE_BASE = 60000
# KITTI-MOTS classes of the CARLA tags of dynamic actors.
KITTI_CLASS_OF_TAG = {TAG["Car"]: 1, TAG["Truck"]: 1, TAG["Bus"]: 1, TAG["Motorcycle"]: 1, TAG["Bicycle"]: 1,
                      TAG["Pedestrian"]: 2, TAG["Rider"]: 2}
_KITTI_CLASS_LUT = np.zeros(256, np.uint8)
for _tag, _cls in KITTI_CLASS_OF_TAG.items():
    _KITTI_CLASS_LUT[_tag] = _cls
MOVING_THRESHOLD_M = 0.5  # a track that moved more than this over its visible frames is moving
MOVING_SPEED_MS = 0.5  # per-frame speed above which an actor is moving in that frame
MIN_PIXELS = 64  # objects smaller than this in a frame are exported as KITTI-MOTS ignore regions there
DEPTH_MAX_M = 255.0  # beyond: 0 (invalid), as KITTI's uint16 depth maps (metres * 256)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically (RGB images given as HxWx3 RGB)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: cannot write PNG")


def _episodes(data_dir: Path, split: str | None) -> list[Path]:
    paths = list_episodes(Path(data_dir), split=split)
    if not paths:
        raise CollectError(f"{data_dir}: no complete episodes{' of split ' + split if split else ''} in the manifest")
    return paths


def instance_ids(train_ids: np.ndarray, instance: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Cityscapes-style uint16 instance map of one frame (see the module docstring)."""
    out = train_ids.astype(np.uint16)
    for train_id in range(11, 19):
        mask = train_ids == train_id
        values = np.unique(instance[mask])
        for k, v in enumerate(values[values > 0], start=1):
            out[mask & (instance == v)] = train_id * 1000 + k
    mask = fine > 0
    values = np.unique(instance[mask])
    for k, v in enumerate(values[values > 0], start=1):
        out[mask & (instance == v)] = UNKNOWN_INSTANCE_BASE + k
    return out


def export_cityscapes(data_dir: Path, out: Path, split: str | None = None) -> int:
    """Write the Cityscapes-style PNG tree of a dataset's episodes; returns the number of frames."""
    out = Path(out)
    count = 0
    for path in tqdm(_episodes(data_dir, split), desc="cityscapes", unit="episode"):
        with EpisodeReader(path) as ep:
            a = ep.attrs
            img_dir = out / "leftImg8bit" / a["split"] / a["town"]
            gt_dir = out / "gtFine" / a["split"] / a["town"]
            for i in range(len(ep)):
                f = ep.read(i, ("rgb", "semantic", "instance", "fine"))
                name = f"{path.stem}_{i:06d}"
                labels = episode_labels(f["semantic"], f["fine"], a["split"])
                write_png(img_dir / f"{name}_leftImg8bit.png", f["rgb"])
                write_png(gt_dir / f"{name}_gtFine_labelTrainIds.png", labels)
                write_png(gt_dir / f"{name}_gtFine_instanceIds.png", instance_ids(labels, f["instance"], f["fine"]))
                write_png(gt_dir / f"{name}_gtFine_fineIds.png", f["fine"])
                write_png(gt_dir / f"{name}_gtFine_color.png", colorize_train(labels))
                count += 1
    return count


def track_classes(semantic: np.ndarray, instance: np.ndarray, exclude: set[int]) -> dict[int, int]:
    """KITTI class (1 car, 2 pedestrian) of each instance value in a frame, by the majority tag of its
    vehicle/pedestrian pixels."""
    cls_map = _KITTI_CLASS_LUT[semantic]
    result = {}
    for v in np.unique(instance[cls_map > 0]):
        if int(v) == 0 or int(v) in exclude:
            continue
        counts = np.bincount(cls_map[(instance == v) & (cls_map > 0)], minlength=3)
        result[int(v)] = int(np.argmax(counts[1:]) + 1)
    return result


def motion_state(states: list[list[float]], threshold: float = MOVING_THRESHOLD_M) -> tuple[str, list[bool]]:
    """True moving/static label of a track from its states [x, y, z, yaw, vx, vy, vz] over its visible
    frames: moving if it got farther than `threshold` metres from where it was first seen, or if it had
    speed in most of its visible frames (a briefly seen walker covers little ground but is moving);
    plus the per-frame moving flags (speed > MOVING_SPEED_MS)."""
    s = np.asarray(states, dtype=np.float64).reshape(-1, 7)
    speed = np.hypot(s[:, 4], s[:, 5])
    per_frame = [bool(v > MOVING_SPEED_MS) for v in speed]
    if len(s) == 0:
        return "static", per_frame
    moved = float(np.max(np.hypot(s[:, 0] - s[0, 0], s[:, 1] - s[0, 1])))
    moving = moved > threshold or 2 * sum(per_frame) > len(per_frame)
    return ("moving" if moving else "static"), per_frame


def _runs(flags: list[bool], frames: list[int], value: bool) -> list[tuple[int, int]]:
    """Inclusive (start, end) frame index runs where flags == value, consecutive in `frames`."""
    runs: list[tuple[int, int]] = []
    for f, flag in zip(frames, flags, strict=True):
        if flag != value:
            continue
        if runs and runs[-1][1] == f - 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def export_episode_kitti(path: Path, out: Path, seq: str, labels: MotionLabels,
                         threshold: float = MOVING_THRESHOLD_M, min_pixels: int = MIN_PIXELS) -> int:
    """One episode as KITTI-MOTS sequence `seq`, its true motion labels added to `labels`; returns the
    number of tracks. An object covering fewer than `min_pixels` pixels in a frame is written as an
    ignore region (id 10000, as KITTI-MOTS marks what is too small to annotate) in that frame: it is
    neither a target nor a false positive for CAQ / PQ, and not a training target."""
    tracks_doc = read_tracks(path)
    states_of = {}
    for actor_id, t in tracks_doc["tracks"].items():
        states_of[int(actor_id) & 0xFFFF] = dict(zip(t["frames"], t["states"], strict=True))
    with EpisodeReader(path) as ep:
        ego = int(ep.attrs.get("ego", {}).get("actor_id", -1)) & 0xFFFF
        frames_col = ep.column("frame")
        obj_ids: dict[int, int] = {}  # instance value -> obj_id, stable over the sequence
        per_class = {1: 0, 2: 0}
        seen: dict[int, list[int]] = {}  # obj_id -> frame indices
        value_of: dict[int, int] = {}
        txt_frames = {}
        for i in range(len(ep)):
            f = ep.read(i, ("rgb", "semantic", "instance", "depth", "fine"))
            write_png(out / "image_02" / seq / f"{i:06d}.png", f["rgb"])
            # train ids of every pixel (VCANet's semantic head, PQ stuff): the open-set labels with the
            # unknown objects void
            train = episode_labels(f["semantic"], f["fine"], ep.attrs["split"])
            train[train == UNKNOWN] = VOID
            write_png(out / "semantic" / seq / f"{i:06d}.png", train)
            depth = np.where((f["depth"] > 0) & (f["depth"] <= DEPTH_MAX_M), np.rint(f["depth"] * 256.0), 0)
            write_png(out / "depth" / seq / f"{i:06d}.png", depth.astype(np.uint16))
            id_map = np.zeros(f["instance"].shape, np.int32)
            for v, cls in track_classes(f["semantic"], f["instance"], {ego}).items():
                if v not in obj_ids:
                    per_class[cls] += 1
                    if per_class[cls] > 999:
                        raise CollectError(f"{path}: more than 999 tracks of KITTI class {cls}")
                    obj_ids[v] = cls * 1000 + per_class[cls]
                    value_of[obj_ids[v]] = v
                oid = obj_ids[v]
                mask = (f["instance"] == v) & (_KITTI_CLASS_LUT[f["semantic"]] > 0)
                if np.count_nonzero(mask) < min_pixels:
                    id_map[mask] = kitti_mots.IGNORE_ID
                    continue
                id_map[mask] = oid
                seen.setdefault(oid, []).append(i)
            kitti_mots.write_png(out / "instances" / seq / f"{i:06d}.png", id_map)
            txt_frames[i] = kitti_mots.objects_from_id_map(id_map, i, f"{path.name}")
        kitti_mots.write_txt(out / "instances_txt" / f"{seq}.txt", txt_frames)
        atomic_write_json(out / "calib" / f"{seq}.json", {"K": ep.attrs["intrinsics"]})
        poses = ep.column("ego_pose")
        atomic_write_text(out / "poses" / f"{seq}.txt", "".join(
            " ".join(f"{v:.6f}" for v in p[:3].reshape(-1)) + "\n" for p in poses))
    for oid, idx in seen.items():
        states = states_of.get(value_of[oid])
        if states is None or not all(int(frames_col[i]) in states for i in idx):
            labels.set(seq, oid, "ignore", source="simulator")  # not an actor we recorded (e.g. parked)
            continue
        label, per_frame = motion_state([states[int(frames_col[i])] for i in idx], threshold)
        labels.set(seq, oid, label, source="simulator")
        other = label == "static"  # frames where the actor's own motion differs from the track label
        for start, end in _runs(per_frame, idx, other):
            labels.add_range(seq, oid, start, end, "moving" if other else "static")
    return len(seen)


def export_kitti_mots(data_dir: Path, out: Path, split: str | None = None,
                      threshold: float = MOVING_THRESHOLD_M, min_pixels: int = MIN_PIXELS) -> list[str]:
    """Write one KITTI-MOTS-style sequence per episode and `motion_truth.json`; returns the sequences.
    Objects under `min_pixels` pixels in a frame become ignore regions there (export_episode_kitti)."""
    if min_pixels < 0:
        raise ValueError(f"--min-pixels must be >= 0, got {min_pixels}")
    out = Path(out)
    labels = MotionLabels.new("kitti-mots")
    index = {}
    for n, path in enumerate(tqdm(_episodes(data_dir, split), desc="kitti-mots", unit="episode")):
        seq = f"{n:04d}"
        export_episode_kitti(path, out, seq, labels, threshold, min_pixels)
        index[seq] = path.name
    labels.save(out / "motion_truth.json")
    atomic_write_json(out / "sequences.json", index)
    return list(index)

