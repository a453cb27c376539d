"""Evaluate a folder of predictions against a folder of references.

Files are paired by name: every reference image needs a prediction of the same file name on
the same grid. Per case and class the metrics of `medseg.evaluation.metrics` are computed
(cases in parallel worker processes), then averaged, and written as

- ``summary.json``: settings, per-case values, per-class means over cases (all cases with a
  defined value, and only cases whose reference holds the class), how many values each mean
  averages, and the foreground mean (mean of the class means). NaN is written as ``null``.
- ``metrics.csv``: one row per case x class.

Both are written atomically. `format_table` renders the means for a terminal.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation import metrics as M
from medseg.evaluation.surface import SURFACE_METHODS

from medseg.io.image import IMAGE_SUFFIXES, Image, geometry_differences, has_image_suffix, read_image
from medseg.io.labels import IGNORE
from medseg.utils.files import atomic_path, read_json, write_json

SUMMARY_NAME = "summary.json"
CSV_NAME = "metrics.csv"
# Metrics the terminal table leaves to the CSV: counts and absolute volumes.
_TABLE_SKIP = set(M.COUNT_METRICS) | {"volume_pred", "volume_ref"}
_HEADERS = {
    "dice": "Dice", "iou": "IoU", "precision": "Prec", "recall": "Recall", "specificity": "Spec",
    "hd95": "HD95 mm", "hd": "HD mm", "assd": "ASSD mm", "nsd": "NSD", "volume_rel_diff": "dVol rel",
}


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    labels: dict[str, int] | None = None,
    dataset_json: str | Path | None = None,
    metrics: list[str] | None = None,
    out_dir: str | Path | None = None,
    workers: int = 1,
    tolerance_mm: float | dict = 1.0,
    surface_method: str = "surfel",
    *,
    both_empty: str = "nan",
    ignore_label: int | None = None,
) -> dict:
    """Evaluate every reference in `ref_dir` against the same-named file in `pred_dir`.

    labels: name -> value (or list of values: a region, their union) of the classes to evaluate
        (background 0 is skipped; a label named "ignore" is the ignore label). Without it, the
        labels of `dataset_json` (the file or its folder); without either, every non-zero
        value found in any prediction or reference, named by its value.
    ignore_label: reference voxels holding this value are unannotated and left out of every
        metric (default: the "ignore" label of `labels` or dataset.json, if any).
    metrics: names from `medseg.evaluation.metrics.METRICS` (default: all). Surface metrics
        cost the most; leave them out for a quick overlap-only evaluation.
    out_dir: where summary.json and metrics.csv go (default: `pred_dir`).
    workers: processes evaluating cases in parallel.
    tolerance_mm: NSD tolerance in mm, or a dict with one per class (keys: name or value).
    surface_method: ``"surfel"`` (DeepMind surface elements, default) or ``"voxel"`` (MONAI
        boundary voxels); docs/metrics.md explains both.
    both_empty: ``"nan"`` (default: cases where prediction and reference both lack a class are
        undefined and left out of that class's means) or ``"perfect"`` (they score 1 / 0 mm).

    A structure present on one side only gets HD/HD95/ASSD equal to the image diagonal in mm.
    Returns the summary (NaN as float NaN); raises `MedsegError` naming the file when a
    prediction is missing or its grid differs from the reference.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise MedsegError("folder not found", d)
    try:
        wanted = M.check_metrics(metrics)
        M.check_both_empty(both_empty)
    except ValueError as err:
        raise MedsegError(str(err)) from None
    if surface_method not in SURFACE_METHODS:
        raise MedsegError(f"unknown surface method '{surface_method}'; use one of {', '.join(SURFACE_METHODS)}")
    if workers < 1:
        raise MedsegError(f"workers must be at least 1, got {workers}")

    file_ending = None
    if dataset_json is not None:
        root = Path(dataset_json)
        # Read the JSON itself: evaluation accepts regions (lists of values) that training does not.
        raw = read_json((root.parent if root.is_file() else root) / "dataset.json")
        file_ending = str(raw.get("file_ending", ".nii.gz"))
        if labels is None:
            labels = raw.get("labels", {})
    if labels is not None and IGNORE in labels:
        labels = dict(labels)
        declared = labels.pop(IGNORE)
        ignore_label = declared if ignore_label is None else ignore_label
    if ignore_label is not None and (not isinstance(ignore_label, int) or isinstance(ignore_label, bool)):
        raise MedsegError(f"the ignore label must be an integer, got {ignore_label!r}")
    if labels is not None:
        try:
            labels = {str(k): (list(M.region_values(v)) if isinstance(v, (list, tuple)) else int(v))
                      for k, v in labels.items() if M.region_values(v) != (0,)}
        except (TypeError, ValueError) as err:
            raise MedsegError(f"labels must be integers or lists of integers ({err})") from None
        if not labels:
            raise MedsegError("no foreground label to evaluate")
        _check_tolerances(tolerance_mm, labels)

    pairs = _pair_files(pred_dir, ref_dir, file_ending)
    jobs = [dict(pred=p, ref=r, case=_case_id(r, file_ending), labels=labels, metrics=wanted,
                 tolerance_mm=tolerance_mm, surface_method=surface_method, both_empty=both_empty,
                 ignore=ignore_label)
            for p, r in pairs]
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(_evaluate_case_in_worker, jobs))
        for r in results:
            if "error" in r:
                raise MedsegError(r["error"], r["path"])
    else:
        results = [_evaluate_case(job) for job in jobs]

    if labels is None:
        found = sorted({v for r in results for v in r["present"]})
        if not found:
            raise MedsegError("no foreground label in any prediction or reference", ref_dir)
        labels = {str(v): v for v in found}
        _check_tolerances(tolerance_mm, labels)
        _fill_absent_classes(results, labels, wanted, both_empty)

    summary = _summarise(results, labels, wanted, pred_dir, ref_dir, tolerance_mm, surface_method, both_empty)
    summary["settings"]["ignore_label"] = ignore_label
    write_json(out_dir / SUMMARY_NAME, _json_safe(summary))
    _write_csv(out_dir / CSV_NAME, summary)
    return summary


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the per-class means (and the foreground mean) of a summary."""
    shown = [m for m in summary["metrics"] if m not in _TABLE_SKIP]
    names = list(summary["labels"])
    width = max([len("foreground"), len("label")] + [len(n) for n in names]) + 2
    col = 10
    lines = []
    n_cases = len(summary["metric_per_case"])
    settings = summary["settings"]
    lines.append(f"{n_cases} case{'s' if n_cases != 1 else ''}; surface method '{settings['surface_method']}'; "
                 f"both empty: {settings['both_empty']}; one empty: distances = image diagonal")
    blocks = (("mean", "mean over cases"), ("mean_nonempty", "mean over cases whose reference holds the class"))
    for key, title in blocks:
        lines.append("")
        lines.append(title)
        lines.append("label".ljust(width) + "n".rjust(4) + "".join(_HEADERS.get(m, m).rjust(col) for m in shown))
        for name in names:
            n = summary["n_cases"][key][name]
            row = name.ljust(width) + str(n).rjust(4)
            lines.append(row + "".join(_fmt(summary[key][name].get(m)).rjust(col) for m in shown))
        fg = summary["foreground_" + key]
        lines.append("foreground".ljust(width) + "".rjust(4) + "".join(_fmt(fg.get(m)).rjust(col) for m in shown))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- per case

def _evaluate_case_in_worker(job: dict) -> dict:
    # A MedsegError crosses the process boundary as plain data, so its path survives.
    try:
        return _evaluate_case(job)
    except MedsegError as err:
        prefix = f"{err.path}: " if err.path is not None else ""
        return {"error": str(err)[len(prefix):], "path": err.path}


def _evaluate_case(job: dict) -> dict:
    pred_path, ref_path = Path(job["pred"]), Path(job["ref"])
    ref = read_image(ref_path)
    pred = read_image(pred_path)
    diff = geometry_differences(ref, pred)
    if diff:
        raise MedsegError(f"prediction grid differs from reference {ref_path.name}: {'; '.join(diff)}", pred_path)
    ref_arr = _labels_of(ref, ref_path)
    pred_arr = _labels_of(pred, pred_path)
    labels = job["labels"]
    present = None
    if labels is None:
        present = sorted((set(_present_values(ref_arr)) | set(_present_values(pred_arr))) - {job["ignore"]})
        labels = {str(v): v for v in present}
    # Counts are always computed (they are cheap): they say which side of a class is empty.
    computed = M.check_metrics(list(job["metrics"]) + list(M.COUNT_METRICS))
    try:
        values = M.case_metrics(
            pred_arr, ref_arr, ref.spacing, labels, metrics=computed, tolerance_mm=job["tolerance_mm"],
            surface_method=job["surface_method"], both_empty=job["both_empty"],
            empty_distance=M.image_diagonal(ref.shape, ref.spacing), ignore=job["ignore"])
    except ValueError as err:
        raise MedsegError(str(err), pred_path) from None
    empty = {name: {"reference": v["tp"] + v["fn"] == 0, "prediction": v["tp"] + v["fp"] == 0}
             for name, v in values.items()}
    values = {name: {m: v[m] for m in job["metrics"]} for name, v in values.items()}
    return {
        "case": job["case"],
        "prediction_file": str(pred_path),
        "reference_file": str(ref_path),
        "shape": list(ref.shape),
        "spacing": list(ref.spacing),
        "metrics": values,
        "empty": empty,
        "present": present or [],
    }


def _labels_of(image: Image, path: Path) -> np.ndarray:
    a = image.array
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise MedsegError("label map holds non-integer values", path)
        a = a.astype(np.int32)
    if np.issubdtype(a.dtype, np.signedinteger) and a.size and a.min() < 0:
        raise MedsegError("label map holds negative values", path)
    return a


def _present_values(a: np.ndarray) -> list[int]:
    top = int(a.max()) if a.size else 0
    if top == 0:
        return []
    return [i + 1 for i, box in enumerate(ndimage.find_objects(a, max_label=top)) if box is not None]


def _fill_absent_classes(results: list[dict], labels: dict[str, int], wanted: list[str], both_empty: str) -> None:
    for r in results:
        for name in labels:
            if name not in r["metrics"]:
                n_voxels = int(np.prod(r["shape"]))
                r["metrics"][name] = M.empty_class_metrics(n_voxels, r["spacing"], metrics=wanted,
                                                           both_empty=both_empty)
                r["empty"][name] = {"reference": True, "prediction": True}
        r["metrics"] = {name: r["metrics"][name] for name in labels}


# ----------------------------------------------------------------------------- files

def _case_id(path: Path, file_ending: str | None) -> str:
    name = path.name
    endings = [file_ending] if file_ending else sorted(IMAGE_SUFFIXES, key=len, reverse=True)
    for suffix in endings:
        if name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)]
    return path.stem


def _pair_files(pred_dir: Path, ref_dir: Path, file_ending: str | None) -> list[tuple[Path, Path]]:
    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if not p.name.startswith(".") and p.is_file()
                      and (p.name.endswith(file_ending) if file_ending else has_image_suffix(p)))

    refs = images(ref_dir)
    if not refs:
        raise MedsegError("no reference images found", ref_dir)
    pairs = []
    for ref in refs:
        pred = pred_dir / ref.name
        if not pred.is_file():
            raise MedsegError(f"prediction missing for reference {ref.name}", pred)
        pairs.append((pred, ref))
    return pairs


def _check_tolerances(tolerance_mm: float | dict, labels: Mapping[str, int]) -> None:
    for name, value in labels.items():
        try:
            tol = M.class_tolerance(tolerance_mm, name, value)
        except ValueError as err:
            raise MedsegError(str(err)) from None
        if not math.isfinite(tol) or tol < 0:
            raise MedsegError(f"NSD tolerance for label '{name}' must be a finite number >= 0 mm, got {tol}")


# ----------------------------------------------------------------------------- aggregation

def _summarise(results, labels, wanted, pred_dir, ref_dir, tolerance_mm, surface_method, both_empty) -> dict:
    per_case = [{k: r[k] for k in ("case", "prediction_file", "reference_file", "shape", "spacing", "metrics")}
                for r in results]
    mean: dict[str, dict[str, float]] = {}
    mean_nonempty: dict[str, dict[str, float]] = {}
    n_used: dict[str, dict[str, int]] = {}
    n_used_nonempty: dict[str, dict[str, int]] = {}
    n_cases = {"mean": {}, "mean_nonempty": {}}
    empties: dict[str, dict[str, int]] = {}
    for name in labels:
        rows = [r["metrics"][name] for r in results]
        ref_empty = [r["empty"][name]["reference"] for r in results]
        pred_empty = [r["empty"][name]["prediction"] for r in results]
        nonempty_rows = [r for r, e in zip(rows, ref_empty) if not e]
        mean[name], n_used[name] = _means(rows, wanted)
        mean_nonempty[name], n_used_nonempty[name] = _means(nonempty_rows, wanted)
        both = [a and b for a, b in zip(ref_empty, pred_empty)]
        n_cases["mean"][name] = len(rows) - (sum(both) if both_empty == "nan" else 0)
        n_cases["mean_nonempty"][name] = len(nonempty_rows)
        empties[name] = {
            "cases": len(rows),
            "reference_empty": sum(ref_empty),
            "prediction_empty": sum(pred_empty),
            "both_empty": sum(both),
        }
    return {
        "prediction_dir": str(pred_dir),
        "reference_dir": str(ref_dir),
        "labels": dict(labels),
        "metrics": list(wanted),
        "settings": {
            "surface_method": surface_method,
            "tolerance_mm": {name: M.class_tolerance(tolerance_mm, name, v) for name, v in labels.items()},
            "both_empty": both_empty,
            "one_empty_distance": "image diagonal (mm)",
            "mean": "over cases whose value is defined (not NaN)",
            "mean_nonempty": "over cases whose reference holds the class",
            "foreground_mean": "mean over classes of the class means",
        },
        "metric_per_case": per_case,
        "mean": mean,
        "mean_nonempty": mean_nonempty,
        "foreground_mean": _class_mean(mean, wanted),
        "foreground_mean_nonempty": _class_mean(mean_nonempty, wanted),
        "n_averaged": {"mean": n_used, "mean_nonempty": n_used_nonempty},
        "n_cases": n_cases,
        "empty": empties,
    }


def _means(rows: Sequence[Mapping[str, Any]], wanted: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    means, counts = {}, {}
    for m in wanted:
        values = np.array([float(r[m]) for r in rows], dtype=np.float64)
        defined = values[~np.isnan(values)]
        counts[m] = int(defined.size)
        means[m] = float(defined.mean()) if defined.size else math.nan
    return means, counts


def _class_mean(per_class: Mapping[str, Mapping[str, float]], wanted: list[str]) -> dict[str, float]:
    out = {}
    for m in wanted:
        values = [v[m] for v in per_class.values() if not math.isnan(v[m])]
        out[m] = float(np.mean(values)) if values else math.nan
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_csv(path: Path, summary: Mapping[str, Any]) -> None:
    wanted = summary["metrics"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "label", "value"] + wanted)
    for case in summary["metric_per_case"]:
        for name, value in summary["labels"].items():
            row = case["metrics"][name]
            writer.writerow([case["case"], name, value] + [_csv_value(row[m]) for m in wanted])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _csv_value(v: float | int) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v)) if math.isfinite(v) else ""


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
