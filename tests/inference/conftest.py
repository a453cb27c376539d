"""A tiny model folder with random weights: enough to test prediction's plumbing and geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.io.image import Image, write_image
from medseg.training.checkpoint import save_checkpoint
from medseg.training.trainer import build_model
from medseg.utils.files import write_json


def tiny_description() -> dict:
    return {
        "configuration": {
            "name": "3d_fullres", "spatial_dims": 3, "target_spacing": [2.5, 1.0, 1.0], "patch_size": [8, 32, 32],
            "batch_size": 2, "normalization": ["ct"], "model": "dynunet",
            "model_options": {"features": [4, 8, 16], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                              "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "deep_supervision": True},
            "resampling": {"data": "cubic", "label": "linear", "separate_z": True},
        },
        "model": "dynunet",
        "model_options": {"features": [4, 8, 16], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                          "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "deep_supervision": True},
        "labels": {"background": 0, "a": 1, "b": 2},
        "channel_names": ["CT"],
        "intensity": [{"mean": 40.0, "std": 30.0, "percentile_00_5": -100.0, "percentile_99_5": 200.0}],
    }


@pytest.fixture
def make_model_dir(tmp_path):
    """make(num_classes=3, patch_size=None, folds=(0, 1)) -> a model folder of the tiny
    description with random weights (fold k seeded with k)."""
    def make(num_classes: int = 3, patch_size: list[int] | None = None, folds=(0, 1)) -> Path:
        desc = tiny_description()
        if num_classes != 3:
            desc["labels"] = {"background": 0, **{f"class_{k}": k for k in range(1, num_classes)}}
        if patch_size:
            desc["configuration"]["patch_size"] = list(patch_size)
        model_dir = tmp_path / f"model_{num_classes}"
        write_json(model_dir / "model.json", desc)
        for fold in folds:
            torch.manual_seed(fold)
            save_checkpoint(model_dir / f"fold_{fold}", "checkpoint_final", build_model(desc), {"epoch": 1})
        return model_dir
    return make


@pytest.fixture
def tiny_model_dir(make_model_dir) -> Path:
    return make_model_dir()


@pytest.fixture
def scans(tmp_path) -> Path:
    """Three small CT-like scans with oblique geometry, in nnU-Net test naming."""
    folder = tmp_path / "scans"
    rng = np.random.default_rng(0)
    angle = 0.3
    direction = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
    for i, shape in enumerate([(9, 40, 37), (12, 33, 45), (5, 20, 20)]):
        arr = rng.normal(40, 50, size=shape).astype(np.int16)
        write_image(Image(arr, (2.0 + i * 0.3, 0.9, 1.1), origin=(5.0 * i, -3.0, 7.5), direction=direction),
                    folder / f"case{i}_0000.nii.gz")
    return folder


@pytest.fixture
def description() -> dict:
    """A fresh copy of the tiny model's model.json content, for tests that change it."""
    return tiny_description()
