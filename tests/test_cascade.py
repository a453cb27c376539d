"""The 3d_lowres -> 3d_cascade_fullres cascade end to end on tiny phantoms: plan, train the low
resolution on two folds, predict its cross-validation for the next stage, train the cascade,
predict a held-out scan (previous stage run first, or read from a folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.data.phantoms import make_phantoms
from medseg.demo import hold_out
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.pipeline import load_plans, run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig
from medseg.utils.files import write_json

pytestmark = pytest.mark.slow

TINY = TrainingConfig(epochs=1, iters_per_epoch=2, val_iters=1, progress=False, seed=0)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cascade")
    ds = wd / "Phantoms"
    make_phantoms(ds, cases=5, seed=5)
    hold_out(ds, 1)
    run_fingerprint(ds, wd)
    # A small patch cap: the full-resolution patch sees little of the image, so 3d_lowres appears.
    run_plan(ds, wd, budget_gb=1.0, device="cpu", base_features=4, max_patch_voxels=8 * 32 * 32)
    run_preprocess(ds, wd, "3d_lowres")
    run_preprocess(ds, wd, "3d_cascade_fullres")
    ids = sorted(p.stem for p in (wd / "preprocessed" / "3d_lowres").glob("*.json") if p.name != "plan.json")
    write_json(wd / "splits.json", [{"train": ids[2:], "val": ids[:2]}, {"train": ids[:2], "val": ids[2:]}])
    for fold in (0, 1):
        run_train(ds, wd, "3d_lowres", fold, TINY)
    return wd, ds


def test_plans_hold_a_cascade_after_lowres(cascade):
    wd, _ = cascade
    plans = load_plans(wd)
    raw = plans.configurations["3d_cascade_fullres"]
    assert raw["inherits"] == "3d_fullres" and raw["previous_stage"] == "3d_lowres"
    full, casc = plans.configuration("3d_fullres"), plans.configuration("3d_cascade_fullres")
    assert casc.patch_size == full.patch_size and casc.target_spacing == full.target_spacing
    # The wider input costs a little more memory, never less.
    assert casc.predicted_memory_gb >= full.predicted_memory_gb
    # The cascade shares 3d_fullres's preprocessed arrays.
    assert (wd / "preprocessed" / "3d_fullres" / "plan.json").exists()
    assert not (wd / "preprocessed" / "3d_cascade_fullres").exists()


def test_cascade_training_without_previous_predictions_says_what_to_run(cascade, capsys, tmp_path):
    wd, ds = cascade
    code = main(["train", str(ds), "-w", str(wd), "-c", "3d_cascade_fullres", "--fold", "0", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "medseg predict-next-stage" in lines[0] and "3d_lowres" in lines[0]


def test_cascade_trains_and_predicts_in_the_input_geometry(cascade, tmp_path):
    wd, ds = cascade
    assert main(["predict-next-stage", str(ds), "-w", str(wd), "-c", "3d_lowres", "--device", "cpu"]) == 0
    folder = wd / "models" / "3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres"
    done = json.loads((folder / "predictions.json").read_text())["cases"]
    splits = json.loads((wd / "splits.json").read_text())
    # Every case was predicted by the fold that held it out, on the full-resolution grid.
    assert done == {c: f"fold_{k}" for k, s in enumerate(splits) for c in s["val"]}
    for case in done:
        prev = np.load(folder / f"{case}.npy")
        seg = np.load(wd / "preprocessed" / "3d_fullres" / f"{case}_seg.npy")
        assert prev.shape == seg.shape and prev.dtype == np.int16 and set(np.unique(prev)) <= {0, 1, 2}

    summary = run_train(ds, wd, "3d_cascade_fullres", 0, TINY)
    assert summary["epochs"] == 1
    model_dir = wd / "models" / "3d_cascade_fullres"
    desc = json.loads((model_dir / "model.json").read_text())
    assert desc["configuration"]["previous_stage"] == "3d_lowres"

    (scan,) = sorted((ds / "imagesTs").iterdir())
    pred = Predictor.from_model_dir(model_dir, folds=[0], device="cpu")
    seen = []
    pred.models[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    out = pred.predict(scan)
    image = read_image(scan)
    assert seen and set(seen) == {1 + 2}  # one CT channel + organ and lesion of the previous stage
    assert out.shape == image.shape
    assert out.spacing == image.spacing and out.origin == image.origin and out.direction == image.direction
    assert set(np.unique(out.array)) <= {0, 1, 2}

    # The same through the command line, with the previous stage's predictions from a folder.
    low_dir, casc_dir = tmp_path / "low", tmp_path / "casc"
    assert main(["predict", "-i", str(ds / "imagesTs"), "-o", str(low_dir), "-m", str(wd / "models" / "3d_lowres"),
                 "--device", "cpu"]) == 0
    assert main(["predict", "-i", str(ds / "imagesTs"), "-o", str(casc_dir), "-m", str(model_dir), "--folds", "0",
                 "--device", "cpu", "--previous-stage-predictions", str(low_dir)]) == 0
    written = read_image(casc_dir / scan.name.replace("_0000", ""))
    assert written.shape == image.shape and written.origin == image.origin
    # Running 3d_lowres first (all its folds) and reading its predictions give the same input.
    np.testing.assert_array_equal(written.array, out.array)


    # Post-processing is chosen on the cascade's validation cases, with the previous stage's
    # cross-validation predictions of them as input (no network has seen those cases).
    assert main(["postprocess", str(model_dir), str(ds), "--folds", "0"]) == 0
    rules = json.loads((model_dir / "postprocessing.json").read_text())
    assert rules["evidence"]["cases"] == len(splits[0]["val"])
