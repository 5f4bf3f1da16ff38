"""The motion track's data as VCANet reads it: which flow folder a run uses (raw flow or ego-flow
suppressed, as `vca-annotate propose --flow-dir FLOWDIR` writes them) and the collate function that
turns `vca_data.motion_dataset.MotionDataset` samples into a batch with per-image instance lists.

A sample's `instance` map (track ids; 0 background, 255 padding), `motion` map (0 background, 1 moving,
2 static, 255 ignore) and `category` map (train ids) become, per image, {'masks': bool (N, H, W),
'things': thing index 0..7 (train id - 11) or -1 for a category that is not a thing, 'motion': 0 moving,
1 static or -1 (not labelled, ignored by the class-agnostic loss)}. Samples without a 'semantic' map
get one of 255 (the semantic loss skips them).

`motion_datasets(cfg, DATA, split, train)` (the family's ModelSpec.datasets) finds the split's sequences
under DATA and each of `data.extra_roots` (see `split_sequences`), their labels (`data.labels`) and their
flow PNGs (`data.flow_dir`; computed and cached under ROOT/vca_flow with the proposals' flow code when
absent), and concatenates them: the paper trains on KITTI-MOTS and Cityscapes-VPS together.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import default_collate

from vca_data.labels import THING_TRAIN_IDS, VOID
from vca_data.motion_dataset import MOVING, STATIC

#: data.flow values and the FLOWDIR subfolder each reads (annotator/proposals/sequences.py names them).
FLOW_MODES = {"raw": "flow", "suppressed": "flow_suppressed"}
#: data.flow values and the data key of the colour scale their PNGs are coded at (px = full saturation).
SCALE_KEYS = {"raw": "flow_max", "suppressed": "suppressed_max"}
_MOTION_INDEX = {MOVING: 0, STATIC: 1}


def flow_folder(flow_dir: str | Path, mode: str) -> Path:
    """The folder of per-sequence flow PNGs for `mode` under a propose FLOWDIR; a folder that holds the
    sequences directly is taken as it is for 'raw'."""
    if mode not in FLOW_MODES:
        raise ValueError(f"data.flow must be one of {', '.join(FLOW_MODES)}, got {mode!r}")
    root = Path(flow_dir)
    sub = root / FLOW_MODES[mode]
    if sub.is_dir():
        return sub
    if mode == "raw" and root.is_dir() and not (root / FLOW_MODES["suppressed"]).is_dir():
        return root
    raise FileNotFoundError(f"{sub}: no {mode} flow folder (make one with: vca-annotate propose SEQUENCES "
                            f"--flow-dir {root})")


def sample_instances(instance: torch.Tensor, motion: torch.Tensor, category: torch.Tensor) -> dict:
    """Per-instance masks and labels of one sample's maps (see the module docstring)."""
    ids = torch.unique(instance)
    ids = ids[(ids != 0) & (ids != VOID)]
    masks = instance[None] == ids[:, None, None]
    things, moving = [], []
    for mask in masks:
        cat = int(category[mask][0])
        things.append(cat - THING_TRAIN_IDS[0] if cat in THING_TRAIN_IDS else -1)
        moving.append(_MOTION_INDEX.get(int(motion[mask][0]), -1))
    return {"masks": masks, "things": torch.tensor(things, dtype=torch.long),
            "motion": torch.tensor(moving, dtype=torch.long)}


def collate_motion(samples: list[dict]) -> dict:
    """A VCANet batch: stacked 'image', 'flow' and 'semantic', a list of 'instances', a list of 'meta'."""
    dense = {}
    for key in ("image", "flow"):
        if key in samples[0]:
            dense[key] = default_collate([s[key] for s in samples])
    shape = samples[0]["instance"].shape
    dense["semantic"] = torch.stack([s["semantic"] if "semantic" in s else torch.full(shape, VOID, dtype=torch.long)
                                     for s in samples])
    dense["instances"] = [sample_instances(s["instance"], s["motion"], s["category"]) for s in samples]
    dense["meta"] = [s.get("meta", {}) for s in samples]
    return dense


# ---------------------------------------------------------------------------------------------
# Datasets of a run: which sequences, labels and flow each split reads
# ---------------------------------------------------------------------------------------------

