"""Importing nnU-Net v2 results folders: safe loading, exact weight mapping, agreement with
nnUNetPredictor (when nnunetv2 is installed)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference.nnunet_import import import_nnunet, load_nnunet_checkpoint
from medseg.inference.predictor import Predictor
from medseg.training.checkpoint import model_weights, read_checkpoint
from medseg.training.trainer import build_model
from medseg.utils.files import read_json

_spec = importlib.util.spec_from_file_location("nnunet_results", Path(__file__).with_name("nnunet_results.py"))
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

FOUR = dict(features=(8, 16, 32, 32), kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
            strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)), patch_size=(16, 32, 32))


def results(tmp_path: Path, plans: dict, weights: dict, dataset: dict | None = None) -> Path:
    return R.write_results_folder(tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres", plans,
                                  dataset or R.dataset_dict(), {0: weights})


def load_imported(out: Path, fold: str = "fold_0") -> torch.nn.Module:
    net = build_model(read_json(out / "model.json"))
    tensors, _ = read_checkpoint(out / fold / "checkpoint_final.safetensors")
    net.load_state_dict(model_weights(tensors))
    return net.eval()


def ct_volume(shape, seed=0) -> np.ndarray:
    """A CT-like volume: air, an elliptic body, a few blobs of other densities, noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    img = np.full(shape, -1000.0, np.float32)
    body = (y / 0.9) ** 2 + (x / 0.8) ** 2 < 1
    img[body] = 40
    for _ in range(6):
        c, r = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.15, 0.35)
        img[body & (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < r**2)] = rng.uniform(-100, 300)
    img += rng.normal(0, 20, shape).astype(np.float32)
    return img[None]


# --------------------------------------------------------------------- without nnU-Net installed


def test_plain_layout_imports_and_predicts(tmp_path):
    plans = R.plans_dict(**FOUR)
    state = R.plain_state_dict(plans, 1, 3)
    out = import_nnunet(results(tmp_path, plans, state), tmp_path / "medseg")
    desc = read_json(out / "model.json")
    cfg = desc["configuration"]
    assert desc["model"] == "dynunet" and desc["labels"] == {"background": 0, "organ1": 1, "organ2": 2}
    assert cfg["target_spacing"] == [2.5, 0.8, 0.8] and cfg["patch_size"] == [16, 32, 32]
    assert cfg["normalization"] == ["ct"] and desc["intensity"][0]["percentile_99_5"] == 400.0
    # 2.5 / 0.8 > 3: z on its own for a case at the target spacing; other cases decide per case.
    assert cfg["resampling"] == {"data": "spline", "label": "linear", "separate_axis": 0, "anisotropy_threshold": 3.0}
    net = load_imported(out)
    sd = net.state_dict()
    torch.testing.assert_close(sd["encoder.0.0.0.weight"], state["encoder.stages.0.0.convs.0.conv.weight"])
    torch.testing.assert_close(sd["encoder.2.1.1.bias"], state["encoder.stages.2.0.convs.1.norm.bias"])
    torch.testing.assert_close(sd["up.0.weight"], state["decoder.transpconvs.0.weight"])
    torch.testing.assert_close(sd["decoder.2.1.0.weight"], state["decoder.stages.2.convs.1.conv.weight"])
    torch.testing.assert_close(sd["heads.2.weight"], state["decoder.seg_layers.2.weight"])
    assert isinstance(net.heads[0], torch.nn.Identity)  # nnU-Net's lowest-resolution head is dropped
    labels = Predictor.from_model_dir(out, device="cpu", precision="fp32").predict_array(
        ct_volume((12, 40, 40)), (2.5, 0.8, 0.8))
    assert labels.shape == (12, 40, 40) and set(np.unique(labels)) <= {0, 1, 2}


def test_transposed_plans_permute_kernels_and_sizes(tmp_path):
    kernels = ((3, 1, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    plans = R.plans_dict(**{**FOUR, "kernel_sizes": kernels, "patch_size": (16, 24, 32)}, transpose_forward=(2, 0, 1),
                         spacing=(2.5, 0.8, 0.7))
    state = R.plain_state_dict(plans, 1, 3)
    out = import_nnunet(results(tmp_path, plans, state), tmp_path / "medseg")
    cfg = read_json(out / "model.json")["configuration"]
    # nnU-Net's axes (j) hold the scan's axes forward[j] = (x, z, y): medseg's (z, y, x) are nnU-Net's (1, 2, 0).
    assert cfg["patch_size"] == [24, 32, 16] and cfg["target_spacing"] == [0.8, 0.7, 2.5]
    assert cfg["model_options"]["kernel_sizes"][0] == [1, 3, 3]
    assert cfg["resampling"]["separate_axis"] == 2  # the coarse axis is x
    assert not any("coarse axis" in n for n in cfg["notes"])
    w = load_imported(out).state_dict()["encoder.0.0.0.weight"]
    torch.testing.assert_close(w, state["encoder.stages.0.0.convs.0.conv.weight"].permute(0, 1, 3, 4, 2))


def test_checkpoint_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    plans = R.plans_dict(**FOUR)
    root = results(tmp_path, plans, R.plain_state_dict(plans, 1, 3))
    ckpt = root / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "logging": Payload()}, ckpt)
    with pytest.raises(MedsegError, match="checkpoint_final.pth"):
        load_nnunet_checkpoint(ckpt)
    with pytest.raises(MedsegError):
        import_nnunet(root, tmp_path / "medseg")
    assert not marker.exists() and not (tmp_path / "medseg" / "model.json").exists()


