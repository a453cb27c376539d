"""Dataset validation: every problem in a dataset, found in one pass and reported at once.

Each file is read once. Cases are checked in parallel threads (SimpleITK releases the GIL
while it decompresses), and only one case's arrays per thread are held in memory.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.errors import MedsegError
from medseg.io.dataset import CHANNEL_RE, CaseFiles, DatasetInfo, find_cases, read_dataset_info
from medseg.io.image import (
    Image, geometry_differences, image_suffix, nifti_nonfinite_counts, read_geometry, read_image,
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file it concerns and what is wrong.

    "error" problems stop the pipeline; "warning" problems are worth a look but not fatal.
    """

    path: Path
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate_dataset(root: str | Path, *, workers: int | None = None, tol: float = 1e-4) -> list[Problem]:
    """Check a dataset in the nnU-Net v2 layout and return all problems found (empty if none).

    Checks dataset.json; that every case has all its channel files and a label; that every
    file reads; that channels and label share one grid (shape, spacing, origin, direction
    within `tol`, see `geometry_differences`); that images hold no NaN/Inf voxels; that
    labels are integer-valued and use only values declared in dataset.json; and that
    numTraining matches the cases found. imagesTs, when present, is checked without labels.
    `workers` threads read cases in parallel (default: up to 4, one per CPU).
    """
    root = Path(root)
    try:
        info = read_dataset_info(root)
    except MedsegError as err:
        # Without a readable dataset.json the channels and file ending are unknown.
        return [_problem(err, root / "dataset.json")]
    workers = workers or min(4, os.cpu_count() or 1)
    problems: list[Problem] = []
    for subset in ("Tr", "Ts"):
        try:
            cases = find_cases(root, info, subset)
        except MedsegError as err:
            problems.append(_problem(err, root / f"images{subset}"))
            continue
        problems += _stray_files(root, info, subset, {c.case_id for c in cases})
        if subset == "Tr" and not cases:
            problems.append(Problem(
                root / "imagesTr", f"no training cases: no file is named CASE_0000{info.file_ending}"))
        check = partial(_check_case, info=info, tol=tol)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for case_problems in pool.map(check, cases):
                problems += case_problems
        if subset == "Tr" and cases and info.num_training != len(cases):
            problems.append(Problem(
                root / "dataset.json",
                f"numTraining is {info.num_training} but imagesTr holds {len(cases)} cases", "warning"))
    return problems


def check_dataset(root: str | Path) -> list[Problem]:
    """Validate a dataset before the pipeline uses it; return its warnings.

    Raises `MedsegError` with the first error, naming its file, and how many there are.
    """
    problems = validate_dataset(root)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = errors[0]
        more = (f" (1 of {len(errors)} errors; `medseg validate {root}` lists them all)"
                if len(errors) > 1 else "")
        raise MedsegError(first.message + more, first.path)
    return [p for p in problems if p.severity == "warning"]


def _check_case(files: CaseFiles, info: DatasetInfo, tol: float) -> list[Problem]:
    """Every problem of one case; reads each of its files once."""
    problems: list[Problem] = []
    ref: Image | None = None
    ref_path: Path | None = None
    for k, path in enumerate(files.images):
        if not path.exists():
            problems.append(Problem(path, f"missing channel {k} ({info.channel_names[k]}) of case {files.case_id}"))
            continue
        image = _read_channel(path, problems)
        if image is None or not _check_dims(image, path, problems):
            continue
        if ref is None:
            ref, ref_path = image.without_voxels(), path
        else:
            diff = geometry_differences(ref, image, tol)
            if diff:
                problems.append(Problem(path, f"grid differs from {ref_path.name}: {'; '.join(diff)}"))
    if files.label is None:
        return problems
    if not files.label.exists():
        problems.append(Problem(files.label, f"label file missing for case {files.case_id}"))
        return problems
    label = _read(files.label, problems)
    if label is None or not _check_dims(label, files.label, problems):
        return problems
    if ref is not None:
        diff = geometry_differences(ref, label, tol)
        if diff:
            problems.append(Problem(files.label, f"label grid differs from {ref_path.name}: {'; '.join(diff)}"))
    array = label.array
    if not np.issubdtype(array.dtype, np.integer):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            examples = ", ".join(f"{v:g}" for v in np.unique(array[bad])[:3])
            problems.append(Problem(files.label, f"label holds non-integer values ({examples}); labels are integers"))
            return problems
    declared = set(info.scheme.label_values)
    undeclared = [v for v in _unique_values(array) if v not in declared]
    if undeclared:
        problems.append(Problem(
            files.label,
            f"label values {', '.join(map(str, undeclared))} not declared in dataset.json labels "
            f"(declared: {', '.join(map(str, sorted(declared)))})"))
    return problems


