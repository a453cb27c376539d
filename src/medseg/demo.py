"""`medseg demo`: the whole pipeline on the built-in phantoms, in minutes on a CPU.

Makes the phantom dataset, holds out a few cases as a test set (imagesTs / labelsTs), then
fingerprints, plans for a small CPU budget, preprocesses, trains fold 0 under a time
budget, predicts the held-out cases and evaluates them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from medseg.data.phantoms import make_phantoms
from medseg.io.dataset import find_cases, read_dataset_info
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig
from medseg.utils.files import read_json, write_json

# A CPU-sized plan: the patch volume is capped so a training step takes well under a second
# on two cores, and the network starts at 16 features.
DEMO_MAX_PATCH_VOXELS = 20 * 80 * 80
DEMO_BASE_FEATURES = 16
DEMO_ITERS_PER_EPOCH = 50


def hold_out(dataset: Path, n: int) -> list[str]:
    """Move the last `n` training cases to imagesTs / labelsTs; returns their ids."""
    info = read_dataset_info(dataset)
    cases = find_cases(dataset, info)
    held = cases[len(cases) - n:] if n else []
    for sub in ("imagesTs", "labelsTs"):
        (dataset / sub).mkdir(exist_ok=True)
    for c in held:
        for p in c.images:
            shutil.move(str(p), dataset / "imagesTs" / p.name)
        shutil.move(str(c.label), dataset / "labelsTs" / c.label.name)
    raw = read_json(dataset / "dataset.json")
    raw["numTraining"] = len(cases) - len(held)
    write_json(dataset / "dataset.json", raw)
    return [c.case_id for c in held]


def run_demo(workdir: str | Path = "medseg_demo", minutes: float = 8.0, cases: int = 10, held_out: int = 3,
             seed: int = 0) -> dict:
    """Run every stage; returns the evaluation summary. Prints per-class Dice at the end."""
    from medseg.evaluation import evaluate_folders, format_table
    from medseg.inference.predictor import Predictor

    t0 = time.perf_counter()
    wd = Path(workdir)
    dataset = wd / "Phantoms"
    if dataset.exists():
        shutil.rmtree(dataset)
    print(f"[1/6] making {cases + held_out} phantom cases ({held_out} held out) in {dataset}")
    make_phantoms(dataset, cases=cases + held_out, seed=seed)
    hold_out(dataset, held_out)
    print("[2/6] fingerprint")
    run_fingerprint(dataset, wd, workers=2, verbose=True)
    print("[3/6] plan (CPU demo budget)")
    run_plan(dataset, wd, budget_gb=2.0, device="cpu", base_features=DEMO_BASE_FEATURES,
             max_patch_voxels=DEMO_MAX_PATCH_VOXELS, verbose=True, measure_time=True)
    print("[4/6] preprocess")
    run_preprocess(dataset, wd, "3d_fullres", workers=2, verbose=True)
    print(f"[5/6] train fold 0 for up to {minutes:g} min")
    cfg = TrainingConfig(epochs=1000, iters_per_epoch=DEMO_ITERS_PER_EPOCH, val_iters=5,
                         max_time_s=minutes * 60, seed=seed)
    run_train(dataset, wd, "3d_fullres", 0, cfg, verbose=True)
    print("[6/6] predict the held-out cases and evaluate")
    model_dir = wd / "models" / "3d_fullres"
    predictor = Predictor.from_model_dir(model_dir, folds=[0], progress=True)
    pred_dir = wd / "predictions"
    predictor.predict_folder(dataset / "imagesTs", pred_dir)
    summary = evaluate_folders(pred_dir, dataset / "labelsTs", dataset_json=dataset / "dataset.json",
                               out_dir=wd / "evaluation")
    print(format_table(summary))
    from medseg.evaluation import write_report
    report = write_report(wd)
    elapsed = time.perf_counter() - t0
    print(f"\ndemo finished in {elapsed / 60:.1f} min. Outputs in {wd}/: plans.json, models/3d_fullres/fold_0/ "
          f"(checkpoints, progress.png), predictions/, evaluation/summary.json\nreport: {report}")
    return summary
