"""Accuracy at equal CPU time: medseg against nnU-Net v2's training, on one phantom split.

    .venv/bin/python benchmarks/train_accuracy.py --workdir /tmp/acc --trainer nnUNetTrainer_1epoch

Needs nnunetv2 (`pip install nnunetv2`; docs/benchmarks.md). Steps, all on this CPU:
1. phantoms: `--cases` training cases and `--test-cases` held-out ones (imagesTs/labelsTs),
   `--shape-scale` of the default size, written once as Dataset900_Phantoms;
2. nnU-Net: `nnUNetv2_plan_and_preprocess -c 3d_fullres` with its default planner, then what
   `nnUNetv2_train 900 3d_fullres 0 -tr TRAINER -device cpu` runs, on fold 0 of medseg's split
   (written as nnU-Net's splits_final.json). The budget is the sum of its epoch times (train
   and validation iterations; its final full-case validation is not run);
3. medseg: fingerprint, plan for the CPU (the demo's settings), preprocess, and train fold 0
   with `max_time_s` equal to that budget;
4. both predict the held-out cases (no test-time mirroring, step 0.5) and are scored by
   medseg's evaluator against the same references.

nnU-Net's training and prediction run from Python in a child process (`--nnunet-child`): its
CLI looks trainers up by importing every trainer module, and one needs timm and torchvision,
which do not install beside the CPU torch wheel. Its training also needs seaborn and
connected-components-3d (`pip install seaborn connected-components-3d`).

Prints one JSON line and writes WORKDIR/train_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from medseg.data.phantoms import make_phantoms
from medseg.demo import DEMO_BASE_FEATURES, DEMO_ITERS_PER_EPOCH, DEMO_MAX_PATCH_VOXELS, hold_out
from medseg.evaluation import evaluate_folders
from medseg.inference.predictor import Predictor
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig
from medseg.training.splits import load_or_make_splits
from medseg.utils.files import read_json, write_json

DATASET_ID = 900
DATASET = f"Dataset{DATASET_ID}_Phantoms"


ROOT = Path(__file__).resolve().parents[1]


def _bin(name: str) -> str:
    """An nnU-Net entry point next to this interpreter (the venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _nnunet_train(trainer: str) -> None:
    """nnUNetv2_train DATASET 3d_fullres 0 -tr TRAINER -device cpu, without its final
    validation, from Python: the CLI's trainer lookup imports every trainer module, and one of
    them needs timm/torchvision, which do not install beside the CPU torch wheel."""
    import multiprocessing

    import torch
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs

    torch.set_num_threads(multiprocessing.cpu_count())  # as nnUNetv2_train -device cpu does
    folder = Path(nnUNet_preprocessed) / DATASET
    cls = getattr(nnUNetTrainer_Xepochs, trainer)
    plans = read_json(folder / "nnUNetPlans.json")
    plans["continue_training"] = False  # what nnUNetv2_train passes without --c
    t = cls(plans=plans, configuration="3d_fullres", fold=0, dataset_json=read_json(folder / "dataset.json"),
            device=torch.device("cpu"))
    t.run_training()


def _nnunet_predict(trainer: str, images: str, out: str) -> None:
    """nnUNetv2_predict -f 0 -device cpu --disable_tta, from Python (no trainer lookup)."""
    import importlib.util
    import multiprocessing

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_results

    torch.set_num_threads(multiprocessing.cpu_count())
    spec = importlib.util.spec_from_file_location("nnunet_results", ROOT / "tests" / "inference" / "nnunet_results.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    helpers.initialize_nnunet_predictor(predictor, Path(nnUNet_results) / DATASET / f"{trainer}__nnUNetPlans__3d_fullres",
                                        [0], "checkpoint_final.pth")
    predictor.predict_from_files(images, out, save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


def _run(cmd: list[str], env: dict, log: Path) -> float:
    """Run `cmd`, its output into `log`; returns wall seconds; raises on failure."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")
    return time.perf_counter() - t


def _scores(summary: dict) -> dict:
    return {"dice": {k: round(v["dice"], 4) for k, v in summary["mean"].items()},
            "foreground_dice_mean": round(summary["foreground_mean"]["dice"], 4),
            "hd95": {k: round(v["hd95"], 2) for k, v in summary["mean"].items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="train_accuracy")
    ap.add_argument("--trainer", default="nnUNetTrainer_1epoch",
                    help="nnU-Net trainer class (its short-schedule ones: _1epoch, _5epochs, ...)")
    ap.add_argument("--cases", type=int, default=10, help="training cases (fold 0 holds out 20 %%)")
    ap.add_argument("--test-cases", type=int, default=4)
    ap.add_argument("--shape-scale", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nnunet-child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nnunet_child:  # runs in a child process with nnU-Net's environment variables set
        kind, *rest = args.nnunet_child
        (_nnunet_train if kind == "train" else _nnunet_predict)(args.trainer, *rest)
        return 0

    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    raw = work / "nnunet_raw" / DATASET
    make_phantoms(raw, cases=args.cases + args.test_cases, seed=args.seed, shape_scale=args.shape_scale)
    test_ids = hold_out(raw, args.test_cases)

    # medseg's plan and split first: nnU-Net trains on the same fold 0.
    med = work / "medseg"
    run_fingerprint(raw, med, workers=2, verbose=False)
    run_plan(raw, med, budget_gb=2.0, device="cpu", base_features=DEMO_BASE_FEATURES,
             max_patch_voxels=DEMO_MAX_PATCH_VOXELS, verbose=True, measure_time=True)
    data_dir = run_preprocess(raw, med, "3d_fullres", workers=2, verbose=False)

    env = {**os.environ, "nnUNet_raw": str(work / "nnunet_raw"),
           "nnUNet_preprocessed": str(work / "nnunet_preprocessed"), "nnUNet_results": str(work / "nnunet_results")}
    logs = work / "logs"
    logs.mkdir()
    times = {"nnunet_plan_preprocess_s": _run(
        [_bin("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"],
        env, logs / "nnunet_plan.txt")}

    # The split medseg's trainer will use (it reads the same file), made here before training.
    case_ids = sorted(p.stem for p in data_dir.glob("*.json") if p.name != "plan.json")
    splits = load_or_make_splits(med / "splits.json", case_ids)
    write_json(work / "nnunet_preprocessed" / DATASET / "splits_final.json",
               [{"train": s["train"], "val": s["val"]} for s in splits])

    times["nnunet_train_s"] = _run(
        [sys.executable, __file__, "--trainer", args.trainer, "--nnunet-child", "train"], env, logs / "nnunet_train.txt")
    result_dir = work / "nnunet_results" / DATASET / f"{args.trainer}__nnUNetPlans__3d_fullres"
    log_text = "".join(p.read_text() for p in sorted((result_dir / "fold_0").glob("training_log_*.txt")))
    epoch_times = [float(x) for x in re.findall(r"Epoch time: ([0-9.]+) s", log_text)]
    if not epoch_times:
        raise SystemExit(f"no epoch times found in {result_dir / 'fold_0'}")
    budget = sum(epoch_times)
    nn_plans = read_json(work / "nnunet_preprocessed" / DATASET / "nnUNetPlans.json")["configurations"]["3d_fullres"]

    cfg = TrainingConfig(epochs=1000, iters_per_epoch=DEMO_ITERS_PER_EPOCH, val_iters=5,
                         max_time_s=budget, seed=args.seed)
    t = time.perf_counter()
    train = run_train(raw, med, "3d_fullres", 0, cfg, verbose=True)
    times["medseg_train_s"] = time.perf_counter() - t

    preds = {"medseg": med / "predictions", "nnunet": work / "nnunet_predictions"}
    t = time.perf_counter()
    Predictor.from_model_dir(med / "models" / "3d_fullres", folds=[0], mirror=False).predict_folder(
        raw / "imagesTs", preds["medseg"])
    times["medseg_predict_s"] = time.perf_counter() - t
    times["nnunet_predict_s"] = _run(
        [sys.executable, __file__, "--trainer", args.trainer, "--nnunet-child", "predict", str(raw / "imagesTs"),
         str(preds["nnunet"])], env, logs / "nnunet_predict.txt")

    scores = {name: _scores(evaluate_folders(folder, raw / "labelsTs", dataset_json=raw / "dataset.json",
                                             out_dir=work / f"evaluation_{name}"))
              for name, folder in preds.items()}
    med_plan = read_json(med / "plans.json")["configurations"]["3d_fullres"]
    result = {
        "args": vars(args), "test_cases": test_ids,
        "budget_s": round(budget, 1), "nnunet_epochs": len(epoch_times),
        "nnunet_iterations": len(epoch_times) * 250,
        "medseg_epochs": train["epochs"], "medseg_iterations": train["epochs"] * DEMO_ITERS_PER_EPOCH,
        "plans": {"nnunet": {"patch": nn_plans["patch_size"], "batch": nn_plans["batch_size"],
                             "spacing": nn_plans["spacing"]},
                  "medseg": {"patch": med_plan["patch_size"], "batch": med_plan["batch_size"],
                             "spacing": med_plan["target_spacing"]}},
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "scores": scores,
    }
    write_json(work / "train_accuracy.json", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
