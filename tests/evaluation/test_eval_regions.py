"""Regions: a label declared as a list of values is evaluated as the union of those values."""

import json

import numpy as np
import pytest

from medseg.evaluation import case_metrics, evaluate_folders
from medseg.io.image import Image, write_image


def test_region_is_the_union_of_its_values():
    ref = np.zeros((1, 10, 10), np.uint8)
    ref[0, 2:6, 2:6] = 1
    ref[0, 3:5, 3:5] = 2
    pred = ref.copy()
    pred[pred == 2] = 1  # core called edema: class 2 wrong, the whole region right
    out = case_metrics(pred, ref, (1, 1, 1), {"edema": 1, "core": 2, "whole": [1, 2]}, metrics=["dice"])
    assert out["whole"]["dice"] == pytest.approx(1.0)
    assert out["core"]["dice"] == 0.0
    assert out["edema"]["dice"] == pytest.approx(2 * 12 / (16 + 12))


def test_dataset_json_regions_are_evaluated(tmp_path):
    for sub in ("pred", "ref"):
        (tmp_path / sub).mkdir()
    ref = np.zeros((4, 8, 8), np.uint8)
    ref[1:3, 2:6, 2:6] = 1
    ref[1:3, 3:5, 3:5] = 3
    pred = ref.copy()
    pred[pred == 3] = 1
    write_image(Image(ref, (2.0, 1.0, 1.0)), tmp_path / "ref" / "c.nii.gz")
    write_image(Image(pred, (2.0, 1.0, 1.0)), tmp_path / "pred" / "c.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "tumour": [1, 3], "core": 3},
        "file_ending": ".nii.gz", "numTraining": 1}))
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", dataset_json=tmp_path / "dataset.json",
                               metrics=["dice"], out_dir=tmp_path / "out")
    assert summary["mean"]["tumour"]["dice"] == pytest.approx(1.0)
    assert summary["mean"]["core"]["dice"] == 0.0


def test_region_tolerance_by_name():
    ref = np.zeros((6, 6), np.uint8)
    ref[1:4, 1:4] = 1
    out = case_metrics(ref, ref, (1, 1), {"whole": [1, 2]}, metrics=["nsd"], tolerance_mm={"whole": 2.0})
    assert out["whole"]["nsd"] == pytest.approx(1.0)
