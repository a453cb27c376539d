"""Images with geometry, and the one place that converts from SimpleITK's axis order.

Array axes are (z, y, x) for 3D and (y, x) for 2D; `spacing` follows the array's axis order,
in millimetres. `origin` and `direction` are world-space quantities and are kept exactly as
ITK defines them (LPS world, x-y-z order; `direction` is row-major with one column per
*ITK* index axis i, j, k = x, y, z), so a round trip through any format is exact.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import shutil
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.utils.files import _umask, atomic_path

# File endings SimpleITK reads as single files. DICOM series are directories.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff")
# Formats without usable geometry: read with spacing 1, origin 0, identity direction.
FLAT_SUFFIXES = (".png", ".tif", ".tiff")
# Header files whose voxels live in a separate data file.
DETACHED_SUFFIXES = (".mhd", ".nhdr")


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

    def without_voxels(self) -> "Image":
        """The same shape, dtype and geometry around a zero-stride placeholder array.

        For comparing grids while the voxels themselves are freed.
        """
        return replace(self, array=np.broadcast_to(np.zeros((), self.array.dtype), self.array.shape))

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
    """Convert an `Image` to a SimpleITK image with identical geometry.

    bool becomes uint8 and float16 becomes float32 (SimpleITK has neither).
    """
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    # isVector=False: otherwise SimpleITK reads a 4-D array as a 3-D image of vector pixels.
    img = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    img.SetSpacing(tuple(reversed(image.spacing)))
    img.SetOrigin(image.origin)
    img.SetDirection(image.direction)
    return img


def image_suffix(path: str | Path) -> str:
    """The known image file ending of `path` ('.nii.gz', '.png', ...), lower case; '' if none."""
    name = str(path).lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def has_image_suffix(path: str | Path) -> bool:
    return bool(image_suffix(path))


def read_image(path: str | Path) -> Image:
    """Read NIfTI, NRRD, MHA/MHD, PNG/TIFF, or a DICOM series (a directory).

    PNG and TIFF carry no usable geometry (their resolution tags are print dots per inch),
    so they read with spacing 1, origin 0 and identity direction. A NIfTI file shorter than
    its header promises is an error (ITK would silently pad it with zeros). ITK's NIfTI
    library reads NaN and Inf voxels as 0; `nifti_nonfinite_counts` finds them on disk.

    Raises `MedsegError` naming the file when it is missing or unreadable, or holds
    vector pixels (channels belong in separate files, as in the nnU-Net layout).
    """
    path = Path(path)
    if not path.exists():
        raise MedsegError("file not found", path)
    if path.is_dir():
        return from_sitk(_read_dicom_series(path))
    suffix = image_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise MedsegError(f"cannot read image: {_itk_reason(err)}", path) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        if suffix in FLAT_SUFFIXES:
            img = _rgb_to_gray(img)
        else:
            raise MedsegError(
                f"image has {img.GetNumberOfComponentsPerPixel()} components per voxel; "
                "store each channel as its own file", path)
    image = from_sitk(img)
    if suffix in FLAT_SUFFIXES:
        image = Image(image.array, spacing=(1.0,) * image.ndim)
    return image


def _itk_reason(err: RuntimeError) -> str:
    """One line from an ITK exception: the reason, without source locations."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    reasons = []
    for ln in lines:
        if ln.startswith("Exception thrown in SimpleITK") or re.match(r"^\S+\.(cxx|hxx|h|cpp):\d+:?$", ln):
            continue
        ln = re.sub(r"^(sitk::)?ERROR:\s*", "", ln)
        ln = re.sub(r"^ITK ERROR:\s*\w+\(0x[0-9a-f]+\):\s*", "", ln)
        if ln.startswith("Unable to determine ImageIO reader"):
            return "contents match no supported image format (corrupt file or wrong file ending)"
        reasons.append(ln)
    return "; ".join(reasons)[:200] or "unreadable image file"


