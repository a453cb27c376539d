"""Prediction with a cascade stage: where the previous stage's label maps come from, and checks."""

import json

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.cascade import PreviousStageFolder, predict_next_stage
from medseg.io import read_image
from medseg.io.image import Image, write_image
from medseg.planning.plans import ConfigurationPlan
from medseg.planning.planner import make_plans
from medseg.preprocessing.preprocess import preprocess_image, preprocess_label
from medseg.training.checkpoint import save_checkpoint
from medseg.training.previous_stage import one_hot_foreground, previous_stage_input
from medseg.training.trainer import build_model
from medseg.utils.files import read_json, write_json


@pytest.fixture
def tiny_desc(tiny_model_dir):
    """The 3d_fullres description of the shared tiny model folder."""
    return read_json(tiny_model_dir / "model.json")


@pytest.fixture
def cascade_model_dir(tmp_path, tiny_desc):
    desc = json.loads(json.dumps(tiny_desc))
    desc["configuration"]["name"] = "3d_cascade_fullres"
    desc["configuration"]["previous_stage"] = "3d_lowres"
    model_dir = tmp_path / "models" / "3d_cascade_fullres"
    write_json(model_dir / "model.json", desc)
    torch.manual_seed(0)
    net = build_model(desc)
    assert net(torch.zeros((1, 3, 8, 32, 32)))[0].shape[1] == 3  # 1 image + 2 previous-stage channels
    save_checkpoint(model_dir / "fold_0", "checkpoint_final", net, {"epoch": 1})
    return model_dir


def previous_maps(scans, out):
    """Label maps in each scan's geometry, as `medseg predict` writes them."""
    for p in sorted(scans.iterdir()):
        image = read_image(p)
        labels = (np.arange(image.array.size).reshape(image.shape) % 3).astype(np.uint8)
        write_image(Image(labels, image.spacing, image.origin, image.direction),
                    out / p.name.replace("_0000", ""))
    return out


def test_previous_stage_input_is_the_label_preprocessing(scans, tiny_desc):
    plan = ConfigurationPlan(**tiny_desc["configuration"])
    image = read_image(scans / "case0_0000.nii.gz")
    data, props = preprocess_image(image.array[None].astype(np.float32), image.spacing, plan, tiny_desc["intensity"])
    labels = np.zeros(image.shape, np.int16)
    labels[2:6, 10:30, 5:20] = 2
    labels[3:5, 12:20, 7:12] = 1
    extra = previous_stage_input(labels, props, plan, 3, image.spacing)
    expected = preprocess_label(labels, props, [0, 1, 2], 0)  # the plan: separate_z true
    assert extra.shape == (2, *data.shape[1:])
    assert torch.equal(extra, one_hot_foreground(torch.from_numpy(expected), 3))
    assert extra[1].sum() > extra[0].sum() > 0
    with pytest.raises(MedsegError, match="shape"):
        previous_stage_input(labels[1:], props, plan, 3, image.spacing)


def test_cascade_predicts_with_previous_stage_folder(cascade_model_dir, scans, tmp_path):
    prev = previous_maps(scans, tmp_path / "prev")
    pred = Predictor.from_model_dir(cascade_model_dir, previous_stage_predictions=prev)
    out = pred.predict_folder(scans, tmp_path / "out")
    assert len(out) == 3
    for i in range(3):
        image = read_image(scans / f"case{i}_0000.nii.gz")
        label = read_image(tmp_path / "out" / f"case{i}.nii.gz")
        assert label.shape == image.shape and np.allclose(label.origin, image.origin)
    # The previous stage changes the result: it is an input, not decoration.
    image = read_image(scans / "case0_0000.nii.gz")
    zeros = pred.predict_array(image.array[None].astype(np.float32), image.spacing, np.zeros(image.shape, np.int16))
    with_prev = read_image(tmp_path / "out" / "case0.nii.gz").array
    assert not np.array_equal(zeros, with_prev)


def test_cascade_without_previous_stage_is_a_clear_error(cascade_model_dir, scans, tmp_path):
    with pytest.raises(MedsegError, match="--previous-stage-predictions"):
        Predictor.from_model_dir(cascade_model_dir)
    pred = Predictor.from_model_dir(cascade_model_dir, previous_stage=None)
    image = read_image(scans / "case0_0000.nii.gz")
    with pytest.raises(MedsegError, match="cascade stage"):
        pred.predict_array(image.array[None].astype(np.float32), image.spacing)
    with pytest.raises(MedsegError, match="not found"):
        PreviousStageFolder(tmp_path / "nowhere")


def test_previous_stage_folder_checks_case_and_grid(scans, tmp_path):
    prev = previous_maps(scans, tmp_path / "prev")
    folder = PreviousStageFolder(prev)
    image = read_image(scans / "case1_0000.nii.gz")
    assert folder.labels("case1", image, image.array[None]).shape == image.shape
    with pytest.raises(MedsegError, match="no previous-stage prediction for case 'case7'"):
        folder.labels("case7", image, image.array[None])
    other = read_image(scans / "case2_0000.nii.gz")
    with pytest.raises(MedsegError, match="case2.nii.gz.*shape") as err:
        folder.labels("case2", image, image.array[None])
    assert "\n" not in str(err.value) and other.shape != image.shape


def test_predict_next_stage_needs_a_next_stage_and_trained_folds(tmp_path):
    fp = {"dataset_name": "T", "channel_names": ["CT"], "labels": {"background": 0, "a": 1}, "num_cases": 2,
          "spatial_dims": 3, "intensity": [{"mean": 0, "std": 1, "percentile_00_5": -1, "percentile_99_5": 1}],
          "cases": [{"spacing": [1.0, 1.0, 1.0], "shape_after_crop": [32, 32, 32]}] * 2}
    make_plans(fp, budget_gb=1.0, device="cpu").save(tmp_path / "plans.json")
    with pytest.raises(MedsegError, match="previous_stage '3d_fullres'"):
        predict_next_stage(tmp_path, "3d_fullres")
    plans = json.loads((tmp_path / "plans.json").read_text())
    plans["configurations"]["casc"] = {"inherits": "3d_fullres", "previous_stage": "3d_fullres"}
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(MedsegError, match="no trained cross-validation folds"):
        predict_next_stage(tmp_path, "3d_fullres")
    (tmp_path / "models" / "3d_fullres" / "fold_0").mkdir(parents=True)
    with pytest.raises(MedsegError, match="fold_0: fold has not finished training"):
        predict_next_stage(tmp_path, "3d_fullres")
