"""File formats of the VCA motion track: KITTI-MOTS, Cityscapes-VPS, the common motion-sequence view,
and the motion labels with their exports."""

from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.motion_labels import (
    LABELS,
    SOURCES,
    FrameRange,
    MotionLabels,
    MotionLabelsError,
    TrackLabel,
    export_coco,
    export_color_pngs,
    export_kitti_motion,
)
from vca_data.formats.sequence import Instance, MotionSequence, SequenceError, Track

__all__ = [
    "LABELS", "SOURCES", "FrameRange", "Instance", "MotionLabels", "MotionLabelsError", "MotionSequence",
    "SequenceError", "Track", "TrackLabel", "export_coco", "export_color_pngs", "export_kitti_motion",
    "list_sequences", "open_sequence",
]
