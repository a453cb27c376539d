"""The table `medseg models` prints: every registered name, its paper, its size."""

from __future__ import annotations

from medseg.models.registry import available, create_model, model_entry


def catalogue_rows(in_channels: int = 1, num_classes: int = 3) -> list[dict[str, str]]:
    rows = []
    for name in available():
        entry = model_entry(name)
        counts = []
        divisors = []
        for dims in entry.dims:
            m = create_model(name, spatial_dims=dims, in_channels=in_channels, num_classes=num_classes)
            counts.append(f"{dims}D {sum(p.numel() for p in m.parameters()) / 1e6:.2f} M")
            div = getattr(m, "divisor", None)
            divisors.append(f"{dims}D x{'x'.join(map(str, div))}" if div else f"{dims}D any")
        rows.append({"name": name, "paper": entry.paper, "parameters": ", ".join(counts),
                     "input": "multiples of " + ", ".join(divisors), "summary": entry.summary})
    return rows


def format_catalogue(in_channels: int = 1, num_classes: int = 3) -> str:
    rows = catalogue_rows(in_channels, num_classes)
    head = f"parameters for {in_channels} input channel(s) and {num_classes} classes, default options"
    cols = ["name", "parameters", "input", "paper"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = [head, "  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)
