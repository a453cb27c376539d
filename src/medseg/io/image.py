"""Images with geometry, and the one place that converts from SimpleITK's axis order.

Array axes are (z, y, x) for 3D and (y, x) for 2D; `spacing` follows the array's axis order,
in millimetres. `origin` and `direction` are world-space quantities and are kept exactly as
ITK defines them (LPS world, x-y-z order; `direction` is row-major with one column per
*ITK* index axis i, j, k = x, y, z), so a round trip through any format is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.utils.files import atomic_path

# File endings SimpleITK reads as single files. DICOM series are directories.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff")


@dataclass
class Image:
    """A scan: array plus the geometry needed to place it in the world.

    array: (z, y, x) or (y, x) voxels, any numeric dtype.
    spacing: voxel size per array axis, millimetres, same order as the array.
    origin: world position (ITK LPS, x, y, z) of the centre of voxel 0.
    direction: row-major ITK direction cosines, ndim*ndim values.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = field(default=())
    direction: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        ndim = self.array.ndim
        self.spacing = tuple(float(s) for s in self.spacing)
        if not self.origin:
            self.origin = (0.0,) * ndim
        if not self.direction:
            self.direction = tuple(np.eye(ndim).ravel().tolist())
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in self.direction)
        if len(self.spacing) != ndim or len(self.origin) != ndim or len(self.direction) != ndim * ndim:
            raise ValueError(
                f"geometry does not fit a {ndim}-D array: spacing {self.spacing}, "
                f"origin {self.origin}, direction of {len(self.direction)} values"
            )

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> "Image":
        """The same geometry around another array of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the image's {self.array.shape}")
        return replace(self, array=array)

    def same_geometry(self, other: "Image", tol: float = 1e-4) -> bool:
        """True when shape, spacing, origin and direction agree within `tol` (relative for spacing)."""
        return not geometry_differences(self, other, tol)

    def index_to_world(self, index_zyx: Sequence[float]) -> np.ndarray:
        """World (ITK LPS, x, y, z) position of a voxel index given in array order."""
        ijk = np.asarray(index_zyx, dtype=float)[::-1]
        spacing_xyz = np.asarray(self.spacing)[::-1]
        d = np.asarray(self.direction).reshape(self.ndim, self.ndim)
        return np.asarray(self.origin) + d @ (ijk * spacing_xyz)


def geometry_differences(a: Image, b: Image, tol: float = 1e-4) -> list[str]:
    """Human-readable list of the ways two images' grids differ (empty when they agree)."""
    problems = []
    if a.shape != b.shape:
        problems.append(f"shape {a.shape} vs {b.shape}")
        return problems
    if not np.allclose(a.spacing, b.spacing, rtol=tol, atol=tol):
        problems.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)}")
    # Origins are in mm: compare against a fraction of a voxel.
    if not np.allclose(a.origin, b.origin, rtol=0, atol=max(tol, 1e-3 * min(a.spacing))):
        problems.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)}")
    if not np.allclose(a.direction, b.direction, rtol=0, atol=tol):
        problems.append("direction differs")
    return problems


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def from_sitk(img: sitk.Image) -> Image:
    """Convert a SimpleITK image (scalar pixels) to an `Image` with (z, y, x) arrays."""
    array = sitk.GetArrayFromImage(img)  # already (z, y, x)
    return Image(
        array=array,
        spacing=tuple(reversed(img.GetSpacing())),
        origin=tuple(img.GetOrigin()),
        direction=tuple(img.GetDirection()),
    )


def to_sitk(image: Image) -> sitk.Image:
    """Convert an `Image` to a SimpleITK image with identical geometry."""
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(tuple(reversed(image.spacing)))
    img.SetOrigin(image.origin)
    img.SetDirection(image.direction)
    return img


def has_image_suffix(path: str | Path) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def read_image(path: str | Path) -> Image:
    """Read NIfTI, NRRD, MHA/MHD, PNG/TIFF, or a DICOM series (a directory).

    Raises `MedsegError` naming the file when it is missing or unreadable, or holds
    vector pixels (channels belong in separate files, as in the nnU-Net layout).
    """
    path = Path(path)
    if not path.exists():
        raise MedsegError("file not found", path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise MedsegError("directory holds no DICOM series", path)
            if len(series) > 1:
                raise MedsegError(f"directory holds {len(series)} DICOM series; pass one per directory", path)
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
    except MedsegError:
        raise
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        reason = next((ln for ln in first if "ERROR" in ln or "Exception" in ln), "unreadable image file")
        raise MedsegError(f"cannot read image ({reason.strip()[:160]})", path) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        if path.suffix.lower() in (".png", ".tif", ".tiff"):
            img = _rgb_to_gray(img)
        else:
            raise MedsegError(
                f"image has {img.GetNumberOfComponentsPerPixel()} components per voxel; "
                "store each channel as its own file", path)
    return from_sitk(img)


def _rgb_to_gray(img: sitk.Image) -> sitk.Image:
    # Photographs and screenshots come as RGB(A); medical 2D images are single-channel.
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    gray = arr[..., :3].mean(axis=-1) if arr.shape[-1] >= 3 else arr[..., 0]
    out = sitk.GetImageFromArray(gray)
    out.SetSpacing(img.GetSpacing())
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(img.GetDirection())
    return out


def write_image(image: Image, path: str | Path, compress: bool = True) -> Path:
    """Write `image` atomically; the format follows the file ending.

    PNG can only hold 8/16-bit integers and drops geometry; use NIfTI or NRRD for anything
    that must keep its place in the world.
    """
    path = Path(path)
    if not has_image_suffix(path):
        raise MedsegError(f"unknown image file ending; use one of {', '.join(IMAGE_SUFFIXES)}", path)
    img = to_sitk(image)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress)
    return path
