"""The report page as HTML: formatting, one function per section, and the page around them.

`render_page` assembles the sections from what `medseg.evaluation.report` gathered; the style and
script come from `report_assets`, the training charts from `report_svg`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from medseg.errors import MedsegError
from medseg.evaluation.report_assets import CSS, JS
from medseg.evaluation.report_svg import Series, line_chart
from medseg.evaluation.report_volume import class_color
from medseg.io.dataset import read_dataset_info
from medseg.io.labels import display_values, structures

if TYPE_CHECKING:
    from medseg.evaluation.report import CaseViewer, ReportCase, ReportInputs

# Per-case table columns, per class, in this order when the summary has them.
TABLE_METRICS = ("dice", "hd95", "assd", "nsd", "volume_rel_diff")
MEAN_METRICS = ("dice", "iou", "precision", "recall", "hd95", "hd", "assd", "nsd", "volume_rel_diff")
TITLES = {"dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall", "specificity": "Specificity",
          "hd95": "HD95 mm", "hd": "HD mm", "assd": "ASSD mm", "nsd": "NSD", "volume_rel_diff": "ΔVol %"}
DISTANCE_METRICS = {"hd95", "hd", "assd"}


def finite(v: Any) -> float | None:
    """`v` as a finite float, or None (missing, null, NaN, infinite, not a number)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------------- formatting

def fmt(v: Any, metric: str = "") -> str:
    f = finite(v)
    if f is None:
        return "–"
    if metric == "volume_rel_diff":
        return f"{100 * f:+.1f}"
    if metric in DISTANCE_METRICS:
        return f"{f:.2f}"
    if metric in ("dice", "iou", "precision", "recall", "specificity", "nsd"):
        return f"{f:.3f}"
    if abs(f) >= 1000 or float(f).is_integer():
        return f"{f:.0f}"
    return f"{f:.3g}"


def _td(v: Any, metric: str = "") -> str:
    f = finite(v)
    if f is None:
        return '<td class="na" data-sort="">–</td>'
    style = ""
    if metric in ("dice", "nsd"):
        style = f' style="background:hsl({int(120 * max(0.0, min(1.0, f)))},65%,90%)"'
    return f'<td data-sort="{f!r}"{style}>{fmt(f, metric)}</td>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], *, cls: str = "", num_from: int = 1,
           table_id: str | None = None, sorted_col: int | None = None) -> str:
    """Columns from `num_from` on sort as numbers (their cells carry `data-sort`)."""
    ths = []
    for i, h in enumerate(head):
        attrs = ' data-type="num"' if i >= num_from else ""
        if i == sorted_col:
            attrs += ' aria-sort="ascending"'
        ths.append(f"<th{attrs}>{h}</th>")
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table{ident} class="{cls}"><thead><tr>{"".join(ths)}</tr></thead><tbody>{body}</tbody></table>'


def _missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


def _vec(values: Iterable[Any], digits: int = 3) -> str:
    out = []
    for v in values:
        f = finite(v)
        out.append("–" if f is None else (f"{f:.0f}" if digits == 0 else f"{f:.{digits}g}"))
    return " × ".join(out)


