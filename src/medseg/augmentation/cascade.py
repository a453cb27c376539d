"""Degrading a previous stage's segmentation in training, so a cascade stage learns to correct it.

nnU-Net v2 perturbs the one-hot previous-stage input of `3d_cascade_fullres` with two random
transforms (`ApplyRandomBinaryOperatorTransform`, `RemoveRandomConnectedComponentFromOneHot
EncodingTransform`). medseg does a simpler version of both, on the one-hot foreground channels
(C-1, *spatial) of one sample, after the spatial augmentation:

1. morphology, with probability `morph_p` (0.4) per sample: each foreground channel, in random
   order, is dilated, eroded, opened or closed (uniform choice) with a cube of half-width
   `radius` voxels (uniform integer in 1..8). nnU-Net uses a ball of that radius, so a cube
   changes a little more along the diagonals. Voxels a channel gains are taken from the other
   channels (a voxel has one class); voxels it loses become background. Outside the patch counts
   as "unknown": erosion does not eat in from the patch border.
2. component removal, with probability `remove_p` (0.2) per sample: each foreground channel
   loses one connected component (26-connectivity in 3D, 8 in 2D), chosen uniformly among the
   components covering at most `remove_max_fraction` (15 %) of the patch; it becomes background.

The drawn parameters are plain data (`sample_perturbation`); `apply_perturbation` applies them,
so a sample is reproducible from its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

OPERATIONS = ("dilation", "erosion", "opening", "closing")


@dataclass(frozen=True)
class PerturbationConfig:
    """Probabilities per sample; `radius` is the structuring cube's half-width in voxels
    (low, high inclusive); `remove_max_fraction` is a fraction of the patch's voxels."""

    morph_p: float = 0.4
    radius: tuple[int, int] = (1, 8)
    remove_p: float = 0.2
    remove_max_fraction: float = 0.15


def sample_perturbation(channels: int, gen: torch.Generator,
                        config: PerturbationConfig = PerturbationConfig()) -> dict[str, Any]:
    """One sample's parameters for `channels` foreground channels: `morph` (None, or a list of
    {channel, operation, radius} in the order applied) and `remove` (None, or per channel a
    number `pick` in [0, 1) choosing among the eligible components)."""
    morph = None
    if float(torch.rand(1, generator=gen)) < config.morph_p:
        order = torch.randperm(channels, generator=gen).tolist()
        morph = [{"channel": int(c),
                  "operation": OPERATIONS[int(torch.randint(len(OPERATIONS), (1,), generator=gen))],
                  "radius": int(torch.randint(config.radius[0], config.radius[1] + 1, (1,), generator=gen))}
                 for c in order]
    remove = None
    if float(torch.rand(1, generator=gen)) < config.remove_p:
        remove = [{"channel": c, "pick": float(torch.rand(1, generator=gen))} for c in range(channels)]
    return {"morph": morph, "remove": remove}


def _max_filter(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a cube of half-width `radius` (separable: one axis at a time); the outside
    of the array never wins."""
    dims = mask.ndim
    pool = F.max_pool3d if dims == 3 else F.max_pool2d
    y = mask[None, None]
    for axis in range(dims):
        kernel = [1] * dims
        pad = [0] * dims
        kernel[axis], pad[axis] = 2 * radius + 1, radius
        y = pool(y, kernel_size=kernel, stride=1, padding=pad)
    return y[0, 0]


def morphology(mask: torch.Tensor, operation: str, radius: int) -> torch.Tensor:
    """Binary dilation, erosion, opening or closing of a 0/1 float mask (*spatial) with a cube."""
    dilate = lambda m: _max_filter(m, radius)  # noqa: E731
    erode = lambda m: 1.0 - _max_filter(1.0 - m, radius)  # noqa: E731
    if operation == "dilation":
        return dilate(mask)
    if operation == "erosion":
        return erode(mask)
    if operation == "opening":
        return dilate(erode(mask))
    if operation == "closing":
        return erode(dilate(mask))
    raise ValueError(f"unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}")


def remove_component(mask: np.ndarray, pick: float, max_fraction: float) -> np.ndarray | None:
    """The voxels of one connected component of a boolean mask, chosen by `pick` in [0, 1)
    among those covering at most `max_fraction` of the mask's array; None if there is none."""
    labelled, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 0:
        return None
    sizes = np.bincount(labelled.ravel())[1:]
    eligible = np.flatnonzero(sizes <= max_fraction * mask.size) + 1
    if len(eligible) == 0:
        return None
    return labelled == eligible[min(int(pick * len(eligible)), len(eligible) - 1)]


def apply_perturbation(onehot: torch.Tensor, params: dict[str, Any],
                       config: PerturbationConfig = PerturbationConfig()) -> torch.Tensor:
    """Apply recorded parameters to one sample's one-hot foreground channels (C-1, *spatial),
    float 0/1 on the CPU, in place; at most one channel is 1 at any voxel before and after."""
    for step in params.get("morph") or ():
        c = step["channel"]
        new = morphology(onehot[c], step["operation"], step["radius"])
        gained = (new > onehot[c]).unsqueeze(0)
        onehot.masked_fill_(gained, 0.0)
        onehot[c] = new
    for step in params.get("remove") or ():
        c = step["channel"]
        component = remove_component(onehot[c].numpy() > 0.5, step["pick"], config.remove_max_fraction)
        if component is not None:
            onehot[c][torch.from_numpy(component)] = 0.0
    return onehot
