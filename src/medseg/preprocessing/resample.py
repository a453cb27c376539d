"""Resampling between grids, in torch (fast on CPU, no float64 copies).

Shapes map to shapes: the new grid covers the same physical extent as the old one
(voxel-edge aligned, `align_corners=False`), so the spacing changes by old/new shape.
Images use linear, in-plane cubic (Keys, torch's bicubic) or `spline` interpolation. Label
maps get the arg-max of their one-hot linear interpolation, computed only on the boundaries
between values (elsewhere it is the value itself), so memory is an output-sized label map and
a mask however many classes there are.

`spline` is nnU-Net's image resampling, value for value: scikit-image's `resize(order=3,
mode="edge")`, i.e. scipy's `zoom(order=3, mode="nearest", grid_mode=True)` (cubic
B-spline interpolation with its prefilter) and clipping to the input's range. A B-spline
interpolation along one axis is a linear map from n to m samples; that map is computed once
per (n, m) by running scipy on an identity matrix, and applied to the data as a float32
matrix product per axis (in place of nnU-Net's per-slice float64 scipy calls).

With a `separate_axis` a (3-D only; an index in (z, y, x)), the coarse axis of strongly
anisotropic data is handled on its own, as nnU-Net does: interpolation within each slice
across a, then nearest neighbour (order 0) along a. `nnunet_separate_axis` is nnU-Net's rule
for which axis that is.
"""

from __future__ import annotations

import itertools
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


def nnunet_separate_axis(current: Sequence[float], new: Sequence[float], threshold: float = 3.0) -> int | None:
    """nnU-Net's choice of the axis resampled on its own, going from `current` to `new`
    spacing (mm, any axis order; the index is in that order), or None.

    The current spacing decides if its largest / smallest value exceeds `threshold`; if not,
    the new one does if it exceeds it; if neither, no axis. The deciding spacing's largest
    value must be unique: when two axes tie for it (e.g. 0.24 x 1.25 x 1.25) nnU-Net
    resamples all axes together, without looking at the other spacing. Only 3-D spacings
    have a separate axis (nnU-Net's `determine_do_sep_z_and_axis`, force_separate_z None)."""
    if len(current) != 3 or len(new) != 3:
        return None
    for spacing in (current, new):
        s = np.asarray(spacing, dtype=np.float64)
        if s.max() / s.min() > threshold:
            return coarse_axis(s)
    return None


def coarse_axis(spacing: Sequence[float]) -> int | None:
    """The axis of the largest spacing, None if two or more share it (nnU-Net's
    `get_lowres_axis` test, float for float)."""
    s = np.asarray(spacing, dtype=np.float64)
    coarse = np.flatnonzero(s.max() / s == 1)
    return int(coarse[0]) if len(coarse) == 1 else None


def _check_axis(separate_axis: int | None, dims: int) -> int | None:
    """`separate_axis` for an array of `dims` spatial axes: None in 2-D, where there is
    nothing to separate. A bool is refused (it would pass for axis 0 or 1)."""
    if separate_axis is None:
        return None
    if isinstance(separate_axis, (bool, np.bool_)) or not isinstance(separate_axis, (int, np.integer)):
        raise TypeError(f"separate_axis is a spatial axis index or None, not {separate_axis!r}")
    if dims != 3:
        return None
    if not 0 <= int(separate_axis) < 3:
        raise ValueError(f"separate_axis {separate_axis} is not a spatial axis of a 3-D array")
    return int(separate_axis)


