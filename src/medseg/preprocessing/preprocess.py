"""Preprocess cases for a configuration: crop, normalise, resample; store for cheap patch reads.

Configurations that preprocess alike share one folder (nnU-Net's shared data identifier): one
that inherits another and keeps its spacing, normalisation and resampling (`3d_cascade_fullres`
from `3d_fullres`, or `3d_fullres_bs4`) uses the folder of the one it inherits.

Per case, in `preprocessed/<config>/`:
  CASE.npy        (C, z, y, x) float32, read with memory mapping during training
  CASE_seg.npy    (z, y, x) int16 label map
  CASE_fg.npy     (K, 4) int32 rows of (class, z, y, x): sampled voxel positions per class
  CASE.json       geometry needed to map a prediction back to the original scan
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.dataset import Case, CaseFiles, find_cases, read_case, read_dataset_info
from medseg.io.labels import LabelScheme
from medseg.planning.plans import ConfigurationPlan, Plans
from medseg.preprocessing.crop import crop, nonzero_bbox
from medseg.preprocessing.normalize import normalize
from medseg.preprocessing.resample import (new_shape_for_spacing, nnunet_separate_axis, resample_image,
                                           resample_label)
from medseg.utils.files import atomic_path, write_json
from medseg.utils.parallel import map_progress

LOCATIONS_PER_CLASS = 5_000


def slicewise(spacing: tuple[float, ...], plan: ConfigurationPlan) -> bool:
    """A 2D configuration applied to a volume: slices along z, each handled in-plane."""
    return plan.spatial_dims == 2 and len(spacing) == 3


def target_spacing_for(spacing: tuple[float, ...], plan: ConfigurationPlan) -> list[float]:
    """The grid a case is resampled to: the plan's spacing; for a 2D plan on a volume, the
    plan's in-plane spacing with the case's own slice spacing (slices are never mixed)."""
    if slicewise(spacing, plan):
        return [float(spacing[0]), *plan.target_spacing[-2:]]
    return list(plan.target_spacing[-len(spacing):])


def separate_axis_for(spacing: tuple[float, ...], plan: ConfigurationPlan, to_target: bool = True) -> int | None:
    """The spatial axis (index in (z, y, x)) resampled on its own (nearest along it) when a
    case of `spacing` (mm, (z, y, x)) goes to the plan's grid (`to_target`) or comes back from
    it; None to resample all axes together.

    A plan with `resampling.anisotropy_threshold` (imported nnU-Net models) decides per case,
    as nnU-Net does (`nnunet_separate_axis`): the spacing resampled from decides if it is
    anisotropic beyond the threshold, else the one resampled to. So the axis can depend on the
    case and on the direction (a coarse case axis at preprocessing, the target's at export).
    Other plans have one axis (`plan.separate_axis`), and a 2D plan on a volume resamples
    slice by slice (axis 0)."""
    if len(spacing) != 3:
        return None
    threshold = plan.resampling.get("anisotropy_threshold")
    if threshold is not None:
        target = target_spacing_for(spacing, plan)
        current, new = (spacing, target) if to_target else (target, spacing)
        return nnunet_separate_axis(current, new, float(threshold))
    return 0 if slicewise(spacing, plan) else plan.separate_axis


def preprocess_image(image: np.ndarray, spacing: tuple[float, ...], plan: ConfigurationPlan,
                     intensity: list[dict]) -> tuple[np.ndarray, dict[str, Any]]:
    """Crop, normalise and resample one image (C, *spatial). Returns the array and the
    properties that `inference` needs to map a prediction back."""
    bbox = nonzero_bbox(image)
    cropped = crop(image, bbox)
    data = normalize(cropped, plan.normalization, intensity)
    target = target_spacing_for(spacing, plan)
    new_shape = new_shape_for_spacing(cropped.shape[1:], spacing, target)
    data = resample_image(data, new_shape, plan.resampling.get("data", "linear"), separate_axis_for(spacing, plan))
    props = {
        "spacing": list(spacing),
        "shape": list(image.shape[1:]),
        "bbox": [list(b) for b in bbox],
        "shape_after_crop": list(cropped.shape[1:]),
        "shape_after_resample": list(new_shape),
        "target_spacing": list(target),
    }
    return data, props


def preprocess_label(label: np.ndarray, props: dict[str, Any], labels: list[int],
                     separate_axis: int | None) -> np.ndarray:
    """Crop a label map (*spatial) as its image was and resample it to the image's grid."""
    cropped = crop(label, [tuple(b) for b in props["bbox"]])
    return resample_label(cropped, props["shape_after_resample"], labels, separate_axis).astype(np.int16)


def class_locations(seg: np.ndarray, classes: list[int], per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` random voxel positions of each class: rows (class, z, y, x)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in classes:
        idx = np.argwhere(seg == c)
        if len(idx) > per_class:
            idx = idx[rng.choice(len(idx), per_class, replace=False)]
        if len(idx):
            rows.append(np.concatenate([np.full((len(idx), 1), c), idx], axis=1))
    if not rows:
        return np.zeros((0, 1 + seg.ndim), dtype=np.int32)
    return np.concatenate(rows).astype(np.int32)


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def _preprocess_one(files: CaseFiles, plan: ConfigurationPlan, intensity: list[dict], scheme: LabelScheme,
                    out_dir: Path, seed: int) -> str:
    case: Case = read_case(files)
    data, props = preprocess_image(case.image, case.spacing, plan, intensity)
    # The ignore value is resampled as a class of its own (never blended into a neighbour),
    # but it is no foreground: patches are not centred on it.
    seg = preprocess_label(case.label, props, scheme.label_values, separate_axis_for(case.spacing, plan))
    classes = scheme.foreground_values
    save_array(out_dir / f"{files.case_id}.npy", data)
    save_array(out_dir / f"{files.case_id}_seg.npy", seg)
    save_array(out_dir / f"{files.case_id}_fg.npy", class_locations(seg, classes, LOCATIONS_PER_CLASS, seed))
    props["case_id"] = files.case_id
    props["classes_present"] = [int(c) for c in np.unique(seg) if c in classes]
    write_json(out_dir / f"{files.case_id}.json", props)
    return files.case_id


# What decides the preprocessed arrays; configurations equal in these share them.
PREPROCESSING_FIELDS = ("spatial_dims", "target_spacing", "normalization", "resampling")


def data_configuration(plans: Plans, config: str) -> str:
    """The configuration whose preprocessed arrays `config` uses: the furthest ancestor along
    `inherits` that preprocesses exactly as `config` does (`config` itself if none)."""
    plan = plans.configuration(config)
    name = config
    parent = plans.configurations[name].get("inherits")
    while parent is not None:
        other = plans.configuration(parent)
        if any(getattr(other, f) != getattr(plan, f) for f in PREPROCESSING_FIELDS):
            break
        name, parent = parent, plans.configurations[parent].get("inherits")
    return name


def preprocessed_dir(workdir: str | Path, plans: Plans, config: str) -> Path:
    """Where `config`'s preprocessed arrays are: `preprocessed/<its data configuration>/`."""
    return Path(workdir) / "preprocessed" / data_configuration(plans, config)


def preprocess_dataset(dataset: str | Path, workdir: str | Path, plans: Plans, config: str,
                       workers: int = 1, progress: bool = False) -> Path:
    """Preprocess every training case of `dataset` for `config` into the folder of its data
    configuration; returns that folder."""
    config = data_configuration(plans, config)
    plan = plans.configuration(config)
    info = read_dataset_info(dataset)
    out_dir = preprocessed_dir(workdir, plans, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(c, plan, plans.intensity, info.scheme, out_dir, i) for i, c in enumerate(find_cases(dataset, info))]
    map_progress(_preprocess_one, jobs, workers=workers, progress=progress, desc=f"preprocess {config}")
    write_json(out_dir / "plan.json", {"configuration": config, **plan.to_dict()})
    return out_dir
