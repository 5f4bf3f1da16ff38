"""Evaluation metrics of the toolkit: semantic (IoU, mIoU, CA-IoU), panoptic (PQ/SQ/RQ), class-agnostic
instance quality (CAQ), and anomaly segmentation at pixel level (AP, AUROC, FPR95) and component level
(sIoU, PPV, mean F1).

Every metric is a class with the same small interface: `update(...)` per image, `compute() -> dict`,
`reset()`, `merge(other)` for shards of a parallel evaluation, and `table()` for printing.
"""

from vca_data.metrics.anomaly import FPR_AT_TPR_RULES, AnomalyPixelMetrics, anomaly_pixel_metrics
from vca_data.metrics.caq import ClassAgnosticQuality
from vca_data.metrics.components import SIOU_THRESHOLDS, ComponentMetrics, component_scores
from vca_data.metrics.panoptic import (
    PanopticQuality,
    evaluate_coco_panoptic,
    from_category_instance,
    read_coco_panoptic,
)
from vca_data.metrics.semantic import SemanticMetrics, UnknownIoU
from vca_data.metrics.table import format_table

__all__ = [
    "FPR_AT_TPR_RULES",
    "SIOU_THRESHOLDS",
    "AnomalyPixelMetrics",
    "ClassAgnosticQuality",
    "ComponentMetrics",
    "PanopticQuality",
    "SemanticMetrics",
    "UnknownIoU",
    "anomaly_pixel_metrics",
    "component_scores",
    "evaluate_coco_panoptic",
    "format_table",
    "from_category_instance",
    "read_coco_panoptic",
]
