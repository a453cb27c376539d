"""Shared fixtures: tiny phantom datasets in temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """Four small phantom cases in the nnU-Net layout (made once per test session)."""
    from medseg.data.phantoms import make_phantoms

    root = tmp_path_factory.mktemp("phantoms") / "Phantoms"
    make_phantoms(root, cases=4, seed=3)
    return root


def write_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray | None,
               spacing=(3.0, 1.0, 1.0), origin=None, direction=None) -> None:
    """Write one single-channel case into an nnU-Net layout folder."""
    from medseg.io.image import Image, write_image

    kw = {}
    if origin is not None:
        kw["origin"] = origin
    if direction is not None:
        kw["direction"] = direction
    write_image(Image(image, spacing, **kw), root / "imagesTr" / f"{case_id}_0000.nii.gz")
    if label is not None:
        write_image(Image(label, spacing, **kw), root / "labelsTr" / f"{case_id}.nii.gz")
