"""medseg.evaluation: segmentation metrics, the evaluation of prediction folders, the HTML report."""

from medseg.evaluation.evaluate import evaluate_folders, format_table
from medseg.evaluation.metrics import METRICS, case_metrics, class_metrics, confusion, dice, iou
from medseg.evaluation.report import write_report
from medseg.evaluation.surface import (
    SurfaceDistances,
    assd,
    hausdorff,
    hd95,
    nsd,
    percentile_distance,
    surface_distances,
)

__all__ = [
    "METRICS",
    "SurfaceDistances",
    "assd",
    "case_metrics",
    "class_metrics",
    "confusion",
    "dice",
    "evaluate_folders",
    "format_table",
    "hausdorff",
    "hd95",
    "iou",
    "nsd",
    "percentile_distance",
    "surface_distances",
    "write_report",
]