def _resample_channels(x: torch.Tensor, new_shape: Sequence[int], order: str,
                       separate_axis: int | None) -> torch.Tensor:
    """x: (C, *spatial) float32 -> (C, *new_shape), contiguous.

    With `separate_axis` a (3-D): `order` within the slices across a, nearest along a.
    The slices are interpolated as one batch, so a goes to the front: for a != 0 that is one
    permuted copy of the input (only of the slices kept when a shrinks); each output slice
    is then copied to its place. Peak: the input, that copy and the in-plane result, or the
    input, the in-plane result and the output (all float32; the copy is freed in between)."""
    a = _check_axis(separate_axis, x.ndim - 1)
    if a is None:
        if x.ndim == 3 or order != "cubic":
            # 'spline' here is 3-D B-spline interpolation, clipped to each channel's range.
            return _interp(x[None], new_shape, order)[0]
        # Bicubic is 2-D: in-plane per z-slice, then linear along z.
        c, z = x.shape[:2]
        inplane = _interp(x.reshape(c * z, 1, *x.shape[2:]), new_shape[1:], order).reshape(c, z, *new_shape[1:])
        return _interp(inplane[None], new_shape, "linear")[0]
    n, m = int(x.shape[1 + a]), int(new_shape[a])
    pick = _taps(n, m, True)[0]
    slices = x.movedim(1 + a, 1)  # (C, n, *plane): a view
    if m < n:
        # Nearest along a only picks slices, so it commutes with the in-plane step: fewer
        # slices first. index_select writes its result contiguously: this is the one copy.
        slices = slices.index_select(1, pick)
        pick = torch.arange(m)
    c, k = slices.shape[:2]
    plane = [int(s) for b, s in enumerate(new_shape) if b != a]
    inplane = _interp(slices.reshape(c * k, 1, *slices.shape[2:]), plane, order).reshape(c, k, *plane)
    del slices
    if a == 0:
        return inplane if k == m else inplane.index_select(1, pick)
    out = torch.empty((c, *new_shape), dtype=inplane.dtype)
    view = out.movedim(1 + a, 1)
    if k == m:
        view.copy_(inplane)
    else:  # slice by slice: no output-sized temporary in the permuted order
        for j, i in enumerate(pick.tolist()):
            view[:, j].copy_(inplane[:, i])
    return out


def resample_image(image: np.ndarray, new_shape: Sequence[int], order: str = "linear",
                   separate_axis: int | None = None) -> np.ndarray:
    """Resample an image (C, *spatial) to (C, *new_shape), float32.

    order: 'nearest', 'linear', 'cubic' (in-plane bicubic; linear along z) or 'spline'
    (nnU-Net's order-3 B-spline). With `separate_axis` a (3-D; an index in (z, y, x)), `order`
    within the slices across a, then nearest along a (nnU-Net's order_z=0). Memory: see
    `_resample_channels`."""
    if tuple(image.shape[1:]) == tuple(new_shape):
        return image.astype(np.float32, copy=False)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return _resample_channels(x, new_shape, order, separate_axis).numpy()


@lru_cache(maxsize=64)
def _taps(n: int, m: int, nearest: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index along one axis (n -> m samples, voxel centres aligned as torch's
    align_corners=False): the two source indices and the weight of the second. Nearest has
    one source (weight 0): nnU-Net's order 0 along a separate axis, scipy's map_coordinates
    at (n / m)(j + 0.5) - 0.5 rounded as scipy rounds (floor(c + 0.5)), float64 operation for
    operation: where the source lies half-way between two samples, float rounding picks the
    side, and here it picks nnU-Net's (torch's 'nearest-exact' differs at some of those)."""
    j = np.arange(m, dtype=np.float64)
    if nearest:
        c = (float(n) / m) * (j + 0.5) - 0.5
        i0 = np.clip(np.floor(c + 0.5), 0, n - 1).astype(np.int64)
        return torch.from_numpy(i0), torch.from_numpy(i0), torch.zeros(m)
    src = np.maximum((j + 0.5) * n / m - 0.5, 0.0)
    i0 = np.minimum(np.floor(src), n - 1).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy((src - i0).astype(np.float32))


def _gather(x: torch.Tensor, index: Sequence[torch.Tensor]) -> torch.Tensor:
    """x indexed by index[a] along every axis a; shrinking axes first, so fewer voxels move."""
    for a in sorted(range(x.ndim), key=lambda a: len(index[a]) / x.shape[a]):
        if len(index[a]) != x.shape[a] or bool((index[a] != torch.arange(x.shape[a])).any()):
            x = x.index_select(a, index[a])
    return x


def _mixed_cells(lab: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Per voxel i: True where the interpolation cell [i, i+1] along each of `axes` (clamped at
    the last voxel) holds more than one label value."""
    lo, hi = lab, lab
    for a in axes:
        n = lab.shape[a]
        if n < 2:
            continue
        nxt = []
        for x, reduce in ((lo, torch.minimum), (hi, torch.maximum)):
            y = torch.empty_like(x)
            reduce(x.narrow(a, 0, n - 1), x.narrow(a, 1, n - 1), out=y.narrow(a, 0, n - 1))
            y.narrow(a, n - 1, 1).copy_(x.narrow(a, n - 1, 1))
            nxt.append(y)
        lo, hi = nxt
    return lo != hi


