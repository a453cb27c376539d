"""Resampling between grids, in torch (fast on CPU, no float64 copies).

Shapes map to shapes: the new grid covers the same physical extent as the old one
(voxel-edge aligned, `align_corners=False`), so the spacing changes by old/new shape.
Images use linear, in-plane cubic (Keys, torch's bicubic) or `spline` interpolation; label
maps are interpolated one class at a time (one-hot, linear) keeping a running maximum, so
memory is two output-sized arrays however many classes there are.

`spline` is nnU-Net's image resampling, value for value: scikit-image's `resize(order=3,
mode="edge")`, i.e. scipy's `zoom(order=3, mode="nearest", grid_mode=True)` (cubic
B-spline interpolation with its prefilter) and clipping to the input's range. A B-spline
interpolation along one axis is a linear map from n to m samples; that map is computed once
per (n, m) by running scipy on an identity matrix, and applied to the data as a float32
matrix product per axis (in place of nnU-Net's per-slice float64 scipy calls). With `separate_z`, a coarse first axis (z) is handled on
its own: in-plane interpolation per slice, then nearest (order 0) along z, as nnU-Net does
for strongly anisotropic data.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def new_shape_for_spacing(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Voxel counts that cover the same extent at `target` spacing (at least 1 per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


@lru_cache(maxsize=32)
def spline_matrix(n: int, m: int) -> torch.Tensor:
    """(m, n) float32: order-3 B-spline interpolation of n samples at m voxel-centre-aligned
    positions ((i + 0.5) * n / m - 0.5), edges extended as scipy's mode "nearest" does."""
    from scipy import ndimage

    eye = np.eye(n, dtype=np.float64)
    mat = ndimage.zoom(eye, (m / n, 1.0), order=3, mode="nearest", grid_mode=True)
    if mat.shape != (m, n):  # zoom rounds the output shape; it is exact for these factors
        raise RuntimeError(f"spline matrix for {n} -> {m} came out {mat.shape}")
    return torch.from_numpy(mat.astype(np.float32))


@lru_cache(maxsize=32)
def _spline_blocks(n: int, m: int, rows: int = 64) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """`spline_matrix(n, m)` cut into blocks of `rows` output rows, each with the span of
    input columns it reads: (r0, r1, c0, c1, block). The matrix is banded in effect (the
    prefilter's weights fall by 0.27 per sample), so entries below 1e-9 are left out."""
    mat = spline_matrix(n, m)
    out = []
    for r0 in range(0, m, rows):
        r1 = min(r0 + rows, m)
        cols = torch.nonzero(mat[r0:r1].abs().amax(0) > 1e-9).flatten()
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        out.append((r0, r1, c0, c1, mat[r0:r1, c0:c1].contiguous()))
    return out


def _spline_axis(x: torch.Tensor, axis: int, m: int) -> torch.Tensor:
    """B-spline interpolation of a contiguous x along `axis` to m samples, block by block
    (batched matrix products on views: no transposed copies)."""
    n = x.shape[axis]
    before = int(np.prod(x.shape[:axis]))
    after = int(np.prod(x.shape[axis + 1:]))
    out_shape = (*x.shape[:axis], m, *x.shape[axis + 1:])
    if after == 1:  # the contiguous axis: rows of x times the blocks' transposes
        flat = x.reshape(before, n)
        out = torch.empty((before, m), dtype=x.dtype)
        for r0, r1, c0, c1, block in _spline_blocks(n, m):
            torch.matmul(flat[:, c0:c1], block.T, out=out[:, r0:r1])
    else:
        flat = x.reshape(before, n, after)
        out = torch.empty((before, m, after), dtype=x.dtype)
        for r0, r1, c0, c1, block in _spline_blocks(n, m):
            torch.matmul(block, flat[:, c0:c1], out=out[:, r0:r1])
    return out.reshape(out_shape)


def _spline(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """x: (N, *spatial) float32 -> (N, *size), B-spline along every spatial axis that changes,
    shrinking axes first (less work for the others). Clipped to each item's value range, as
    scikit-image's resize does (nnU-Net calls it per slice, or per channel in 3-D)."""
    dims = x.ndim - 1
    lo = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
    hi = x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)
    axes = sorted((a for a in range(dims) if x.shape[1 + a] != size[a]), key=lambda a: size[a] / x.shape[1 + a])
    x = x.contiguous()
    for a in axes:
        x = _spline_axis(x, 1 + a, int(size[a]))
    torch.maximum(x, lo, out=x)
    return torch.minimum(x, hi, out=x)


