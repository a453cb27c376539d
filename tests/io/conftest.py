"""Tiny images and datasets in the nnU-Net v2 layout, built in a test's tmp_path.

Helpers reach tests through fixtures (`tiny`, `dataset`), not `import conftest`, so they
work under any pytest import mode and beside other conftest files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.io.image import Image, write_image

SHAPE = (4, 6, 8)          # (z, y, x)
SPACING = (2.5, 0.75, 0.5)  # mm, (z, y, x)
ORIGIN = (-10.0, 20.0, 3.5)  # ITK world (x, y, z)


def oblique_direction(ndim: int = 3) -> tuple[float, ...]:
    """A proper rotation that is not axis-aligned, row-major, ITK order."""
    if ndim == 2:
        a = 0.3
        return (math.cos(a), -math.sin(a), math.sin(a), math.cos(a))
    a, b = 0.3, 0.2
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel().tolist())


def make_image(array: np.ndarray, direction: tuple[float, ...] = ()) -> Image:
    return Image(array, spacing=SPACING[-array.ndim:], origin=ORIGIN[: array.ndim], direction=direction)


def write_dataset(
    root: Path,
    *,
    case_ids: tuple[str, ...] = ("case_a", "case_b", "case_c"),
    channels: tuple[str, ...] = ("CT", "PET"),
    labels: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write a valid dataset: float32 channels and uint8 labels holding every declared value."""
    labels = labels or {"background": 0, "liver": 1, "tumour": 2}
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case_id in case_ids:
        for c in range(len(channels)):
            array = rng.normal(size=SHAPE).astype(np.float32)
            write_image(make_image(array), root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz")
        label = np.zeros(SHAPE, np.uint8)
        for i, value in enumerate(sorted(labels.values())):
            label[i % SHAPE[0], 0, i] = value
        write_image(make_image(label), root / "labelsTr" / f"{case_id}.nii.gz")
    dataset_json = {
        "name": root.name,
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": labels,
        "numTraining": len(case_ids),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A valid three-case, two-channel dataset."""
    return write_dataset(tmp_path / "Dataset001_Tiny")


@pytest.fixture
def tiny() -> SimpleNamespace:
    """The shared grid (SHAPE, SPACING, ORIGIN) and the helpers that build images and datasets."""
    return SimpleNamespace(SHAPE=SHAPE, SPACING=SPACING, ORIGIN=ORIGIN, make_image=make_image,
                           oblique_direction=oblique_direction, write_dataset=write_dataset)