def _read(path: Path, problems: list[Problem]) -> Image | None:
    try:
        return read_image(path)
    except MedsegError as err:
        problems.append(_problem(err, path))
        return None


def _check_dims(image: Image, path: Path, problems: list[Problem]) -> bool:
    if image.ndim in (2, 3) and image.array.size:
        return True
    if not image.array.size:
        problems.append(Problem(path, f"image is empty (shape {image.shape})"))
    elif image.ndim == 4:
        problems.append(Problem(path, "image is 4-D; store each channel as its own 3-D file "
                                      "(`medseg convert-msd` splits Decathlon 4-D files)"))
    else:
        problems.append(Problem(path, f"image is {image.ndim}-D; expected 2-D or 3-D"))
    return False


def _read_channel(path: Path, problems: list[Problem]) -> Image | None:
    """A channel image (perhaps without voxels), its NaN/Inf voxels reported; read once.

    Float NIfTI files are checked on their raw data, because ITK's reader turns NaN and
    Inf into 0; their grid then comes from the header alone.
    """
    try:
        counts = nifti_nonfinite_counts(path) if image_suffix(path) in (".nii", ".nii.gz") else None
        image = read_image(path) if counts is None else read_geometry(path)
    except MedsegError as err:
        problems.append(_problem(err, path))
        return None
    if counts is None and np.issubdtype(image.array.dtype, np.floating) and not np.isfinite(image.array).all():
        counts = int(np.isnan(image.array).sum()), int(np.isinf(image.array).sum())
    if counts and any(counts):
        parts = [f"{n} {what}" for n, what in zip(counts, ("NaN", "infinite")) if n]
        problems.append(Problem(path, f"image holds {' and '.join(parts)} voxel values"))
    return image


def _unique_values(array: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer-valued array.

    A histogram is one pass over the voxels, several times faster than np.unique's sort
    on whole volumes; np.unique remains for wide value ranges.
    """
    lo, hi = int(array.min()), int(array.max())
    if np.issubdtype(array.dtype, np.integer) and hi - lo <= 1 << 16:
        flat = array.ravel().astype(np.intp)  # bincount takes non-negative intp only
        if lo:
            flat -= lo
        return [int(v) + lo for v in np.flatnonzero(np.bincount(flat))]
    return [int(v) for v in np.unique(array)]


def _stray_files(root: Path, info: DatasetInfo, subset: str, case_ids: set[str]) -> list[Problem]:
    """Warnings for files the case discovery ignores: they are usually a naming mistake."""
    problems = []
    ending = info.file_ending
    images_dir = root / f"images{subset}"
    for p in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
        if p.name.startswith("."):
            continue
        m = CHANNEL_RE.match(p.name[: -len(ending)]) if p.name.endswith(ending) else None
        if m is None:
            problems.append(Problem(p, f"ignored: not named CASE_XXXX{ending}", "warning"))
        elif int(m["channel"]) >= info.num_channels:
            problems.append(Problem(
                p, f"ignored: channel {int(m['channel'])}, but dataset.json declares {info.num_channels}", "warning"))
    labels_dir = root / f"labels{subset}"
    if subset == "Tr" and labels_dir.is_dir():
        for p in sorted(labels_dir.iterdir()):
            if p.name.startswith("."):
                continue
            if not p.name.endswith(ending):
                problems.append(Problem(p, f"ignored: file ending is not {ending}", "warning"))
            elif p.name[: -len(ending)] not in case_ids:
                problems.append(Problem(p, "label has no image in imagesTr", "warning"))
    return problems


def _problem(err: MedsegError, path: Path) -> Problem:
    """A `Problem` from a `MedsegError`, without repeating the path its message starts with."""
    text = str(err)
    if err.path is not None:
        text = re.sub(rf"^{re.escape(str(err.path))}: ", "", text)
        path = err.path
    return Problem(path, text)
