"""Label agreement of an imported nnU-Net model: medseg's Predictor against nnUNetPredictor.

Randomly initialised nnU-Net networks (4 stages, 8..32 features, patch 16x32x32, norms and
biases perturbed) are written as an nnU-Net v2 results folder with two folds and imported with
`import_nnunet`. Both predictors then get the same CT-like volume, at the plan's spacing and
at two that need resampling, with one and two folds, with and without mirroring (step 0.5, one
thread). Prints a Markdown table.

    .venv/bin/python benchmarks/nnunet_agreement.py --arch PlainConvUNet
    .venv/bin/python benchmarks/nnunet_agreement.py --arch ResidualEncoderUNet --transpose 2 0 1
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# (spacing, shape) in nnU-Net's axis order: the plan's spacing, then two that need resampling.
CASES = [((2.5, 0.8, 0.8), (32, 128, 128)), ((3.0, 0.7, 0.75), (28, 110, 104)), ((1.0, 1.0, 1.0), (70, 90, 90))]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="PlainConvUNet", choices=["PlainConvUNet", "ResidualEncoderUNet"])
    ap.add_argument("--transpose", type=int, nargs=3, default=[0, 1, 2], help="nnU-Net's transpose_forward")
    ap.add_argument("--no-mirror", action="store_true", help="skip the (8x slower) mirrored runs")
    args = ap.parse_args()

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from medseg.inference.nnunet_import import import_nnunet
    from medseg.inference.predictor import Predictor

    R = _load(ROOT / "tests" / "inference" / "nnunet_results.py", "nnunet_results")
    volume = _load(ROOT / "tests" / "inference" / "test_nnunet_import.py", "test_nnunet_import").ct_volume
    torch.set_num_threads(1)
    plans = R.plans_dict(arch=args.arch, transpose_forward=tuple(args.transpose), features=(8, 16, 32, 32),
                         kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
                         strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)), patch_size=(16, 32, 32),
                         spacing=(2.5, 0.8, 0.8))
    with tempfile.TemporaryDirectory() as tmp:
        root = R.write_results_folder(Path(tmp) / "nnUNetTrainer__nnUNetPlans__3d_fullres", plans, R.dataset_dict(),
                                      {f: R.nnunet_network(plans, 1, 3, seed=f).state_dict() for f in (0, 1)})
        out = import_nnunet(root, Path(tmp) / "medseg")
        print(f"{args.arch}, transpose_forward {tuple(args.transpose)}\n")
        print("| volume (z, y, x) at spacing (mm) | folds | mirroring | labels equal | inside the outermost layer "
              "| nnU-Net s | medseg s |")
        print("|---|---|---|---|---|---|---|")
        backward = [int(a) for a in np.argsort(args.transpose)]
        for nn_spacing, nn_shape in CASES:
            # CASES are in nnU-Net's (transposed) axis order; the scan's axis k is its axis backward[k].
            spacing = tuple(nn_spacing[a] for a in backward)
            shape = tuple(nn_shape[a] for a in backward)
            image = volume(shape)
            for folds in ((0,), (0, 1)):
                for mirror in (False,) if args.no_mirror else (False, True):
                    ref_pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                               device=torch.device("cpu"), allow_tqdm=False)
                    R.initialize_nnunet_predictor(ref_pred, root, folds)
                    t0 = time.perf_counter()
                    ref = ref_pred.predict_single_npy_array(image.copy(), {"spacing": list(spacing)})
                    t1 = time.perf_counter()
                    mine = Predictor.from_model_dir(out, folds=folds, device="cpu", precision="fp32", mirror=mirror,
                                                    step=0.5).predict_array(image.copy(), spacing)
                    t2 = time.perf_counter()
                    same = ref == mine
                    inner = same[tuple(slice(1, n - 1) for n in same.shape)]
                    print(f"| {shape} at {spacing} | {len(folds)} | {'on' if mirror else 'off'} | "
                          f"{100 * same.mean():.3f} % | {100 * inner.mean():.3f} % | {t1 - t0:.1f} | {t2 - t1:.1f} |",
                          flush=True)


if __name__ == "__main__":
    main()
