"""Train and score medseg on a real dataset, beside its classical baseline, on this CPU.

One command per dataset (docs/results.md):

    .venv/bin/python benchmarks/real_results.py brain-extraction --minutes 10 --workdir /tmp/real

It fetches the dataset (medseg.data.real), fingerprints, plans for the CPU (`--budget-gb`,
`--max-patch-voxels`), preprocesses, trains fold 0 of the dataset's own split (the slabs or
hemispheres of docs/real-data.md: fold 0 validation = the dataset's validation cases) for
`--minutes` of training, predicts the validation cases, evaluates them, writes the HTML report,
runs the dataset's baseline on the same cases, and prints one JSON line with both scores and
the times. Nothing here is tuned per dataset beyond the flags printed in that line.

`--ensemble-with W1 [W2 ...]` also scores the ensemble of this run's model with the models of
earlier runs of the same dataset, fold and plan (their `--workdir`s; e.g. other seeds): their
probabilities are averaged, as `medseg predict` averages the folds of a model folder. The
ensemble is written to DATASET/ensemble/ and its scores to result.json under "ensemble".

`--fold 1` runs the same on the dataset's tuning fold instead (brain-tissue has one: training
slabs held out with gaps, docs/real-data.md): trained on that fold's training slabs, scored on
its held-out training slabs, beside the baselines on those same slabs. Settings are compared
there; the validation slabs (fold 0) are scored once, with the setting chosen.

`--normalization ct` replaces the planner's per-case z-score with the dataset's foreground
statistics: a dataset cut from one template has one intensity scale, and a z-score per slab
shifts it by the slab's tissue mix. `--optimizer` is the trainer's: its default for a
time-budgeted run is AdamW; `sgd` gives nnU-Net's optimiser, which under a budget of about a
thousand steps may not leave the all-background start on small structures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from medseg.cli import parse_options
from medseg.data.real import fetch_dataset
from medseg.data.real.baselines import BASELINES, baseline_scores, pooled_dice
from medseg.evaluation import evaluate_folders, format_table, write_report
from medseg.inference.predictor import Predictor
from medseg.io.dataset import find_cases, read_dataset_info
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess, run_train
from medseg.training.config import TrainingConfig
from medseg.utils.files import read_json, write_json


def _same_model(a: dict, b: dict) -> bool:
    """Whether two model.json describe the same network and pre-processing (the plan's
    measured iteration time and notes may differ between runs)."""
    def strip(d: dict) -> dict:
        cfg = {k: v for k, v in d["configuration"].items() if k not in ("predicted_iteration_s", "notes")}
        return {**d, "configuration": cfg}
    return strip(a) == strip(b)


def score_ensemble(model_dir: Path, args: argparse.Namespace, images: list[Path], ref_dir: Path, raw: Path) -> dict:
    """This run's fold model and the same fold of each `--ensemble-with` run, as the folds of one
    model folder (links), predicted with their probabilities averaged and scored."""
    out = Path(args.workdir) / args.dataset / "ensemble" / args.config
    out.mkdir(parents=True)
    desc = read_json(model_dir / "model.json")
    write_json(out / "model.json", desc)
    members = [model_dir] + [w / args.dataset / "work" / "models" / args.config for w in args.ensemble_with]
    for i, member in enumerate(members):
        fold_dir = member / f"fold_{args.fold}"
        if not (fold_dir / "checkpoint_final.safetensors").exists():
            sys.exit(f"{fold_dir}: no final checkpoint of fold {args.fold} to ensemble")
        if not _same_model(read_json(member / "model.json"), desc):
            sys.exit(f"{member / 'model.json'}: not the same network and plan as {model_dir / 'model.json'}")
        (out / f"fold_{i}").symlink_to(fold_dir.resolve())
    predictor = Predictor.from_model_dir(out, progress=True, postprocess=False)
    pred_dir = out.parent / "predictions"
    predictor.predict_folder(images, pred_dir)
    summary = evaluate_folders(pred_dir, ref_dir, dataset_json=raw / "dataset.json", out_dir=out.parent / "evaluation")
    print("ensemble of", len(members), "models:")
    print(format_table(summary))
    return {"members": [str(m) for m in members],
            "dice_mean": {k: round(v["dice"], 4) for k, v in summary["mean"].items()},
            "dice_pooled": {k: round(v, 4) for k, v in pooled_dice(summary).items()},
            "hd95_mean": {k: round(v["hd95"], 2) for k, v in summary["mean"].items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", choices=["brain-extraction", "brain-tissue", "subcortical"])
    ap.add_argument("--workdir", default="real_results", help="parent folder; DATASET/ is made inside")
    ap.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    ap.add_argument("--config", default="2d",
                    help="configuration to train (default 2d: the best on every dataset, docs/results.md)")
    ap.add_argument("--budget-gb", type=float, default=4.0)
    ap.add_argument("--max-patch-voxels", type=int, default=48 * 96 * 96)
    ap.add_argument("--base-features", type=int, default=32)
    ap.add_argument("--iters-per-epoch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble-with", nargs="+", type=Path, default=[], metavar="WORKDIR",
                    help="earlier runs' --workdir: also score this model averaged with theirs")
    ap.add_argument("--fold", type=int, default=0,
                    help="0: the dataset's validation split; 1: its tuning fold (training slabs only)")
    ap.add_argument("--normalization", choices=["auto", "zscore", "ct"], default="auto",
                    help="auto: the planner's choice (zscore for MR); ct: the fingerprint's foreground statistics "
                         "for every case (clip to its 0.5/99.5 percentiles, then its mean and std), as for CT")
    ap.add_argument("--optimizer", choices=["auto", "sgd", "adamw"], default="auto",
                    help="auto: medseg's default, adamw for a time-budgeted run; sgd: nnU-Net's (docs/training.md)")
    ap.add_argument("--augmentation-option", action="append", default=[], metavar="KEY=VALUE",
                    help="as `medseg train --augmentation-option`, e.g. contrast_p=1.0 (repeatable)")
    args = ap.parse_args(argv)

    root = Path(args.workdir) / args.dataset
    if root.exists():
        shutil.rmtree(root)
    times: dict[str, float] = {}
    t = time.perf_counter()
    raw = fetch_dataset(args.dataset, root / "raw")
    times["fetch_s"] = time.perf_counter() - t
    folds = len(read_json(raw / "splits.json"))
    if not 0 <= args.fold < folds:
        sys.exit(f"{raw / 'splits.json'}: {args.dataset} has no fold {args.fold} (it has {folds}: 0 is its "
                 "validation split, 1 its tuning fold where it has one)")
    wd = root / "work"
    wd.mkdir(parents=True)

    t = time.perf_counter()
    run_fingerprint(raw, wd, workers=2, verbose=True)
    run_plan(raw, wd, budget_gb=args.budget_gb, device="cpu", base_features=args.base_features,
             max_patch_voxels=args.max_patch_voxels, verbose=True, measure_time=True)
    if args.normalization != "auto":
        # What a user does by editing plans.json: one scheme for every channel of every configuration.
        plans = read_json(wd / "plans.json")
        for cfg in plans["configurations"].values():
            if "normalization" in cfg:
                cfg["normalization"] = [args.normalization] * len(cfg["normalization"])
        write_json(wd / "plans.json", plans)
    run_preprocess(raw, wd, args.config, workers=2, verbose=True)
    times["fingerprint_plan_preprocess_s"] = time.perf_counter() - t

    t = time.perf_counter()
    cfg = TrainingConfig(epochs=1000, iters_per_epoch=args.iters_per_epoch, val_iters=5,
                         max_time_s=args.minutes * 60, seed=args.seed, optimizer=args.optimizer,
                         augmentation_options=parse_options(args.augmentation_option, "augmentation option"))
    train = run_train(raw, wd, args.config, args.fold, cfg, verbose=True)
    times["train_s"] = time.perf_counter() - t

    # Fold 0's validation cases are the dataset's validation split (its splits.json); fold 1's
    # are its tuning slabs.
    val = set(read_json(wd / "splits.json")[args.fold]["val"])
    info = read_dataset_info(raw)
    cases = [c for c in find_cases(raw, info) if c.case_id in val]
    ref_dir = root / "references"
    ref_dir.mkdir()
    for c in cases:
        (ref_dir / c.label.name).symlink_to(c.label.resolve())
    t = time.perf_counter()
    predictor = Predictor.from_model_dir(wd / "models" / args.config, folds=[args.fold], progress=True)
    pred_dir = wd / "predictions"
    predictor.predict_folder([c.images[0] for c in cases], pred_dir)
    times["predict_s"] = time.perf_counter() - t
    summary = evaluate_folders(pred_dir, ref_dir, dataset_json=raw / "dataset.json", out_dir=wd / "evaluation")
    print(format_table(summary))
    report = write_report(wd, images_dir=raw / "imagesTr", ref_dir=ref_dir)
    ensemble = (score_ensemble(wd / "models" / args.config, args, [c.images[0] for c in cases], ref_dir, raw)
                if args.ensemble_with else None)
    base = baseline_scores(raw, out_dir=root / "baseline", fold=args.fold)
    others = {m: baseline_scores(raw, out_dir=root / f"baseline_{m}", method=m, fold=args.fold)
              for m in BASELINES[args.dataset][1:]}

    result = {
        "dataset": args.dataset, "args": vars(args), "cases": sorted(val),
        "epochs": train["epochs"], "times_s": {k: round(v, 1) for k, v in times.items()},
        "medseg": {"dice_mean": {k: round(v["dice"], 4) for k, v in summary["mean"].items()},
                   "dice_pooled": {k: round(v, 4) for k, v in pooled_dice(summary).items()},
                   "foreground_dice_mean": round(summary["foreground_mean"]["dice"], 4),
                   "hd95_mean": {k: round(v["hd95"], 2) for k, v in summary["mean"].items()}},
        "baseline": {"name": base["baseline"],
                     "dice_mean": {k: round(v["dice"], 4) for k, v in base["mean"].items()},
                     "dice_pooled": {k: round(v, 4) for k, v in base["pooled_dice"].items()}},
        "other_baselines": {m: {"dice_mean": {k: round(v["dice"], 4) for k, v in b["mean"].items()},
                                "dice_pooled": {k: round(v, 4) for k, v in b["pooled_dice"].items()},
                                "foreground_dice_mean": round(b["foreground_mean"]["dice"], 4)}
                            for m, b in others.items()},
        "report": str(report),
    }
    if ensemble is not None:
        result["ensemble"] = ensemble
    write_json(root / "result.json", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
