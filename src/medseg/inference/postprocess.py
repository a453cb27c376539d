"""Post-processing decided by cross-validation: keep the largest connected component.

After training, `decide_postprocessing` predicts each fold's validation cases with that
fold's network (a cascade stage reads its previous stage's cross-validation predictions of
them), then tries two rules and keeps those that raise the mean Dice:
1. foreground as a whole: all non-background voxels outside the largest foreground
   component become background;
2. per class: voxels of class c outside its largest component become background.
The choice and the Dice it was based on go to `postprocessing.json` in the model folder;
the predictor applies it to every prediction. Components are connected through faces,
edges and corners (26-connectivity in 3D, 8 in 2D). Reference voxels holding the ignore
label count in no Dice. Region-based models are refused: removing a component of one region
would leave its nested regions behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation.metrics import dice
from medseg.io.dataset import find_cases, read_case, read_dataset_info
from medseg.utils.files import read_json, write_json

FILE = "postprocessing.json"


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (all of an empty mask)."""
    labelled, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def apply_postprocessing(labels: np.ndarray, rules: dict[str, Any]) -> np.ndarray:
    """Apply `{"foreground": bool, "classes": [c, ...]}` to a label map (a new array)."""
    out = labels.copy()
    if rules.get("foreground"):
        fg = out > 0
        out[fg & ~largest_component(fg)] = 0
    for c in rules.get("classes", []):
        m = out == c
        out[m & ~largest_component(m)] = 0
    return out


def _mean_dice(preds: list[np.ndarray], refs: list[np.ndarray], classes: Sequence[int],
               ignore: int | None = None) -> dict[int, float]:
    out = {}
    for c in classes:
        # Predictions on ignored voxels are neither right nor wrong.
        values = [dice((p == c) if ignore is None else (p == c) & (r != ignore), r == c) for p, r in zip(preds, refs)]
        values = [v for v in values if not np.isnan(v)]
        out[c] = float(np.mean(values)) if values else float("nan")
    return out


def choose_rules(preds: list[np.ndarray], refs: list[np.ndarray], classes: Sequence[int],
                 ignore: int | None = None) -> dict[str, Any]:
    """Pick the rules that raise the mean Dice on these (validation) predictions; reference
    voxels holding `ignore` are left out of every Dice."""
    base = _mean_dice(preds, refs, classes, ignore)
    fg_preds = [apply_postprocessing(p, {"foreground": True}) for p in preds]
    fg = _mean_dice(fg_preds, refs, classes, ignore)
    use_fg = np.nanmean(list(fg.values())) > np.nanmean(list(base.values()))
    current, current_dice = (fg_preds, fg) if use_fg else (preds, base)
    chosen = []
    per_class = {}
    for c in classes:
        trial = [apply_postprocessing(p, {"classes": [c]}) for p in current]
        d = _mean_dice(trial, refs, [c], ignore)[c]
        per_class[str(c)] = {"without": current_dice[c], "with": d}
        if d > current_dice[c]:
            chosen.append(c)
    return {
        "foreground": bool(use_fg), "classes": chosen,
        "evidence": {"mean_dice_without": base, "mean_dice_foreground_rule": fg, "per_class": per_class,
                     "cases": len(preds)},
    }


def decide_postprocessing(model_dir: str | Path, dataset: str | Path, folds: Sequence[int] | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """Predict each fold's validation cases from the raw dataset, choose the rules, and write
    `model_dir/postprocessing.json`."""
    from medseg.inference.cascade import cross_validation_source
    from medseg.inference.predictor import Predictor

    model_dir = Path(model_dir)
    info = read_dataset_info(dataset)
    if info.scheme.has_regions:
        raise MedsegError("post-processing is not available for region-based models; their predictions are "
                          "used as predicted", model_dir)
    files = {c.case_id: c for c in find_cases(dataset, info)}
    fold_dirs = sorted(p for p in model_dir.glob("fold_*") if p.is_dir() and p.name != "fold_all")
    if folds is not None:
        fold_dirs = [model_dir / f"fold_{f}" for f in folds]
    preds, refs = [], []
    for fd in fold_dirs:
        val_ids = read_json(fd / "training.json")["val_cases"]
        # A cascade stage reads its previous stage's cross-validation predictions of these cases.
        predictor = Predictor.from_model_dir(model_dir, folds=[fd.name[len("fold_"):]], postprocess=False,
                                             progress=progress, previous_stage=cross_validation_source(model_dir))
        for case_id in val_ids:
            case = read_case(files[case_id])
            previous = predictor.previous_labels(case_id, case.reference, case.image)
            preds.append(predictor.predict_array(case.image, case.spacing, previous))
            refs.append(case.label)
    rules = choose_rules(preds, refs, info.foreground_labels, info.scheme.ignore)
    rules["folds"] = [fd.name for fd in fold_dirs]
    write_json(model_dir / FILE, rules)
    return rules


def load_rules(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / FILE
    return read_json(path) if path.exists() else None
