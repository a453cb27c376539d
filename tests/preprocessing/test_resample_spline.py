"""The 'spline' order: nnU-Net's image resampling (scikit-image resize, order 3) value for value."""

import numpy as np
import pytest
from scipy import ndimage

from medseg.preprocessing.resample import resample_image, spline_matrix


def skimage_like(image: np.ndarray, shape) -> np.ndarray:
    """scikit-image's resize(order=3, mode='edge', anti_aliasing=False) of one array, in float64."""
    out = ndimage.zoom(image.astype(np.float64), np.divide(shape, image.shape), order=3, mode="nearest",
                       grid_mode=True)
    return np.clip(out, image.min(), image.max())


def test_matrix_is_scipy_zoom_of_each_column():
    x = np.random.default_rng(0).normal(size=37)
    ref = ndimage.zoom(x, 23 / 37, order=3, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(spline_matrix(37, 23).double().numpy() @ x, ref, atol=1e-5)


def test_separate_z_is_per_slice_spline_then_nearest_z():
    rng = np.random.default_rng(1)
    img = (100 * rng.normal(size=(1, 6, 30, 34))).astype(np.float32)
    out = resample_image(img, (15, 24, 40), "spline", separate_axis=0)
    inplane = np.stack([skimage_like(img[0, k], (24, 40)) for k in range(6)])
    z_index = np.minimum(np.floor((np.arange(15) + 0.5) * 6 / 15).astype(int), 5)
    np.testing.assert_allclose(out[0], inplane[z_index], atol=1e-3)
    assert out.dtype == np.float32


def test_3d_spline_matches_scipy_and_clips_per_channel():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(2, 9, 14, 12)).astype(np.float32)
    img[1] *= 50
    out = resample_image(img, (12, 10, 17), "spline", separate_axis=None)
    for c in range(2):
        np.testing.assert_allclose(out[c], skimage_like(img[c], (12, 10, 17)), atol=1e-4 * (1 + 49 * c))
        assert out[c].min() >= img[c].min() and out[c].max() <= img[c].max()


def test_matches_nnunet_default_resampling():
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    img = (100 * np.random.default_rng(3).normal(size=(1, 8, 40, 36))).astype(np.float32)
    for shape, cur, new, sep in [((20, 32, 29), (2.5, 0.8, 0.8), (1.0, 1.0, 1.0), 0),
                                 ((10, 44, 30), (1.0, 1.0, 1.0), (0.8, 0.9, 1.2), None)]:
        ref = resample_data_or_seg_to_shape(img, shape, cur, new, is_seg=False, order=3, order_z=0,
                                            force_separate_z=None)
        np.testing.assert_allclose(resample_image(img, shape, "spline", sep), ref, atol=1e-3)