def _check_nifti_complete(path: Path) -> None:
    """Raise `MedsegError` when a NIfTI file holds fewer data bytes than its header declares.

    Only the header and, for .nii.gz, the gzip trailer are read in the common case; the
    stream is decompressed only when the trailer disagrees (multi-member gzip files).
    Anything this check cannot parse is left to ITK to report.
    """
    header = _read_nifti_header(path)
    if header is None:
        return
    expected = header.data_offset + header.data_bytes
    if not header.gz:
        actual = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", f.read(4))[0]  # uncompressed size modulo 2**32
        if isize == expected % 2**32:
            return
        actual = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    actual += len(chunk)
        except EOFError:
            raise MedsegError("file is truncated (its gzip stream ends early)", path) from None
        except OSError:
            return
    if actual < expected:
        raise MedsegError(f"file is truncated: holds {actual} of the {expected} bytes its header declares", path)


class _NiftiHeader(NamedTuple):
    """The parts of a NIfTI-1/2 header needed to find and decode the voxel data."""

    gz: bool
    dtype: np.dtype | None  # None for datatypes this module does not decode
    n_voxels: int
    data_offset: int  # bytes from the start of the (uncompressed) file
    data_bytes: int


# NIfTI datatype codes of the float types (the only ones that can hold NaN or Inf).
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _read_nifti_header(path: Path) -> _NiftiHeader | None:
    """Parse a .nii/.nii.gz header; None when it is not one this module understands."""
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(540)
    except (OSError, EOFError):
        return None
    if len(head) < 348:
        return None
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            vox_offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or any(d <= 0 for d in dims[1:ndim + 1]):
        return None
    n_voxels = math.prod(dims[1:ndim + 1])
    code = _NIFTI_FLOAT_TYPES.get(datatype)
    dtype = np.dtype(endian + code) if code else None
    return _NiftiHeader(gz, dtype, n_voxels, max(vox_offset, sizeof_hdr), n_voxels * bitpix // 8)


def nifti_nonfinite_counts(path: str | Path) -> tuple[int, int] | None:
    """(NaN, infinite) voxel counts of a float NIfTI file, from the data as stored on disk.

    ITK's NIfTI reader silently replaces NaN and Inf with 0, so `read_image` never shows
    them; this reads the raw voxels instead. Returns None (reading only the header) when
    the file does not store float32/float64 voxels. Raises `MedsegError` when the data
    cannot be read in full.
    """
    path = Path(path)
    header = _read_nifti_header(path)
    if header is None or header.dtype is None:
        return None
    try:
        if header.gz:
            data = np.frombuffer(gzip.decompress(path.read_bytes()), header.dtype,
                                 count=header.n_voxels, offset=header.data_offset)
        else:
            data = np.fromfile(path, header.dtype, count=header.n_voxels, offset=header.data_offset)
    except (OSError, EOFError, ValueError) as err:
        raise MedsegError(f"cannot read image data: {err}", path) from None
    if data.size < header.n_voxels:
        raise MedsegError(f"file is truncated: holds {data.size} of {header.n_voxels} voxels", path)
    if np.isfinite(data).all():
        return 0, 0
    return int(np.isnan(data).sum()), int(np.isinf(data).sum())


def read_geometry(path: str | Path) -> Image:
    """Shape, dtype, spacing, origin and direction of an image file, read from its header only.

    The returned `array` is a read-only zero-stride placeholder with the file's shape and
    dtype: it holds no voxels. Use it to compare grids without decompressing anything.
    """
    path = Path(path)
    if path.is_dir():  # a DICOM series: slices are sorted by position, which needs every file
        return read_image(path).without_voxels()
    if not path.exists():
        raise MedsegError("file not found", path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise MedsegError(f"cannot read image: {_itk_reason(err)}", path) from None
    if reader.GetNumberOfComponents() != 1 and image_suffix(path) not in FLAT_SUFFIXES:
        raise MedsegError(f"image has {reader.GetNumberOfComponents()} components per voxel; "
                          "store each channel as its own file", path)
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())).dtype
    image = Image(
        array=np.broadcast_to(np.zeros((), dtype), tuple(reversed(reader.GetSize()))),
        spacing=tuple(reversed(reader.GetSpacing())),
        origin=reader.GetOrigin(),
        direction=reader.GetDirection(),
    )
    if image_suffix(path) in FLAT_SUFFIXES:
        image = Image(image.array, spacing=(1.0,) * image.ndim)
    return image


