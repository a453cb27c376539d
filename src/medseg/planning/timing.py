"""How long one training iteration takes: measured on the local device, else estimated from FLOPs.

`training_flops` counts the convolutions of one training step of the dynamic U-Net
(forward, and a backward pass that costs twice the forward: gradients of the inputs and of
the weights). `estimate_iteration_seconds` divides by a stated rate per device
(`DEVICE_FLOPS`). `predict_iteration_seconds` measures real steps instead when the device is
the local one: in a fresh process (`measure.measure_training_step`), and on a smaller patch
of the same network when the full one would take longer than `max_seconds` to measure, the
measured time then scaled by the ratio of FLOPs.
"""

from __future__ import annotations

from dataclasses import replace
from math import prod
from typing import Any

from medseg.planning.measure import StepSpec, measure_training_step
from medseg.planning.memory import stage_shapes

# Effective training throughput in FLOP/s (convolution FLOPs only; normalisation, activation
# and loss are memory-bound and folded into the rate). "cpu" is for two threads of this
# project's 2-core AVX2 machine in fp32: one thread measured 13.5 GFLOP/s on a 4-feature
# network, 41 on 16-128 features and 54-65 on the demo's and a 32-320 plan; two threads add
# about 1.7x, and the quiet demo's training reached 99 (docs/planning.md). The rate errs low so
# that a measurement is never planned on a patch too large to finish. "cuda" is a stated rate
# for mixed-precision 3D U-Net training on a mid-range 8 GB GPU, not a measurement.
DEVICE_FLOPS = {"cpu": 50e9, "cuda": 10e12}
# A measurement runs a warm-up step and two timed steps in a fresh process that needs a few
# seconds to start.
MEASURED_STEPS = 2
PROCESS_START_S = 5.0


def forward_macs_per_sample(spec: StepSpec) -> int:
    """Multiply-accumulates of the convolutions in one forward pass, for one sample."""
    vox = [prod(s) for s in stage_shapes(spec.patch_size, spec.strides)]
    feats, n = spec.features, spec.conv_per_stage
    total, ch = 0, spec.in_channels
    for s, (f, v) in enumerate(zip(feats, vox)):
        kv = prod(spec.kernel_sizes[s])
        total += (ch * f + (n - 1) * f * f) * kv * v
        ch = f
    heads = _head_stages(spec)
    for s in range(len(feats) - 1):
        f, v, kv = feats[s], vox[s], prod(spec.kernel_sizes[s])
        total += feats[s + 1] * f * v  # transposed convolution (kernel = stride)
        total += (2 * f * f + (n - 1) * f * f) * kv * v
        if s in heads:
            total += f * spec.num_classes * v
    return int(total)


def _head_stages(spec: StepSpec) -> set[int]:
    n = len(spec.features)
    if not spec.deep_supervision or n <= 2:
        return {0}
    return set(range(n - 2))


def training_flops(spec: StepSpec) -> float:
    """FLOPs of one training step: 2 per multiply-accumulate, 3 passes (forward, two backward)."""
    return 2.0 * 3.0 * spec.batch_size * forward_macs_per_sample(spec)


def estimate_iteration_seconds(spec: StepSpec, device: str) -> float:
    """Seconds per training iteration at the stated rate of `device` ('cpu' or 'cuda')."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return training_flops(spec) / DEVICE_FLOPS[kind]


def is_local(device: str) -> bool:
    """Whether training steps on `device` can be measured here."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.is_available()
    return True


def reduced_for_measuring(spec: StepSpec, max_seconds: float, steps: int = MEASURED_STEPS) -> StepSpec:
    """The same network on a smaller patch (one stride step off the largest axis at a time,
    never below twice the total stride, so the lowest stage keeps 2 voxels per axis for its
    instance norm) whose measurement (start, warm-up and timed steps) should fit in
    `max_seconds` at the CPU rate; `spec` itself when it already fits or cannot shrink."""
    divisor = [prod(s[a] for s in spec.strides) for a in range(spec.spatial_dims)]
    patch = list(spec.patch_size)

    def cost(p: list[int]) -> float:
        return PROCESS_START_S + (steps + 1) * estimate_iteration_seconds(replace(spec, patch_size=tuple(p)), "cpu")

    while cost(patch) > max_seconds:
        shrinkable = [a for a in range(len(patch)) if patch[a] > 2 * divisor[a]]
        if not shrinkable:
            break
        a = max(shrinkable, key=lambda i: patch[i] / divisor[i])
        patch[a] -= divisor[a]
    return replace(spec, patch_size=tuple(patch))


def predict_iteration_seconds(spec: StepSpec, device: str, measure: bool = True, max_seconds: float = 60.0,
                              steps: int = MEASURED_STEPS) -> dict[str, Any]:
    """Seconds one training iteration takes on `device`, and how that was found.

    With `measure` and a local device: `steps` real steps are timed after a warm-up step (on a
    smaller patch, scaled by FLOPs, when the full patch would take longer than `max_seconds`
    to measure). Otherwise the FLOP count at `DEVICE_FLOPS[device]`. Returns `{seconds, how}`, and when measured also
    `measurement` (what `measure_training_step` returned, peak bytes included)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if not (measure and is_local(kind)):
        rate = DEVICE_FLOPS[kind]
        return {"seconds": estimate_iteration_seconds(spec, kind),
                "how": f"estimated: {training_flops(spec) / 1e9:.3g} GFLOP at {rate / 1e9:.4g} GFLOP/s ({kind})"}
    small = reduced_for_measuring(spec, max_seconds, steps)
    result = measure_training_step(small, device=kind, steps=steps)
    seconds = result["step_seconds"]
    if small.patch_size == spec.patch_size:
        return {"seconds": seconds, "how": f"measured: median of {steps} training steps on {kind}",
                "measurement": result}
    seconds *= training_flops(spec) / training_flops(small)
    return {"seconds": seconds, "measurement": result,
            "how": f"measured on patch {'x'.join(map(str, small.patch_size))} ({kind}), scaled by FLOPs"}
