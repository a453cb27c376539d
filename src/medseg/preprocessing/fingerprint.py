"""The dataset fingerprint: what planning needs to know about a dataset.

Spacings and shapes (before and after cropping), foreground intensity statistics per
channel, and voxel counts per label. Written as `fingerprint.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.dataset import CaseFiles, find_cases, read_case, read_dataset_info
from medseg.preprocessing.crop import crop, nonzero_bbox
from medseg.utils.files import write_json
from medseg.utils.parallel import map_progress

SAMPLES_PER_CASE = 10_000


def _case_fingerprint(files: CaseFiles, seed: int) -> dict[str, Any]:
    case = read_case(files)
    bbox = nonzero_bbox(case.image)
    image = crop(case.image, bbox)
    label = crop(case.label, bbox)
    fg = label > 0
    rng = np.random.default_rng(seed)
    samples = []
    for c in range(image.shape[0]):
        values = image[c][fg]
        if values.size > SAMPLES_PER_CASE:
            values = rng.choice(values, SAMPLES_PER_CASE, replace=False)
        samples.append(values.astype(np.float32))
    labels, counts = np.unique(label, return_counts=True)
    return {
        "case_id": files.case_id,
        "spacing": list(case.spacing),
        "shape": list(case.image.shape[1:]),
        "shape_after_crop": list(image.shape[1:]),
        "label_voxels": {str(int(v)): int(n) for v, n in zip(labels, counts)},
        "_samples": samples,
    }


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """Summary of foreground intensities; the percentiles are what CT normalisation clips to."""
    if values.size == 0:
        return {k: 0.0 for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    v = values.astype(np.float64)
    return {
        "mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
        "min": float(v.min()), "max": float(v.max()),
        "percentile_00_5": float(np.percentile(v, 0.5)), "percentile_99_5": float(np.percentile(v, 99.5)),
    }


def compute_fingerprint(dataset: str | Path, workers: int = 1, progress: bool = False) -> dict[str, Any]:
    """Fingerprint every training case of `dataset` (an nnU-Net raw folder). Spacings and
    shapes are in (z, y, x) order, millimetres and voxels."""
    info = read_dataset_info(dataset)
    cases = find_cases(dataset, info)
    if not cases:
        from medseg.errors import MedsegError
        raise MedsegError("no training cases found", Path(dataset) / "imagesTr")
    jobs = [(c, i) for i, c in enumerate(cases)]
    per_case = map_progress(_case_fingerprint, jobs, workers=workers, progress=progress, desc="fingerprint")
    samples = [np.concatenate([pc["_samples"][c] for pc in per_case]) for c in range(info.num_channels)]
    spacings = np.array([pc["spacing"] for pc in per_case])
    shapes = np.array([pc["shape_after_crop"] for pc in per_case])
    spatial_dims = 2 if spacings.shape[1] == 2 or np.all(shapes[:, 0] == 1) else 3
    return {
        "dataset_name": info.name,
        "channel_names": info.channel_names,
        "labels": info.labels,
        "regions_class_order": info.regions_class_order,
        "num_cases": len(per_case),
        "spatial_dims": spatial_dims,
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape_after_crop": np.median(shapes, axis=0).tolist(),
        "intensity": [intensity_statistics(s) for s in samples],
        # Axes that mirroring may flip (dataset.json "mirror_axes"; lateralised labels forbid some).
        "mirror_axes": info.raw.get("mirror_axes"),
        "cases": [{k: v for k, v in pc.items() if not k.startswith("_")} for pc in per_case],
    }


def write_fingerprint(fp: dict[str, Any], path: str | Path) -> None:
    write_json(path, fp)
