"""Post-processing decided by cross-validation: keep the largest connected component.

After training, `decide_postprocessing` predicts each fold's validation cases with that
fold's network (a cascade stage reads its previous stage's cross-validation predictions of
them), then tries two rules and keeps those that raise the mean Dice:
1. foreground as a whole: all non-background voxels outside the largest foreground
   component become background;
2. per class: voxels of class c outside its largest component become background; for a
   region model, per region: voxels of the region (the union of its values) outside its
   largest component take the value its smallest enclosing region writes, or background if
   none encloses it. So a stray piece of a nested region (a lesion speck inside the organ)
   stays organ, and a stray piece of an outer region goes with everything nested in it.
   (nnU-Net sets them to background either way, which punches holes in the enclosing region.)
The choice and the Dice it was based on (per class, or per region on region masks) go to
`postprocessing.json` in the model folder; the predictor applies it to every prediction.
Components are connected through faces, edges and corners (26-connectivity in 3D, 8 in 2D).
Reference voxels holding the ignore label count in no Dice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation.metrics import dice
from medseg.io.dataset import find_cases, read_case, read_dataset_info
from medseg.io.labels import LabelScheme
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


def region_rules(scheme: LabelScheme) -> list[dict[str, Any]]:
    """For a region scheme, per region in channel order: its name, its values, and the value
    its stray components become (what its smallest enclosing region writes, else 0)."""
    regions = list(scheme.foreground.items())
    out = []
    for name, values in regions:
        enclosing = [(len(v), w) for (_, v), w in zip(regions, scheme.regions_class_order)
                     if set(v) > set(values)]
        out.append({"name": name, "values": list(values), "fallback": min(enclosing)[1] if enclosing else 0})
    return out


def apply_postprocessing(labels: np.ndarray, rules: dict[str, Any]) -> np.ndarray:
    """Apply `{"foreground": bool, "classes": [c, ...], "regions": [{"name", "values",
    "fallback"}, ...]}` to a label map (a new array)."""
    out = labels.copy()
    if rules.get("foreground"):
        fg = out > 0
        out[fg & ~largest_component(fg)] = 0
    for c in rules.get("classes", []):
        m = out == c
        out[m & ~largest_component(m)] = 0
    for region in rules.get("regions", []):
        m = np.isin(out, region["values"])
        out[m & ~largest_component(m)] = region["fallback"]
    return out


def _mean_dice(preds: list[np.ndarray], refs: list[np.ndarray], structures: dict[str, Sequence[int]],
               ignore: int | None = None) -> dict[str, float]:
    """Per structure (name -> its values), the mean Dice of its mask over the cases."""
    out = {}
    for name, values in structures.items():
        # Predictions on ignored voxels are neither right nor wrong.
        scores = []
        for p, r in zip(preds, refs):
            pm = np.isin(p, values)
            scores.append(dice(pm if ignore is None else pm & (r != ignore), np.isin(r, values)))
        scores = [v for v in scores if not np.isnan(v)]
        out[name] = float(np.mean(scores)) if scores else float("nan")
    return out


def choose_rules(preds: list[np.ndarray], refs: list[np.ndarray], classes: Sequence[int] | LabelScheme,
                 ignore: int | None = None) -> dict[str, Any]:
    """Pick the rules that raise the mean Dice on these (validation) predictions; reference
    voxels holding `ignore` are left out of every Dice. `classes`: the foreground class values,
    or a region scheme (rules per region, scored on region masks)."""
    by_region = isinstance(classes, LabelScheme) and classes.has_regions
    if by_region:
        candidates = region_rules(classes)
        structures = {r["name"]: r["values"] for r in candidates}
        single = [{"regions": [r]} for r in candidates]
    else:
        values = list(classes.foreground_values if isinstance(classes, LabelScheme) else classes)
        structures = {str(c): [c] for c in values}
        single = [{"classes": [c]} for c in values]
    base = _mean_dice(preds, refs, structures, ignore)
    fg_preds = [apply_postprocessing(p, {"foreground": True}) for p in preds]
    fg = _mean_dice(fg_preds, refs, structures, ignore)
    use_fg = np.nanmean(list(fg.values())) > np.nanmean(list(base.values()))
    current, current_dice = (fg_preds, fg) if use_fg else (preds, base)
    chosen: dict[str, list] = {"classes": [], "regions": []}
    per_structure = {}
    for key, rule in zip(structures, single):
        trial = [apply_postprocessing(p, rule) for p in current]
        d = _mean_dice(trial, refs, {key: structures[key]}, ignore)[key]
        per_structure[key] = {"without": current_dice[key], "with": d}
        if d > current_dice[key]:
            for kind, items in rule.items():
                chosen[kind] += items
    out: dict[str, Any] = {"foreground": bool(use_fg), "classes": chosen["classes"]}
    if by_region:
        out["regions"] = chosen["regions"]
    out["evidence"] = {"mean_dice_without": base, "mean_dice_foreground_rule": fg,
                       ("per_region" if by_region else "per_class"): per_structure, "cases": len(preds)}
    return out


def decide_postprocessing(model_dir: str | Path, dataset: str | Path, folds: Sequence[int] | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """Predict each fold's validation cases from the raw dataset, choose the rules, and write
    `model_dir/postprocessing.json`."""
    from medseg.inference.cascade import cross_validation_source
    from medseg.inference.predictor import Predictor

    model_dir = Path(model_dir)
    info = read_dataset_info(dataset)
    files = {c.case_id: c for c in find_cases(dataset, info)}
    fold_dirs = sorted(p for p in model_dir.glob("fold_*") if p.is_dir() and p.name != "fold_all")
    if folds is not None:
        fold_dirs = [model_dir / f"fold_{f}" for f in folds]
    if not fold_dirs:
        raise MedsegError("no cross-validation fold is trained here (fold_all validates on its own training "
                          "cases, so it cannot choose post-processing)", model_dir)
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
    rules = choose_rules(preds, refs, info.scheme if info.scheme.has_regions else info.foreground_labels,
                         info.scheme.ignore)
    rules["folds"] = [fd.name for fd in fold_dirs]
    write_json(model_dir / FILE, rules)
    return rules


def load_rules(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / FILE
    return read_json(path) if path.exists() else None