def test_numpy_scalars_in_training_log_are_allowed(tmp_path):
    plans = R.plans_dict(**FOUR)
    root = results(tmp_path, plans, R.plain_state_dict(plans, 1, 3))
    ckpt = load_nnunet_checkpoint(root / "fold_0" / "checkpoint_final.pth")
    assert isinstance(ckpt["_best_ema"], np.float64) and isinstance(ckpt["logging"]["train_losses"][0], np.float32)
    assert ckpt["init_args"]["device"] == torch.device("cpu")


def test_unsupported_models_are_clear_errors(tmp_path):
    plans = R.plans_dict(**FOUR)
    state = R.plain_state_dict(plans, 1, 3)
    regions = R.dataset_dict()
    regions["labels"] = {"background": 0, "whole": [1, 2], "core": 2}
    with pytest.raises(MedsegError, match="region-based"):
        import_nnunet(results(tmp_path / "a", plans, state, regions), tmp_path / "out_a")
    cascade = json.loads(json.dumps(plans))
    cascade["configurations"]["3d_fullres"]["previous_stage"] = "3d_lowres"
    with pytest.raises(MedsegError, match="cascade"):
        import_nnunet(results(tmp_path / "b", cascade, state), tmp_path / "out_b")
    other = json.loads(json.dumps(plans))
    other["configurations"]["3d_fullres"]["normalization_schemes"] = ["RescaleTo01Normalization"]
    with pytest.raises(MedsegError, match="RescaleTo01Normalization"):
        import_nnunet(results(tmp_path / "c", other, state), tmp_path / "out_c")
    with pytest.raises(MedsegError, match="not found"):
        import_nnunet(tmp_path / "missing", tmp_path / "out_d")


def test_mask_for_norm_is_noted(tmp_path):
    plans = R.plans_dict(**FOUR, schemes=("ZScoreNormalization",), use_mask=(True,))
    with pytest.warns(UserWarning, match="non-zero region"):
        out = import_nnunet(results(tmp_path, plans, R.plain_state_dict(plans, 1, 3)), tmp_path / "medseg")
    cfg = read_json(out / "model.json")["configuration"]
    assert cfg["normalization"] == ["zscore"] and any("non-zero region" in n for n in cfg["notes"])


# --------------------------------------------------------------------- against nnU-Net's own code


@pytest.mark.parametrize("arch, forward", [("PlainConvUNet", (0, 1, 2)), ("ResidualEncoderUNet", (0, 1, 2)),
                                           ("PlainConvUNet", (2, 0, 1)), ("ResidualEncoderUNet", (1, 2, 0))])
def test_logits_equal_nnunet_network(tmp_path, arch, forward):
    pytest.importorskip("dynamic_network_architectures")
    plans = R.plans_dict(arch=arch, transpose_forward=forward, **FOUR)
    ref = R.nnunet_network(plans, 1, 3)
    out = import_nnunet(results(tmp_path, plans, ref.state_dict()), tmp_path / "medseg")
    net = load_imported(out)
    x = torch.randn(1, 1, 16, 32, 48, generator=torch.Generator().manual_seed(0))  # (z, y, x)
    backward = [int(a) for a in np.argsort(forward)]
    with torch.no_grad():
        mine = net(x)
        theirs = ref(x.permute(0, 1, *[2 + a for a in forward])).permute(0, 1, *[2 + a for a in backward])
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mirror, spacing, folds, forward", [
    (False, (2.5, 0.8, 0.8), (0,), (0, 1, 2)),          # at the plan's spacing: nothing is resampled
    (True, (2.5, 0.8, 0.8), (0,), (0, 1, 2)),
    (False, (3.0, 0.7, 0.75), (0, 1), (0, 1, 2)),       # resampled there and back, a two-fold ensemble
    (False, (3.0, 0.7, 0.75), (0,), (2, 0, 1)),         # the same where the coarse axis is the scan's x
], ids=["plan-spacing", "mirrored", "resampled-2-folds", "resampled-coarse-x"])
def test_labels_agree_with_nnunet_predictor(tmp_path, mirror, spacing, folds, forward):
    pytest.importorskip("nnunetv2")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    plans = R.plans_dict(**FOUR, transpose_forward=forward)
    root = R.write_results_folder(tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres", plans, R.dataset_dict(),
                                  {f: R.nnunet_network(plans, 1, 3, seed=f).state_dict() for f in folds})
    out = import_nnunet(root, tmp_path / "medseg")
    # spacing and shape are in nnU-Net's axis order; the scan's axis k is its axis backward[k].
    backward = [int(a) for a in np.argsort(forward)]
    shape = (24, 96, 96) if not mirror else (24, 64, 64)
    spacing, shape = tuple(spacing[a] for a in backward), tuple(shape[a] for a in backward)
    image = ct_volume(shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                        device=torch.device("cpu"), allow_tqdm=False)
        R.initialize_nnunet_predictor(ref_predictor, root, folds)
        ref = ref_predictor.predict_single_npy_array(image.copy(), {"spacing": list(spacing)})
        mine = Predictor.from_model_dir(out, device="cpu", precision="fp32", mirror=mirror,
                                        step=0.5).predict_array(image.copy(), spacing)
    finally:
        torch.set_num_threads(threads)
    same = ref == mine
    overall = float(same.mean())
    # nnU-Net accumulates tiles in float16: on the outermost voxel layer the Gaussian weights of
    # all tiles are tail values (~1e-7 relative at corners) that float16 rounds coarsely, which
    # shifts nnU-Net's own average there. Inside, the two predictors compute the same thing.
    inner = float(same[tuple(slice(1, n - 1) for n in same.shape)].mean())
    assert len(np.unique(ref)) == 3  # a test of something: every class is predicted
    assert inner >= 0.999, f"labels agree on {inner:.4%} of the voxels inside the outermost layer"
    assert overall >= 0.995, f"labels agree on {overall:.4%} of voxels"