def _read_dicom_series(path: Path) -> sitk.Image:
    """Read the one DICOM series in directory `path`; slices are ordered by position."""
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise MedsegError("directory holds no DICOM series", path)
        if len(series) > 1:
            raise MedsegError(f"directory holds {len(series)} DICOM series; pass one per directory", path)
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
        img = reader.Execute()
    except RuntimeError as err:
        raise MedsegError(f"cannot read DICOM series: {_itk_reason(err)}", path) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise MedsegError("DICOM series holds colour pixels; medseg reads grey-value scans", path)
    return img


def _rgb_to_gray(img: sitk.Image) -> sitk.Image:
    # Photographs and screenshots come as RGB(A); medical 2D images are single-channel.
    # Grey values saved as RGB keep their dtype; true colour becomes the float mean of R, G, B.
    arr = sitk.GetArrayFromImage(img)
    rgb = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
    if np.all(rgb == rgb[..., :1]):
        gray = np.ascontiguousarray(rgb[..., 0])
    else:
        gray = rgb.astype(np.float32).mean(axis=-1)
    out = sitk.GetImageFromArray(gray)
    out.SetSpacing(img.GetSpacing())
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(img.GetDirection())
    return out


def write_image(image: Image, path: str | Path, compress: bool = True) -> Path:
    """Write `image` atomically; the format follows the file ending.

    A path without a file ending (or an existing directory) is written as a DICOM series,
    one file per z slice. PNG holds 2-D uint8/uint16 only (integer arrays whose values fit
    are cast) and, like TIFF, no geometry: use NIfTI, NRRD or MHA for anything that must
    keep its place in the world. NIfTI-1 stores geometry as float32, so spacing, origin
    and direction come back within ~1e-7 relative; NRRD and MHA/MHD keep them exactly.
    `.mhd`/`.nhdr` write a detached data file beside the header.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if not suffix and (path.is_dir() or not path.suffix):
        _write_dicom_series(image, path)
        return path
    if not suffix:
        raise MedsegError(f"unknown image file ending; use one of {', '.join(IMAGE_SUFFIXES)}", path)
    if suffix == ".png":
        image = _for_png(image, path)
    img = to_sitk(image)
    try:
        if suffix in DETACHED_SUFFIXES:
            _write_detached(img, path, compress)
        else:
            with atomic_path(path) as tmp:
                sitk.WriteImage(img, str(tmp), useCompression=compress)
    except RuntimeError as err:
        raise MedsegError(f"cannot write image: {_itk_reason(err)}", path) from None
    return path


def _for_png(image: Image, path: Path) -> Image:
    """PNG holds 2-D uint8 or uint16; cast other integer arrays when no value changes."""
    if image.ndim != 2:
        raise MedsegError(f"PNG holds 2-D images, this one is {image.ndim}-D; use .nii.gz or .tif", path)
    array = image.array
    if array.dtype in (np.uint8, np.uint16, np.bool_):
        return image
    if np.issubdtype(array.dtype, np.integer) and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            return image.with_array(array.astype(np.uint8 if hi <= 255 else np.uint16))
    raise MedsegError(
        f"PNG holds uint8 or uint16 values, not this {array.dtype} array; use .tif or .nii.gz", path)


def _write_detached(img: sitk.Image, path: Path, compress: bool) -> None:
    """Write a header (.mhd/.nhdr) and its data file so that neither is ever half-written.

    Both are written under their final names in a temporary directory beside `path`, so the
    header names the right data file; the data file moves into place first, the header last.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        sitk.WriteImage(img, str(tmp_dir / path.name), useCompression=compress)
        written = sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name)  # header last
        for p in written:
            os.replace(p, path.parent / p.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


DICOM_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)


