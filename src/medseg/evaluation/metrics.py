"""Segmentation metrics: pure functions of arrays, with the voxel spacing in millimetres.

Per class: Dice, IoU, precision, recall (sensitivity), specificity; HD95, maximum Hausdorff
distance (HD), average symmetric surface distance (ASSD) and normalised surface Dice (NSD) at a
tolerance in mm (`medseg.evaluation.surface`); volumes of prediction and reference (mm^3, or
mm^2 for 2D) and their relative difference; TP/FP/FN voxel counts.

Edge cases (docs/metrics.md has the full table):

- Both masks empty: every ratio and distance is undefined. ``both_empty="nan"`` (default)
  gives NaN, which the means of `medseg.evaluation.evaluate` exclude and count;
  ``both_empty="perfect"`` scores the case as perfect (Dice, IoU, precision, recall, NSD = 1;
  distances and relative volume difference = 0). Specificity is defined either way.
- Exactly one mask empty (a missed structure, or a false alarm): Dice, IoU and NSD are 0,
  the ratio whose denominator vanished (precision for a miss, recall for a false alarm) is 0,
  and HD, HD95 and ASSD are ``empty_distance`` (``inf`` here; the folder evaluation passes
  the image diagonal, the largest distance the grid can hold). A missed structure can
  therefore never improve a mean.
- Relative volume difference ``(V_pred - V_ref) / V_ref`` is NaN when the reference is empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from medseg.evaluation import surface as surf

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "specificity")
SURFACE_METRICS = ("hd95", "hd", "assd", "nsd")
VOLUME_METRICS = ("volume_pred", "volume_ref", "volume_rel_diff")
COUNT_METRICS = ("tp", "fp", "fn")
METRICS = OVERLAP_METRICS + SURFACE_METRICS + VOLUME_METRICS + COUNT_METRICS
BOTH_EMPTY = ("nan", "perfect")


@dataclass(frozen=True)
class Counts:
    """Voxel counts of a binary prediction against a binary reference."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def pred(self) -> int:
        return self.tp + self.fp

    @property
    def ref(self) -> int:
        return self.tp + self.fn


def confusion(pred: np.ndarray, ref: np.ndarray, n_voxels: int | None = None) -> Counts:
    """TP, FP, FN, TN of two boolean masks of equal shape.

    n_voxels: size of the whole image when `pred` and `ref` are crops of it (TN counts the
    voxels outside the crop too); defaults to the masks' size.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {ref.shape}")
    n = pred.size if n_voxels is None else int(n_voxels)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return Counts(tp, fp, fn, n - tp - fp - fn)


def overlap_scores(c: Counts, both_empty: str = "nan") -> dict[str, float]:
    """Dice, IoU, precision, recall and specificity from counts (edge cases: module docstring)."""
    check_both_empty(both_empty)
    undefined = 1.0 if both_empty == "perfect" else math.nan
    if c.pred == 0 and c.ref == 0:
        dice = iou = precision = recall = undefined
    else:
        dice = 2 * c.tp / (2 * c.tp + c.fp + c.fn)
        iou = c.tp / (c.tp + c.fp + c.fn)
        precision = c.tp / c.pred if c.pred else 0.0
        recall = c.tp / c.ref if c.ref else 0.0
    negatives = c.tn + c.fp
    specificity = c.tn / negatives if negatives else math.nan
    return {"dice": dice, "iou": iou, "precision": precision, "recall": recall, "specificity": specificity}


def dice(pred: np.ndarray, ref: np.ndarray, both_empty: str = "nan") -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|); NaN (or 1 with ``both_empty="perfect"``) if both are empty."""
    return overlap_scores(confusion(pred, ref), both_empty)["dice"]


