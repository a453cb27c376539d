"""Sliding-window prediction with Gaussian importance weighting.

Tiles overlap by `1 - step` of the patch; each tile's logits are weighted by a Gaussian
(sigma = 1/8 of the patch per axis) centred on the tile (at index n // 2 per axis, as nnU-Net
does), so borders, where a network sees least context, count least. Images smaller than a
patch are padded and un-padded.

The Gaussian is a product of one 1-D kernel per axis and the tiles lie on a grid, so the sum
of all tiles' weights at a voxel is a product of per-axis sums too. Each tile is weighted by its
share of that sum before it is added: the accumulator holds the weighted mean directly, no
weight map of the volume is needed, and every value added is a fraction of a logit, so the
accumulator may be float16 (half the memory) without losing the faint border tiles (nnU-Net
adds un-normalised weights, down to 1e-7, in float16).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product
from math import ceil
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=32)
def _gaussian_1d(n: int, sigma_scale: float) -> np.ndarray:
    # nnU-Net's importance map, value for value: a delta at index n // 2 smoothed by scipy's
    # gaussian_filter (sigma = sigma_scale * n, truncated at 4 sigma), so an imported nnU-Net
    # model weights its tiles exactly as nnU-Net does. Maximum 1 (at n // 2). No zero weights:
    # a voxel covered only by tile edges must still get a prediction (at sigma = 1/8 of the
    # patch the truncation lies outside the patch, so this changes nothing there).
    sigma = max(n * sigma_scale, 1e-3)
    d = np.arange(n) - n // 2
    g = np.exp(-0.5 * (d / sigma) ** 2)
    g[np.abs(d) > int(4 * sigma + 0.5)] = 0.0
    g[g == 0] = g[g > 0].min()
    return g


@lru_cache(maxsize=8)
def _gaussian(patch_size: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    w = np.ones((), dtype=np.float64)
    for n in patch_size:
        w = np.multiply.outer(w, _gaussian_1d(n, sigma_scale))
    return torch.from_numpy(w.astype(np.float32))


def gaussian_weight(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Importance map of `patch_size`, maximum 1, strictly positive: the outer product of
    one Gaussian per axis."""
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


def tile_shares(n: int, patch: int, starts: Sequence[int], sigma_scale: float = 1 / 8) -> list[torch.Tensor]:
    """Along one axis of n voxels covered by tiles of `patch` voxels at `starts`: per tile, its
    1-D Gaussian divided by the sum of all tiles' Gaussians at each position it covers
    (float32, `patch` values). A tile's share of the total weight at a voxel is the product of
    its shares along the axes."""
    g = _gaussian_1d(int(patch), float(sigma_scale))
    total = np.zeros(n, dtype=np.float64)
    for s in starts:
        total[s:s + patch] += g
    return [torch.from_numpy((g / total[s:s + patch]).astype(np.float32)) for s in starts]


def sliding_window(image: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor], patch_size: Sequence[int],
                   num_classes: int, step: float = 0.5, tile_batch: int = 1, sigma_scale: float = 1 / 8,
                   mirror_axes: Sequence[int] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weighted average of tile predictions over `image` (C, *spatial).

    `predict` maps (B, C, *patch) to logits (B, K, *patch). With `mirror_axes`, each tile is
    also predicted flipped along every combination of those spatial axes and averaged.
    Returns (K, *spatial) scores (Gaussian-weighted mean logits) of `dtype`: the one array of
    the volume's size this allocates (K x voxels x 2 bytes in float16).
    """
    spatial = image.shape[1:]
    patch_size = [int(p) for p in patch_size]
    pad = [max(0, p - s) for s, p in zip(spatial, patch_size)]
    if any(pad):
        widths = []
        for p in reversed(pad):
            widths += [p // 2, p - p // 2]
        image = F.pad(image, widths)
    shape = image.shape[1:]
    scores = torch.zeros((num_classes, *shape), dtype=dtype)
    axis_starts = tile_starts(shape, patch_size, step)
    shares = [dict(zip(st, tile_shares(n, p, st, sigma_scale))) for n, p, st in zip(shape, patch_size, axis_starts)]
    starts = list(product(*axis_starts))
    flips = _flip_sets(mirror_axes)
    for i in range(0, len(starts), tile_batch):
        group = starts[i:i + tile_batch]
        slices = [tuple(slice(s, s + p) for s, p in zip(st, patch_size)) for st in group]
        logits = _tile_logits(torch.stack([image[(slice(None),) + sl] for sl in slices]), predict, flips)
        for st, sl, tile in zip(group, slices, logits):
            _add_tile(scores[(slice(None),) + sl], tile, [shares[a][s] for a, s in enumerate(st)])
        del logits, tile  # before the next tile's forward pass: one tile's logits alive at a time
    if any(pad):
        scores = scores[(slice(None),) + tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial))]
    return scores


def _tile_logits(batch: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor],
                 flips: list[tuple[int, ...]]) -> torch.Tensor:
    """float32 logits (B, K, *patch) of a batch of tiles, averaged over the flips."""
    logits = None
    for axes in flips:
        dims = [a + 2 for a in axes]
        out = predict(torch.flip(batch, dims) if dims else batch).float()
        out = torch.flip(out, dims) if dims else out
        if logits is None:  # the tiles are weighted in place later: never in a tensor `predict` was given
            logits = out.clone() if out.data_ptr() == batch.data_ptr() else out
        else:
            logits.add_(out)
        del out
    if len(flips) > 1:
        logits /= len(flips)
    return logits


def _add_tile(target: torch.Tensor, tile: torch.Tensor, shares: list[torch.Tensor]) -> None:
    """target (K, *patch) += tile (K, *patch, float32, overwritten) x the outer product of the
    per-axis `shares`."""
    share = shares[0]
    for s in shares[1:]:
        share = torch.multiply(share[..., None], s)
    tile.mul_(share)
    if target.dtype == tile.dtype:
        target.add_(tile)
    else:  # class by class: a mixed-dtype add would allocate a float32 copy of the target
        for k in range(tile.shape[0]):
            target[k].add_(tile[k])


def _flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for a in axes:
        out += [t + (a,) for t in out]
    return out
