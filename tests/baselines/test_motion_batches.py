"""The motion track's batches for VCANet: per-image instance lists from a MotionDataset sample's maps,
the semantic map filled with 255 where a source has none, and the raw / suppressed flow folder."""

from __future__ import annotations

import pytest
import torch

from baselines.motion import collate_motion, flow_folder


def test_collate_motion_instances_and_missing_semantic(tmp_path):
    instance = torch.zeros(6, 8, dtype=torch.long)
    instance[0:2, 0:2] = 1001   # car, moving
    instance[3:5, 3:6] = 2001   # pedestrian, static
    instance[5, 7] = 255        # padding from augmentation: not an instance
    motion = torch.zeros_like(instance)
    motion[instance == 1001] = 1
    motion[instance == 2001] = 2
    category = torch.full_like(instance, 255)
    category[instance == 1001] = 13
    category[instance == 2001] = 11
    sample = {"image": torch.zeros(3, 6, 8), "flow": torch.zeros(3, 6, 8), "instance": instance, "motion": motion,
              "category": category, "meta": {"frame": 0}}
    unlabelled = dict(sample, motion=torch.where(instance > 0, 255, 0))
    out = collate_motion([sample, unlabelled])
    assert out["image"].shape == (2, 3, 6, 8) and out["semantic"].shape == (2, 6, 8)
    assert (out["semantic"] == 255).all()
    first, second = out["instances"]
    assert first["masks"].shape == (2, 6, 8) and first["masks"].sum().item() == 4 + 6
    assert first["things"].tolist() == [2, 0] and first["motion"].tolist() == [0, 1]
    assert second["motion"].tolist() == [-1, -1]
    (tmp_path / "flow_suppressed").mkdir()
    (tmp_path / "flow").mkdir()
    assert flow_folder(tmp_path, "suppressed") == tmp_path / "flow_suppressed"
    with pytest.raises(ValueError, match="data.flow"):
        flow_folder(tmp_path, "ego")
    with pytest.raises(FileNotFoundError, match="vca-annotate propose"):
        flow_folder(tmp_path / "none", "suppressed")
