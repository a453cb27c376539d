"""End to end on tiny phantoms with nnU-Net v2's label features: region-based training
(organ = [1, 2], lesion = [2]) and an ignore label (a slab of unannotated voxels)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.data.phantoms import make_phantom_case, make_phantoms
from medseg.demo import hold_out
from medseg.evaluation import case_metrics, evaluate_folders
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig
from medseg.training.trainer import build_model

pytestmark = pytest.mark.slow

SEED = 11
CASES = 4  # the last one is held out


def _pipeline(wd, ds, fold, epochs):
    hold_out(ds, 1)
    run_fingerprint(ds, wd)
    run_plan(ds, wd, budget_gb=1.0, device="cpu", base_features=8, max_patch_voxels=16 * 48 * 48)
    run_preprocess(ds, wd, "3d_fullres")
    cfg = TrainingConfig(epochs=epochs, iters_per_epoch=15, val_iters=3, progress=False, seed=0)
    return run_train(ds, wd, "3d_fullres", fold, cfg)


def _predict_held_out(wd, ds, **kwargs):
    pred_dir = wd / kwargs.pop("out", "predictions")
    Predictor.from_model_dir(wd / "models" / "3d_fullres", **kwargs).predict_folder(ds / "imagesTs", pred_dir)
    (case_file,) = sorted((ds / "imagesTs").iterdir())
    image = read_image(case_file)
    pred = read_image(pred_dir / case_file.name.replace("_0000", ""))
    assert pred.shape == image.shape
    assert pred.spacing == image.spacing and pred.origin == image.origin and pred.direction == image.direction
    return pred_dir, pred.array


# -- regions ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    wd = tmp_path_factory.mktemp("regions")
    ds = make_phantoms(wd / "Phantoms", cases=CASES, seed=SEED, regions=True)
    summary = _pipeline(wd, ds, 0, epochs=4)
    return wd, ds, summary


def test_region_model_has_one_output_per_region_and_logs_each(regions):
    wd, _, summary = regions
    model_dir = wd / "models" / "3d_fullres"
    desc = json.loads((model_dir / "model.json").read_text())
    assert desc["labels"]["organ"] == [1, 2] and desc["regions_class_order"] == [1, 2]
    import torch
    net = build_model(desc, deep_supervision=False).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, *desc["configuration"]["patch_size"])).shape[1] == 2
    history = json.loads((model_dir / "fold_0" / "checkpoint_final.json").read_text())["history"]
    assert set(history[-1]["pseudo_dice_per_class"]) == {"organ", "lesion"}
    assert summary["best_pseudo_dice_ema"] > 0
    assert "organ " in (model_dir / "fold_0" / "training_log.txt").read_text()


def test_region_prediction_is_nested_and_evaluated_per_region(regions):
    wd, ds, _ = regions
    pred_dir, pred = _predict_held_out(wd, ds)
    assert set(np.unique(pred)) <= {0, 1, 2}
    summary = evaluate_folders(pred_dir, ds / "labelsTs", dataset_json=ds / "dataset.json", out_dir=wd / "eval",
                               metrics=["dice"])
    assert summary["labels"] == {"organ": [1, 2], "lesion": [2]}
    ref = read_image(next((ds / "labelsTs").iterdir())).array
    organ = ref >= 1
    baseline = 2 * organ.sum() / (organ.sum() + organ.size)  # call every voxel "organ"
    assert summary["mean"]["organ"]["dice"] > baseline + 0.1
    # The region Dice is that of the union of the values, the lesion's that of value 2 alone.
    by_hand = case_metrics(pred, ref, (1, 1, 1), {"organ": [1, 2], "lesion": 2}, metrics=["dice"])
    for name in ("organ", "lesion"):
        assert summary["mean"][name]["dice"] == pytest.approx(by_hand[name]["dice"], nan_ok=True)
    assert main(["report", str(wd), "--out", str(wd / "report.html")]) == 0
    assert "lesion" in (wd / "report.html").read_text(encoding="utf-8")


def test_region_model_exports_to_onnx(regions):
    pytest.importorskip("onnxruntime")
    wd, ds, _ = regions
    assert main(["export", str(wd / "models" / "3d_fullres"), "--format", "onnx"]) == 0
    _, torch_labels = _predict_held_out(wd, ds)
    _, onnx_labels = _predict_held_out(wd, ds, out="onnx", backend="onnxruntime")
    assert (torch_labels == onnx_labels).mean() >= 0.999


def test_region_model_post_processing_is_chosen_per_region_and_keeps_the_nesting(regions):
    wd, ds, _ = regions
    model_dir = wd / "models" / "3d_fullres"
    assert main(["postprocess", str(model_dir), str(ds)]) == 0
    rules = json.loads((model_dir / "postprocessing.json").read_text())
    assert rules["folds"] == ["fold_0"] and set(rules["evidence"]["per_region"]) == {"organ", "lesion"}
    # Whatever was chosen names each region with its values and where its stray pieces go.
    for region in rules["regions"]:
        assert {"organ": ([1, 2], 0), "lesion": ([2], 1)}[region["name"]] == (region["values"], region["fallback"])
    _, pred = _predict_held_out(wd, ds, out="postprocessed")
    assert set(np.unique(pred)) <= {0, 1, 2}


# -- ignore label --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ignore(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ignore")
    ds = make_phantoms(wd / "Phantoms", cases=CASES, seed=SEED, ignore=True)
    summary = _pipeline(wd, ds, 0, epochs=2)
    return wd, ds, summary


def test_ignore_label_has_no_output_and_is_never_predicted(ignore):
    wd, ds, _ = ignore
    desc = json.loads((wd / "models" / "3d_fullres" / "model.json").read_text())
    assert desc["labels"]["ignore"] == 3 and "regions_class_order" not in desc
    seg = np.load(wd / "preprocessed" / "3d_fullres" / "phantom_000_seg.npy")
    assert (seg == 3).any()
    _, pred = _predict_held_out(wd, ds)
    assert set(np.unique(pred)) <= {0, 1, 2}


def test_ignored_voxels_are_left_out_of_evaluation_and_post_processing(ignore):
    wd, ds, _ = ignore
    pred_dir, pred = _predict_held_out(wd, ds, out="pred_eval")
    summary = evaluate_folders(pred_dir, ds / "labelsTs", dataset_json=ds / "dataset.json", out_dir=wd / "eval",
                               metrics=["dice", "tp", "fp", "fn"])
    assert summary["settings"]["ignore_label"] == 3 and list(summary["labels"]) == ["organ", "lesion"]
    # The same numbers as both maps cut to the annotated voxels, with the fully annotated
    # reference the generator gives for the held-out case.
    _, full = make_phantom_case(SEED, index=CASES - 1)
    ref = read_image(next((ds / "labelsTs").iterdir())).array
    annotated = ref != 3
    assert (full.array[annotated] == ref[annotated]).all()
    cut = case_metrics(np.where(annotated, pred, 0), np.where(annotated, full.array, 0), (1, 1, 1),
                       {"organ": 1, "lesion": 2}, metrics=["dice", "tp", "fp", "fn"])
    for name in ("organ", "lesion"):
        got = summary["metric_per_case"][0]["metrics"][name]
        assert (got["tp"], got["fp"], got["fn"]) == (cut[name]["tp"], cut[name]["fp"], cut[name]["fn"])
    assert main(["postprocess", str(wd / "models" / "3d_fullres"), str(ds), "--folds", "0"]) == 0
    rules = json.loads((wd / "models" / "3d_fullres" / "postprocessing.json").read_text())
    assert rules["evidence"]["cases"] == 1
