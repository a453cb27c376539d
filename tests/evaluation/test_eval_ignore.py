"""The ignore label: reference voxels holding it are left out of every metric."""

import json

import numpy as np
import pytest

from medseg.evaluation import case_metrics, evaluate_folders
from medseg.io.image import Image, write_image


def _pair():
    ref = np.zeros((3, 12, 12), np.uint8)
    ref[:, 2:8, 2:8] = 1
    pred = np.zeros_like(ref)
    pred[:, 2:8, 4:10] = 1  # shifted right by two columns
    return pred, ref


def test_metrics_equal_those_of_both_maps_cut_to_the_annotated_voxels():
    pred, ref = _pair()
    ignored = np.zeros(ref.shape, bool)
    ignored[:, :, 6:] = True  # unannotated right part: the shift's false positives live there
    ref_ignore = np.where(ignored, 9, ref).astype(np.uint8)
    got = case_metrics(pred, ref_ignore, (2.0, 1.0, 1.0), {"a": 1}, ignore=9)["a"]
    # By hand: annotated columns 0-5; pred holds columns 4-5, ref 2-5 (rows 2-7, 3 slices).
    assert (got["tp"], got["fp"], got["fn"]) == (2 * 6 * 3, 0, 2 * 6 * 3)
    assert got["dice"] == pytest.approx(2 * 36 / (36 + 72))
    assert got["specificity"] == pytest.approx(1.0)
    cut = case_metrics(np.where(ignored, 0, pred), np.where(ignored, 0, ref), (2.0, 1.0, 1.0), {"a": 1})["a"]
    for m in ("dice", "iou", "recall", "precision", "hd95", "assd", "nsd", "volume_pred", "volume_ref"):
        assert got[m] == pytest.approx(cut[m]), m
    # Without the ignore label the same voxels would count as background: a worse Dice.
    assert case_metrics(pred, ref_ignore, (2.0, 1.0, 1.0), {"a": 1}, metrics=["dice"])["a"]["dice"] < got["dice"]


def test_evaluate_folders_takes_the_ignore_label_from_dataset_json(tmp_path):
    pred, ref = _pair()
    ref[:, :, 6:] = np.where(ref[:, :, 6:] == 0, 0, 2)  # the ignore label (2) covers the organ's right part
    for sub, arr in (("pred", pred), ("ref", ref)):
        write_image(Image(arr, (2.0, 1.0, 1.0)), tmp_path / sub / "c.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "ignore": 2},
        "file_ending": ".nii.gz", "numTraining": 1}))
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", dataset_json=tmp_path / "dataset.json",
                               metrics=["dice", "fp"], out_dir=tmp_path / "out")
    assert list(summary["labels"]) == ["organ"] and summary["settings"]["ignore_label"] == 2
    # Predicted organ voxels on ignored voxels (columns 6-7 of rows 2-7) are no false positives.
    assert summary["metric_per_case"][0]["metrics"]["organ"]["fp"] == 2 * 6 * 3
    plain = evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels={"organ": 1}, metrics=["fp"],
                             out_dir=tmp_path / "plain")
    assert plain["metric_per_case"][0]["metrics"]["organ"]["fp"] == 4 * 6 * 3
    flag = evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels={"organ": 1}, ignore_label=2,
                            metrics=["fp"], out_dir=tmp_path / "flag")
    assert flag["metric_per_case"][0]["metrics"]["organ"]["fp"] == 2 * 6 * 3
