"""Resampling between grids, in torch (fast on CPU, no float64 copies).

Shapes map to shapes: the new grid covers the same physical extent as the old one
(voxel-edge aligned, `align_corners=False`), so the spacing changes by old/new shape.
Images use linear or in-plane cubic interpolation; label maps are interpolated one class at
a time (one-hot, linear) keeping a running maximum, so memory is two output-sized arrays
however many classes there are. With `separate_z`, a coarse first axis (z) is handled on
its own: in-plane interpolation per slice, then nearest (order 0) along z, as nnU-Net does
for strongly anisotropic data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def new_shape_for_spacing(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Voxel counts that cover the same extent at `target` spacing (at least 1 per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _interp(x: torch.Tensor, size: Sequence[int], order: str) -> torch.Tensor:
    """x: (N, C, *spatial) float. order: 'nearest', 'linear' or 'cubic' (cubic is 2D only)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if order == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest-exact")
    if order == "cubic":
        if x.ndim != 4:
            raise ValueError("cubic interpolation is in-plane (2D) only")
        return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[x.ndim]
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def _resample_channels(x: torch.Tensor, new_shape: Sequence[int], order: str, separate_z: bool) -> torch.Tensor:
    """x: (C, *spatial) float32 -> (C, *new_shape)."""
    spatial = x.ndim - 1
    if spatial == 2:
        return _interp(x[None], new_shape, order)[0]
    if not separate_z and order != "cubic":
        return _interp(x[None], new_shape, order)[0]
    # In-plane first, slice by slice (z becomes the batch axis), then along z.
    c, z = x.shape[:2]
    inplane = _interp(x.reshape(c * z, 1, *x.shape[2:]), new_shape[1:], order)
    inplane = inplane.reshape(c, z, *new_shape[1:])
    if z == new_shape[0]:
        return inplane
    z_order = "nearest" if separate_z else "linear"
    return _interp(inplane[None], new_shape, z_order)[0]


def resample_image(image: np.ndarray, new_shape: Sequence[int], order: str = "linear",
                   separate_z: bool = False) -> np.ndarray:
    """Resample an image (C, *spatial) to (C, *new_shape), float32."""
    if tuple(image.shape[1:]) == tuple(new_shape):
        return image.astype(np.float32, copy=False)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return _resample_channels(x, new_shape, order, separate_z).numpy()


def resample_label(label: np.ndarray, new_shape: Sequence[int], labels: Sequence[int] | None = None,
                   separate_z: bool = False) -> np.ndarray:
    """Resample a label map (*spatial) to `new_shape`: one-hot linear per class, arg-max.

    Classes are visited one at a time; memory stays at a few output-sized arrays.
    """
    if tuple(label.shape) == tuple(new_shape):
        return label
    values = sorted(int(v) for v in (labels if labels is not None else np.unique(label)))
    best = torch.full(tuple(new_shape), -1.0)
    out = torch.zeros(tuple(new_shape), dtype=torch.int16)
    with torch.inference_mode():
        lab = torch.from_numpy(np.ascontiguousarray(label))
        for v in values:
            onehot = (lab == v).to(torch.float32)[None]
            p = _resample_channels(onehot, new_shape, "linear", separate_z)[0]
            better = p > best
            best = torch.where(better, p, best)
            out[better] = v
    return out.numpy().astype(label.dtype, copy=False)


def resample_probabilities(probs: torch.Tensor, new_shape: Sequence[int], separate_z: bool = False,
                           chunk: int = 4) -> torch.Tensor:
    """Resample class scores (K, *spatial) to (K, *new_shape), a few classes at a time."""
    if tuple(probs.shape[1:]) == tuple(new_shape):
        return probs
    out = torch.empty((probs.shape[0], *new_shape), dtype=probs.dtype)
    for start in range(0, probs.shape[0], chunk):
        part = probs[start:start + chunk].float()
        out[start:start + chunk] = _resample_channels(part, new_shape, "linear", separate_z).to(probs.dtype)
    return out


def labels_from_scores(scores: torch.Tensor, new_shape: Sequence[int], separate_z: bool = False) -> torch.Tensor:
    """Arg-max label map at `new_shape` from class scores (K, *spatial) without holding all
    K resampled classes at once: a running max over classes."""
    best = torch.full(tuple(new_shape), -torch.inf)
    out = torch.zeros(tuple(new_shape), dtype=torch.int16)
    for k in range(scores.shape[0]):
        p = _resample_channels(scores[k:k + 1].float(), new_shape, "linear", separate_z)[0]
        better = p > best
        best = torch.where(better, p, best)
        out[better] = k
    return out
