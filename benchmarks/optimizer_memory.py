"""Peak memory of a training step with SGD and with AdamW, against the planner's memory model.

AdamW keeps two buffers per weight where SGD keeps one; the memory model adds one fp32 copy of
the weights for AdamW (`planning.memory.OPTIMIZER_BUFFERS`). This measures both optimisers on a
`2d` network whose 7.8 M weights dominate the step (32 × 32 patch, batch 2, features 32-512),
each in `--repeats` fresh processes (`measure_training_step`, medians of 3 steps each), and
prints the medians over the repeats beside the model's predictions (docs/benchmarks.md).

Run: `python benchmarks/optimizer_memory.py [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import statistics

from medseg.planning.measure import StepSpec, measure_training_step
from medseg.planning.memory import estimate_training_bytes, parameter_count

MIB = 2**20
KERNELS, STRIDES, FEATURES = [[3, 3]] * 5, [[1, 1]] + [[2, 2]] * 4, [32, 64, 128, 256, 512]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    weights = 4 * parameter_count(1, FEATURES, KERNELS, 3, 2, STRIDES)
    print(f"weights: {weights / MIB:.1f} MiB (fp32)\n")
    print("| optimiser | measured MiB (median of repeats) | each | predicted MiB | error |")
    print("|---|---|---|---|---|")
    measured = {}
    for opt in ("sgd", "adamw"):
        spec = StepSpec.make([32, 32], 2, 1, 3, FEATURES, KERNELS, STRIDES, optimizer=opt)
        peaks = [measure_training_step(spec, steps=3)["peak_bytes"] for _ in range(args.repeats)]
        measured[opt] = statistics.median(peaks)
        pred = estimate_training_bytes(spec.patch_size, 2, 1, 3, FEATURES, KERNELS, STRIDES, optimizer=opt)
        print(f"| {opt} | {measured[opt] / MIB:.1f} | {', '.join(f'{p / MIB:.1f}' for p in peaks)} | "
              f"{pred / MIB:.1f} | {pred / measured[opt] - 1:+.1%} |")
    print(f"\nAdamW - SGD: measured {(measured['adamw'] - measured['sgd']) / MIB:.1f} MiB, "
          f"model {weights / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
