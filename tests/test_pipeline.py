"""End to end on tiny phantoms: every stage, then geometry and accuracy of the predictions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medseg.data.phantoms import make_phantoms
from medseg.demo import hold_out
from medseg.evaluation import evaluate_folders
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("e2e")
    ds = wd / "Phantoms"
    make_phantoms(ds, cases=5, seed=11)
    hold_out(ds, 1)
    run_fingerprint(ds, wd)
    run_plan(ds, wd, budget_gb=1.0, device="cpu", base_features=8, max_patch_voxels=16 * 48 * 48)
    run_preprocess(ds, wd, "3d_fullres")
    cfg = TrainingConfig(epochs=6, iters_per_epoch=20, val_iters=3, progress=False, seed=0)
    summary = run_train(ds, wd, "3d_fullres", "all", cfg)
    return wd, ds, summary


def test_training_writes_checkpoints_and_curves(trained):
    wd, _, summary = trained
    fold = wd / "models" / "3d_fullres" / "fold_all"
    for name in ("checkpoint_final", "checkpoint_latest", "checkpoint_best"):
        assert (fold / f"{name}.safetensors").exists() and (fold / f"{name}.json").exists()
    assert (fold / "progress.png").stat().st_size > 1000
    assert summary["epochs"] == 6
    log = (fold / "training_log.txt").read_text()
    assert log.count("epoch ") >= 6 and "waiting for data" in log


def test_prediction_has_input_geometry_and_beats_baseline(trained):
    wd, ds, _ = trained
    pred_dir = wd / "predictions"
    Predictor.from_model_dir(wd / "models" / "3d_fullres").predict_folder(ds / "imagesTs", pred_dir)
    (case_file,) = sorted((ds / "imagesTs").iterdir())
    image = read_image(case_file)
    pred = read_image(pred_dir / case_file.name.replace("_0000", ""))
    assert pred.shape == image.shape
    assert pred.spacing == image.spacing and pred.origin == image.origin and pred.direction == image.direction
    summary = evaluate_folders(pred_dir, ds / "labelsTs", dataset_json=ds / "dataset.json", out_dir=wd / "eval")
    ref = read_image(next((ds / "labelsTs").iterdir())).array
    # Trivial baseline: call every voxel "organ" (the larger class).
    organ = (ref >= 1)
    baseline = 2 * organ.sum() / (organ.sum() + organ.size)
    assert summary["mean"]["organ"]["dice"] > baseline + 0.2


def test_bf16_labels_agree_with_fp32(trained):
    """bfloat16 autocast against fp32, on a crop of the held-out scan around the organ (this
    CPU may emulate bf16, which is slow: the crop is a few tiles)."""
    from medseg.io import Image
    wd, ds, _ = trained
    (case_file,) = sorted((ds / "imagesTs").iterdir())
    image = read_image(case_file)
    ref = read_image(ds / "labelsTs" / case_file.name.replace("_0000", "")).array
    centre = [int(np.mean(ix)) for ix in np.nonzero(ref)]
    box = tuple(slice(max(0, c - h), max(0, c - h) + 2 * h) for c, h in zip(centre, (8, 40, 40)))
    crop = Image(np.ascontiguousarray(image.array[box]), image.spacing)
    model = wd / "models" / "3d_fullres"
    labels = {p: Predictor.from_model_dir(model, device="cpu", precision=p).predict(crop).array
              for p in ("fp32", "bf16")}
    organ = labels["fp32"] == 1
    assert 0.05 < organ.mean() < 0.95  # the crop holds organ and surroundings: labels that mean something
    agreement = float((labels["bf16"] == labels["fp32"]).mean())
    print(f"bf16 labels = fp32 labels on {100 * agreement:.3f} % of {organ.size} voxels")
    assert agreement >= 0.995


def test_resume_continues_from_latest(trained, tmp_path):
    wd, ds, _ = trained
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, ignore=shutil.ignore_patterns("predictions", "eval"))
    fold = copy / "models" / "3d_fullres" / "fold_all"
    for f in fold.glob("checkpoint_final.*"):
        f.unlink()
    cfg = TrainingConfig(epochs=8, iters_per_epoch=5, val_iters=2, progress=False)
    summary = run_train(ds, copy, "3d_fullres", "all", cfg, resume=True)
    assert summary["epochs"] == 8
    assert "resumed from" in (fold / "training_log.txt").read_text()


def test_adamw_training_resumes_with_its_moments(trained, tmp_path):
    """`optimizer="adamw"` trains, records itself, and a resume restores AdamW's moments and step count."""
    from medseg.errors import MedsegError
    from medseg.training.checkpoint import read_checkpoint
    wd, ds, _ = trained
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, ignore=shutil.ignore_patterns("predictions", "eval", "models"))
    cfg = TrainingConfig(epochs=2, iters_per_epoch=3, val_iters=1, progress=False, optimizer="adamw")
    run_train(ds, copy, "3d_fullres", 0, cfg)
    fold = copy / "models" / "3d_fullres" / "fold_0"
    tensors, state = read_checkpoint(fold / "checkpoint_latest.safetensors")
    assert {k.rsplit("/", 1)[1] for k in tensors if k.startswith("optimizer/")} == {"exp_avg", "exp_avg_sq", "step"}
    assert float(tensors["optimizer/0/step"]) == 6
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5 ** 0.9)
    for f in fold.glob("checkpoint_final.*"):
        f.unlink()
    with pytest.raises(MedsegError, match="resume with --optimizer adamw"):
        run_train(ds, copy, "3d_fullres", 0, TrainingConfig(epochs=3, iters_per_epoch=3, progress=False), resume=True)
    summary = run_train(ds, copy, "3d_fullres", 0, TrainingConfig(epochs=3, iters_per_epoch=3, val_iters=1,
                                                                  progress=False, optimizer="adamw"), resume=True)
    assert summary["epochs"] == 3 and summary["optimizer"] == "adamw"
    tensors, _ = read_checkpoint(fold / "checkpoint_latest.safetensors")
    assert float(tensors["optimizer/0/step"]) == 9