def iou(pred: np.ndarray, ref: np.ndarray, both_empty: str = "nan") -> float:
    """Intersection over union |P∩R| / |P∪R|; NaN (or 1) if both are empty."""
    return overlap_scores(confusion(pred, ref), both_empty)["iou"]


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of the image's extent: the cap for undefined distances."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def class_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    metrics: Sequence[str] | None = None,
    tolerance_mm: float = 1.0,
    surface_method: str = "surfel",
    both_empty: str = "nan",
    empty_distance: float = math.inf,
    n_voxels: int | None = None,
) -> dict[str, float | int]:
    """The requested metrics (default: all of `METRICS`) of one binary mask pair.

    pred, ref: boolean masks, axes (z, y, x) or (y, x); they may be crops of a larger image
    as long as every foreground voxel is inside (then pass the image's `n_voxels`).
    spacing: voxel size in mm per axis. tolerance_mm: NSD tolerance.
    surface_method: ``"surfel"`` or ``"voxel"`` (see `medseg.evaluation.surface`).
    both_empty: ``"nan"`` or ``"perfect"``. empty_distance: HD/HD95/ASSD when exactly one mask
    is empty. Counts come back as ints, everything else as floats.
    """
    wanted = check_metrics(metrics)
    check_both_empty(both_empty)
    counts = confusion(pred, ref, n_voxels)
    return _metrics_from(counts, pred, ref, spacing, wanted, tolerance_mm, surface_method,
                         both_empty, empty_distance)


def region_values(value: int | Sequence[int]) -> tuple[int, ...]:
    """A label's voxel values: one class value, or a region (nnU-Net's list of values, whose
    union is the structure, e.g. a whole tumour made of three classes)."""
    if isinstance(value, (list, tuple)):
        vals = tuple(sorted({int(v) for v in value}))
        if not vals or vals[0] < 0:
            raise ValueError(f"a region needs non-negative values, got {value!r}")
        return vals
    return (int(value),)


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Mapping[str, int],
    *,
    metrics: Sequence[str] | None = None,
    tolerance_mm: float | Mapping[str | int, float] = 1.0,
    surface_method: str = "surfel",
    both_empty: str = "nan",
    empty_distance: float = math.inf,
    ignore: int | None = None,
) -> dict[str, dict[str, float | int]]:
    """Metrics of every foreground class of a label-map pair: ``{label name: {metric: value}}``.

    pred, ref: integer label maps of one grid (non-negative values). labels: name -> value, or
    name -> list of values for a region (their union); value 0 (background) is skipped. tolerance_mm: one NSD tolerance, or one per class keyed by
    label name or value. Each class is evaluated on the bounding box of its voxels in either
    map (found for all classes in one pass), so the cost follows the structures, not the image.
    ignore: a value of `ref` marking unannotated voxels. They are left out of every metric: the
    prediction there is treated as outside every class (so counts, volumes and TN cover the
    annotated voxels only, and surfaces are those of both masks cut to the annotated voxels).
    """
    pred = _label_array(pred, "pred")
    ref = _label_array(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"label map shapes differ: {pred.shape} vs {ref.shape}")
    wanted = check_metrics(metrics)
    check_both_empty(both_empty)
    classes = {name: region_values(v) for name, v in labels.items()}
    classes = {name: vals for name, vals in classes.items() if vals != (0,)}
    if not classes:
        return {}
    keep = None if ignore is None else ref != ignore
    n_voxels = pred.size if keep is None else int(np.count_nonzero(keep))
    top = max(max(vals) for vals in classes.values())
    boxes_pred = ndimage.find_objects(pred, max_label=top)
    boxes_ref = ndimage.find_objects(ref, max_label=top)
    out: dict[str, dict[str, float | int]] = {}
    for name, vals in classes.items():
        box = None
        for v in vals:
            box = _union_box(box, _union_box(boxes_pred[v - 1], boxes_ref[v - 1]))
        tol = class_tolerance(tolerance_mm, name, vals[0] if len(vals) == 1 else name)
        if box is None:
            counts = Counts(0, 0, 0, n_voxels)
            out[name] = _metrics_from(counts, None, None, spacing, wanted, tol, surface_method,
                                      both_empty, empty_distance)
            continue
        p = pred[box] == vals[0] if len(vals) == 1 else np.isin(pred[box], vals)
        r = ref[box] == vals[0] if len(vals) == 1 else np.isin(ref[box], vals)
        if keep is not None:
            p &= keep[box]
        out[name] = _metrics_from(confusion(p, r, n_voxels), p, r, spacing, wanted, tol,
                                  surface_method, both_empty, empty_distance)
    return out


