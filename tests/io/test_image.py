"""Images with geometry: exact round trips through every format, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.io.image import (
    Image, geometry_differences, nifti_nonfinite_counts, read_geometry, read_image, to_sitk, write_image,
)

SHAPE = (4, 6, 8)  # (z, y, x)

# NIfTI-1 stores spacing, origin and direction as float32; the others keep float64 text.
GEOMETRY_TOL = {".nii.gz": 1e-6, ".nii": 1e-6, ".nrrd": 1e-12, ".nhdr": 1e-12, ".mha": 1e-12, ".mhd": 1e-12}


def assert_same_geometry(a: Image, b: Image, tol: float) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(b.spacing, a.spacing, rtol=tol, atol=0)
    np.testing.assert_allclose(b.origin, a.origin, rtol=0, atol=tol * 100)  # origins are ~10 mm
    np.testing.assert_allclose(b.direction, a.direction, rtol=0, atol=tol)


@pytest.mark.parametrize("suffix", list(GEOMETRY_TOL))
def test_round_trip_keeps_oblique_geometry_and_values(tmp_path: Path, tiny: SimpleNamespace, suffix: str) -> None:
    array = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    image = Image(array, spacing=(2.5, 0.7, 0.8123456789), origin=(-10.123456789, 20.5, 3.3333333333),
                  direction=tiny.oblique_direction())
    path = write_image(image, tmp_path / f"scan{suffix}")
    back = read_image(path)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, array)
    assert_same_geometry(image, back, GEOMETRY_TOL[suffix])
    assert not geometry_differences(image, back)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
                                   np.int64, np.float32, np.float64])
def test_dtype_is_preserved(tmp_path: Path, tiny: SimpleNamespace, suffix: str, dtype: type) -> None:
    array = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 100).astype(dtype)
    back = read_image(write_image(tiny.make_image(array), tmp_path / f"x{suffix}"))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array)


@pytest.mark.parametrize("dtype, stored", [(np.bool_, np.uint8), (np.float16, np.float32)])
def test_dtypes_simpleitk_lacks_are_widened(
        tmp_path: Path, tiny: SimpleNamespace, dtype: type, stored: type) -> None:
    array = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 2).astype(dtype)
    back = read_image(write_image(tiny.make_image(array), tmp_path / "x.nii.gz"))
    assert back.array.dtype == stored
    np.testing.assert_array_equal(back.array, array.astype(stored))


def test_2d_nifti_keeps_geometry(tmp_path: Path, tiny: SimpleNamespace) -> None:
    image = tiny.make_image(np.arange(48, dtype=np.int16).reshape(6, 8), direction=tiny.oblique_direction(2))
    back = read_image(write_image(image, tmp_path / "slice.nii.gz"))
    assert back.ndim == 2
    np.testing.assert_array_equal(back.array, image.array)
    assert_same_geometry(image, back, 1e-6)


def test_4d_array_is_written_as_4d_scalar_image(tmp_path: Path, tiny: SimpleNamespace) -> None:
    # SimpleITK would take a 4-D array for a 3-D image of vector pixels unless told otherwise.
    array = np.random.default_rng(1).normal(size=(2, *SHAPE)).astype(np.float32)
    image = Image(array, spacing=(1.0, *tiny.SPACING))
    back = read_image(write_image(image, tmp_path / "multi.nii.gz"))
    assert back.shape == array.shape
    np.testing.assert_array_equal(back.array, array)


@pytest.mark.parametrize("suffix, compress, data_name", [
    (".mhd", True, "scan.zraw"), (".mhd", False, "scan.raw"), (".nhdr", True, "scan.raw.gz")])
def test_detached_header_names_its_data_file_and_leaves_no_temporaries(
        tmp_path: Path, tiny: SimpleNamespace, suffix: str, compress: bool, data_name: str) -> None:
    image = tiny.make_image(np.ones(SHAPE, np.int16), direction=tiny.oblique_direction())
    for _ in range(2):  # the second write replaces the first in place
        write_image(image, tmp_path / f"scan{suffix}", compress=compress)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"scan{suffix}", data_name])
    assert data_name in (tmp_path / f"scan{suffix}").read_text(errors="replace")
    np.testing.assert_array_equal(read_image(tmp_path / f"scan{suffix}").array, image.array)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_and_tiff_keep_values_and_read_with_unit_spacing(tmp_path: Path, suffix: str, dtype: type) -> None:
    array = (np.arange(48).reshape(6, 8) * 5).astype(dtype)
    image = Image(array, spacing=(0.5, 0.25), origin=(4.0, 5.0))
    back = read_image(write_image(image, tmp_path / f"slice{suffix}"))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array)
    # Resolution tags are print DPI, not anatomy: no geometry is taken from them.
    assert back.spacing == (1.0, 1.0) and back.origin == (0.0, 0.0) and back.direction == (1.0, 0.0, 0.0, 1.0)


def test_png_casts_integer_labels_that_fit_and_refuses_the_rest(tmp_path: Path, tiny: SimpleNamespace) -> None:
    labels = np.array([[0, 1], [2, 3]], dtype=np.int64)
    back = read_image(write_image(Image(labels, (1.0, 1.0)), tmp_path / "labels.png"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)
    with pytest.raises(MedsegError, match="uint8 or uint16"):
        write_image(Image(np.zeros((2, 2), np.float32), (1.0, 1.0)), tmp_path / "float.png")
    with pytest.raises(MedsegError, match="2-D"):
        write_image(tiny.make_image(np.zeros(SHAPE, np.uint8)), tmp_path / "volume.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_grey_values_stored_as_rgb_png_read_as_one_channel(tmp_path: Path) -> None:
    grey = (np.arange(12).reshape(3, 4) * 20).astype(np.uint8)
    rgb = sitk.GetImageFromArray(np.stack([grey] * 3, axis=-1), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.png"))
    back = read_image(tmp_path / "rgb.png")
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, grey)


def _write_dicom_series_with_sitk(directory: Path, image: sitk.Image) -> None:
    """A DICOM series as a scanner-side tool would write it: one file per slice."""
    directory.mkdir()
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    shared = {
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
        "0008|0060": "CT", "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
    }
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in shared.items():
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(directory / f"IM{k:04d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_written_by_simpleitk_reads_with_geometry(tmp_path: Path, tiny: SimpleNamespace) -> None:
    array = (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 7 - 100).astype(np.int16)
    expected = tiny.make_image(array, direction=tiny.oblique_direction())
    _write_dicom_series_with_sitk(tmp_path / "series", to_sitk(expected))
    back = read_image(tmp_path / "series")
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, array)
    assert_same_geometry(expected, back, 1e-9)


def test_dicom_series_round_trip_through_write_image(tmp_path: Path, tiny: SimpleNamespace) -> None:
    array = (np.arange(np.prod(SHAPE)).reshape(SHAPE) - 50).astype(np.int16)
    image = tiny.make_image(array, direction=tiny.oblique_direction())
    write_image(image, tmp_path / "out")
    write_image(image, tmp_path / "out")  # a series directory may be replaced by a new one
    assert len(list((tmp_path / "out").iterdir())) == SHAPE[0]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    back = read_image(tmp_path / "out")
    np.testing.assert_array_equal(back.array, image.array)
    assert_same_geometry(image, back, 1e-9)


def test_dicom_refuses_what_it_cannot_hold(tmp_path: Path, tiny: SimpleNamespace) -> None:
    with pytest.raises(MedsegError, match="integer"):
        write_image(tiny.make_image(np.zeros(SHAPE, np.float32)), tmp_path / "float_series")
    left_handed = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    with pytest.raises(MedsegError, match="left-handed"):
        write_image(tiny.make_image(np.zeros(SHAPE, np.int16), direction=left_handed), tmp_path / "flipped")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(MedsegError, match="not an empty directory"):
        write_image(tiny.make_image(np.zeros(SHAPE, np.int16)), tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_garbage_with_nifti_ending_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(os.urandom(400))
    with pytest.raises(MedsegError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert err.value.path == path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_an_error_not_zeros(tmp_path: Path, tiny: SimpleNamespace, suffix: str) -> None:
    full = write_image(tiny.make_image(np.ones((20, 30, 40), np.float32)), tmp_path / f"full{suffix}")
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedsegError, match="truncated") as err:
        read_image(cut)
    assert err.value.path == cut


def test_missing_file_and_unknown_ending(tmp_path: Path, tiny: SimpleNamespace) -> None:
    with pytest.raises(MedsegError, match="file not found"):
        read_image(tmp_path / "absent.nii.gz")
    with pytest.raises(MedsegError, match="unknown image file ending"):
        write_image(tiny.make_image(np.zeros(SHAPE)), tmp_path / "scan.nii.gzz")


def test_vector_pixels_are_refused(tmp_path: Path) -> None:
    vector = sitk.GetImageFromArray(np.zeros((*SHAPE, 3), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vector.nii.gz"))
    with pytest.raises(MedsegError, match="components per voxel"):
        read_image(tmp_path / "vector.nii.gz")


def test_geometry_differences_names_each_difference(tiny: SimpleNamespace) -> None:
    a = tiny.make_image(np.zeros(SHAPE))
    assert geometry_differences(a, tiny.make_image(np.zeros((4, 6, 9))))[0].startswith("shape")
    b = Image(np.zeros(SHAPE), spacing=(2.5, 0.75, 0.6), origin=(0.0, 20.0, 3.5),
              direction=tiny.oblique_direction())
    problems = geometry_differences(a, b)
    assert [p.split()[0] for p in problems] == ["spacing", "origin", "direction"]


def test_index_to_world_uses_array_order_in_and_itk_order_out(tiny: SimpleNamespace) -> None:
    image = Image(np.zeros(SHAPE), spacing=tiny.SPACING, origin=tiny.ORIGIN)
    # index (z=1, y=2, x=3) -> world x = 3 * 0.5, y = 2 * 0.75, z = 1 * 2.5 from the origin
    np.testing.assert_allclose(image.index_to_world((1, 2, 3)), np.add(tiny.ORIGIN, (1.5, 1.5, 2.5)))


def test_nifti_nan_is_counted_on_disk_although_itk_reads_it_as_zero(
        tmp_path: Path, tiny: SimpleNamespace) -> None:
    array = np.ones(SHAPE, np.float32)
    array[0, 0, 0] = np.nan
    array[1, 1, :3] = -np.inf
    for suffix in (".nii.gz", ".nii"):
        path = write_image(tiny.make_image(array), tmp_path / f"nan{suffix}")
        assert nifti_nonfinite_counts(path) == (1, 3)
        assert np.isfinite(read_image(path).array).all()  # ITK's NIfTI reader zeroes them
    integers = write_image(tiny.make_image(np.ones(SHAPE, np.int16)), tmp_path / "int.nii.gz")
    assert nifti_nonfinite_counts(integers) is None


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".png"])
def test_read_geometry_reads_the_header_only(tmp_path: Path, tiny: SimpleNamespace, suffix: str) -> None:
    shape = (6, 8) if suffix == ".png" else SHAPE
    image = tiny.make_image(np.ones(shape, np.uint16), direction=() if suffix == ".png" else tiny.oblique_direction())
    path = write_image(image, tmp_path / f"scan{suffix}")
    full, header = read_image(path), read_geometry(path)
    assert header.shape == full.shape and header.array.dtype == full.array.dtype
    assert header.array.strides == (0,) * len(shape)
    assert (header.spacing, header.origin, header.direction) == (full.spacing, full.origin, full.direction)
