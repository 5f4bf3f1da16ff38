"""Which dataset layout a folder holds (KITTI-MOTS or Cityscapes-VPS), and opening its sequences as
`MotionSequence`s: the one entry the annotator, the proposals, the exports and the motion dataset use.
It sits above the dataset modules, which import the base types from `vca_data.formats.sequence`."""

from __future__ import annotations

from pathlib import Path

from vca_data.formats import cityscapes_vps, kitti_mots
from vca_data.formats.sequence import MotionSequence, SequenceError


def list_sequences(root: Path) -> list[str]:
    """Names of the sequences under a dataset folder (KITTI-MOTS or Cityscapes-VPS); empty list when
    the folder is neither."""
    root = Path(root)
    if kitti_mots.is_kitti_mots(root):
        return kitti_mots.list_kitti_sequences(root)
    if cityscapes_vps.is_cityscapes_vps(root):
        return cityscapes_vps.list_videos(root)
    return []


def open_sequence(root: Path, name: str | None = None) -> MotionSequence:
    """Open one motion sequence. `root` is a KITTI-MOTS root (holding `image_02/` or
    `training/image_02/`) with `name` the 4-digit sequence, a KITTI-MOTS image folder
    (`.../image_02/0002`), or a Cityscapes-VPS root or split folder with `name` `<split>/<video>`
    (`val/0005`; the video id alone when one split holds it). `name` may be left out when the
    folder holds one sequence. Raises SequenceError naming what was looked for."""
    root = Path(root)
    if not root.is_dir():
        raise SequenceError(f"{root}: no such folder")
    if kitti_mots.is_kitti_mots(root) or kitti_mots.is_kitti_image_folder(root):
        return kitti_mots.open_kitti_sequence(root, name)
    if cityscapes_vps.is_cityscapes_vps(root):
        return cityscapes_vps.open_video(root, name)
    raise SequenceError(
        f"{root}: not a motion sequence folder. Expected KITTI-MOTS (image_02/<seq>/ or "
        f"training/image_02/<seq>/ with instances_txt/<seq>.txt or instances/<seq>/), or Cityscapes-VPS "
        f"(<split>/img/ or <split>/img_all/ with panoptic_gt_<split>_city_vps.json and "
        f"<split>/panoptic_video/)"
    )
