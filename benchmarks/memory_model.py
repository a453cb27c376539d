"""The memory model against measured peaks of real training steps on this machine's CPU.

Each configuration below is measured with `medseg.planning.measure.measure_training_step`
(the real DynUNet, deep-supervised Dice + CE, backward, an SGD step: the constants are fitted on
SGD steps, and AdamW's second buffer per weight is counted exactly on top; in a fresh process; peak
resident memory over a step minus the resident memory before the network was built). The
three CPU constants of `medseg.planning.memory` (HEAP_FRAGMENTATION, WORKSPACE_MAPS["cpu"],
CPU_OVERHEAD_BYTES) are fitted by least squares on the relative error over the "fit" rows
only; the "check" rows are held out. The script prints the constants and a Markdown table
(docs/planning.md holds its output), and the CPU's training rate in GFLOP/s
(`timing.DEVICE_FLOPS["cpu"]`).

Run: `python benchmarks/memory_model.py [--results FILE.jsonl]`. Measurements are read from
FILE, missing ones are measured and appended (the whole set takes about 20 minutes). The
default FILE, `benchmarks/memory_model_cpu.jsonl`, holds this machine's measurements, so the
fit and table can be rerun without measuring; point `--results` at a new file to measure
another machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from medseg.planning import memory
from medseg.planning.measure import StepSpec, measure_training_step
from medseg.planning.timing import training_flops

MIB = 1024**2


def _iso(dims: int, n: int) -> tuple[list[list[int]], list[list[int]]]:
    return [[3] * dims] * n, [[1] * dims] + [[2] * dims] * (n - 1)


_A, _KA, _I, _K = [1, 2, 2], [1, 3, 3], [1, 1, 1], [3, 3, 3]
# (role, patch, batch, in_channels, classes, features, kernels, strides, timed steps)
CONFIGS = [
    ("fit", [32, 32, 32], 2, 1, 3, [8, 16, 32], *_iso(3, 3), 2),
    ("check", [32, 32, 32], 4, 1, 3, [8, 16, 32], *_iso(3, 3), 2),
    ("fit", [32, 48, 48], 2, 1, 2, [8, 16, 32, 64], *_iso(3, 4), 2),
    ("check", [32, 32, 32], 2, 2, 4, [16, 32, 64, 128], *_iso(3, 4), 2),
    ("fit", [16, 64, 64], 2, 1, 3, [8, 16, 32, 64], [_KA, _K, _K, _K], [_I, _A, [2, 2, 2], [2, 2, 2]], 2),
    ("check", [8, 96, 96], 2, 1, 2, [8, 16, 32], [_KA, _KA, _K], [_I, _A, _A], 2),
    ("fit", [48, 48, 48], 2, 1, 3, [8, 16, 32, 64, 128], *_iso(3, 5), 2),
    ("check", [24, 80, 80], 3, 1, 5, [4, 8, 16, 32, 64], [_KA, _K, _K, _K, _K], [_I, _A] + [[2, 2, 2]] * 3, 2),
    ("fit", [64, 64, 64], 2, 1, 2, [4, 8, 16, 32, 64], *_iso(3, 5), 2),
    ("check", [40, 40, 40], 2, 1, 3, [16, 32, 64, 128], *_iso(3, 4), 2),
    ("fit", [32, 64, 64], 2, 1, 3, [16, 32, 64, 128], *_iso(3, 4), 2),
    ("check", [16, 32, 32], 8, 1, 3, [16, 32, 64], *_iso(3, 3), 2),
    ("fit", [32, 96, 96], 2, 1, 2, [16, 32, 64, 128, 256], [_K] * 5, [_I, _A] + [[2, 2, 2]] * 3, 1),
    ("check", [128, 128], 4, 1, 3, [16, 32, 64, 128], *_iso(2, 4), 2),
    ("fit", [256, 256], 2, 1, 4, [16, 32, 64, 128, 256], *_iso(2, 5), 2),
    ("check", [192, 160], 8, 3, 2, [8, 16, 32, 64], *_iso(2, 4), 2),
    ("fit", [256, 256], 2, 1, 3, [32, 64, 128, 256, 512], *_iso(2, 5), 2),
    ("check", [512, 512], 2, 1, 3, [32, 64, 128, 256, 512, 512], *_iso(2, 6), 1),
    ("fit", [384, 384], 4, 1, 2, [16, 32, 64, 128, 256], *_iso(2, 5), 1),
    ("check", [128, 128], 16, 1, 8, [8, 16, 32, 64], *_iso(2, 4), 2),
    ("fit", [512, 512], 3, 1, 2, [24, 48, 96, 192, 384], *_iso(2, 5), 1),
    ("check", [64, 64], 32, 2, 3, [32, 64, 128], *_iso(2, 3), 2),
    # Narrow networks (4 features in the first stage, as small CPU plans have).
    ("fit", [16, 48, 48], 2, 1, 4, [4, 8, 16, 32], [_KA, _K, _K, _K], [_I, _A, [2, 2, 2], [2, 2, 2]], 2),
    ("check", [32, 40, 40], 2, 1, 3, [4, 8, 16, 32], *_iso(3, 4), 2),
    ("fit", [48, 48, 48], 2, 1, 2, [4, 8, 16, 32], *_iso(3, 4), 2),
    ("check", [24, 48, 48], 3, 1, 3, [4, 8, 16], *_iso(3, 3), 2),
    ("fit", [160, 160], 4, 1, 4, [4, 8, 16, 32], *_iso(2, 4), 2),
    # The configurations tests/planning/test_memory.py measures (with the plan above).
    ("check", [16, 32, 32], 3, 1, 3, [8, 16, 32], *_iso(3, 3), 2),
    ("check", [8, 64, 64], 2, 1, 2, [8, 16, 32], [_KA, _K, _K], [_I, _A, [2, 2, 2]], 2),
    ("check", [96, 96], 8, 2, 4, [16, 32, 64], *_iso(2, 3), 2),
]


def spec_of(row: tuple) -> StepSpec:
    _, patch, batch, cin, classes, feats, kernels, strides, _ = row
    return StepSpec.make(patch, batch, cin, classes, feats, kernels, strides)


def measure_all(results: Path) -> dict[str, dict]:
    """Measurements keyed by the spec's JSON, reusing and extending `results`."""
    done: dict[str, dict] = {}
    if results.exists():
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            # Records made before StepSpec named its optimiser measured SGD steps: the default.
            done[json.dumps(StepSpec.make(**rec["spec"]).to_dict(), sort_keys=True)] = rec
    for row in CONFIGS:
        spec = spec_of(row)
        key = json.dumps(spec.to_dict(), sort_keys=True)
        if key in done:
            continue
        rec = {"spec": spec.to_dict(), **measure_training_step(spec, steps=row[-1])}
        done[key] = rec
        with results.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"measured {spec.patch_size} batch {spec.batch_size}: {rec['peak_bytes'] / MIB:.0f} MiB", flush=True)
    return done