def empty_class_metrics(
    n_voxels: int,
    spacing: Sequence[float],
    *,
    metrics: Sequence[str] | None = None,
    both_empty: str = "nan",
) -> dict[str, float | int]:
    """Metrics of a class absent from both prediction and reference of an image of `n_voxels`."""
    return _metrics_from(Counts(0, 0, 0, int(n_voxels)), None, None, spacing, check_metrics(metrics),
                         1.0, "surfel", both_empty, math.inf)


def check_metrics(metrics: Sequence[str] | None) -> list[str]:
    """The metric names to compute, in canonical order; ValueError names any unknown one."""
    if metrics is None:
        return list(METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    return [m for m in METRICS if m in metrics]


def class_tolerance(tolerance_mm: float | Mapping[str | int, float], name: str, value: int | str | list) -> float:
    """The NSD tolerance of one class from a number or a mapping keyed by name or value."""
    if not isinstance(tolerance_mm, Mapping):
        return float(tolerance_mm)
    keys = (name, value, str(value)) if isinstance(value, int) else (name,)  # a region: by name only
    for key in keys:
        if key in tolerance_mm:
            return float(tolerance_mm[key])
    raise ValueError(f"no NSD tolerance given for label '{name}' ({value})")


def _metrics_from(
    counts: Counts,
    pred: np.ndarray | None,
    ref: np.ndarray | None,
    spacing: Sequence[float],
    wanted: list[str],
    tolerance_mm: float,
    surface_method: str,
    both_empty: str,
    empty_distance: float,
) -> dict[str, float | int]:
    voxel_volume = float(np.prod(spacing))
    values: dict[str, float | int] = {}
    values.update(overlap_scores(counts, both_empty))
    if any(m in wanted for m in SURFACE_METRICS):
        values.update(_surface_scores(counts, pred, ref, spacing, tolerance_mm, surface_method,
                                      both_empty, empty_distance))
    v_pred = counts.pred * voxel_volume
    v_ref = counts.ref * voxel_volume
    if v_ref:
        rel = (v_pred - v_ref) / v_ref
    else:
        rel = 0.0 if (both_empty == "perfect" and counts.pred == 0) else math.nan
    values.update(volume_pred=v_pred, volume_ref=v_ref, volume_rel_diff=rel,
                  tp=counts.tp, fp=counts.fp, fn=counts.fn)
    return {m: values[m] for m in wanted}


def _surface_scores(counts, pred, ref, spacing, tolerance_mm, surface_method, both_empty, empty_distance):
    if counts.pred == 0 and counts.ref == 0:
        if both_empty == "perfect":
            return {"hd95": 0.0, "hd": 0.0, "assd": 0.0, "nsd": 1.0}
        return {m: math.nan for m in SURFACE_METRICS}
    if counts.pred == 0 or counts.ref == 0:
        d = float(empty_distance)
        return {"hd95": d, "hd": d, "assd": d, "nsd": 0.0}
    sd = surf.surface_distances(pred, ref, spacing, surface_method)
    return {"hd95": surf.hd95(sd), "hd": surf.hausdorff(sd), "assd": surf.assd(sd),
            "nsd": surf.nsd(sd, tolerance_mm)}


def check_both_empty(both_empty: str) -> None:
    """ValueError unless `both_empty` is one of `BOTH_EMPTY`."""
    if both_empty not in BOTH_EMPTY:
        raise ValueError(f"both_empty must be one of {', '.join(BOTH_EMPTY)}, got {both_empty!r}")


def _label_array(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.signedinteger) and a.size and a.min() < 0:
        raise ValueError(f"{name} holds negative labels")
    return a


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
