"""The resampling engines behind the spatial transform, and the scratch memory they share.

Each engine samples (N, *region) float tensors at the points p = origin + A (u + d(u)) of the
final patch (see `spatial.py`) and returns (N, *final); points outside the region read 0.
- `separable_sampler`: A diagonal, no displacement. One axis at a time: slab by slab along the
  leading axes, a small matrix product along the last (contiguous) one. Exactly what the grid
  sampler computes for such an A (linear: the same 2^d weights), at a fraction of the cost.
- `grid_sampler`: anything else, with torch's `grid_sample`; in-plane transforms (axis 0 maps
  voxel to voxel) and 2D use its 2D kernel, which is vectorised on CPU, the rest its 3D one.

Fresh multi-megabyte tensors cost page faults that can exceed the arithmetic on them, so large
temporaries come from a `Workspace` that keeps them between samples.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Sampler = Callable[[torch.Tensor, str], torch.Tensor]
GRID_MODES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}
LAST_AXIS_BLOCK = 32


class Workspace:
    """Scratch tensors reused by name: one flat buffer per name, grown when needed and viewed in
    the requested shape. Not for sharing between threads."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu") -> torch.Tensor:
        n = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(n, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:n].view(tuple(shape))


def _cubic(d: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel; torch's bicubic uses a = -0.75."""
    d = abs(d)
    if d <= 1:
        return ((a + 2) * d - (a + 3)) * d * d + 1
    if d < 2:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return 0.0


def axis_taps(coords: np.ndarray, n: int, mode: str) -> list[list[tuple[int, float]]]:
    """For each output point on one axis: the (input index, weight) pairs that fall inside [0, n)."""
    taps = []
    for p in coords:
        if mode == "nearest":
            i = int(np.rint(p))  # half to even, as grid_sample's nearest
            taps.append([(i, 1.0)] if 0 <= i < n else [])
            continue
        base = math.floor(p)
        frac = p - base
        if mode == "linear":
            pairs = [(base, 1.0 - frac), (base + 1, frac)]
        else:
            pairs = [(base + t, _cubic(frac - t)) for t in (-1, 0, 1, 2)]
        taps.append([(i, w) for i, w in pairs if 0 <= i < n and w != 0.0])
    return taps


def _slabs(src: torch.Tensor, axis: int, taps, dst: torch.Tensor) -> None:
    """dst.select(axis, j) = sum of w * src.select(axis, i) over taps[j]."""
    for j, pairs in enumerate(taps):
        d = dst.select(axis, j)
        if not pairs:
            d.zero_()
            continue
        i, w = pairs[0]
        if w == 1.0:
            d.copy_(src.select(axis, i))
        else:
            torch.mul(src.select(axis, i), w, out=d)
        for i, w in pairs[1:]:
            d.add_(src.select(axis, i), alpha=w)


def _last_axis(src: torch.Tensor, taps, dst: torch.Tensor, mode: str) -> None:
    """The contiguous axis: a (n x m) weight matrix for floats, a gather for nearest."""
    n, m = src.shape[-1], dst.shape[-1]
    if mode == "nearest" or not src.is_floating_point():
        idx = torch.tensor([pairs[0][0] if pairs else 0 for pairs in taps], device=src.device)
        torch.index_select(src, src.ndim - 1, idx, out=dst)
        empty = [j for j, pairs in enumerate(taps) if not pairs]
        if empty:
            dst[..., empty] = 0
        return
    w = torch.zeros((n, m), dtype=src.dtype)
    for j, pairs in enumerate(taps):
        for i, v in pairs:
            w[i, j] += v
    w = w.to(src.device)
    rows, out = src.reshape(-1, n), dst.view(-1, m)
    # The weights form a band: blocks of output columns read only a short run of input columns,
    # which cuts the multiply's work by the ratio of the input side to that run.
    for j0 in range(0, m, LAST_AXIS_BLOCK):
        j1 = min(m, j0 + LAST_AXIS_BLOCK)
        used = [i for pairs in taps[j0:j1] for i, _ in pairs]
        if not used:
            out[:, j0:j1] = 0
            continue
        i0, i1 = min(used), max(used) + 1
        out[:, j0:j1] = rows[:, i0:i1] @ w[i0:i1, j0:j1]


def separable_sampler(coords: list[np.ndarray], final: list[int], ws: Workspace) -> Sampler:
    """Sampling at coords[k] (input voxel positions along axis k) for every output point."""
    dims = len(final)

    def sample(t: torch.Tensor, mode: str) -> torch.Tensor:
        key = "sep_int" if not t.is_floating_point() else "sep"
        shape = list(t.shape)
        cur = t
        for k in range(dims):
            taps = axis_taps(coords[k], shape[k + 1], mode)
            shape[k + 1] = final[k]
            dst = ws.get(f"{key}{k}", shape, t.dtype, t.device)
            if k < dims - 1:
                _slabs(cur, k + 1, taps, dst)
            else:
                _last_axis(cur, taps, dst, mode)
            cur = dst
        return cur

    return sample


def affine_grid(b: np.ndarray, shift: np.ndarray, final: list[int], half: np.ndarray,
                out: torch.Tensor) -> torch.Tensor:
    """out[j] = shift + b (j - half) with the last axis reversed (x, y, z), as grid_sample reads
    it: a sum of one outer product per axis, cheaper than torch's affine_grid."""
    dims = len(final)
    terms = []
    for k in range(dims):
        col = np.outer(np.arange(final[k]) - half[k], b[::-1, k])
        if k == 0:
            col = col + shift[::-1]
        shape = [1] * dims + [dims]
        shape[k] = final[k]
        terms.append(torch.as_tensor(col, dtype=torch.float32).to(out.device).view(shape))
    if dims == 2:
        return torch.add(terms[0], terms[1], out=out)
    return torch.add(terms[0] + terms[1], terms[2], out=out)


def grid_sampler(a: np.ndarray, origin: np.ndarray, region: list[int], final: list[int],
                 field: torch.Tensor | None, in_plane: bool, ws: Workspace, device: torch.device) -> Sampler:
    """Sampling at origin + A (u + field(u)) with torch's grid_sample (align_corners=False:
    -1 and 1 are the outer edges of the first and last voxel)."""
    dims = len(final)
    half = (np.asarray(final, dtype=float) - 1) / 2
    size = np.asarray(region, dtype=float)
    b = a * (2.0 / size)[:, None]  # offsets in voxels -> normalised units, per input axis
    shift = (2 * origin + 1) / size - 1

    if dims == 3 and in_plane and field is None:
        # Axis 0 maps voxel to voxel (identity or flip): slices are a batch for the 2D kernel.
        z = origin[0] + a[0, 0] * (np.arange(final[0]) - half[0])
        if np.allclose(z, np.rint(z), atol=1e-6) and z.min() >= 0 and z.max() <= region[0] - 1:
            zi = torch.as_tensor(np.rint(z).astype(np.int64), device=device)
            grid2 = affine_grid(b[1:, 1:], shift[1:], final[1:], half[1:],
                                ws.get("grid2", (*final[1:], 2), device=device))

            def sample_slices(t: torch.Tensor, mode: str) -> torch.Tensor:
                s = t.index_select(1, zi).transpose(0, 1)  # (final_z, N, H, W)
                out = F.grid_sample(s, grid2.expand(s.shape[0], *grid2.shape), mode=GRID_MODES[mode],
                                    padding_mode="zeros", align_corners=False)
                return out.transpose(0, 1)

            return sample_slices

    grid = affine_grid(b, shift, final, half, ws.get("grid", (*final, dims), device=device))
    if field is not None:
        grid += (field.reshape(-1, dims) @ torch.as_tensor(b.T[:, ::-1].copy(), dtype=torch.float32,
                                                           device=device)).view(grid.shape)

    def sample(t: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "cubic" and dims == 3:
            raise ValueError("cubic interpolation of a 3D rotation is not available (torch's grid_sample has "
                             "no tricubic mode); use image_interpolation='linear' or in-plane rotation")
        return F.grid_sample(t[None], grid[None], mode=GRID_MODES[mode], padding_mode="zeros",
                             align_corners=False)[0]

    return sample


def indicator_stack(image: torch.Tensor | None, label: torch.Tensor, ws: Workspace, channels_last: bool = False
                    ) -> tuple[torch.Tensor, list[int]]:
    """(C + K, *region) float: the image's channels (if given), then one indicator per foreground
    class present in `label`; and those K classes. Absent classes get no channel.

    `channels_last` stores a voxel's channels side by side: the 3D grid sampler then finds every
    channel of a corner in one cache line, which makes extra channels nearly free."""
    top = int(label.max()) if label.numel() else 0
    if top > 16:  # sparse values (an ignore label such as 255): count them
        counts = torch.bincount(label.reshape(-1).clamp_min(0).long())
        candidates = [int(k) for k in torch.nonzero(counts[1:]).flatten() + 1]
    else:
        candidates = list(range(1, top + 1))
    first = image.shape[0] if image is not None else 0
    n = first + len(candidates)
    if channels_last:
        stack = ws.get("stack", (*label.shape, n), torch.float32, label.device).movedim(-1, 0)
    else:
        stack = ws.get("stack", (n, *label.shape), torch.float32, label.device)
    if image is not None:
        stack[:first].copy_(image)
    mask = ws.get("mask", label.shape, torch.bool, label.device)
    classes = []
    for k in candidates:
        torch.eq(label, k, out=mask)
        if int(mask.view(torch.uint8).max()):  # a contiguous byte scan: cheaper than any() or a float max
            stack[first + len(classes)].copy_(mask)
            classes.append(k)
    return stack[:first + len(classes)], classes


def decide_labels(scores: torch.Tensor, classes: list[int], out: torch.Tensor, ws: Workspace) -> None:
    """Labels from interpolated indicators (K, *final) of `classes`: the class with the largest
    value, background's being 1 minus their sum; ties go to the lower label."""
    out.zero_()
    if not classes:
        return
    mask = ws.get("decide", scores.shape[1:], torch.bool, scores.device)
    if len(classes) == 1:
        torch.gt(scores[0], 0.5, out=mask)
        out.masked_fill_(mask, classes[0])
        return
    best = ws.get("best", scores.shape[1:], scores.dtype, scores.device)
    torch.sum(scores, 0, out=best)
    torch.sub(1, best, out=best)  # background
    for k, s in zip(classes, scores):
        torch.gt(s, best, out=mask)
        out.masked_fill_(mask, k)
        torch.maximum(best, s, out=best)