def parts(spec: StepSpec) -> dict[str, float]:
    """The model's terms with unit constants: the counted part, saved bytes on the heap, the
    full-resolution feature map of the first stage, and whether such maps are heap blocks."""
    e = memory.estimate_training_memory(spec.patch_size, spec.batch_size, spec.in_channels, spec.num_classes,
                                        spec.features, spec.kernel_sizes, spec.strides, device="cpu",
                                        optimizer=spec.optimizer)
    saved = memory.saved_tensor_bytes(spec.patch_size, spec.batch_size, spec.features, spec.strides,
                                      spec.in_channels, spec.num_classes)
    voxels = int(np.prod(spec.patch_size)) * spec.batch_size
    fmap = spec.features[0] * voxels * 4
    return {"fixed": e.activations + e.parameters + e.gradients + e.optimizer,
            "heap": sum(t for t in saved if t < memory.GLIBC_MMAP_MAX), "fmap": fmap,
            "small": float(fmap < memory.GLIBC_MMAP_MAX)}


def fit(rows: list[tuple[dict[str, float], float]]) -> tuple[float, float, float]:
    """HEAP_FRAGMENTATION, WORKSPACE_MAPS and CPU_OVERHEAD (MiB) minimising the squared
    relative error: a grid over the first two, least squares for the overhead."""
    y = np.array([m for _, m in rows], dtype=float)
    p = {k: np.array([r[k] for r, _ in rows], dtype=float) for k in rows[0][0]}
    phi, work = np.meshgrid(np.arange(0, 1.5, 0.01), np.arange(0, 12, 0.05), indexing="ij")
    phi, work = phi[..., None], work[..., None]
    transient = work * p["fmap"]
    pred = p["fixed"] + phi * (p["heap"] + p["small"] * transient) + transient
    # The overhead (>= 0) that minimises sum(((pred + c) / y - 1) ** 2) for each grid point.
    c = np.maximum(0, np.sum((1 - pred / y) / y, axis=-1) / np.sum(1 / y**2))
    err = np.sum(((pred + c[..., None]) / y - 1) ** 2, axis=-1)
    i = np.unravel_index(np.argmin(err), err.shape)
    return float(phi[i][0]), float(work[i][0]), float(c[i] / MIB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("memory_model_cpu.jsonl"),
                    help="measurements to reuse and extend (default: the ones docs/planning.md shows)")
    args = ap.parse_args()
    done = measure_all(args.results)
    table = []
    for row in CONFIGS:
        spec = spec_of(row)
        rec = done[json.dumps(spec.to_dict(), sort_keys=True)]
        table.append((row[0], spec, rec))
    phi, work, over = fit([(parts(s), r["peak_bytes"]) for role, s, r in table if role == "fit"])
    print(f"fitted now: HEAP_FRAGMENTATION = {phi:.3f}; WORKSPACE_MAPS['cpu'] = {work:.3f}; "
          f"CPU_OVERHEAD_BYTES = {over:.1f} MiB")
    print(f"in use: HEAP_FRAGMENTATION = {memory.HEAP_FRAGMENTATION}; WORKSPACE_MAPS['cpu'] = "
          f"{memory.WORKSPACE_MAPS['cpu']}; CPU_OVERHEAD_BYTES = {memory.CPU_OVERHEAD_BYTES / MIB:.1f} MiB\n")
    print("| role | patch | batch | features | classes | measured MiB | predicted MiB | error | s/step | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    errors: dict[str, list[float]] = {"fit": [], "check": []}
    rates = []
    for role, spec, rec in table:
        pred = memory.estimate_training_bytes(spec.patch_size, spec.batch_size, spec.in_channels, spec.num_classes,
                                              spec.features, spec.kernel_sizes, spec.strides, device="cpu",
                                              optimizer=spec.optimizer)
        err = pred / rec["peak_bytes"] - 1
        errors[role].append(err)
        rate = training_flops(spec) / rec["step_seconds"] / 1e9
        rates.append(rate)
        print(f"| {role} | {'x'.join(map(str, spec.patch_size))} | {spec.batch_size} | "
              f"{'-'.join(map(str, spec.features))} | {spec.num_classes} | {rec['peak_bytes'] / MIB:.0f} | "
              f"{pred / MIB:.0f} | {err:+.1%} | {rec['step_seconds']:.2f} | {rate:.1f} |")
    for role, errs in errors.items():
        print(f"\n{role}: {len(errs)} configurations, mean |error| {np.mean(np.abs(errs)):.1%}, "
              f"largest {max(errs, key=abs):+.1%}")
    print(f"CPU training rate: median {statistics.median(rates):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