def test_a_time_budget_spent_inside_an_epoch_ends_training_there(trained, tmp_path):
    """`--max-time` is honoured within an epoch: a budget far below one epoch's 500 iterations
    stops after a few, validates, and writes the final checkpoint."""
    from medseg.training.checkpoint import read_checkpoint
    wd, ds, _ = trained
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, ignore=shutil.ignore_patterns("predictions", "eval", "models"))
    cfg = TrainingConfig(epochs=4, iters_per_epoch=500, val_iters=1, progress=False, max_time_s=2.0)
    summary = run_train(ds, copy, "3d_fullres", 0, cfg)
    fold = copy / "models" / "3d_fullres" / "fold_0"
    assert summary["epochs"] == 1
    _, state = read_checkpoint(fold / "checkpoint_final.safetensors")
    assert state["total_epochs"] == 1 and len(state["history"]) == 1
    assert 1 <= state["history"][0]["iterations"] < 500


def test_predict_array_rejects_wrong_channel_count(trained):
    from medseg.errors import MedsegError
    wd, _, _ = trained
    pred = Predictor.from_model_dir(wd / "models" / "3d_fullres")
    with pytest.raises(MedsegError, match="channels"):
        pred.predict_array(np.zeros((2, 8, 16, 16), np.float32), (2.5, 0.8, 0.8))


def test_2d_configuration_on_volumes_trains_and_predicts(trained, tmp_path):
    """nnU-Net's `2d` on a volume: slices in-plane, each case keeps its own slice spacing."""
    wd, ds, _ = trained
    import json
    plans = json.loads((wd / "plans.json").read_text())
    c2d = plans["configurations"]["2d"]
    assert c2d["spatial_dims"] == 2 and len(c2d["patch_size"]) == 2
    run_preprocess(ds, wd, "2d")
    props_file = next(p for p in sorted((wd / "preprocessed" / "2d").glob("*.json")) if p.name != "plan.json")
    props = json.loads(props_file.read_text())
    seg = np.load(props_file.with_name(f"{props['case_id']}_seg.npy"))
    assert seg.shape[0] == props["shape_after_crop"][0]  # no resampling across slices
    cfg = TrainingConfig(epochs=1, iters_per_epoch=3, val_iters=1, progress=False)
    run_train(ds, wd, "2d", 0, cfg)
    (case_file,) = sorted((ds / "imagesTs").iterdir())
    pred = Predictor.from_model_dir(wd / "models" / "2d").predict(case_file)
    image = read_image(case_file)
    assert pred.shape == image.shape and pred.origin == image.origin


def test_postprocessing_decided_from_validation_cases(trained):
    import json
    from medseg.cli import main
    wd, ds, _ = trained
    cfg = TrainingConfig(epochs=1, iters_per_epoch=2, val_iters=1, progress=False)
    run_train(ds, wd, "3d_fullres", 0, cfg)
    assert main(["postprocess", str(wd / "models" / "3d_fullres"), str(ds), "--folds", "0"]) == 0
    rules = json.loads((wd / "models" / "3d_fullres" / "postprocessing.json").read_text())
    assert set(rules) >= {"foreground", "classes", "evidence"} and rules["folds"] == ["fold_0"]
    assert rules["evidence"]["cases"] >= 1
    assert Predictor.from_model_dir(wd / "models" / "3d_fullres", folds=[0]).postprocessing == rules


def test_a_dataset_split_is_adopted_once_and_a_different_one_in_the_workdir_is_kept_with_a_warning(tmp_path, capsys):
    from medseg.pipeline import adopt_dataset_splits
    from medseg.utils.files import read_json, write_json

    dataset, wd = tmp_path / "Dataset", tmp_path / "work"
    dataset.mkdir(), wd.mkdir()
    ours = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["a"], "val": ["b"]}]
    write_json(dataset / "splits.json", ours)
    adopt_dataset_splits(dataset, wd)
    assert read_json(wd / "splits.json") == ours
    adopt_dataset_splits(dataset, wd)
    assert capsys.readouterr().err == ""
    # Left from an older build of the dataset (or made by hand): kept, and said so.
    older = [{"train": ["a"], "val": ["c"]}]
    write_json(wd / "splits.json", older)
    adopt_dataset_splits(dataset, wd)
    assert read_json(wd / "splits.json") == older
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(wd / "splits.json") in err and "differs" in err
