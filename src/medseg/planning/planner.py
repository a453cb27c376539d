"""From a fingerprint and a memory budget to plans: the self-configuration rules.

Each rule is a named function; docs/planning.md states them in prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable, Sequence

import numpy as np

from medseg.io.labels import LabelScheme
from medseg.planning.measure import StepSpec
from medseg.planning.memory import PLANNED_OPTIMIZER, estimate_training_bytes
from medseg.planning.timing import estimate_iteration_seconds, predict_iteration_seconds
from medseg.planning.plans import ConfigurationPlan, Plans
from medseg.preprocessing.normalize import scheme_for_channel

ANISOTROPY_RATIO = 3.0
MIN_FEATURE_MAP = 4
START_VOXELS = {2: 2048**2, 3: 256**3}
MAX_BATCH_FRACTION = 0.05
MIN_BATCH = 2
GB = 1024**3
# Plans fill at most this fraction of the budget: the memory model's largest underestimate in
# its CPU fitting table is 14 % (docs/planning.md), and the data loader's queued batches come on
# top. (A network whose weights dominate measured 11-16 % over; planning.md has it.)
MEMORY_HEADROOM = 0.85


@dataclass
class Topology:
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    patch_size: list[int]

    @property
    def divisor(self) -> list[int]:
        return [prod(s[a] for s in self.strides) for a in range(len(self.patch_size))]


def rule_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], list[str]]:
    """Median spacing per axis; for strongly anisotropic data the coarse axis takes the 10th
    percentile of its spacings (never finer than the coarsest other axis)."""
    target = np.median(spacings, axis=0)
    notes = [f"target spacing = median spacing {_r(target)}"]
    if len(target) < 2:
        return target.tolist(), notes
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > ANISOTROPY_RATIO * min(target[others])
    aniso_voxels = median_shape[worst] * ANISOTROPY_RATIO < min(median_shape[others])
    if aniso_spacing and aniso_voxels:
        coarse = max(float(np.percentile(spacings[:, worst], 10)), float(max(target[others])))
        notes.append(f"anisotropic: axis {worst} spacing {target[worst]:.3g} -> 10th percentile {coarse:.3g}")
        target[worst] = coarse
    return target.tolist(), notes


def rule_topology(spacing: Sequence[float], patch_size: Sequence[float], max_stages: int | None = None) -> Topology:
    """Strides and kernels per stage for a patch (z, y, x voxels) at `spacing` (mm).

    Stage by stage, an axis is down-sampled (stride 2) when
    - its feature map is at least 2 x MIN_FEATURE_MAP voxels, so it keeps at least 4 after
      halving (a map of n voxels halves to ceil(n / 2): the patch is padded to the total stride),
    - its spacing is below 2x the finest spacing among the axes that can still be down-sampled,
    - and, when it is the only such axis, its map is at least 3 x MIN_FEATURE_MAP (a lone axis
      is not halved down to the minimum).
    Kernels are 3 on an axis once its spacing is within 2x of the finest spacing, and 1 before,
    so a coarse axis is not mixed before the others catch up; once 3, they stay 3. The patch
    becomes a multiple of the total stride per axis. `max_stages` caps the depth (None: no cap,
    as in nnU-Net v2)."""
    dims = len(spacing)
    cur_spacing = list(map(float, spacing))
    cur_size = list(map(float, patch_size))
    kernel_on = [False] * dims
    kernels, strides = [], [[1] * dims]

    def update_kernels() -> None:
        finest = min(cur_spacing)
        for a in range(dims):
            kernel_on[a] = kernel_on[a] or cur_spacing[a] / finest < 2

    while max_stages is None or len(strides) < max_stages:
        update_kernels()
        kernels.append([3 if k else 1 for k in kernel_on])
        fits = [a for a in range(dims) if cur_size[a] >= 2 * MIN_FEATURE_MAP]
        finest_fit = min((cur_spacing[a] for a in fits), default=0.0)
        pool = [a for a in fits if cur_spacing[a] / finest_fit < 2]
        if not pool or (len(pool) == 1 and cur_size[pool[0]] < 3 * MIN_FEATURE_MAP):
            break
        strides.append([2 if a in pool else 1 for a in range(dims)])
        for a in pool:
            cur_spacing[a] *= 2
            cur_size[a] = float(np.ceil(cur_size[a] / 2))
    if len(kernels) < len(strides):
        update_kernels()
        kernels.append([3 if k else 1 for k in kernel_on])
    topo = Topology(kernels, strides, list(patch_size))
    topo.patch_size = [int(np.ceil(p / d) * d) for p, d in zip(patch_size, topo.divisor)]
    return topo


def rule_initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> list[float]:
    """A large patch with aspect 1/spacing (isotropic in millimetres), clipped to the median image.
    The median of an even number of cases may end in .5; it is kept (the topology pads the
    patch up to its total stride), as nnU-Net v2 does."""
    dims = len(spacing)
    aspect = 1.0 / np.asarray(spacing, dtype=float)
    aspect = aspect / prod(aspect) ** (1 / dims)
    patch = aspect * START_VOXELS[dims] ** (1 / dims)
    return [float(min(round(p), m)) for p, m in zip(patch, median_shape)]


def rule_shrink_patch(spacing: Sequence[float], topo: Topology, median_shape: Sequence[float]) -> list[int] | None:
    """One step down from `topo`'s patch: the axis largest relative to the median image (the
    last such axis on ties, as nnU-Net; the next one when it is already at its smallest) loses
    one stride step. The step is the total stride the smaller patch has on that axis, so a
    shallower network's valid sizes are not skipped (256 with stride 64 becomes 224, not 192).
    None when no axis can shrink any more."""
    rel = np.asarray(topo.patch_size, dtype=float) / np.maximum(np.asarray(median_shape, dtype=float), 1)
    for a in sorted(range(len(rel)), key=lambda i: (rel[i], i), reverse=True):
        patch = list(topo.patch_size)
        patch[a] -= topo.divisor[a]
        if patch[a] < MIN_FEATURE_MAP:
            continue
        finer = list(patch)
        finer[a] = topo.patch_size[a] - rule_topology(spacing, patch).divisor[a]
        # The finer step must still shrink once padded to its own network's stride.
        return finer if rule_topology(spacing, finer).patch_size[a] < topo.patch_size[a] else patch
    return None


def plan_configuration(name: str, spacings: np.ndarray, shapes: np.ndarray, *, in_channels: int,
                       num_classes: int, budget_gb: float, normalization: list[str], num_cases: int,
                       base_features: int = 32, max_patch_voxels: int | None = None,
                       model: str = "dynunet", target_spacing: Sequence[float] | None = None,
                       dataset_voxels: float | None = None, device: str = "cuda") -> ConfigurationPlan:
    """Plan one configuration: spacing, then the largest patch that fits the budget at
    batch 2 (patch preferred over batch), then spend what is left on the batch.
    `target_spacing` overrides the spacing rule (the low-resolution configuration uses it).
    `device` ('cpu' or 'cuda') selects the memory model's device and the iteration-time rate."""
    dims = spacings.shape[1]
    if target_spacing is None:
        target, notes = rule_target_spacing(spacings, shapes)
    else:
        target, notes = list(map(float, target_spacing)), [f"target spacing {_r(target_spacing)} (low resolution)"]
    # Each case's voxel counts after resampling (as preprocessing rounds them), then the median.
    resampled = np.maximum(np.round(shapes * spacings / np.asarray(target)), 1)
    median_shape = np.median(resampled, axis=0)
    patch = rule_initial_patch(target, median_shape)
    if max_patch_voxels and prod(patch) > max_patch_voxels:
        # Same aspect, smaller volume: a user's cap on compute per step (small CPU runs).
        f = (max_patch_voxels / prod(patch)) ** (1 / dims)
        patch = [max(MIN_FEATURE_MAP, int(p * f)) for p in patch]
    budget = MEMORY_HEADROOM * budget_gb * GB
    cap = 320 if dims == 3 else 512
    dtype = training_dtype(device)

    def bytes_at(topo: Topology, feats: list[int], batch: int) -> int:
        return estimate_training_bytes(topo.patch_size, batch, in_channels, num_classes, feats, topo.kernel_sizes,
                                       topo.strides, dtype=dtype, device=device, optimizer=PLANNED_OPTIMIZER)

    def derive(p: list[int]) -> tuple[Topology, list[int], int]:
        topo = rule_topology(target, p)
        feats = [min(base_features * 2**i, cap) for i in range(len(topo.strides))]
        return topo, feats, bytes_at(topo, feats, MIN_BATCH)

    topo, feats, mem = derive(patch)
    while mem > budget or (max_patch_voxels and prod(topo.patch_size) > max_patch_voxels):
        patch = rule_shrink_patch(target, topo, median_shape)
        if patch is None:
            notes.append("budget too small even for the smallest patch; kept the smallest")
            break
        topo, feats, mem = derive(patch)
    batch_fit = largest_batch(lambda b: bytes_at(topo, feats, b), budget)
    if dataset_voxels is None:
        dataset_voxels = float(np.sum(np.prod(resampled, axis=1)))
    batch_cap = max(MIN_BATCH, int(MAX_BATCH_FRACTION * dataset_voxels / prod(topo.patch_size)))
    batch = min(batch_fit, batch_cap)
    notes.append(f"batch {batch}: {batch_fit} fit the memory budget; a batch covers at most 5% of the "
                 f"dataset's voxels, {batch_cap} patches" + (" (capped)" if batch_fit > batch_cap else ""))
    mem = bytes_at(topo, feats, batch)
    spec = StepSpec.make(topo.patch_size, batch, in_channels, num_classes, feats, topo.kernel_sizes, topo.strides,
                         optimizer=PLANNED_OPTIMIZER)
    spacing_ratio = max(target) / min(target)
    # Resample z on its own (nearest along it) when it is the coarse axis of anisotropic data.
    separate_axis = 0 if dims == 3 and spacing_ratio > ANISOTROPY_RATIO and int(np.argmax(target)) == 0 else None
    return ConfigurationPlan(
        name=name, spatial_dims=dims, target_spacing=[round(float(t), 6) for t in target],
        patch_size=topo.patch_size, batch_size=batch, normalization=normalization, model=model,
        model_options={"features": feats, "kernel_sizes": topo.kernel_sizes, "strides": topo.strides,
                       "deep_supervision": True},
        resampling={"data": "spline", "label": "linear", "separate_axis": separate_axis},
        median_shape=[float(m) for m in median_shape],
        predicted_memory_gb=round(mem / GB, 3),
        predicted_iteration_s=round(estimate_iteration_seconds(spec, device), 3), notes=notes,
    )