def _present_values(label: np.ndarray) -> np.ndarray:
    """The distinct values of a label map; a histogram for 8- and 16-bit maps (no sort)."""
    if label.dtype.itemsize <= 2 and label.dtype.kind in "iu":
        unsigned = label.view(np.uint8 if label.dtype.itemsize == 1 else np.uint16)
        present = np.flatnonzero(np.bincount(unsigned.ravel(), minlength=1))
        return present.astype(unsigned.dtype).view(label.dtype).astype(np.int64)
    return np.unique(label).astype(np.int64)


def _vote(lab: torch.Tensor, taps: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
          blended: Sequence[int], where: Sequence[torch.Tensor], listed: torch.Tensor,
          first: int) -> torch.Tensor:
    """The labels at output coordinates `where`: each corner of the interpolation cell votes for
    its value with its linear weight (unlisted values do not vote); the most voted value wins,
    ties (within 1e-6) to the lower value, no votes at all to `first`."""
    flat = lab.reshape(-1)
    strides = [int(s) for s in lab.stride()]
    per_axis = [tuple(t[where[a]] for t in taps[a]) for a in range(lab.ndim)]
    values, weights = [], []
    for corner in itertools.product(*[(0, 1) if a in blended else (0,) for a in range(lab.ndim)]):
        index = torch.zeros_like(where[0])
        w = torch.ones(where[0].shape, dtype=torch.float32)
        for a, upper in enumerate(corner):
            i0, i1, wa = per_axis[a]
            index += (i1 if upper else i0) * strides[a]
            if a in blended:
                w *= wa if upper else 1 - wa
        values.append(flat[index])
        weights.append(w)
    v = torch.stack(values).to(torch.int64)  # (corners, N)
    w = torch.stack(weights) * torch.isin(v, listed)
    score = torch.stack([(w * (v == v[k])).sum(0) for k in range(v.shape[0])])
    best = score.max(0).values
    none = torch.iinfo(torch.int64).max
    won = torch.where((score >= best - 1e-6) & (best > 0), v, none).min(0).values
    return won.masked_fill_(won == none, first)


def resample_label(label: np.ndarray, new_shape: Sequence[int], labels: Sequence[int] | None = None,
                   separate_axis: int | None = None, chunk: int = 1 << 20) -> np.ndarray:
    """Resample a label map (*spatial) to `new_shape`: one-hot linear per class, arg-max
    (ties to the lower class value; values not in `labels` get no weight). With
    `separate_axis` a (3-D maps; an index in (z, y, x)), nearest along a: each axis has
    its own taps, so no axis is moved and nothing is copied for it.

    No class is interpolated over the volume: where all corners of an output voxel's
    interpolation cell hold one value, that value is the arg-max, so only the cells on a
    boundary between values are voted on, `chunk` voxels at a time, by their 2^d corners.
    The cost follows the boundaries' size, not the number of classes.
    """
    if tuple(label.shape) == tuple(new_shape):
        return label
    present = set(_present_values(label).tolist())
    values = sorted(int(v) for v in (labels if labels is not None else present))
    if not values:
        return np.zeros(tuple(new_shape), dtype=label.dtype)
    dims = label.ndim
    separate = _check_axis(separate_axis, dims)
    taps = [_taps(int(n), int(m), a == separate) for a, (n, m) in enumerate(zip(label.shape, new_shape))]
    blended = [a for a in range(dims) if bool((taps[a][2] > 0).any())]
    lower = [t[0] for t in taps]
    with torch.inference_mode():
        lab = torch.from_numpy(np.ascontiguousarray(label))
        if lab.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
            lab = lab.to(torch.int64)
        listed = torch.tensor(values, dtype=torch.int64)
        out = _gather(lab, lower)
        mixed = _gather(_mixed_cells(lab, blended), lower) if blended else torch.zeros(out.shape, dtype=torch.bool)
        if not present <= set(values):
            out[~torch.isin(out, listed.to(out.dtype)) & ~mixed] = values[0]
        where = mixed.nonzero(as_tuple=True)
        for s in range(0, len(where[0]), chunk):
            part = tuple(w[s:s + chunk] for w in where)
            out[part] = _vote(lab, taps, blended, part, listed, values[0]).to(out.dtype)
    return out.numpy().astype(label.dtype, copy=False)