def _interp(x: torch.Tensor, size: Sequence[int], order: str) -> torch.Tensor:
    """x: (N, C, *spatial) float. order: 'nearest', 'linear', 'cubic' (2D only) or 'spline'
    (each (n, c) item clipped to its own range)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if order == "spline":
        n, c = x.shape[:2]
        return _spline(x.reshape(n * c, *x.shape[2:]), size).reshape(n, c, *size)
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
        # 'spline' here is 3-D B-spline interpolation, clipped to each channel's range.
        return _interp(x[None], new_shape, order)[0]
    # In-plane slice by slice (z becomes the batch axis), and along z. Nearest along z only
    # picks slices, so it commutes with the in-plane step: fewer slices first.
    if separate_z and new_shape[0] < x.shape[1]:
        x = x.index_select(1, _taps(int(x.shape[1]), int(new_shape[0]), True)[0])
    c, z = x.shape[:2]
    inplane = _interp(x.reshape(c * z, 1, *x.shape[2:]), new_shape[1:], order)
    inplane = inplane.reshape(c, z, *new_shape[1:])
    if z == new_shape[0]:
        return inplane
    z_order = "nearest" if separate_z else "linear"
    return _interp(inplane[None], new_shape, z_order)[0]


def resample_image(image: np.ndarray, new_shape: Sequence[int], order: str = "linear",
                   separate_z: bool = False) -> np.ndarray:
    """Resample an image (C, *spatial) to (C, *new_shape), float32.

    order: 'nearest', 'linear', 'cubic' (in-plane bicubic; linear along z) or 'spline'
    (nnU-Net's order-3 B-spline). With `separate_z`, z is resampled by nearest neighbour
    after the in-plane step (nnU-Net's order_z=0)."""
    if tuple(image.shape[1:]) == tuple(new_shape):
        return image.astype(np.float32, copy=False)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return _resample_channels(x, new_shape, order, separate_z).numpy()


@lru_cache(maxsize=64)
def _taps(n: int, m: int, nearest: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index along one axis (n -> m samples, voxel centres aligned as torch's
    align_corners=False): the two source indices and the weight of the second. Nearest is
    torch's 'nearest-exact' (one source, weight 0)."""
    j = np.arange(m, dtype=np.float64)
    if nearest:
        i0 = np.minimum(np.floor((j + 0.5) * n / m), n - 1).astype(np.int64)
        return torch.from_numpy(i0), torch.from_numpy(i0), torch.zeros(m)
    src = np.maximum((j + 0.5) * n / m - 0.5, 0.0)
    i0 = np.minimum(np.floor(src), n - 1).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy((src - i0).astype(np.float32))


def _linear_box(x: torch.Tensor, taps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                offsets: Sequence[int]) -> torch.Tensor:
    """Separable linear interpolation of a crop `x` (*spatial) whose first voxel is at
    `offsets` of the full grid; `taps` are the full grid's, already cut to the output box.
    Axes that shrink go first."""
    order = sorted(range(x.ndim), key=lambda a: len(taps[a][0]) / x.shape[a])
    for a in order:
        i0, i1, w = taps[a]
        interpolate = bool((w > 0).any())
        if not interpolate and len(i0) == x.shape[a] and bool((i0 - offsets[a] == torch.arange(len(i0))).all()):
            continue  # this axis does not change
        lo = x.index_select(a, i0 - offsets[a])
        if interpolate:
            shape = [1] * x.ndim
            shape[a] = -1
            lo = torch.lerp(lo, x.index_select(a, i1 - offsets[a]), w.view(shape))
        x = lo
    return x


def _class_boxes(label: np.ndarray, values: Sequence[int]) -> dict[int, list[tuple[int, int]] | None]:
    """Per class value, its bounding box [(first, last), ...] per axis (None if absent), from
    one pass of scipy's find_objects (positive values) or a mask (anything else)."""
    from scipy import ndimage

    positive = [v for v in values if v > 0]
    objects = ndimage.find_objects(label, max_label=max(positive)) if positive and label.dtype.kind in "iu" else []
    boxes: dict[int, list[tuple[int, int]] | None] = {}
    for v in values:
        if v > 0 and objects:
            sl = objects[v - 1]
            boxes[v] = None if sl is None else [(s.start, s.stop - 1) for s in sl]
        else:
            nz = np.nonzero(label == v)
            boxes[v] = None if nz[0].size == 0 else [(int(i.min()), int(i.max())) for i in nz]
    return boxes


def resample_label(label: np.ndarray, new_shape: Sequence[int], labels: Sequence[int] | None = None,
                   separate_z: bool = False) -> np.ndarray:
    """Resample a label map (*spatial) to `new_shape`: one-hot linear per class, arg-max
    (ties to the lower class value). With `separate_z`, nearest along z (axis 0 of 3-D maps).

    Classes are visited one at a time, each only inside its own bounding box (outside it its
    interpolated indicator is exactly 0), and the first class (usually the background) only
    where another class could beat it: an organ costs its box, not the volume. Memory stays at
    two output-sized arrays however many classes there are.
    """
    if tuple(label.shape) == tuple(new_shape):
        return label
    values = sorted(int(v) for v in (labels if labels is not None else np.unique(label)))
    if not values:
        return np.zeros(tuple(new_shape), dtype=label.dtype)
    dims = label.ndim
    full_taps = [_taps(int(n), int(m), separate_z and dims == 3 and a == 0)
                 for a, (n, m) in enumerate(zip(label.shape, new_shape))]
    boxes = _class_boxes(label, values)
    # Before any class: indicator 0 everywhere, so the first class holds every voxel no other
    # class beats (what visiting it over the whole grid would give): it is needed only inside
    # the union of the other classes' boxes.
    others = [b for v, b in boxes.items() if v != values[0] and b is not None]
    if boxes[values[0]] is not None and others:
        boxes[values[0]] = [(max(f, min(o[a][0] for o in others)), min(l, max(o[a][1] for o in others)))
                            for a, (f, l) in enumerate(boxes[values[0]])]
    best = torch.zeros(tuple(new_shape), dtype=torch.float32)
    out = torch.full(tuple(new_shape), values[0], dtype=torch.int64)
    with torch.inference_mode():
        lab = torch.from_numpy(np.ascontiguousarray(label))
        for v in values:
            box = boxes[v]
            if box is None or not others or any(f > l for f, l in box):
                continue  # absent, or alone (it holds everything already), or never beaten
            in_box, out_box, taps = [], [], []
            for a, (first, last) in enumerate(box):
                i0, i1, w = full_taps[a]
                j0 = int(torch.searchsorted(i1, first, right=False))
                j1 = int(torch.searchsorted(i0, last, right=True))
                out_box.append(slice(j0, j1))
                in_box.append(slice(int(i0[j0]), int(i1[j1 - 1]) + 1) if j1 > j0 else slice(0, 0))
                taps.append((i0[j0:j1], i1[j0:j1], w[j0:j1]))
            if any(b.stop <= b.start for b in out_box):
                continue
            mask = (lab[tuple(in_box)] == v).to(torch.float32)
            p = _linear_box(mask, taps, [b.start for b in in_box])
            region_best, region_out = best[tuple(out_box)], out[tuple(out_box)]
            better = p > region_best
            region_out.masked_fill_(better, v)
            torch.maximum(region_best, p, out=region_best)
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


def resampled_slabs(scores: torch.Tensor, new_shape: Sequence[int], separate_z: bool = False,
                    slab: int = 8) -> Iterator[tuple[int, torch.Tensor]]:
    """Linear resampling of class scores (K, *spatial), any float dtype, to (K, *new_shape),
    `slab` output positions of the first spatial axis (z) at a time: yields (start, float32
    (K, n, *new_shape[1:])) for consecutive slabs. With `separate_z` (3-D), nearest along z.

    Each slab reads only the input slices its positions interpolate from, so the float32
    temporaries are a few slabs' worth however large the volume and however many classes.
    Along z the taps are those of `_taps` (torch's `align_corners=False` grid), in-plane it is
    torch's bilinear (linear in 2-D), so slabs equal whole-volume trilinear resampling. z goes
    first (each output slice is resampled in-plane once), unless z grows enough that resampling
    the slab's fewer input slices in-plane first is cheaper."""
    n, m = int(scores.shape[1]), int(new_shape[0])
    rest = tuple(int(s) for s in new_shape[1:])
    i0, i1, w = _taps(n, m, separate_z and scores.ndim == 4)
    used = torch.where(w > 0, i1, i0)  # the second tap only where it has weight
    for j0 in range(0, m, slab):
        j1 = min(j0 + slab, m)
        first, last = int(i0[j0]), int(used[j0:j1].max()) + 1
        src = scores[:, first:last]
        taps = (i0[j0:j1] - first, i1[j0:j1] - first, w[j0:j1])
        if last - first < j1 - j0:  # fewer input slices than output ones: in-plane first
            yield j0, _lerp_first(_resample_inplane(src, rest), *taps)
        else:
            yield j0, _resample_inplane(_lerp_first(src, *taps), rest)


def _resample_inplane(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """x: (K, z, *plane) -> float32 (K, z, *size), linear in-plane."""
    if tuple(x.shape[2:]) == size:
        return x.float()
    k, z = x.shape[:2]
    return _interp(x.float().reshape(k * z, 1, *x.shape[2:]), size, "linear").reshape(k, z, *size)


def _lerp_first(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Along axis 1 of x: out[:, j] = (1 - w[j]) x[:, lo[j]] + w[j] x[:, hi[j]], float32."""
    out = x.index_select(1, lo).float()
    if bool((w > 0).any()):
        hi = torch.where(w > 0, hi, lo)  # slices without weight may lie outside x
        shape = [1] * x.ndim
        shape[1] = -1
        out.lerp_(x.index_select(1, hi).float(), w.view(shape))
    return out


def region_labels(probs: torch.Tensor, values: Sequence[int], threshold: float = 0.5) -> torch.Tensor:
    """Label map (*spatial, int16) from region probabilities (R, *spatial): `values[i]` where
    region i's probability exceeds `threshold`, region after region, so later (nested) regions
    overwrite earlier ones; 0 elsewhere. Apply to `resampled_slabs` for another grid."""
    out = torch.zeros(tuple(probs.shape[1:]), dtype=torch.int16)
    for i, value in enumerate(values):
        out[probs[i] > threshold] = int(value)
    return out
