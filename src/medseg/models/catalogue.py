"""The table `medseg models` prints: every registered name, its paper, its size, its inputs.

Models are built on the meta device: counting the 134 M parameters of FCN allocates nothing.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from medseg.models.registry import Reference, available, create_model, model_entry

DEFAULT_INPUT = (1, 3)  # channels, classes: where a paper states no input for a dimensionality


def parameter_count(model: nn.Module, part: str | None = None, norm_statistics: bool = False) -> int:
    """Parameters of `model` (or of its sub-module `part`); with `norm_statistics` the running
    mean and variance of batch norms too, as some papers' tools counted them."""
    module = model.get_submodule(part) if part else model
    n = sum(p.numel() for p in module.parameters())
    if norm_statistics:
        n += sum(m.running_mean.numel() + m.running_var.numel() for m in module.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return n


def paper_range(text: str) -> tuple[float, float]:
    """The counts that reproduce a paper's figure: "19,069,955" (exact) within 2 %,
    "9.4 M" or "134 M" (rounded) within half a unit of its last digit."""
    exact = re.fullmatch(r"\s*([\d,]+)\s*", text)
    if exact:
        value = float(exact.group(1).replace(",", ""))
        return 0.98 * value, 1.02 * value
    rounded = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*M\s*", text)
    if not rounded:
        raise ValueError(f"cannot read a parameter count from {text!r}; write '19,069,955' or '9.4 M'")
    value = float(f"{rounded.group(1)}.{rounded.group(2) or 0}") * 1e6
    half_unit = 0.5 * 10.0 ** -len(rounded.group(2) or "") * 1e6
    return value - half_unit, value + half_unit


def _build(name: str, spatial_dims: int, in_channels: int, num_classes: int) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes)


def paper_check(name: str, reference: Reference) -> tuple[int, tuple[float, float]]:
    """medseg's count for a paper's configuration, counted as the paper did, and the range
    that reproduces the paper's figure."""
    model = _build(name, reference.spatial_dims, reference.in_channels, reference.num_classes)
    count = parameter_count(model, reference.part, reference.counts_norm_statistics)
    return count, paper_range(reference.paper_params or "")


def _millions(n: float) -> str:
    return f"{n / 1e6:.2f} M"


def catalogue_rows(in_channels: int | None = None, num_classes: int | None = None) -> list[dict[str, str]]:
    """One row per model. Counts are for `in_channels` -> `num_classes` when given, else for
    each model's paper input (channels -> classes) per dimensionality, or 1 -> 3 without one."""
    rows = []
    for name in available():
        entry = model_entry(name)
        row = {"name": name, "paper": entry.paper, "summary": entry.summary, "paper count": "-"}
        divisors = []
        for dims in (2, 3):
            if dims not in entry.dims:
                row[f"{dims}D"] = "-"
                continue
            ref = entry.reference(dims)
            ic, nc = (ref.in_channels, ref.num_classes) if ref else DEFAULT_INPUT
            ic, nc = in_channels or ic, num_classes or nc
            model = _build(name, dims, ic, nc)
            row[f"{dims}D"] = f"{_millions(parameter_count(model))} ({ic}->{nc})"
            div = getattr(model, "divisor", None)
            divisors.append(f"{dims}D x{div[0]}" if div and len(set(div)) == 1
                            else f"{dims}D {'x'.join(map(str, div))}" if div else f"{dims}D any")
            if ref and ref.paper_params:
                count, _ = paper_check(name, ref)
                what = f", {ref.part}" if ref.part else ""
                ours = f"{count:,}" if "M" not in ref.paper_params else _millions(count)
                row["paper count"] = f"{ref.paper_params} ({dims}D{what}); medseg {ours}"
        row["input"] = ", ".join(divisors)
        rows.append(row)
    return rows


def format_catalogue(in_channels: int | None = None, num_classes: int | None = None) -> str:
    rows = catalogue_rows(in_channels, num_classes)
    if in_channels or num_classes:
        head = (f"parameters for {in_channels or 'the paper'} input channel(s) -> {num_classes or 'the paper'} "
                "classes ('the paper': each paper's input, 1 -> 3 where it gives none)")
    else:
        head = "parameters for each paper's input (channels -> classes; 1 -> 3 where it gives none)"
    head += ", default options; input: spatial sizes must be multiples of the value shown"
    cols = ["name", "2D", "3D", "input", "paper count", "paper"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = [head, "  ".join(c.ljust(widths[c]) for c in cols).rstrip(), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def markdown_catalogue() -> str:
    """The same table in Markdown, for docs/models.md."""
    rows = catalogue_rows()
    cols = ["name", "2D", "3D", "input", "paper count", "paper"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)
