"""`report.html`: one self-contained page that shows a person what a run did and how well.

`write_report(workdir)` reads what it finds in a working directory and writes one HTML file
that needs no network and no other file to view: the evaluation (per-class means and a
sortable per-case table), a slice viewer per case, worst cases first (image with the reference
as outlines and the prediction as translucent fills, one colour per class, the three
orthogonal views, a slider and a per-slice disagreement strip each), the training curves of
every fold, the plans and the dataset summary from the fingerprint. A section whose inputs are
missing says so instead. Beside the page it writes PNG overlays of the worst slice of the worst
case and the best slice of the best case, for papers.

Inputs and where they are looked for:

- evaluation: ``summary_path``, else ``WORKDIR/evaluation/summary.json`` or
  ``WORKDIR/predictions/summary.json`` (what `evaluate_folders` writes);
  each case's prediction and reference are the files the summary names (or the same names in
  ``pred_dir`` / ``ref_dir``). Without a summary, ``pred_dir`` (default ``WORKDIR/predictions``)
  and ``ref_dir`` (default the dataset's ``labelsTs``) are paired by file name and the report
  computes Dice itself.
- images: ``CASE_0000`` in ``images_dir``, else in the dataset's ``imagesTs`` or ``imagesTr``. The
  dataset is the folder holding the references, or a folder with a ``dataset.json`` inside the
  working directory.
- ``fingerprint.json``, ``plans.json``, ``models/<config>/fold_<k>/`` of the working directory.

The page stays small: each case's grid is subsampled to at most ``max_side`` voxels per axis and
``max_voxels`` in all (the page says when), the image is windowed to 8 bits, and the volumes are
deflated; only the ``max_cases`` worst cases get a viewer (the table lists all).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medseg.errors import MedsegError
from medseg.evaluation.report_html import finite, fmt, render_page
from medseg.evaluation.report_volume import (
    CaseVolume,
    best_slice,
    ct_window,
    load_case,
    viewer_payload,
    worst_slice,
    write_overlay_png,
)
from medseg.io.dataset import read_dataset_info
from medseg.io.labels import IGNORE, display_values, structures
from medseg.io.image import has_image_suffix, image_suffix
from medseg.utils.files import atomic_path

REPORT_NAME = "report.html"
MAX_CASES = 20
MAX_SIDE = 256
MAX_VOXELS = 1_000_000


@dataclass
class ReportCase:
    case_id: str
    metrics: dict[str, dict[str, Any]]
    pred: Path | None
    ref: Path | None
    image: Path | None = None
    mean_dice: float = math.nan
    dom: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportInputs:
    workdir: Path
    fingerprint: dict | None
    plans: dict | None
    summary: dict | None
    summary_file: Path
    dataset: Path | None
    labels: dict[str, int]
    cases: list[ReportCase]
    missing: dict[str, str]
    window: tuple[float, float] | None  # the CT display window, or None: per case


def write_report(workdir: str | Path, out: str | Path | None = None, images_dir: str | Path | None = None,
                 pred_dir: str | Path | None = None, ref_dir: str | Path | None = None,
                 summary_path: str | Path | None = None, *, max_cases: int = MAX_CASES, max_side: int = MAX_SIDE,
                 max_voxels: int = MAX_VOXELS) -> Path:
    """Write the report of `workdir` to `out` (default ``WORKDIR/evaluation/report.html``) and the
    PNG overlays beside it (``<stem>_worst_<case>_z<k>.png``, ``<stem>_best_<case>_z<k>.png``).

    Missing inputs leave their section out with a note; raises `MedsegError` only when
    `workdir` is not a folder. Returns the path of the page.
    """
    wd = Path(workdir)
    if not wd.is_dir():
        raise MedsegError("working directory not found", wd)
    if max_cases < 0 or max_side < 1 or max_voxels < 1:
        raise MedsegError("max_cases must be >= 0, max_side and max_voxels >= 1")
    out = Path(out) if out is not None else wd / "evaluation" / REPORT_NAME
    inputs = _gather(wd, images_dir, pred_dir, ref_dir, summary_path)
    viewers, figures = _case_views(inputs, out, max_cases, max_side, max_voxels)
    page = render_page(inputs, viewers, figures, max_cases=max_cases, max_side=max_side, max_voxels=max_voxels)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


# ----------------------------------------------------------------------------- gathering

def _read_json(path: Path, missing: dict[str, str], key: str) -> dict | None:
    if not path.is_file():
        missing[key] = f"{path} not found"
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        missing[key] = f"{path} is not valid JSON ({err})"
        return None
    if not isinstance(data, dict):
        missing[key] = f"{path} does not hold a JSON object"
        return None
    return data


def _locate(recorded: str | None, workdir: Path) -> Path | None:
    """A path recorded in a summary: as written, else its trailing parts under `workdir` (the
    summary may name it relative to another current folder, or the folder may have moved)."""
    if not recorded:
        return None
    p = Path(recorded)
    if p.exists():
        return p
    parts = p.parts
    for i in range(1, len(parts)):
        candidate = workdir.joinpath(*parts[i:])
        if candidate.exists():
            return candidate
    return None


def _find_dataset(wd: Path, fingerprint: dict | None, ref_hint: Path | None) -> Path | None:
    candidates = []
    if ref_hint is not None:
        candidates.append(ref_hint.parent)
    try:
        candidates += sorted(d for d in wd.iterdir() if d.is_dir())
    except OSError:
        pass
    found = [d for d in candidates if (d / "dataset.json").is_file()]
    name = (fingerprint or {}).get("dataset_name")
    for d in found:
        try:
            if read_dataset_info(d).name == name:
                return d
        except MedsegError:
            continue
    return found[0] if found else None


def _gather(wd: Path, images_dir, pred_dir, ref_dir, summary_path) -> ReportInputs:
    missing: dict[str, str] = {}
    fingerprint = _read_json(wd / "fingerprint.json", missing, "fingerprint")
    plans = _read_json(wd / "plans.json", missing, "plans")
    if summary_path is not None:
        summary_file = Path(summary_path)
    else:
        # `medseg demo` writes WORKDIR/evaluation/; `medseg evaluate` without -o writes beside the predictions.
        found = [p for p in (wd / "evaluation" / "summary.json", wd / "predictions" / "summary.json") if p.is_file()]
        summary_file = found[0] if found else wd / "evaluation" / "summary.json"
    summary = _read_json(summary_file, missing, "evaluation")
    if summary is not None and not isinstance(summary.get("metric_per_case"), list):
        missing["evaluation"] = f"{summary_file} is not an evaluation summary (no 'metric_per_case')"
        summary = None
    pred_dir = Path(pred_dir) if pred_dir is not None else None
    ref_dir = Path(ref_dir) if ref_dir is not None else None

    ref_hint = ref_dir
    if ref_hint is None and summary is not None:
        ref_hint = _locate(summary.get("reference_dir"), wd)
    dataset = _find_dataset(wd, fingerprint, ref_hint)
    info = None
    if dataset is not None:
        try:
            info = read_dataset_info(dataset)
        except MedsegError:
            info = None

    if summary is not None:
        labels = display_values(summary.get("labels", {}), info.regions_class_order if info else None)
        cases = []
        for entry in summary["metric_per_case"]:
            if not isinstance(entry, dict) or "case" not in entry:
                continue
            pred = _override(pred_dir, entry.get("prediction_file")) or _locate(entry.get("prediction_file"), wd)
            ref = _override(ref_dir, entry.get("reference_file")) or _locate(entry.get("reference_file"), wd)
            cases.append(ReportCase(str(entry["case"]), entry.get("metrics", {}), pred, ref))
    else:
        declared = info.raw if info else (fingerprint or {})
        labels = display_values(declared.get("labels", {}), declared.get("regions_class_order"))
        pred_dir = pred_dir or wd / "predictions"
        ref_dir = ref_dir or (dataset / "labelsTs" if dataset is not None else None)
        cases = _cases_without_summary(pred_dir, ref_dir, structures(declared.get("labels", {})),
                                       declared.get("labels", {}).get(IGNORE), missing)
    if not labels and cases:
        found = sorted({int(name) for c in cases for name in c.metrics if name.isdigit()})
        labels = {str(v): v for v in found}

    ending = info.file_ending if info is not None else None
    image_dirs = [Path(images_dir)] if images_dir is not None else (
        [dataset / "imagesTs", dataset / "imagesTr"] if dataset is not None else [])
    for c in cases:
        c.mean_dice = _mean_dice(c.metrics)
        c.image = _find_image(c, image_dirs, ending)
    cases.sort(key=lambda c: (math.isnan(c.mean_dice), c.mean_dice if not math.isnan(c.mean_dice) else 0.0,
                              c.case_id))

    window = None
    if fingerprint is not None:
        channels = fingerprint.get("channel_names") or []
        norm = []
        for conf in ((plans or {}).get("configurations") or {}).values():
            norm = conf.get("normalization") or norm
            if norm:
                break
        is_ct = (channels and str(channels[0]).lower() == "ct") or (norm and str(norm[0]).lower() == "ct")
        intensity = fingerprint.get("intensity") or []
        if is_ct and intensity:
            window = ct_window(intensity[0])
    return ReportInputs(wd, fingerprint, plans, summary, summary_file, dataset, labels, cases, missing, window)


def _override(folder: Path | None, recorded: str | None) -> Path | None:
    if folder is None or not recorded:
        return None
    p = folder / Path(recorded).name
    return p if p.exists() else None


def _cases_without_summary(pred_dir: Path | None, ref_dir: Path | None, labels: dict[str, tuple[int, ...]],
                           ignore: int | None, missing: dict[str, str]) -> list[ReportCase]:
    from medseg.evaluation.metrics import case_metrics
    from medseg.io.image import read_image

    if pred_dir is None or ref_dir is None or not pred_dir.is_dir() or not ref_dir.is_dir():
        missing["cases"] = ("no predictions and references to show (looked for "
                            f"{pred_dir or 'a predictions folder'} and {ref_dir or 'a labelsTs folder'})")
        return []
    cases = []
    for ref in sorted(p for p in ref_dir.iterdir() if p.is_file() and has_image_suffix(p)):
        pred = pred_dir / ref.name
        if not pred.is_file():
            continue
        case_id = ref.name[: -len(image_suffix(ref))] if image_suffix(ref) else ref.stem
        metrics: dict[str, dict[str, Any]] = {}
        try:
            r, p = read_image(ref), read_image(pred)
            names = labels or {str(v): (int(v),) for v in np.union1d(np.unique(r.array), np.unique(p.array))
                               if v != 0 and v != ignore}
            if r.shape == p.shape and names:
                values = case_metrics(p.array.astype(np.int32), r.array.astype(np.int32), r.spacing,
                                      {k: list(v) for k, v in names.items()}, metrics=["dice"], ignore=ignore)
                metrics = {k: {"dice": finite(v["dice"])} for k, v in values.items()}
        except (MedsegError, ValueError):
            metrics = {}
        cases.append(ReportCase(case_id, metrics, pred, ref))
    if not cases:
        missing["cases"] = f"no prediction in {pred_dir} has a reference of the same name in {ref_dir}"
    return cases


def _find_image(case: ReportCase, dirs: list[Path], ending: str | None) -> Path | None:
    endings = [ending] if ending else []
    if case.ref is not None and image_suffix(case.ref):
        endings.append(image_suffix(case.ref))
    for d in dirs:
        for e in endings:
            for name in (f"{case.case_id}_0000{e}", f"{case.case_id}{e}"):
                if (d / name).is_file():
                    return d / name
    return None


def _mean_dice(metrics: Mapping[str, Mapping[str, Any]]) -> float:
    values = [finite(m.get("dice")) for m in metrics.values()]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


# ----------------------------------------------------------------------------- case volumes

@dataclass
class CaseViewer:
    case: ReportCase
    rank: int
    spec: dict | None
    data: str | None
    notes: list[str]


def _case_views(inputs: ReportInputs, out: Path, max_cases: int, max_side: int,
                max_voxels: int) -> tuple[list[CaseViewer], list[tuple[str, Path]]]:
    """Viewer payloads of the worst `max_cases` cases and the two PNG overlays."""
    for stale in list(out.parent.glob(f"{out.stem}_worst_*.png")) + list(out.parent.glob(f"{out.stem}_best_*.png")):
        stale.unlink(missing_ok=True)
    cases = [c for c in inputs.cases]
    scored = [c for c in cases if not math.isnan(c.mean_dice)]
    worst = scored[0] if scored else (cases[0] if cases else None)
    best = scored[-1] if scored else None
    figures: list[tuple[str, Path]] = []

    def figure(kind: str, case: ReportCase, vol: CaseVolume) -> None:
        z = worst_slice(vol.ref, vol.pred) if kind == "worst" else best_slice(vol.ref, vol.pred)
        dice = ", ".join(f"{name} {fmt(m.get('dice'), 'dice')}" for name, m in case.metrics.items())
        title = f"{case.case_id}, axial slice {z + 1}/{vol.ref.shape[0]} ({kind} slice of the {kind} case)"
        if dice:
            title += f"\nDice: {dice}"
        path = out.parent / f"{out.stem}_{kind}_{_safe(case.case_id)}_z{z:03d}.png"
        write_overlay_png(vol, z, inputs.window, inputs.labels, path, title)
        figures.append((f"{kind} slice of the {kind} case ({case.case_id}, axial slice {z + 1})", path))

    viewers = []
    done: set[str] = set()
    for rank, case in enumerate(cases[:max_cases], start=1):
        case.dom = f"case-{rank}"
        vol = _load(case)
        if vol is None:
            viewers.append(CaseViewer(case, rank, None, None, case.notes))
            continue
        spec, data = viewer_payload(vol, inputs.window, max_side, max_voxels)
        spec.update(dom=case.dom, data=f"vol-{rank}")
        viewers.append(CaseViewer(case, rank, spec, data, spec.pop("notes")))
        for kind, target in (("worst", worst), ("best", best)):
            if target is case:
                figure(kind, case, vol)
                done.add(kind)
    for kind, target in (("worst", worst), ("best", best)):
        if target is not None and kind not in done:
            vol = _load(target)
            if vol is not None:
                figure(kind, target, vol)
    return viewers, figures


def _load(case: ReportCase) -> CaseVolume | None:
    if case.pred is None or case.ref is None:
        case.notes.append("prediction or reference file not found")
        return None
    try:
        return load_case(case.case_id, case.pred, case.ref, case.image)
    except MedsegError as err:
        case.notes.append(f"cannot show this case: {err}")
        return None


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
