"""Every registered model trains for a few iterations through the real pipeline and predicts."""

from __future__ import annotations

import pytest
import torch

from medseg.data.phantoms import make_phantoms
from medseg.demo import hold_out
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.models import available
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig

pytestmark = pytest.mark.slow

# Small widths so each family trains in seconds on a CPU (the plan's own model is dynunet).
SMALL = {
    "dynunet": {},
    "dynunet_resenc": dict(features=[4, 8, 16], strides=[1, 2, 2]),
    "fcdensenet": dict(growth_rate=2, stem_features=4, dropout=0.0),
    "fcn": dict(base_features=4, fc_features=16, dropout=0.0),
    "segnet": dict(base_features=4),
    "unet": dict(base_features=4, dropout=0.0),
    "vnet": dict(base_features=4),
}


def small_options(name: str) -> dict:
    key = max((k for k in SMALL if name.startswith(k)), key=len)
    return SMALL[key]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("families")
    ds = wd / "Phantoms"
    make_phantoms(ds, cases=3, seed=5)
    hold_out(ds, 1)
    run_fingerprint(ds, wd)
    run_plan(ds, wd, budget_gb=0.5, device="cpu", base_features=4, max_patch_voxels=8 * 32 * 32)
    run_preprocess(ds, wd, "3d_fullres")
    return wd, ds


@pytest.mark.parametrize("name", available())
def test_family_trains_and_predicts(workdir, name):
    torch.set_num_threads(1)
    wd, ds = workdir
    cfg = TrainingConfig(epochs=1, iters_per_epoch=2, val_iters=1, progress=False)
    summary = run_train(ds, wd, "3d_fullres", 0, cfg, model_name=name, model_options=small_options(name))
    assert summary["epochs"] == 1
    model_dir = wd / "models" / ("3d_fullres" if name == "dynunet" else f"3d_fullres__{name}")
    predictor = Predictor.from_model_dir(model_dir, folds=[0])
    (image_file,) = list((ds / "imagesTs").iterdir())
    pred = predictor.predict(image_file)
    image = read_image(image_file)
    assert pred.shape == image.shape and pred.spacing == image.spacing
    assert set(pred.array.ravel().tolist()) <= {0, 1, 2}