def _write_dicom_series(image: Image, directory: Path) -> None:
    """Write a 3-D integer image as a DICOM series, one file per z slice, atomically.

    Each slice records its world position and the in-plane direction cosines; readers
    derive the slice direction as their cross product, so a left-handed direction matrix
    cannot be stored and is refused rather than silently flipped.
    """
    if image.ndim != 3:
        raise MedsegError(f"DICOM series are written from 3-D images, this one is {image.ndim}-D", directory)
    array = image.array.astype(np.uint8) if image.array.dtype == np.bool_ else image.array
    if array.dtype not in DICOM_DTYPES:
        raise MedsegError(
            f"DICOM holds integer pixels (up to 32 bits), not {array.dtype}; write .nii.gz or .nrrd instead",
            directory)
    d = np.asarray(image.direction).reshape(3, 3)
    if np.linalg.det(d) < 0:
        raise MedsegError("a left-handed direction matrix cannot be stored as a DICOM series; "
                          "write .nii.gz or .nrrd instead", directory)
    img = to_sitk(image.with_array(array))
    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    series_tags = {
        "0008|0020": now[0], "0008|0030": now[1],  # study date and time
        "0008|0021": now[0], "0008|0031": now[1],  # series date and time
        "0008|0008": "DERIVED\\SECONDARY", "0008|0060": "OT", "0008|103e": "medseg",
        "0020|000d": _new_uid(), "0020|000e": _new_uid(),
        # Image Orientation (Patient): the row (i) and column (j) direction cosines.
        "0020|0037": "\\".join(_ds(v) for v in (d[0, 0], d[1, 0], d[2, 0], d[0, 1], d[1, 1], d[2, 1])),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the series UID set above, one series for all slices
    with atomic_directory(directory, replaceable=_is_dicom_file) as tmp:
        for k in range(img.GetDepth()):
            sl = img[:, :, k]
            for tag, value in series_tags.items():
                sl.SetMetaData(tag, value)
            sl.SetMetaData("0008|0018", _new_uid())
            sl.SetMetaData("0020|0013", str(k + 1))
            sl.SetMetaData("0020|0032", "\\".join(_ds(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
            sl.SetMetaData("0018|0050", _ds(image.spacing[0]))
            writer.SetFileName(str(tmp / f"slice_{k:04d}.dcm"))
            try:
                writer.Execute(sl)
            except RuntimeError as err:
                raise MedsegError(f"cannot write DICOM slice {k}: {_itk_reason(err)}", directory) from None


def _is_dicom_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".dcm"


def _new_uid() -> str:
    # UUID-derived DICOM UID (PS3.5 B.2): no registered root needed.
    return f"2.25.{uuid.uuid4().int}"


def _ds(value: float) -> str:
    """A DICOM decimal string: at most 16 characters, as precise as that allows."""
    for digits in range(16, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return "0"


@contextlib.contextmanager
def atomic_directory(path: str | Path, replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; move it onto `path` if the block succeeds.

    An existing `path` is replaced only when it is empty, or when `replaceable` accepts every
    entry in it (a DICOM series holds only .dcm files): a typo must never remove a user's
    folder. On any exception the temporary directory is removed and `path` is left as it was.
    """
    path = Path(path)
    if path.exists():
        entries = list(path.iterdir()) if path.is_dir() else None
        if entries is None or (entries and not (replaceable and all(replaceable(e) for e in entries))):
            raise MedsegError("already exists and is not an empty directory; choose a new name or remove it", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a plain mkdir would not
        old = None
        if path.exists():
            # Directories cannot be renamed onto non-empty ones: move the old one aside first.
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