def training_dtype(device: str) -> str:
    """The activations' dtype the trainer's `precision=auto` gives on `device`: bfloat16 or
    float16 autocast on a GPU (2 bytes either way), float32 on a CPU unless it runs bf16 natively."""
    if str(device).startswith("cuda"):
        return "bfloat16"
    from medseg.training.device import cpu_has_fast_bf16

    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def largest_batch(bytes_at_batch: Callable[[int], int], budget: float) -> int:
    """The largest batch (at least MIN_BATCH) whose predicted bytes fit the budget; bytes never
    fall as the batch grows, so: double until over, then bisect."""
    lo = MIN_BATCH
    if bytes_at_batch(lo) > budget:
        return lo
    hi = lo * 2
    while bytes_at_batch(hi) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if bytes_at_batch(mid) <= budget else (lo, mid)
    return lo


LOWRES_MIN_COVERAGE = 0.25
LOWRES_STEP = 1.03


def coverage(plan: ConfigurationPlan) -> float:
    """Fraction of the median image one patch covers."""
    return prod(plan.patch_size) / max(prod(plan.median_shape), 1)


def rule_lowres(full: ConfigurationPlan, spacings: np.ndarray, shapes: np.ndarray,
                **common: Any) -> ConfigurationPlan | None:
    """`3d_lowres` when the full-resolution patch covers less than a quarter of the median
    image: coarsen the spacing in 3 % steps until a patch planned at that spacing covers at
    least a quarter. Axes more than 2x finer than the coarsest go first (as nnU-Net v2); once
    every axis is within 2x of it, all axes grow together."""
    if coverage(full) >= LOWRES_MIN_COVERAGE:
        return None
    spacing = np.asarray(full.target_spacing, dtype=float)
    for _ in range(200):
        finer = spacing.max() / spacing > 2
        spacing = spacing * np.where(finer, LOWRES_STEP, 1.0) if finer.any() else spacing * LOWRES_STEP
        low = plan_configuration("3d_lowres", spacings, shapes, target_spacing=spacing.tolist(), **common)
        if coverage(low) >= LOWRES_MIN_COVERAGE:
            low.notes.append(f"full-resolution patch covered {coverage(full):.0%} of the median image; "
                             f"this one covers {coverage(low):.0%}")
            return low
    return None


