"""Sliding-window prediction with Gaussian importance weighting.

Tiles overlap by `1 - step` of the patch; each tile's logits are weighted by a Gaussian
(sigma = 1/8 of the patch per axis) centred on the tile (at index n // 2 per axis, as nnU-Net
does), so borders, where a network sees least context, count least. Images smaller than a
patch are padded and un-padded.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product
from math import ceil
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=8)
def _gaussian(patch_size: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    # nnU-Net's importance map, value for value: a delta at index n // 2 per axis smoothed by
    # scipy's gaussian_filter (sigma = sigma_scale * n, truncated at 4 sigma), so an imported
    # nnU-Net model weights its tiles exactly as nnU-Net does. Separable: an outer product of
    # truncated 1-D kernels.
    w = np.ones((), dtype=np.float64)
    for n in patch_size:
        sigma = max(n * sigma_scale, 1e-3)
        d = np.arange(n) - n // 2
        g = np.exp(-0.5 * (d / sigma) ** 2)
        g[np.abs(d) > int(4 * sigma + 0.5)] = 0.0
        w = np.multiply.outer(w, g)
    w = w / w.max()
    # No zero weights: a voxel covered only by tile edges must still get a prediction.
    w[w == 0] = w[w > 0].min()
    return torch.from_numpy(w.astype(np.float32))


def gaussian_weight(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Importance map of `patch_size`, maximum 1, strictly positive."""
    return _gaussian(tuple(int(p) for p in patch_size), float(sigma_scale))


def tile_starts(shape: Sequence[int], patch_size: Sequence[int], step: float) -> list[list[int]]:
    """Start indices per axis: evenly spaced, first at 0, last flush with the end, neighbours
    at most `step * patch` apart."""
    out = []
    for n, p in zip(shape, patch_size):
        if n <= p:
            out.append([0])
            continue
        count = ceil((n - p) / (p * step)) + 1
        out.append([int(round(i * (n - p) / (count - 1))) for i in range(count)])
    return out


def sliding_window(image: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor], patch_size: Sequence[int],
                   num_classes: int, step: float = 0.5, tile_batch: int = 1, sigma_scale: float = 1 / 8,
                   mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """Weighted average of tile predictions over `image` (C, *spatial).

    `predict` maps (B, C, *patch) to logits (B, K, *patch). With `mirror_axes`, each tile is
    also predicted flipped along every combination of those spatial axes and averaged.
    Returns (K, *spatial) float32 scores (weighted mean logits).
    """
    spatial = image.shape[1:]
    pad = [max(0, p - s) for s, p in zip(spatial, patch_size)]
    if any(pad):
        widths = []
        for p in reversed(pad):
            widths += [p // 2, p - p // 2]
        image = F.pad(image, widths)
    shape = image.shape[1:]
    weight = gaussian_weight(patch_size, sigma_scale)
    scores = torch.zeros((num_classes, *shape), dtype=torch.float32)
    weights = torch.zeros(tuple(shape), dtype=torch.float32)
    starts = list(product(*tile_starts(shape, patch_size, step)))
    flips = _flip_sets(mirror_axes)
    for i in range(0, len(starts), tile_batch):
        group = starts[i:i + tile_batch]
        slices = [tuple(slice(s, s + p) for s, p in zip(st, patch_size)) for st in group]
        batch = torch.stack([image[(slice(None),) + sl] for sl in slices])
        logits = torch.zeros((len(group), num_classes, *patch_size), dtype=torch.float32)
        for axes in flips:
            dims = [a + 2 for a in axes]
            x = torch.flip(batch, dims) if dims else batch
            out = predict(x).float()
            logits += torch.flip(out, dims) if dims else out
        logits /= len(flips)
        for sl, tile in zip(slices, logits):
            scores[(slice(None),) + sl] += tile * weight
            weights[sl] += weight
    scores /= weights
    if any(pad):
        scores = scores[(slice(None),) + tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial))]
    return scores


def _flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for a in axes:
        out += [t + (a,) for t in out]
    return out