#: The VCANet family's keys of the config's `data` section.
DATA_DEFAULTS: dict = {
    "flow": "suppressed",        # suppressed: ego-flow suppressed (EFS, Table 4) | raw: the optical flow itself
    "flow_dir": None,            # FLOWDIR of `vca-annotate propose --flow-dir`; null: ROOT/vca_flow, computed and cached
    "flow_max": 30.0,            # px drawn at full saturation in the (raw) flow PNGs
    "suppressed_max": 4.0,       # the same for the suppressed flow: a moving object's residual is a few px
    "labels": "auto",            # auto: ROOT/motion_truth.json (simulator truth) else ROOT/motion_labels.json; or a path
    "extra_roots": [],           # more sequence folders trained and evaluated with DATA (KITTI-MOTS + Cityscapes-VPS)
    "train_sequences": None,     # sequence names of the train split; null: see baselines.motion.split_sequences
    "test_sequences": None,
}
#: KITTI-MOTS' validation sequences (REFERENCE.md section 1): the test split of a full KITTI-MOTS root.
KITTI_VAL = ("0002", "0006", "0007", "0008", "0010", "0013", "0014", "0016", "0018")
CACHE_DIR = "vca_flow"
LABEL_FILES = ("motion_truth.json", "motion_labels.json")


def split_sequences(root: Path, split: str, listed: list[str] | None) -> tuple[Path, list[str]]:
    """(sequence folder, sequence names) of `split` ('train' / 'test') under `root`:
    the names `listed` (data.<split>_sequences) when given; else ROOT/<split> (ROOT/val for test) when
    ROOT itself holds no sequences (`vca-carla export --split S --out ROOT/S`); else a Cityscapes-VPS
    root's `<split>/` videos (val for test); else a full KITTI-MOTS root (0000-0020) split as the
    benchmark (REFERENCE.md section 1). Raises ValueError naming the folder otherwise."""
    from vca_data.formats.folders import list_sequences

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a KITTI-MOTS or Cityscapes-VPS sequence folder)")
    names = list_sequences(root)
    aliases = (split, "val") if split == "test" else (split,)
    if listed is not None:
        missing = [s for s in listed if s not in names]
        if missing:
            raise ValueError(f"{root}: data.{split}_sequences names {', '.join(missing)}, which it does not hold "
                             f"(found: {', '.join(names) or 'none'})")
        return root, list(listed)
    if not names:
        for alias in aliases:
            sub = root / alias
            if sub.is_dir() and list_sequences(sub):
                return sub, list_sequences(sub)
        raise ValueError(f"{root}: holds no KITTI-MOTS or Cityscapes-VPS sequences, nor a {split}/ folder of them")
    for alias in aliases:
        picked = [s for s in names if s.startswith(f"{alias}/")]
        if picked:
            return root, picked
    if all(f"{k:04d}" in names for k in range(21)):
        return root, [s for s in names if (s in KITTI_VAL) == (split == "test")]
    raise ValueError(f"{root}: cannot tell its {split} sequences ({', '.join(names[:8])}{' ...' if len(names) > 8 else ''}): "
                     f"put them in {root}/train and {root}/test (vca-carla export --split train --out {root}/train) "
                     f"or list them with --set data.{split}_sequences=[...]")


def labels_path(root: Path, setting: str, base: Path | None = None) -> Path:
    """The motion labels a sequence folder is read with (data.labels, see DATA_DEFAULTS)."""
    if setting != "auto":
        path = Path(setting)
        path = path if path.is_absolute() or path.is_file() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such motion labels file (data.labels)")
        return path
    for folder in (root, base) if base is not None else (root,):
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{root}: no motion labels ({' or '.join(LABEL_FILES)}); label the sequences with "
                            "vca-annotate (or export the offline world with vca-carla export --format kitti-mots), "
                            "or name a file with --set data.labels=PATH")


def check_flow(folder: Path, seq, frames: list[int]) -> list[int]:
    """The frames of `seq` whose flow PNG is missing from `folder/<seq>/`; raises ValueError when a PNG
    there has another size than the sequence's frames (the first one is read)."""
    import cv2

    missing = [i for i in frames if not (folder / seq.name / f"{i:06d}.png").is_file()]
    present = [i for i in frames if i not in set(missing)]
    if present:
        path = folder / seq.name / f"{present[0]:06d}.png"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 3 or image.shape[:2] != (seq.height, seq.width):
            got = "unreadable" if image is None else f"{image.shape[1]}x{image.shape[0]}" + ("" if image.ndim == 3 else " grey")
            raise ValueError(f"{path}: flow PNG is {got}, expected a {seq.width}x{seq.height} colour PNG like the "
                             f"frames of sequence {seq.name}")
    return missing


def flow_scales(data: dict) -> dict[str, float]:
    """The colour scale (px at full saturation) of each flow mode's PNGs in a run's data section."""
    return {mode: float(data[key]) for mode, key in SCALE_KEYS.items()}


