"""Spatial augmentation: rotation, scaling, elastic deformation and mirroring as one sampling grid.

One sample's spatial transform is plain data (`spatial` below). It maps each voxel of the final
patch to a point of the (larger) input patch:

    p = c + A (u + d(u))        A = R @ S @ M

with `u` the voxel's offset from the final patch's centre, `c` the input patch's centre, `R` the
rotation, `S` the scaling, `M` the mirroring (a diagonal of +-1) and `d` the optional elastic
displacement, all in voxels of the array's axes (z, y, x). The image is interpolated once at these
points (linear, or cubic in 2D and in-plane mode) and the labels once (nearest neighbour, or each
class's indicator linearly and then the class with the largest value, so classes are never mixed).
Points outside the input patch read 0 (image) and background (labels).

`spatial` holds `rotation_deg` (None, one angle for 2D and in-plane mode, three for 3D: about axis
0, 1 and 2, composed R0 @ R1 @ R2), `scale` (None or a factor; > 1 samples a larger region, so
structures look smaller, as in nnU-Net), `mirror` (the flipped spatial axes) and `elastic` (None or
a field's `seed`, `sigma` and `magnitude` per displacement component, both as fractions of the
patch side).

Which computation runs depends on the transform, not on a flag: no rotation, scaling or elastic
deformation is a crop (and a flip: no interpolation at all); scaling alone is separable and
resamples one axis at a time; in-plane and 2D rotations use the 2D grid sampler; the rest uses the
3D grid sampler. All give the result of the one formula above.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medseg.augmentation.resampling import (Workspace, decide_labels, grid_sampler, indicator_stack,
                                            separable_sampler)

# -- the sampled transform as a matrix -------------------------------------------------------


def _plane_rotation(n: int, i: int, j: int, deg: float) -> np.ndarray:
    """Rotation by `deg` degrees in the plane of axes i and j (from i towards j)."""
    rad = math.radians(deg)
    c, s = math.cos(rad), math.sin(rad)
    m = np.eye(n)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def rotation_matrix(angles_deg: Sequence[float], spatial_dims: int, in_plane: bool = False) -> np.ndarray:
    """2D: one angle in the (y, x) plane. 3D in-plane: one angle about axis 0. 3D: angles about
    axes 0, 1 and 2, composed R0 @ R1 @ R2."""
    if spatial_dims == 2:
        return _plane_rotation(2, 0, 1, angles_deg[0])
    if in_plane:
        return _plane_rotation(3, 1, 2, angles_deg[0])
    a0, a1, a2 = angles_deg
    return _plane_rotation(3, 1, 2, a0) @ _plane_rotation(3, 0, 2, a1) @ _plane_rotation(3, 0, 1, a2)


def sampling_matrix(spatial: dict[str, Any], spatial_dims: int, in_plane: bool = False) -> np.ndarray:
    """A = R @ S @ M: final-patch offsets (voxels) -> input-patch offsets (voxels)."""
    a = np.eye(spatial_dims)
    if spatial.get("rotation_deg"):
        a = rotation_matrix(spatial["rotation_deg"], spatial_dims, in_plane)
    if spatial.get("scale") is not None:
        s = np.full(spatial_dims, float(spatial["scale"]))
        if in_plane and spatial_dims == 3:
            s[0] = 1.0
        a = a @ np.diag(s)
    m = np.ones(spatial_dims)
    for ax in spatial.get("mirror", ()):
        m[ax] = -1.0
    return a @ np.diag(m)


def is_identity(spatial: dict[str, Any]) -> bool:
    """True when the transform is a crop (and a flip): nothing to interpolate."""
    return not spatial.get("rotation_deg") and spatial.get("scale") is None and spatial.get("elastic") is None


# -- how large a patch to cut ------------------------------------------------------------------


def _rotations(max_deg: float, spatial_dims: int, in_plane: bool) -> np.ndarray:
    """Rotation matrices on a grid over [-max_deg, max_deg] per axis (fine enough that the
    worst case found is within a small fraction of a voxel of the true one)."""
    if max_deg <= 0:
        return np.eye(spatial_dims)[None]
    if spatial_dims == 2 or in_plane:
        angles = np.linspace(-max_deg, max_deg, int(math.ceil(2 * max_deg / 0.5)) + 1)
        return np.stack([rotation_matrix([a], spatial_dims, in_plane) for a in angles])
    steps = min(int(math.ceil(2 * max_deg / 2.5)) + 1, 41)
    angles = np.linspace(-max_deg, max_deg, steps)
    r0 = np.stack([_plane_rotation(3, 1, 2, a) for a in angles])
    r1 = np.stack([_plane_rotation(3, 0, 2, a) for a in angles])
    r2 = np.stack([_plane_rotation(3, 0, 1, a) for a in angles])
    return np.einsum("aij,bjk,ckl->abcil", r0, r1, r2).reshape(-1, 3, 3)


def input_patch_size(final_patch_size: Sequence[int], *, max_rotation_deg: float, max_scale: float,
                     in_plane: bool = False, elastic_magnitude: float = 0.0, cubic: bool = False) -> tuple[int, ...]:
    """The patch to cut so that the final patch sees no padding where it matters.

    Guarantees, for every rotation within +-`max_rotation_deg` (per axis) and scale up to
    `max_scale` (nnU-Net's convention: larger = a larger region is sampled):
    - the whole final patch reads only voxels of the input patch when it is not zoomed out
      (scale <= 1), and
    - the ellipsoid inscribed in the final patch reads only voxels of the input patch at every
      scale, so zooming out may bring padding into the corners only.
    This costs less memory than requiring the whole patch at every scale (300^3 for a 128^3
    patch with nnU-Net's ranges): 220^3 here, against 205^3 for nnU-Net's own initial patch.
    Each side exceeds the final side by an even number, so the centres coincide on a voxel and
    an untransformed sample is an exact crop. `elastic_magnitude` is the largest displacement as
    a fraction of the patch side; `cubic` adds the wider interpolation support.
    """
    final = np.asarray(final_patch_size, dtype=float)
    dims = len(final)
    half = (final - 1) / 2
    rots = _rotations(max_rotation_deg, dims, in_plane)
    box = (np.abs(rots) @ half).max(0) * min(1.0, max_scale)
    ellipsoid = np.sqrt((rots**2) @ (half**2)).max(0) * max(1.0, max_scale)
    reach = np.maximum(np.maximum(box, ellipsoid), half)
    if elastic_magnitude > 0:
        moved = elastic_magnitude * final
        if in_plane and dims == 3:
            moved[0] = 0.0
        reach = reach + max(1.0, max_scale) * float(np.sqrt((moved**2).sum()))
    margin = 0.5 if max_rotation_deg > 0 else 0.0  # the grid search over angles may miss a little
    out = []
    for ax, (n, r) in enumerate(zip(final_patch_size, reach)):
        if in_plane and dims == 3 and ax == 0:
            out.append(int(n))
            continue
        size = int(math.ceil(2 * (r + margin) + 1 - 1e-6)) + (2 if cubic else 0)
        size = max(size, int(n))
        size += (size - int(n)) % 2
        out.append(size)
    return tuple(out)


# -- elastic displacement ----------------------------------------------------------------------


def _smooth_(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a small array along every axis (zero padding), in place."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    for ax in range(x.ndim):
        moved = x.movedim(ax, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        out = F.conv1d(F.pad(flat, (radius, radius)), k.view(1, 1, -1)).reshape(shape)
        x.copy_(out.movedim(-1, ax))
    return x


def elastic_field(elastic: dict[str, Any], size: Sequence[int], in_plane: bool = False,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Displacement (*size, dims) in voxels of the final patch, reproduced from its `seed`.

    Component k is white noise on a coarse grid with spacing sigma_k * side_k voxels, smoothed
    over two grid points and interpolated linearly to the patch, then scaled so its largest
    absolute value is magnitude_k * side_k voxels.
    """
    dims = len(size)
    gen = torch.Generator().manual_seed(int(elastic["seed"]))
    out = torch.zeros((*size, dims), dtype=torch.float32, device=device)
    for k in range(dims):
        if in_plane and dims == 3 and k == 0:
            continue
        step = max(float(elastic["sigma"][k]) * size[k], 1.0)
        coarse = torch.randn([int(math.ceil(n / step)) + 1 for n in size], generator=gen)
        # Zero padding would pull the field towards 0 at the border; smoothing twice the grid
        # and cutting the middle keeps it stationary.
        coarse = _smooth_(F.pad(coarse[None, None], [2, 2] * dims, mode="replicate")[0, 0], 1.0)
        coarse = coarse[tuple(slice(2, -2) for _ in range(dims))]
        mode = "trilinear" if dims == 3 else "bilinear"
        field = F.interpolate(coarse[None, None], size=tuple(size), mode=mode, align_corners=True)[0, 0]
        peak = field.abs().max().clamp_min(1e-12)
        out[..., k] = (field * (float(elastic["magnitude"][k]) * size[k] / peak)).to(device)
    return out


# -- one sample ------------------------------------------------------------------------------------


def transform_sample(image: torch.Tensor, label: torch.Tensor | None, spatial: dict[str, Any],
                     final_size: Sequence[int], *, in_plane: bool = False, image_mode: str = "linear",
                     label_mode: str = "linear", out_image: torch.Tensor | None = None,
                     out_label: torch.Tensor | None = None, workspace: Workspace | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply one sample's spatial transform: image (C, *input) -> (C, *final), labels (*input) ->
    (*final), written into `out_image` / `out_label` when given. The centres of the input and the
    final patch correspond (see the module docstring)."""
    final = [int(n) for n in final_size]
    dims = len(final)
    size_in = list(image.shape[1:])
    if any(q < p for q, p in zip(size_in, final)):
        raise ValueError(f"input patch {size_in} is smaller than the final patch {final}")
    ws = workspace or Workspace()
    dev = image.device
    if out_image is None:
        out_image = torch.empty((image.shape[0], *final), dtype=image.dtype, device=dev)
    if label is not None and out_label is None:
        out_label = torch.empty(final, dtype=label.dtype, device=label.device)

    if is_identity(spatial):
        box = tuple(slice((q - p) // 2, (q - p) // 2 + p) for q, p in zip(size_in, final))
        flips = sorted(int(a) for a in spatial.get("mirror", ()))
        crop = image[(slice(None), *box)]
        out_image.copy_(torch.flip(crop, [a + 1 for a in flips]) if flips else crop)
        if label is not None:
            out_label.copy_(torch.flip(label[box], flips) if flips else label[box])
        return out_image, out_label

    a = sampling_matrix(spatial, dims, in_plane)
    half = (np.asarray(final, dtype=float) - 1) / 2
    centre = (np.asarray(size_in, dtype=float) - 1) / 2
    elastic = spatial.get("elastic")
    field = elastic_field(elastic, final, in_plane, dev) if elastic is not None else None
    # Read only the region the points fall in, plus the interpolation's support.
    reach = np.abs(a) @ half
    if field is not None:
        reach = reach + np.abs(a).sum(1) * float(field.abs().max())
    support = 2 if image_mode == "cubic" else 1
    lo = [max(0, int(math.floor(c - r)) - support) for c, r in zip(centre, reach)]
    hi = [min(q, int(math.ceil(c + r)) + support + 1) for c, r, q in zip(centre, reach, size_in)]
    region = tuple(slice(l, h) for l, h in zip(lo, hi))
    img = image[(slice(None), *region)]
    lab = label[region] if label is not None else None
    origin = centre - np.asarray(lo, dtype=float)  # the input patch's centre, in region voxels
    region_size = [h - l for l, h in zip(lo, hi)]

    diagonal = field is None and not np.any(a - np.diag(np.diag(a)))
    if diagonal:
        coords = [origin[k] + a[k, k] * (np.arange(final[k]) - half[k]) for k in range(dims)]
        sample = separable_sampler(coords, final, ws)
    else:
        sample = grid_sampler(a, origin, region_size, final, field, in_plane, ws, dev)

    channels = image.shape[0]
    if lab is not None and label_mode == "linear":
        # The grid sampler takes image and indicators in one call when both are linear (its
        # weights are then computed once); the separable one gains nothing from stacking.
        together = image_mode == "linear" and not diagonal
        free_3d = not diagonal and dims == 3 and not (in_plane and field is None)
        stack, classes = indicator_stack(img if together else None, lab, ws, channels_last=free_3d)
        if not together:
            out_image.copy_(sample(img, image_mode))
        if len(stack):
            result = sample(stack, "linear")
            if together:
                out_image.copy_(result[:channels])
            decide_labels(result[channels * together:], classes, out_label, ws)
        else:
            out_label.zero_()
        return out_image, out_label

    out_image.copy_(sample(img, image_mode))
    if lab is not None:
        if diagonal:
            out_label.copy_(sample(lab[None], "nearest")[0])
        else:
            as_float = ws.get("label_float", region_size, torch.float32, dev)
            as_float.copy_(lab)
            out_label.copy_(sample(as_float[None], "nearest")[0])
    return out_image, out_label


# -- the batch helper kept from the first version -------------------------------------------------


def mirror(image: torch.Tensor, label: torch.Tensor, gen: torch.Generator, axes: Sequence[int],
           p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample along each spatial axis in `axes` (0 = first spatial axis) with probability p."""
    image, label = image.clone(), label.clone()
    for i in range(image.shape[0]):
        flips = [a for a in axes if torch.rand(1, generator=gen).item() < p]
        if flips:
            image[i] = torch.flip(image[i], [a + 1 for a in flips])
            label[i] = torch.flip(label[i], flips)
    return image, label
