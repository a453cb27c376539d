"""Orientation, resampling through world coordinates, and slab cases.

Every real dataset is written in RAS orientation: array axis x (the last) increases toward the
subject's Right, y toward Anterior, z (the first) toward Superior. In ITK's LPS world that is
the direction matrix diag(-1, -1, 1) (the NIfTI/TemplateFlow convention; `nibabel` reports the
files as ('R', 'A', 'S')). Re-orienting only permutes and flips axes: no voxel is interpolated.

Labels reach an image's grid by resampling through world coordinates (identity transform,
both grids placed by their own origin, spacing and direction), never by index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.io.image import Image, from_sitk, to_sitk

ORIENTATION = "RAS"
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def orientation_of(image: Image | sitk.Image) -> str:
    """Three letters naming where each index axis (i, j, k = x, y, z) points: 'RAS', 'LAS', ...

    Raises `ValueError` for a 2-D image.
    """
    direction = image.GetDirection() if isinstance(image, sitk.Image) else image.direction
    if len(direction) != 9:
        raise ValueError("orientation is defined for 3-D images")
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction)


def to_ras(image: Image | sitk.Image) -> Image:
    """The same voxels with axes permuted and flipped so that the image is stored RAS.

    Raises `MedsegError` for an oblique image (one that no permutation makes axis-aligned).
    """
    img = image if isinstance(image, sitk.Image) else to_sitk(image)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    if not np.allclose(np.abs(d), np.round(np.abs(d)), atol=1e-6):
        raise MedsegError(f"image is oblique (direction {np.round(d, 4).tolist()}); "
                          "the real datasets are built from axis-aligned templates only")
    out = from_sitk(sitk.DICOMOrient(img, ORIENTATION))
    out.direction = RAS_DIRECTION  # exact zeros and ones, not -0.0 or 1e-17
    return out


def world_to_index(image: Image, points_xyz: np.ndarray) -> np.ndarray:
    """Continuous array indices (z, y, x) of world points (ITK LPS, x, y, z), shape (N, 3)."""
    points = np.atleast_2d(np.asarray(points_xyz, dtype=float))
    d = np.asarray(image.direction).reshape(3, 3)
    spacing_xyz = np.asarray(image.spacing)[::-1]
    ijk = np.linalg.solve(d, (points - np.asarray(image.origin)).T).T / spacing_xyz
    return ijk[:, ::-1]


def resample_onto(moving: Image | sitk.Image, reference: Image, interpolation: str = "nearest",
                  default: float = 0) -> np.ndarray:
    """`moving` sampled on `reference`'s grid through world coordinates: an array of its shape.

    interpolation: "nearest" (label maps) or "linear" (probabilities, as float32).
    Voxels of `reference` outside `moving` get `default`.
    """
    img = moving if isinstance(moving, sitk.Image) else to_sitk(moving)
    interp = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}[interpolation]
    if interpolation == "linear":
        img = sitk.Cast(img, sitk.sitkFloat32)
    ref = sitk.Image([int(s) for s in reversed(reference.shape)], sitk.sitkUInt8)
    ref.SetSpacing(tuple(reversed(reference.spacing)))
    ref.SetOrigin(reference.origin)
    ref.SetDirection(reference.direction)
    out = sitk.Resample(img, ref, sitk.Transform(), interp, float(default), img.GetPixelID())
    return sitk.GetArrayFromImage(out)


def crop_image(image: Image, start: Sequence[int], stop: Sequence[int]) -> Image:
    """The sub-volume [start, stop) per array axis (z, y, x), its origin moved to its first voxel."""
    start = [max(0, int(a)) for a in start]
    stop = [min(n, int(b)) for n, b in zip(image.shape, stop)]
    if any(b <= a for a, b in zip(start, stop)):
        raise ValueError(f"empty crop {start}..{stop} of an image of shape {image.shape}")
    array = image.array[tuple(slice(a, b) for a, b in zip(start, stop))]
    origin = tuple(float(v) for v in image.index_to_world(start))
    return Image(np.ascontiguousarray(array), image.spacing, origin, image.direction)


def superior_mm(image: Image) -> np.ndarray:
    """World z (mm, superior positive) of each axial slice of an RAS-stored image."""
    if not np.allclose(image.direction, RAS_DIRECTION):
        raise ValueError("slab positions are defined for RAS-stored images")
    return image.origin[2] + image.spacing[0] * np.arange(image.shape[0])


@dataclass(frozen=True)
class Slab:
    """An axial slab [lo_mm, hi_mm) in world z (superior positive, mm); role 'train' or 'val'."""

    role: str
    lo_mm: float
    hi_mm: float

    @property
    def thickness_mm(self) -> float:
        return self.hi_mm - self.lo_mm

    def slice_range(self, image: Image) -> tuple[int, int]:
        """Slices [k0, k1) of an RAS image whose centres lie in [lo_mm, hi_mm)."""
        z = superior_mm(image)
        inside = np.flatnonzero((z >= self.lo_mm - 1e-6) & (z < self.hi_mm - 1e-6))
        if inside.size == 0:
            return 0, 0
        return int(inside[0]), int(inside[-1]) + 1


def slab_layout(z_min: float, z_max: float, validation: Sequence[tuple[float, float]], gap_mm: float,
                max_train_mm: float, min_train_mm: float) -> list[Slab]:
    """Cut [z_min, z_max) into validation slabs (given), gaps of `gap_mm` on both sides of each,
    and training slabs filling the rest: each stretch between gaps is cut into equal slabs at
    most `max_train_mm` thick, and a stretch shorter than `min_train_mm` is dropped. Sorted
    bottom-up."""
    val = sorted((float(a), float(b)) for a, b in validation)
    for (a0, b0), (a1, _) in zip(val, val[1:]):
        if a1 < b0 + 2 * gap_mm:
            raise ValueError(f"validation slabs [{a0}, {b0}) and [{a1}, ...) are closer than two gaps")
    slabs = [Slab("val", a, b) for a, b in val]
    free, pos = [], z_min
    for a, b in val:
        free.append((pos, a - gap_mm))
        pos = b + gap_mm
    free.append((pos, z_max))
    for a, b in free:
        length = b - a
        if length < min_train_mm:
            continue
        parts = int(np.ceil(length / max_train_mm - 1e-9))
        step = length / parts
        slabs += [Slab("train", a + i * step, a + (i + 1) * step) for i in range(parts)]
    return sorted(slabs, key=lambda s: s.lo_mm)


def tuning_fold(slabs: Sequence[Slab], tuning: Sequence[tuple[float, float]],
                gap_mm: float) -> tuple[list[Slab], list[Slab]]:
    """A fold inside the training slabs, for choosing settings without the validation slabs.

    The training slabs at `tuning` (world z, mm; each must be one training slab exactly) are held
    out, and training slabs nearer than `gap_mm` to one of them are left out of both sides, as
    the gap around a validation slab is. Returns (train, held out), each sorted bottom-up.
    """
    train = [s for s in slabs if s.role == "train"]
    held = []
    for lo, hi in tuning:
        match = [s for s in train if abs(s.lo_mm - lo) < 1e-6 and abs(s.hi_mm - hi) < 1e-6]
        if not match:
            raise ValueError(f"tuning slab [{lo}, {hi}) mm is not one of the training slabs")
        held.append(match[0])

    def distance(a: Slab, b: Slab) -> float:
        return max(a.lo_mm - b.hi_mm, b.lo_mm - a.hi_mm, 0.0)

    rest = [s for s in train if s not in held and all(distance(s, h) >= gap_mm - 1e-6 for h in held)]
    if not rest:
        raise ValueError("the tuning slabs and their gaps leave no training slab")
    return rest, held
