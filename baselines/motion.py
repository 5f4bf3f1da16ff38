"""The motion track's data as VCANet reads it: which flow folder a run uses (raw flow or ego-flow
suppressed, as `vca-annotate propose --flow-dir FLOWDIR` writes them) and the collate function that
turns `vca_data.motion_dataset.MotionDataset` samples into a batch with per-image instance lists.

A sample's `instance` map (track ids; 0 background, 255 padding), `motion` map (0 background, 1 moving,
2 static, 255 ignore) and `category` map (train ids) become, per image, {'masks': bool (N, H, W),
'things': thing index 0..7 (train id - 11) or -1 for a category that is not a thing, 'motion': 0 moving,
1 static or -1 (not labelled, ignored by the class-agnostic loss)}. Samples without a 'semantic' map
get one of 255 (the semantic loss skips them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import default_collate

from vca_data.labels import THING_TRAIN_IDS, VOID
from vca_data.motion_dataset import MOVING, STATIC

#: data.flow values and the FLOWDIR subfolder each reads (annotator/proposals/sequences.py names them).
FLOW_MODES = {"raw": "flow", "suppressed": "flow_suppressed"}
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
