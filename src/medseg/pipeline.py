"""The stages as functions of a dataset folder and a working directory.

Each `run_*` reads the previous stage's artefact from the working directory and writes its
own; the `medseg` sub-commands call these and nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.io.labels import LabelScheme
from medseg.planning import Plans, make_plans
from medseg.preprocessing.fingerprint import compute_fingerprint
from medseg.preprocessing.preprocess import preprocess_dataset
from medseg.training.config import TrainingConfig
from medseg.training.trainer import Trainer
from medseg.utils.files import read_json, write_json
from medseg.workdir import resolve_workdir


def run_fingerprint(dataset: str | Path, workdir: str | Path | None = None, workers: int = 1,
                    verbose: bool = False) -> dict[str, Any]:
    """Validate the dataset, then write `fingerprint.json`."""
    from medseg.io.validate import check_dataset

    check_dataset(dataset)
    wd = resolve_workdir(dataset, workdir)
    fp = compute_fingerprint(dataset, workers=workers, progress=verbose)
    write_json(wd / "fingerprint.json", fp)
    if verbose:
        print(f"{fp['num_cases']} cases, median spacing {_fmt(fp['median_spacing'])} mm, "
              f"median shape {_fmt(fp['median_shape_after_crop'], 0)} -> {wd / 'fingerprint.json'}")
    return fp


def run_plan(dataset: str | Path, workdir: str | Path | None = None, budget_gb: float = 8.0, device: str = "cuda",
             base_features: int = 32, max_patch_voxels: int | None = None, verbose: bool = False,
             measure_time: bool = False) -> Plans:
    """Plans from the fingerprint for a memory budget on `device`. With `measure_time`, the
    iteration time is measured with real training steps when `device` is the local one."""
    wd = resolve_workdir(dataset, workdir)
    fp_path = wd / "fingerprint.json"
    if not fp_path.exists():
        raise MedsegError("no fingerprint; run `medseg fingerprint` first", fp_path)
    plans = make_plans(read_json(fp_path), budget_gb=budget_gb, device=device, base_features=base_features,
                       max_patch_voxels=max_patch_voxels, measure_time=measure_time)
    plans.save(wd / "plans.json")
    if verbose:
        print(format_plans(plans))
        print(f"-> {wd / 'plans.json'}")
    return plans


def load_plans(workdir: Path) -> Plans:
    path = workdir / "plans.json"
    if not path.exists():
        raise MedsegError("no plans; run `medseg plan` first", path)
    return Plans.load(path)


def run_preprocess(dataset: str | Path, workdir: str | Path | None = None, config: str = "3d_fullres",
                   workers: int = 1, verbose: bool = False) -> Path:
    wd = resolve_workdir(dataset, workdir)
    out = preprocess_dataset(dataset, wd, load_plans(wd), config, workers=workers, progress=verbose)
    adopt_dataset_splits(dataset, wd)
    if verbose:
        print(f"preprocessed {config} -> {out}")
    return out


def run_train(dataset: str | Path, workdir: str | Path | None, config: str, fold: int | str,
              cfg: TrainingConfig, model_name: str | None = None, resume: bool = False,
              verbose: bool = False, model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    wd = resolve_workdir(dataset, workdir)
    trainer = Trainer(wd, load_plans(wd), config, fold, cfg, model_name=model_name, model_options=model_options)
    summary = trainer.fit(resume=resume)
    if verbose and trainer.dist.is_main:
        print(f"trained {config} {trainer.paths.fold_dir.name}: {summary['epochs']} epochs, "
              f"best pseudo Dice (moving average) {summary['best_pseudo_dice_ema']:.3f} -> {trainer.paths.fold_dir}")
    return summary


def run_predict_next_stage(dataset: str | Path, workdir: str | Path | None, config: str = "3d_lowres",
                           folds: list[int | str] | None = None, verbose: bool = False,
                           **settings: Any) -> dict[str, dict[str, str]]:
    """The previous stage's cross-validation predictions that a cascade stage trains on (see
    `inference.cascade.predict_next_stage`; `settings`: checkpoint, device, precision, step,
    mirror, tile_batch)."""
    from medseg.inference.cascade import predict_next_stage
    from medseg.training.previous_stage import next_stage_dir

    wd = resolve_workdir(dataset, workdir)
    done = predict_next_stage(wd, config, folds, progress=verbose, **settings)
    if verbose:
        for name, cases in done.items():
            print(f"{config} -> {name}: {len(cases)} case(s) predicted by the folds that held them out "
                  f"-> {next_stage_dir(wd, config, name)}")
    return done


def adopt_dataset_splits(dataset: str | Path, workdir: Path) -> None:
    """A dataset may ship its own `splits.json` (e.g. slabs chosen so validation cannot leak);
    the working directory then uses it instead of random folds, unless it already has one.
    One that differs from the dataset's is kept, with a line on stderr: it may be a hand-made
    split, or one left from an older build of the dataset."""
    import shutil
    src, dst = Path(dataset) / "splits.json", workdir / "splits.json"
    if not src.exists():
        return
    if not dst.exists():
        shutil.copyfile(src, dst)
    elif read_json(dst) != read_json(src):
        print(f"warning: {dst} differs from the dataset's {src}; training uses {dst} "
              "(delete it to use the dataset's)", file=sys.stderr)


def format_plans(plans: Plans) -> str:
    lines = []
    for name in plans.names():
        c = plans.configuration(name)
        opts = c.model_options
        lines.append(f"configuration {name}  ({c.model}, {c.spatial_dims}D)")
        rows = [
            ("target spacing (mm)", _fmt(c.target_spacing)),
            ("median shape", _fmt(c.median_shape, 0)),
            ("patch size", _fmt(c.patch_size, 0)),
            ("batch size", str(c.batch_size)),
            ("stages", str(len(opts.get("strides", [])))),
            ("strides", " ".join("x".join(map(str, s)) for s in opts.get("strides", []))),
            ("kernels", " ".join("x".join(map(str, k)) for k in opts.get("kernel_sizes", []))),
            ("features", " ".join(map(str, opts.get("features", [])))),
            ("normalisation", ", ".join(c.normalization)),
            ("predicted memory", f"{c.predicted_memory_gb} GB" if c.predicted_memory_gb is not None else "-"),
            ("iteration time", _seconds(c.predicted_iteration_s)),
        ]
        if c.previous_stage:
            rows.append(("previous stage", f"{c.previous_stage} (its segmentation: "
                                           f"{LabelScheme.of(plans).num_predicted_values - 1} more input channel(s))"))
        lines += [f"  {k:<20} {v}" for k, v in rows]
        lines += [f"  note: {n}" for n in c.notes]
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    """One training iteration's time, and what 1000 of them take (an nnU-Net epoch is 250)."""
    if value is None:
        return "-"
    return f"{value:.3g} s per iteration ({value * 1000 / 3600:.3g} h per 1000)"


def _fmt(values, digits: int = 3) -> str:
    if digits == 0:
        return " x ".join(str(int(round(v))) for v in values)
    return " x ".join(f"{v:.{digits}g}" for v in values)