def rule_cascade(full: ConfigurationPlan, *, in_channels: int, num_classes: int, device: str) -> dict[str, Any]:
    """`3d_cascade_fullres` whenever there is a `3d_lowres`: `3d_fullres` (inherited) whose
    network also reads the low-resolution segmentation, one-hot over the foreground classes, as
    `num_classes - 1` more input channels. Only the predicted memory changes (a wider input)."""
    extra = num_classes - 1
    opts = full.model_options
    mem = estimate_training_bytes(full.patch_size, full.batch_size, in_channels + extra, num_classes, opts["features"],
                                  opts["kernel_sizes"], opts["strides"], dtype=training_dtype(device), device=device,
                                  optimizer=PLANNED_OPTIMIZER)
    return {"inherits": full.name, "previous_stage": "3d_lowres", "predicted_memory_gb": round(mem / GB, 3),
            "notes": [f"cascade: {full.name} with the 3d_lowres segmentation as {extra} more input channel(s) "
                      "(one-hot, foreground classes)"]}


def make_plans(fingerprint: dict[str, Any], budget_gb: float = 8.0, device: str = "cuda",
               base_features: int = 32, max_patch_voxels: int | None = None, measure_time: bool = False) -> Plans:
    """Plans for every configuration the data allow: `3d_fullres` (and `3d_lowres` with the
    `3d_cascade_fullres` that follows it, when a full-resolution patch sees too little of the
    image) for volumes, `2d` for 2D data.
    `device` ('cpu' or 'cuda') is what the budget is for. Each plan's `predicted_iteration_s`
    is estimated from FLOPs; with `measure_time` and a local device, real training steps are
    timed instead (seconds to a minute per configuration)."""
    spacings = np.array([c["spacing"] for c in fingerprint["cases"]], dtype=float)
    shapes = np.array([c["shape_after_crop"] for c in fingerprint["cases"]], dtype=float)
    channels = fingerprint["channel_names"]
    labels = fingerprint["labels"]
    scheme = LabelScheme.of(fingerprint)
    common = dict(in_channels=len(channels), num_classes=scheme.num_outputs, budget_gb=budget_gb,
                  normalization=[scheme_for_channel(c) for c in channels], num_cases=fingerprint["num_cases"],
                  base_features=base_features, max_patch_voxels=max_patch_voxels, device=device)
    configs: dict[str, dict[str, Any]] = {}
    mirror = fingerprint.get("mirror_axes")
    if fingerprint["spatial_dims"] == 3:
        full = plan_configuration("3d_fullres", spacings, shapes, **common)
        configs["3d_fullres"] = full.to_dict()
        low = rule_lowres(full, spacings, shapes, **common)
        if low is not None:
            configs["3d_lowres"] = low.to_dict()
        # 2D on volumes: slices along z, planned from the in-plane spacings and shapes only.
        in_plane_scale = np.prod(spacings[:, 1:] / np.asarray(full.target_spacing[1:]), axis=1)
        voxels = float(np.sum(np.prod(shapes, axis=1) * in_plane_scale))
        configs["2d"] = plan_configuration("2d", spacings[:, 1:], shapes[:, 1:], dataset_voxels=voxels,
                                           **common).to_dict()
    else:
        sp, sh = (spacings[:, -2:], shapes[:, -2:])
        configs["2d"] = plan_configuration("2d", sp, sh, **common).to_dict()
    # nnU-Net's Dice pooling: over the batch for 2D (a slice rarely holds every class, and a
    # per-sample Dice punishes predicting a class in slices without it) and for a full-resolution
    # plan that has a low-resolution stage (its patches see little of the image); per sample else.
    configs["2d"]["loss"] = "dice_ce_batch"
    if "3d_lowres" in configs:
        configs["3d_fullres"]["loss"] = "dice_ce_batch"
    if measure_time:
        for cfg in configs.values():
            opts = cfg["model_options"]
            spec = StepSpec.make(cfg["patch_size"], cfg["batch_size"], common["in_channels"], common["num_classes"],
                                 opts["features"], opts["kernel_sizes"], opts["strides"], optimizer=PLANNED_OPTIMIZER)
            timed = predict_iteration_seconds(spec, device)
            cfg["predicted_iteration_s"] = round(timed["seconds"], 3)
            cfg["notes"].append(f"iteration time {timed['how']}")
    if mirror is not None:
        for name, cfg in configs.items():
            # A 2D configuration on volumes has axes (y, x): shift the volume's axes down by one.
            shift = 3 - cfg["spatial_dims"] if fingerprint["spatial_dims"] == 3 else 0
            cfg["mirror_axes"] = [a - shift for a in mirror if a - shift >= 0]
    if "3d_lowres" in configs:  # inherits the full-resolution plan, mirror axes included
        configs["3d_cascade_fullres"] = rule_cascade(full, in_channels=common["in_channels"],
                                                     num_classes=common["num_classes"], device=device)
    return Plans(
        dataset_name=fingerprint["dataset_name"], channel_names=channels, labels=labels,
        regions_class_order=scheme.regions_class_order,
        intensity=fingerprint["intensity"], configurations=configs,
        planner={"budget_gb": budget_gb, "device": device, "base_features": base_features,
                 "max_patch_voxels": max_patch_voxels},
    )


def _r(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"
