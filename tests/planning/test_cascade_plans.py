"""The planner's 3d_cascade_fullres, `previous_stage` in plans, and shared preprocessed arrays."""

import pytest

from medseg.errors import MedsegError
from medseg.planning.planner import make_plans
from medseg.preprocessing.preprocess import data_configuration, preprocessed_dir


def fingerprint(shape, spacing=(1.0, 1.0, 1.0)):
    return {
        "dataset_name": "T", "channel_names": ["CT", "PET"], "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
        "num_cases": 4, "spatial_dims": 3,
        "intensity": [{"mean": 0, "std": 1, "percentile_00_5": -1, "percentile_99_5": 1}] * 2,
        "cases": [{"spacing": list(spacing), "shape_after_crop": list(shape)}] * 4,
    }


def test_cascade_follows_lowres_with_wider_input():
    plans = make_plans(fingerprint((400, 400, 400)), budget_gb=1.0, device="cpu", base_features=8)
    assert "3d_lowres" in plans.configurations
    raw = plans.configurations["3d_cascade_fullres"]
    assert raw["inherits"] == "3d_fullres" and raw["previous_stage"] == "3d_lowres"
    full, casc = plans.configuration("3d_fullres"), plans.configuration("3d_cascade_fullres")
    assert casc.previous_stage == "3d_lowres" and full.previous_stage is None
    assert (casc.patch_size, casc.batch_size, casc.model_options) == (full.patch_size, full.batch_size,
                                                                      full.model_options)
    assert casc.mirror_axes == full.mirror_axes
    # 2 image channels + 3 foreground classes read more memory than 2 channels alone.
    assert casc.predicted_memory_gb > full.predicted_memory_gb
    assert any("3 more input channel" in n for n in casc.notes)


def test_no_cascade_without_lowres():
    plans = make_plans(fingerprint((32, 32, 32)), budget_gb=1.0, device="cpu")
    assert "3d_lowres" not in plans.configurations and "3d_cascade_fullres" not in plans.configurations


def test_previous_stage_must_name_another_configuration():
    plans = make_plans(fingerprint((32, 32, 32)), budget_gb=1.0, device="cpu")
    plans.configurations["casc"] = {"inherits": "3d_fullres", "previous_stage": "3d_lowres"}
    with pytest.raises(MedsegError, match="previous_stage '3d_lowres'"):
        plans.configuration("casc")
    plans.configurations["casc"]["previous_stage"] = "casc"
    with pytest.raises(MedsegError, match="previous_stage 'casc'"):
        plans.configuration("casc")


def test_configurations_that_preprocess_alike_share_arrays(tmp_path):
    plans = make_plans(fingerprint((400, 400, 400)), budget_gb=1.0, device="cpu", base_features=8)
    plans.configurations["bs4"] = {"inherits": "3d_cascade_fullres", "batch_size": 4}
    plans.configurations["finer"] = {"inherits": "3d_fullres", "target_spacing": [0.5, 0.5, 0.5]}
    plans.configurations["finer_bs4"] = {"inherits": "finer", "batch_size": 4}
    assert data_configuration(plans, "3d_cascade_fullres") == "3d_fullres"
    assert data_configuration(plans, "bs4") == "3d_fullres"
    assert data_configuration(plans, "finer") == "finer"
    assert data_configuration(plans, "finer_bs4") == "finer"
    assert data_configuration(plans, "3d_lowres") == "3d_lowres"
    assert preprocessed_dir(tmp_path, plans, "3d_cascade_fullres") == tmp_path / "preprocessed" / "3d_fullres"
