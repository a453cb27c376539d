"""The 3d_lowres -> 3d_cascade_fullres cascade: the previous stage's segmentations.

Training a cascade stage needs the previous stage's segmentation of every training case, made
as nnU-Net makes them: each case is predicted by the previous stage's fold that held it out
(its cross-validation), so the next stage learns from segmentations as wrong as those it will
see on new scans. `predict_next_stage` makes them from the preprocessed arrays and stores them
on each next stage's preprocessed grid (`training.previous_stage` reads them).

Prediction with a cascade stage needs the previous stage's label map of each scan:
`previous_stage_source` gives either the previous stage's model (all its trained folds, run
first on each scan) or a folder of label maps that `medseg predict` wrote with it. Predicting
the cascade's own validation cases (`medseg postprocess`) uses the cross-validation
predictions instead (`PreviousStageCrossValidation`), so no network has seen the case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor, case_id_of
from medseg.io.image import Image, has_image_suffix, read_image
from medseg.io.labels import LabelScheme
from medseg.planning.plans import Plans
from medseg.preprocessing.crop import uncrop
from medseg.preprocessing.preprocess import preprocessed_dir, save_array, separate_axis_for
from medseg.preprocessing.resample import resample_label
from medseg.training.previous_stage import next_stage_dir
from medseg.utils.files import read_json, write_json

RECORD = "predictions.json"


def next_stages(plans: Plans, config: str) -> list[str]:
    """The configurations whose `previous_stage` is `config`."""
    return [n for n in plans.names() if n != config and plans.configuration(n).previous_stage == config]


def _trained_folds(model_dir: Path, folds: Sequence[int | str] | None) -> list[Path]:
    """Cross-validation folds (not 'all') that finished training (training.json written)."""
    if folds is None:
        dirs = sorted(p for p in model_dir.glob("fold_*") if p.is_dir() and p.name != "fold_all")
    else:
        dirs = [model_dir / f"fold_{f}" for f in folds if str(f) != "all"]
    for d in dirs:
        if not (d / "training.json").exists():
            raise MedsegError("fold has not finished training (no training.json)", d)
    if not dirs:
        raise MedsegError("no trained cross-validation folds (fold_0, fold_1, ...)", model_dir)
    return dirs


def predict_next_stage(workdir: str | Path, config: str = "3d_lowres", folds: Sequence[int | str] | None = None,
                       *, checkpoint: str | None = None, device: str = "auto", precision: str = "auto",
                       step: float = 0.5, mirror: bool = False, tile_batch: int = 1,
                       progress: bool = False) -> dict[str, Any]:
    """Predict each fold's held-out cases with that fold of `config`, for every configuration
    whose previous stage `config` is, into `models/<config>/predicted_next_stage/<next>/CASE.npy`
    ((z, y, x) int16 labels on the next stage's preprocessed grid). Returns what was written:
    {next configuration: {case: fold}}, also kept as `predictions.json` beside the arrays."""
    workdir = Path(workdir)
    plans_path = workdir / "plans.json"
    if not plans_path.exists():
        raise MedsegError("no plans; run `medseg plan` first", plans_path)
    plans = Plans.load(plans_path)
    plan = plans.configuration(config)
    targets = next_stages(plans, config)
    if not targets:
        raise MedsegError(f"no configuration of the plans has previous_stage '{config}'", plans_path)
    model_dir = workdir / "models" / config
    fold_dirs = _trained_folds(model_dir, folds)
    source = preprocessed_dir(workdir, plans, config)
    grids = {n: preprocessed_dir(workdir, plans, n) for n in targets}
    for n, folder in grids.items():
        if not (folder / "plan.json").exists():
            raise MedsegError(f"{n} is not preprocessed; run `medseg preprocess DATASET -c {n}` first", folder)
    # From this configuration's grid to the next stage's: no case spacing is involved, the
    # plan's own axis applies.
    separate_axis = plan.separate_axis
    done: dict[str, dict[str, str]] = {n: {} for n in targets}
    for fold_dir in fold_dirs:
        fold = fold_dir.name[len("fold_"):]
        held_out = read_json(fold_dir / "training.json")["val_cases"]
        predictor = Predictor.from_model_dir(model_dir, folds=[fold], checkpoint=checkpoint, device=device,
                                             precision=precision, postprocess=False, step=step, mirror=mirror,
                                             tile_batch=tile_batch)
        for case_id in tqdm(held_out, desc=f"{config} fold {fold} -> next stage", disable=not progress):
            data = np.load(source / f"{case_id}.npy", allow_pickle=False)
            scores = predictor.predict_preprocessed(torch.from_numpy(data))
            for n, folder in grids.items():
                shape = read_json(folder / f"{case_id}.json")["shape_after_resample"]
                labels = predictor.labels_from_probabilities(scores, shape, separate_axis)
                save_array(next_stage_dir(workdir, config, n) / f"{case_id}.npy", labels.numpy().astype(np.int16))
                done[n][case_id] = fold_dir.name
    for n, cases in done.items():
        record_path = next_stage_dir(workdir, config, n) / RECORD
        record = read_json(record_path) if record_path.exists() else {"cases": {}}
        record.update({"previous_stage": config, "next_stage": n, "checkpoint": checkpoint or "final, best or latest",
                       "step": step, "mirror": mirror})
        record["cases"].update(cases)
        write_json(record_path, record)
    return done


class PreviousStageFolder:
    """Label maps of the previous stage written by `medseg predict` (`CASE<ending>`), in the
    scans' own geometry."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MedsegError("previous-stage predictions folder not found", self.folder)

    def labels(self, case_id: str | None, reference: Image, image: np.ndarray) -> np.ndarray:
        """The label map (*spatial) of `case_id`; its grid must be the scan's."""
        if case_id is None:
            raise MedsegError("a scan without a file name cannot be matched to a previous-stage prediction; "
                              "pass the label map to predict(..., previous=...)", self.folder)
        found = [p for p in sorted(self.folder.iterdir()) if has_image_suffix(p) and case_id_of(p) == case_id]
        if not found:
            raise MedsegError(f"no previous-stage prediction for case '{case_id}'", self.folder)
        prev = read_image(found[0])
        if tuple(prev.shape) != tuple(reference.shape) or not np.allclose(prev.spacing, reference.spacing, rtol=1e-4):
            raise MedsegError(f"previous-stage prediction has shape {list(prev.shape)} and spacing "
                              f"{list(prev.spacing)}; the scan {list(reference.shape)} and {list(reference.spacing)}",
                              found[0])
        return np.asarray(prev.array).astype(np.int16)


class PreviousStageModel:
    """The previous stage's model, run on each scan before the cascade stage."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def labels(self, case_id: str | None, reference: Image, image: np.ndarray) -> np.ndarray:
        return self.predictor.predict_array(image, reference.spacing)


class PreviousStageCrossValidation:
    """The previous stage's cross-validation predictions for `config` (`predict_next_stage`),
    brought back from the preprocessed grid to each training case's own grid (*spatial)."""

    def __init__(self, workdir: str | Path, plans: Plans, config: str):
        self.plan = plans.configuration(config)
        self.folder = next_stage_dir(workdir, self.plan.previous_stage, config)
        self.grid = preprocessed_dir(workdir, plans, config)
        self.classes = list(range(LabelScheme.of(plans).num_predicted_values))

    def labels(self, case_id: str | None, reference: Image, image: np.ndarray) -> np.ndarray:
        path = self.folder / f"{case_id}.npy"
        if not path.exists():
            raise MedsegError(f"no {self.plan.previous_stage} cross-validation prediction of case '{case_id}'; run "
                              f"`medseg predict-next-stage DATASET -w WORKDIR -c {self.plan.previous_stage}`", path)
        props = read_json(self.grid / f"{case_id}.json")
        separate_axis = separate_axis_for(tuple(props["spacing"]), self.plan, to_target=False)
        back = resample_label(np.load(path), props["shape_after_crop"], self.classes, separate_axis)
        return uncrop(back, [tuple(b) for b in props["bbox"]], tuple(props["shape"]))


def cross_validation_source(model_dir: str | Path) -> PreviousStageCrossValidation | None:
    """For a cascade stage's model folder inside a working directory (WORKDIR/models/<config>),
    its previous stage's cross-validation predictions; None for other models."""
    model_dir = Path(model_dir)
    config = read_json(model_dir / "model.json")["configuration"]
    if not config.get("previous_stage"):
        return None
    workdir = model_dir.parent.parent
    if not (workdir / "plans.json").exists():
        raise MedsegError("a cascade stage's validation cases need the working directory it was trained in "
                          "(WORKDIR/models/<config>, beside plans.json)", model_dir)
    return PreviousStageCrossValidation(workdir, Plans.load(workdir / "plans.json"), config["name"])


def previous_stage_source(model_dir: str | Path, previous: str, predictions: str | Path | None = None,
                          **settings: Any) -> PreviousStageFolder | PreviousStageModel:
    """A folder of previous-stage predictions when `predictions` is given; otherwise the previous
    stage's model folder beside `model_dir` (all its trained folds, no post-processing), loaded
    with `settings` (checkpoint, device, precision, step, mirror, tile_batch, backend)."""
    if predictions is not None:
        return PreviousStageFolder(predictions)
    prev_dir = Path(model_dir).parent / previous
    if not (prev_dir / "model.json").exists():
        raise MedsegError(f"this cascade stage needs {previous}: train it (its model folder is missing) or pass "
                          f"--previous-stage-predictions DIR", prev_dir)
    return PreviousStageModel(Predictor.from_model_dir(prev_dir, postprocess=False, **settings))