def ensure_flow(root: Path, names: list[str], flow_dir: str | None, mode: str, progress: bool = True,
                scales: dict[str, float] | None = None) -> Path:
    """The folder of `mode` flow PNGs for the sequences `names` of `root`, coded at `scales` (default:
    DATA_DEFAULTS' flow_max / suppressed_max). A given `flow_dir` must hold every labelled frame's PNG
    (an error names the first missing one) at that scale where its scale.json says one; without one,
    the flow is computed (both modes at once, with the proposals' code: `vca-annotate propose
    --flow-dir`) into ROOT/vca_flow for the sequences that lack it or hold another scale, and reused by
    later runs."""
    from annotator.proposals.sequences import read_flow_scale
    from vca_data.formats.folders import open_sequence

    scales = scales or flow_scales(DATA_DEFAULTS)
    base = Path(flow_dir) if flow_dir is not None else root / CACHE_DIR
    folder = base / FLOW_MODES[mode]
    todo = []
    for name in names:
        seq = open_sequence(root, name)
        missing = check_flow(folder, seq, list(seq.labelled_frames))
        if missing and flow_dir is not None:
            path = folder / seq.name / f"{missing[0]:06d}.png"
            raise FileNotFoundError(f"{path}: missing ({len(missing)} of the {len(seq.labelled_frames)} labelled frames "
                                    f"of sequence {seq.name} have no flow PNG); write them with vca-annotate propose "
                                    f"{root} --flow-dir {base}, or leave data.flow_dir null to compute them")
        coded = read_flow_scale(folder / seq.name) if not missing and (folder / seq.name).is_dir() else None
        stale = coded is not None and coded != scales[mode]
        if stale and flow_dir is not None:
            key = SCALE_KEYS[mode]
            raise ValueError(f"{folder / seq.name}: flow PNGs coded at {coded:g} px "
                             f"(its scale.json), the run's data.{key} is {scales[mode]:g}: make them again with "
                             f"vca-annotate propose {root} --flow-dir {base} --flow-max {scales['raw']:g} "
                             f"--suppressed-max {scales['suppressed']:g}, or set data.{key} to match")
        if missing or stale:
            todo.append(seq)
    if todo:
        from tqdm import tqdm

        from annotator.proposals.sequences import propose_sequence

        for seq in tqdm(todo, desc=f"flow -> {base}", unit="seq", disable=not progress, dynamic_ncols=True):
            propose_sequence(seq, flow_dir=base, flow_max=scales["raw"], suppressed_max=scales["suppressed"])
    return folder


def motion_datasets(cfg: dict, data_dir: Path, split: str, train: bool):
    """The split's frames of DATA and of data.extra_roots, as one dataset (ModelSpec.datasets)."""
    from vca_data.motion_dataset import MOTION_KEYS, MotionDataset
    from vca_data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, Resize

    d = cfg["data"]
    steps = []
    if train:
        if d["resize"] is not None:
            steps.append(Resize(*d["resize"], **MOTION_KEYS))
        steps.append(RandomScale(d["min_scale"], d["max_scale"], **MOTION_KEYS))
        if d["flip"]:
            steps.append(RandomHorizontalFlip(0.5, **MOTION_KEYS))
        steps.append(RandomCrop(*d["crop"], **MOTION_KEYS))
    parts = []
    for base in [Path(data_dir), *[Path(r) for r in d["extra_roots"]]]:
        root, names = split_sequences(base, split, d[f"{split}_sequences"])
        labels = labels_path(root, d["labels"], base if root != base else None)
        flow = ensure_flow(root, names, d["flow_dir"], d["flow"], scales=flow_scales(d))
        step = d["frame_step"] if train else cfg["eval"]["frame_step"]
        parts.append(MotionDataset(root, labels, names, flow_dir=flow, transform=Compose(steps) if steps else None,
                                   seed=0 if train else None, frame_step=step))
    return MotionSets(parts)


class MotionSets:
    """Several MotionDatasets as one (torch's ConcatDataset indexing) with a settable `.seed`."""

    def __init__(self, parts: list):
        from torch.utils.data import ConcatDataset

        self.parts = parts
        self._concat = ConcatDataset(parts)

    def __len__(self) -> int:
        return len(self._concat)

    def __getitem__(self, index: int) -> dict:
        return self._concat[index]

    @property
    def seed(self):
        return self.parts[0].seed

    @seed.setter
    def seed(self, value) -> None:
        for part in self.parts:
            part.seed = value