def _plural(n: Any, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _card(key: str, value: str, sub: str = "") -> str:
    small = f" <small>{escape(sub)}</small>" if sub else ""
    return f'<div class="card"><div class="k">{escape(key)}</div><div class="v">{value}{small}</div></div>'


# ----------------------------------------------------------------------------- sections

def _overview(inputs: ReportInputs) -> str:
    cards = []
    fp = inputs.fingerprint or {}
    if fp:
        cards.append(_card("dataset", escape(str(fp.get("dataset_name", "?"))), _plural(fp.get("num_cases"), "training case")))
    s = inputs.summary
    if s is not None:
        cards.append(_card("cases evaluated", str(len(inputs.cases))))
        fg = s.get("foreground_mean", {})
        cards.append(_card("mean foreground Dice", fmt(fg.get("dice"), "dice")))
        for name in inputs.labels:
            m = s.get("mean", {}).get(name, {})
            cards.append(_card(f"{name}: Dice", fmt(m.get("dice"), "dice"),
                               f"HD95 {fmt(m.get('hd95'), 'hd95')} mm" if "hd95" in m else ""))
    elif inputs.cases:
        cards.append(_card("cases shown", str(len(inputs.cases))))
    scored = [c for c in inputs.cases if not math.isnan(c.mean_dice)]
    if scored:
        w, b = scored[0], scored[-1]
        cards.append(_card("worst case", _case_link(w), f"mean Dice {fmt(w.mean_dice, 'dice')}"))
        cards.append(_card("best case", _case_link(b), f"mean Dice {fmt(b.mean_dice, 'dice')}"))
    folds = _folds(inputs.workdir)
    if folds:
        cards.append(_card("trained folds", str(len(folds)), ", ".join(f"{c}/{f.name}" for c, f in folds[:3])
                           + (" …" if len(folds) > 3 else "")))
    if not cards:
        return _missing("Nothing to report yet: no fingerprint, plans, models or evaluation in this folder.")
    return f'<div class="cards">{"".join(cards)}</div>'


def _case_link(case: ReportCase) -> str:
    name = escape(case.case_id)
    return f'<a href="#{case.dom}">{name}</a>' if case.dom else name


def _evaluation(inputs: ReportInputs) -> str:
    s = inputs.summary
    parts = []
    if s is None:
        parts.append(_missing(f"No evaluation summary ({inputs.missing.get('evaluation', 'not found')}). "
                              "Run `medseg evaluate PRED_DIR REF_DIR` with its output in WORKDIR/evaluation, or "
                              "pass summary_path."))
        if inputs.cases:
            parts.append('<p class="note">The table below holds Dice computed by the report from the predictions '
                         'and references it found.</p>')
    else:
        metrics = [m for m in MEAN_METRICS if m in s.get("metrics", [])]
        settings = s.get("settings", {})
        parts.append(f'<p class="note">Predictions <code>{escape(str(s.get("prediction_dir", "?")))}</code>, '
                     f'references <code>{escape(str(s.get("reference_dir", "?")))}</code>. Surface distances: '
                     f'<code>{escape(str(settings.get("surface_method", "?")))}</code>; a structure missing on one '
                     f'side scores the image diagonal; cases without a class on both sides are left out of its '
                     f'means ({escape(str(settings.get("both_empty", "nan")))}). Relative volume difference ΔVol in '
                     f'percent. Definitions: docs/metrics.md.</p>')
        for key, title in (("mean", "Means over cases"),
                           ("mean_nonempty", "Means over the cases whose reference holds the class")):
            rows = []
            block = s.get(key, {})
            n_cases = s.get("n_cases", {}).get(key, {})
            for name in inputs.labels:
                m = block.get(name, {})
                rows.append([f'<td><span class="swatch" style="background:{class_color(inputs.labels[name])}">'
                             f'</span>{escape(name)}</td>', f"<td>{n_cases.get(name, '')}</td>"]
                            + [_td(m.get(x), x) for x in metrics])
            fg = s.get("foreground_" + key, {})
            rows.append(["<td><b>foreground</b> (mean of classes)</td>", "<td></td>"]
                        + [_td(fg.get(x), x) for x in metrics])
            table = _table(["class", "n"] + [TITLES.get(m, m) for m in metrics], rows)
            if key == "mean":
                parts.append(f"<h3>{title}</h3>{table}")
            else:
                parts.append(f"<details><summary>{title}</summary>{table}</details>")
    if inputs.cases:
        parts.append(_case_table(inputs))
    elif "cases" in inputs.missing and s is None:
        parts.append(_missing(inputs.missing["cases"]))
    return "".join(parts)


def _case_table(inputs: ReportInputs) -> str:
    present = set()
    for c in inputs.cases:
        for m in c.metrics.values():
            present.update(m)
    metrics = [m for m in TABLE_METRICS if m in present]
    head = ["case", "mean Dice"] + [f"{escape(name)} {TITLES.get(m, m)}" for name in inputs.labels for m in metrics]
    rows = []
    for c in inputs.cases:
        rows.append([f'<td data-sort="{escape(c.case_id)}">{_case_link(c)}</td>', _td(c.mean_dice, "dice")]
                    + [_td(c.metrics.get(name, {}).get(m), m) for name in inputs.labels for m in metrics])
    table = _table(head, rows, cls="sortable", table_id="case-table", sorted_col=1)
    return (f'<h3>Per case</h3><p class="note">{len(inputs.cases)} cases, worst first by mean foreground Dice '
            f'(the mean of the case\'s class Dice values that are defined). Click a column to sort; click a case to '
            f'open its slices.</p><div class="scroll">{table}</div>')


def _viewers(inputs: ReportInputs, viewers: list[CaseViewer], max_cases: int, max_side: int, max_voxels: int) -> str:
    if not viewers:
        if inputs.cases:
            return _missing("No case viewers (max_cases is 0).")
        return _missing("No case viewers: " + inputs.missing.get("cases", "no evaluated cases with predictions "
                                                                          "and references were found") + ".")
    legend = "".join(f'<span class="legend-item"><span class="swatch" style="background:{class_color(v)}"></span>'
                     f'{escape(name)}</span>' for name, v in inputs.labels.items())
    window = inputs.window
    window_note = (f"CT window {window[0]:.0f} to {window[1]:.0f} HU" if window
                   else "grey levels: each case's 0.5–99.5 percentiles")
    skipped = len(inputs.cases) - len(viewers)
    parts = [
        '<div class="controls" id="viewer-controls">'
        '<label>Reference <select id="ctl-ref"><option value="outline" selected>outline</option>'
        '<option value="fill">fill</option><option value="off">off</option></select></label>'
        '<label>Prediction <select id="ctl-pred"><option value="outline">outline (dashed)</option>'
        '<option value="fill" selected>fill</option><option value="off">off</option></select></label>'
        '<label>Fill opacity <input type="range" id="ctl-opacity" min="0.1" max="0.9" step="0.05" value="0.45">'
        '</label><label><input type="checkbox" id="ctl-cross" checked> crosshair</label>'
        f'<span>{legend}</span></div>',
        f'<p class="note">Worst cases first. Reference: solid outline; prediction: translucent fill (or dashed '
        f'outline). Each view has a slider; the strip under it shows how many voxels disagree per slice (click it '
        f'to jump); clicking a view moves the other two to that point. Views in array axes (z, y, x), z up in the '
        f'coronal and sagittal views; first image channel; {window_note}. Each case is embedded on at most '
        f'{max_side} voxels per axis and {max_voxels:,} voxels in all (subsampled where larger: the slice label '
        f'then gives the original voxel).'
        + (f" Only the {max_cases} worst of {len(inputs.cases)} cases have a viewer ({skipped} more are in the "
           f"table)." if skipped > 0 else "") + "</p>",
    ]
    for v in viewers:
        c = v.case
        scores = " · ".join(f"{escape(name)} {fmt(c.metrics.get(name, {}).get('dice'), 'dice')}"
                            for name in inputs.labels if name in c.metrics)
        head = (f'<h3><span class="rank">#{v.rank}</span>{escape(c.case_id)}</h3>'
                f'<div class="scores">mean Dice {fmt(c.mean_dice, "dice")}{" — Dice " + scores if scores else ""}'
                f'</div>')
        notes = "".join(f'<p class="note">{escape(n)}</p>' for n in v.notes)
        if v.spec is None:
            parts.append(f'<div class="viewer" id="{c.dom}">{head}{notes}</div>')
            continue
        axes = [0] if v.spec["shape"][0] == 1 else [0, 1, 2]
        views = "".join(
            f'<div class="view" data-axis="{a}"><div class="view-title"><span>{name}</span>'
            f'<span class="slice-label"></span></div><canvas class="slice" width="1" height="1"></canvas>'
            f'<canvas class="profile" width="1" height="1" title="voxels that disagree, per slice"></canvas>'
            f'<input type="range" min="0" max="0" value="0" disabled aria-label="{name} slice"></div>'
            for a, name in ((a, ("axial", "coronal", "sagittal")[a]) for a in axes))
        parts.append(f'<div class="viewer" id="{c.dom}">{head}{notes}<div class="viewer-status"></div>'
                     f'<div class="views">{views}</div></div>'
                     f'<script type="text/plain" id="{v.spec["data"]}">{v.data}</script>')
    return "".join(parts)


def _folds(wd: Path) -> list[tuple[str, Path]]:
    models = wd / "models"
    if not models.is_dir():
        return []
    out = []
    for config in sorted(p for p in models.iterdir() if p.is_dir()):
        for fold in sorted(p for p in config.iterdir() if p.is_dir() and p.name.startswith("fold_")):
            out.append((config.name, fold))
    return out


def _training(inputs: ReportInputs) -> str:
    folds = _folds(inputs.workdir)
    if not folds:
        return _missing(f"No trained models ({inputs.workdir / 'models'} holds no models/<config>/fold_<k>/).")
    parts = []
    for config, fold in folds:
        state, summary = None, None
        for name in ("checkpoint_final.json", "checkpoint_latest.json"):
            state = _json_object(fold / name)
            if state is not None and isinstance(state.get("history"), list):
                break
            state = None
        summary = _json_object(fold / "training.json")
        model = _json_object(fold.parent / "model.json") or {}
        parts.append(f"<h3>{escape(config)} / {escape(fold.name)}</h3>")
        facts = []
        if model.get("model"):
            facts.append(f"model <code>{escape(str(model['model']))}</code>")
        if summary:
            facts.append(f"{_plural(summary.get('epochs', '?'), 'epoch')} in {_duration(summary.get('elapsed_s'))}")
            facts.append(f"best pseudo Dice (moving average) {fmt(summary.get('best_pseudo_dice_ema'), 'dice')}")
            if summary.get("precision"):
                facts.append(f"precision {escape(str(summary['precision']))}")
            if isinstance(summary.get("train_cases"), list):
                facts.append(f"{len(summary['train_cases'])} training / {len(summary.get('val_cases') or [])} "
                             f"validation cases")
        elif state:
            facts.append(f"in progress or stopped: epoch {state.get('epoch', '?')} of {state.get('total_epochs', '?')}")
        if facts:
            parts.append(f'<p class="note">{"; ".join(facts)}.</p>')
        history = (state or {}).get("history") or []
        if not history:
            parts.append(_missing(f"No training history in {fold} (no checkpoint_latest.json with epochs)."))
            continue
        ep = [h.get("epoch", i + 1) for i, h in enumerate(history)]

        def col(key: str) -> list:
            return [h.get(key) for h in history]

        charts = [
            line_chart([Series("train loss", ep, col("train_loss"), "#2563eb"),
                        Series("validation loss", ep, col("val_loss"), "#dc2626")], title="Loss", y_label="loss"),
            line_chart([Series("pseudo Dice", ep, col("pseudo_dice"), "#16a34a", dash="3 3", width=1.2),
                        Series("moving average", ep, col("pseudo_dice_ema"), "#15803d")],
                       title="Pseudo Dice (validation)", y_label="Dice", y_range=(0.0, 1.0)),
            line_chart([Series("learning rate", ep, col("lr"), "#ea580c")], title="Learning rate", y_label="lr"),
            line_chart([Series("epoch time", ep, col("epoch_time_s"), "#7c3aed")], title="Epoch time",
                       y_label="seconds"),
        ]
        parts.append(f'<div class="charts">{"".join(charts)}</div>')
    return "".join(parts)


def _json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _duration(seconds: Any) -> str:
    f = finite(seconds)
    if f is None:
        return "?"
    return f"{f:.0f} s" if f < 120 else (f"{f / 60:.1f} min" if f < 7200 else f"{f / 3600:.1f} h")


def _plans(inputs: ReportInputs) -> str:
    raw = inputs.plans
    if raw is None:
        return _missing(f"No plans ({inputs.missing.get('plans', 'plans.json not found')}). Run `medseg plan`.")
    from medseg.planning.plans import Plans

    parts = []
    try:
        plans = Plans.load(inputs.workdir / "plans.json")
        names = plans.names()
    except (MedsegError, TypeError, KeyError, ValueError) as err:
        plans, names = None, []
        parts.append(_missing(f"plans.json could not be read as plans: {err}"))
    columns: list[tuple[str, list[tuple[str, str]], list[str]]] = []
    for name in names:
        try:
            c = plans.configuration(name)
        except MedsegError as err:
            parts.append(_missing(str(err)))
            continue
        opts = c.model_options
        columns.append((name, [
            ("network", f"{c.model}, {c.spatial_dims}D"),
            ("target spacing (mm)", _vec(c.target_spacing)),
            ("median shape at that spacing", _vec(c.median_shape, 0) if c.median_shape else "–"),
            ("patch size", _vec(c.patch_size, 0)),
            ("batch size", str(c.batch_size)),
            ("features per stage", " ".join(map(str, opts.get("features", []))) or "–"),
            ("strides", " ".join("×".join(map(str, s)) for s in opts.get("strides", [])) or "–"),
            ("kernel sizes", " ".join("×".join(map(str, k)) for k in opts.get("kernel_sizes", [])) or "–"),
            ("deep supervision", str(opts.get("deep_supervision", "–"))),
            ("normalisation", ", ".join(c.normalization)),
            ("loss", c.loss),
            ("resampling", ", ".join(f"{k} {v}" for k, v in c.resampling.items())),
            ("predicted memory", f"{c.predicted_memory_gb} GB" if c.predicted_memory_gb is not None else "–"),
        ], list(c.notes)))
    if columns:
        # One column per configuration, so they compare side by side.
        head = "".join(f"<th class=\"left\">{escape(name)}</th>" for name, _, _ in columns)
        body = ""
        for i, (key, _) in enumerate(columns[0][1]):
            body += f"<tr><td>{escape(key)}</td>" + "".join(
                f"<td class=\"left\">{escape(rows[i][1])}</td>" for _, rows, _ in columns) + "</tr>"
        body += "<tr><td>planner's notes</td>" + "".join(
            "<td class=\"left wrap\"><ul class=\"note\">" + "".join(f"<li>{escape(n)}</li>" for n in notes)
            + "</ul></td>" for _, _, notes in columns) + "</tr>"
        parts.append(f"<table class=\"plans\"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append(f"<details><summary>plans.json</summary><pre>{escape(json.dumps(raw, indent=2))}</pre></details>")
    return "".join(parts)


def _dataset(inputs: ReportInputs) -> str:
    fp = inputs.fingerprint
    parts = []
    if inputs.dataset is not None:
        try:
            desc = read_dataset_info(inputs.dataset).raw.get("description")
        except MedsegError:
            desc = None
        parts.append(f'<p class="note">Dataset folder <code>{escape(str(inputs.dataset))}</code>.'
                     + (f" {escape(str(desc))}" if desc else "") + "</p>")
    if fp is None:
        parts.append(_missing(f"No fingerprint ({inputs.missing.get('fingerprint', 'not found')}). "
                              "Run `medseg fingerprint`."))
        return "".join(parts)
    cases = [c for c in fp.get("cases", []) if isinstance(c, dict)]
    labels = structures(fp.get("labels") or {})
    colors = display_values(fp.get("labels") or {}, fp.get("regions_class_order"))
    channels = fp.get("channel_names") or []
    parts.append('<div class="cards">' + "".join([
        _card("training cases", str(fp.get("num_cases", len(cases)))),
        _card("channels", escape(", ".join(map(str, channels)) or "?")),
        _card("classes", escape(", ".join(labels) or "?")),
        _card("median spacing (mm)", escape(_vec(fp.get("median_spacing", [])))),
        _card("median shape after crop", escape(_vec(fp.get("median_shape_after_crop", []), 0))),
    ]) + "</div>")
    if cases:
        rows = []
        spacings = np.array([c.get("spacing", []) for c in cases], dtype=float)
        shapes = np.array([c.get("shape", []) for c in cases], dtype=float)
        if spacings.ndim == 2 and spacings.size:
            for i, ax in enumerate("zyx"[-spacings.shape[1]:]):
                rows.append([f"<td>spacing {ax} (mm)</td>"] + [f"<td>{f(spacings[:, i]):.3g}</td>"
                                                              for f in (np.min, np.median, np.max)])
        if shapes.ndim == 2 and shapes.size:
            for i, ax in enumerate("zyx"[-shapes.shape[1]:]):
                rows.append([f"<td>shape {ax} (voxels)</td>"] + [f"<td>{f(shapes[:, i]):.0f}</td>"
                                                                for f in (np.min, np.median, np.max)])
        volumes = {name: [_volume_ml(c, v) for c in cases] for name, v in labels.items()}
        for name, vals in volumes.items():
            vals = [v for v in vals if v is not None]
            if vals:
                rows.append([f'<td><span class="swatch" style="background:{class_color(colors[name])}"></span>'
                             f'{escape(name)} volume (mL)</td>']
                            + [f"<td>{f(vals):.3g}</td>" for f in (np.min, np.median, np.max)])
        parts.append("<h3>Across cases</h3>" + _table(["", "min", "median", "max"], rows))
        case_rows = []
        for c in cases:
            case_rows.append([f"<td>{escape(str(c.get('case_id', '?')))}</td>",
                              f"<td data-sort=\"{_prod(c.get('spacing'))}\">{escape(_vec(c.get('spacing', [])))}</td>",
                              f"<td data-sort=\"{_prod(c.get('shape'))}\">{escape(_vec(c.get('shape', []), 0))}</td>"]
                             + [_td(_volume_ml(c, v)) for v in labels.values()])
        parts.append(f"<details><summary>Every training case ({len(cases)})</summary><div class=\"scroll\">"
                     + _table(["case", "spacing (mm)", "shape"] + [f"{escape(n)} (mL)" for n in labels], case_rows,
                              cls="sortable") + "</div></details>")
    intensity = fp.get("intensity") or []
    if intensity:
        keys = ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")
        rows = [[f"<td>{escape(str(channels[i]) if i < len(channels) else str(i))}</td>"]
                + [f"<td>{fmt(st.get(k))}</td>" for k in keys] for i, st in enumerate(intensity)]
        parts.append("<h3>Foreground intensities</h3>"
                     + _table(["channel", "mean", "std", "median", "min", "max", "0.5 %", "99.5 %"], rows))
    return "".join(parts)


def _prod(values: Any) -> str:
    try:
        return repr(float(np.prod([float(v) for v in values])))
    except (TypeError, ValueError):
        return ""


def _volume_ml(case: Mapping[str, Any], values: Iterable[int]) -> float | None:
    """Volume in mL of the voxels holding any of `values` (a class, or a region's values)."""
    counts = case.get("label_voxels") or {}
    spacing = case.get("spacing") or []
    if not counts or not spacing:
        return None
    return sum(float(counts.get(str(v), 0)) for v in values) * float(np.prod(spacing)) / 1000.0


def _figures(figures: list[tuple[str, Path]]) -> str:
    if not figures:
        return ""
    items = "".join(f"<li>{escape(caption)}: <a href=\"{escape(p.name)}\"><code>{escape(p.name)}</code></a></li>"
                    for caption, p in figures)
    return (f'<h3>Figures</h3><p class="note">PNG overlays written beside this page (reference outlines, '
            f'prediction fills, 150 dpi):</p><ul>{items}</ul>')


def render_page(inputs: ReportInputs, viewers: list[CaseViewer], figures: list[tuple[str, Path]], *, max_cases: int,
          max_side: int, max_voxels: int) -> str:
    from medseg import __version__

    name = (inputs.fingerprint or {}).get("dataset_name") or inputs.workdir.name
    meta = {
        "labels": [{"name": n, "value": v, "color": class_color(v)} for n, v in inputs.labels.items()],
        "viewers": [v.spec for v in viewers if v.spec is not None],
    }
    meta_json = json.dumps(meta, separators=(",", ":")).replace("<", "\\u003c")
    sections = [
        ("overview", "Overview", _overview(inputs)),
        ("evaluation", "Evaluation", _evaluation(inputs) + _figures(figures)),
        ("cases", "Cases", _viewers(inputs, viewers, max_cases, max_side, max_voxels)),
        ("training", "Training", _training(inputs)),
        ("plans", "Plans", _plans(inputs)),
        ("dataset", "Dataset", _dataset(inputs)),
    ]
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title, _ in sections)
    body = "".join(f'<section class="block" id="{sid}"><h2>{title}</h2>{html}</section>' for sid, title, html in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>medseg report: {escape(str(name))}</title><style>{CSS}</style></head><body>"
        f"<header class=\"top\"><h1>medseg report: {escape(str(name))}</h1>"
        f"<div class=\"sub\">working directory <code>{escape(str(inputs.workdir))}</code> · "
        f"written {stamp} by medseg {escape(__version__)} · self-contained: no network needed</div></header>"
        f"<nav class=\"toc\">{nav}</nav><main>{body}</main>"
        f"<script type=\"application/json\" id=\"medseg-meta\">{meta_json}</script>"
        f"<script>{JS}</script></body></html>\n"
    )
