"""Small inline SVG line charts for the HTML report: no JavaScript and no library needed.

`line_chart` draws one or more series against a shared x axis with ticks, grid lines, axis
titles and a legend. The output is a self-contained ``<svg>`` element (a string).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence


@dataclass
class Series:
    """One line. `ys` may hold None or NaN for missing points (the line breaks there)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str
    dash: str = ""
    width: float = 1.8
    points: list[tuple[float, float]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.points = [(float(x), float(y)) for x, y in zip(self.xs, self.ys)
                       if y is not None and math.isfinite(float(y))]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of 10)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.0e}"
    if a >= 10 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def line_chart(series: Sequence[Series], *, title: str, x_label: str = "epoch", y_label: str = "",
               y_range: tuple[float, float] | None = None, width: int = 276, height: int = 220,
               integer_x: bool = True) -> str:
    """An SVG chart of `series`. `y_range` fixes the y axis (default: the data's range, padded);
    `integer_x` keeps only whole-number ticks on the x axis (epochs)."""
    pts = [p for s in series for p in s.points]
    left, right, top, bottom = 52, 12, 26, 40
    legend_h = 16 * ((len(series) + 1) // 2)
    plot_w, plot_h = width - left - right, height - top - bottom - legend_h
    out = [f'<svg class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="10" y="16" class="chart-title">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
                   f'class="chart-empty">no data</text></svg>')
        return "".join(out)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y_range is not None:
        y0, y1 = y_range
    else:
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.06 or (abs(y1) * 0.1 or 1.0)
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="chart-bg"/>')
    for t in nice_ticks(y0, y1, 4):
        if y0 - 1e-12 <= t <= y1 + 1e-12:
            y = sy(t)
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                       f'<text x="{left - 5}" y="{y + 3.5:.1f}" text-anchor="end" class="tick">{_fmt_tick(t)}</text>')
    xticks = [t for t in nice_ticks(x0, x1, 5) if x0 - 1e-9 <= t <= x1 + 1e-9
              and (not integer_x or float(t).is_integer())]
    for t in xticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 13}" text-anchor="middle" class="tick">{_fmt_tick(t)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 27}" text-anchor="middle" class="axis">'
               f'{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(12 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" '
                   f'class="axis">{escape(y_label)}</text>')
    for s in series:
        if not s.points:
            continue
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        if len(s.points) == 1:
            x, y = s.points[0]
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.color}"/>')
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s.points))
        out.append(f'<path d="{d}" fill="none" stroke="{s.color}" stroke-width="{s.width}"{dash} '
                   f'stroke-linejoin="round"/>')
    for i, s in enumerate(series):
        lx = left + (i % 2) * (plot_w / 2)
        ly = top + plot_h + 36 + 16 * (i // 2)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 18:.1f}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="{s.color}" '
                   f'stroke-width="2"{dash}/><text x="{lx + 23:.1f}" y="{ly + 4:.1f}" class="legend">'
                   f'{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)