def resample_probabilities(probs: torch.Tensor, new_shape: Sequence[int], separate_axis: int | None = None,
                           chunk: int = 4) -> torch.Tensor:
    """Resample class scores (K, *spatial) to (K, *new_shape), linear (nearest along
    `separate_axis`, an index in (z, y, x)), `chunk` classes at a time."""
    if tuple(probs.shape[1:]) == tuple(new_shape):
        return probs
    out = torch.empty((probs.shape[0], *new_shape), dtype=probs.dtype)
    for start in range(0, probs.shape[0], chunk):
        part = probs[start:start + chunk].float()
        out[start:start + chunk] = _resample_channels(part, new_shape, "linear", separate_axis).to(probs.dtype)
    return out


def resampled_slabs(scores: torch.Tensor, new_shape: Sequence[int], separate_axis: int | None = None,
                    slab: int = 8) -> Iterator[tuple[int, torch.Tensor]]:
    """Linear resampling of class scores (K, *spatial), any float dtype, to (K, *new_shape),
    `slab` output positions of the first spatial axis (z) at a time: yields (start, float32
    (K, n, *new_shape[1:])) for consecutive slabs. With `separate_axis` a (3-D; an index in
    (z, y, x)), nearest along a.

    Each slab reads only the input slices its positions interpolate from, so the float32
    temporaries are a few slabs' worth however large the volume and however many classes.
    Along z the taps are those of `_taps` (torch's `align_corners=False` grid), in-plane it is
    torch's bilinear (linear in 2-D), so slabs equal whole-volume resampling. A separate y or x
    lies within every slab whole: its nearest taps are those of the whole volume, picked in the
    slab's plane. z goes first (each output slice is resampled in-plane once), unless z grows
    enough that resampling the slab's fewer input slices in-plane first is cheaper."""
    n, m = int(scores.shape[1]), int(new_shape[0])
    rest = tuple(int(s) for s in new_shape[1:])
    separate = _check_axis(separate_axis, scores.ndim - 1)
    nearest = None if separate in (None, 0) else separate - 1  # the separate axis within (y, x)
    i0, i1, w = _taps(n, m, separate == 0)
    used = torch.where(w > 0, i1, i0)  # the second tap only where it has weight
    for j0 in range(0, m, slab):
        j1 = min(j0 + slab, m)
        first, last = int(i0[j0]), int(used[j0:j1].max()) + 1
        src = scores[:, first:last]
        taps = (i0[j0:j1] - first, i1[j0:j1] - first, w[j0:j1])
        if last - first < j1 - j0:  # fewer input slices than output ones: in-plane first
            yield j0, _lerp_first(_resample_inplane(src, rest, nearest), *taps)
        else:
            yield j0, _resample_inplane(_lerp_first(src, *taps), rest, nearest)


def _resample_inplane(x: torch.Tensor, size: tuple[int, ...], nearest: int | None = None) -> torch.Tensor:
    """x: (K, z, *plane) -> float32 (K, z, *size), linear in-plane; nearest along plane axis
    `nearest` (0: y, 1: x) if given. Its slices are picked before the linear step when they
    shrink, after it when they grow; the linear step leaves that axis as it is (bilinear at
    scale 1 takes each sample with weight 1 and its neighbour with weight 0: exact)."""
    size = tuple(size)
    grow = None
    if nearest is not None:
        ax, n, m = 2 + nearest, int(x.shape[2 + nearest]), int(size[nearest])
        pick = _taps(n, m, True)[0]
        if m < n:
            x = x.index_select(ax, pick)
        elif m > n:
            grow = pick
            size = tuple(n if b == nearest else s for b, s in enumerate(size))
    if tuple(x.shape[2:]) != size:
        k, z = x.shape[:2]
        x = _interp(x.float().reshape(k * z, 1, *x.shape[2:]), size, "linear").reshape(k, z, *size)
    x = x.float()
    return x if grow is None else x.index_select(2 + nearest, grow)


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
