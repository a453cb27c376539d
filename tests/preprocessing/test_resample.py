import numpy as np
import pytest
import torch

from medseg.preprocessing.resample import (_resample_channels, new_shape_for_spacing, resample_image,
                                           resample_label, resampled_slabs)


def test_new_shape_keeps_extent():
    assert new_shape_for_spacing((30, 100, 100), (3.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == (90, 80, 80)
    assert new_shape_for_spacing((1, 5, 5), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


@pytest.mark.parametrize("order,separate_z", [("linear", False), ("cubic", False), ("cubic", True), ("linear", True)])
def test_smooth_volume_down_and_up_is_close(order, separate_z):
    z, y, x = np.meshgrid(np.linspace(0, 1, 12), np.linspace(0, 1, 40), np.linspace(0, 1, 40), indexing="ij")
    vol = (np.sin(2 * np.pi * y) * np.cos(2 * np.pi * x) + z)[None].astype(np.float32)
    down = resample_image(vol, (12, 20, 20), order, separate_z)
    assert down.shape == (1, 12, 20, 20) and down.dtype == np.float32
    up = resample_image(down, (12, 40, 40), order, separate_z)
    err = np.abs(up - vol)[:, :, 4:-4, 4:-4].mean()
    assert err < 0.05


def test_identity_shape_returns_input_values():
    vol = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(resample_image(vol, (5, 6, 7)), vol)


def test_label_resampling_keeps_classes_and_shape():
    lab = np.zeros((10, 40, 40), np.int16)
    lab[2:8, 10:30, 10:30] = 1
    lab[4:6, 15:20, 15:20] = 2
    out = resample_label(lab, (20, 20, 20), [0, 1, 2])
    assert out.shape == (20, 20, 20) and out.dtype == lab.dtype
    assert set(np.unique(out)) == {0, 1, 2}
    # Volume in millimetres is preserved to within a voxel layer.
    frac_in = (lab == 1).mean()
    frac_out = (out == 1).mean()
    assert abs(frac_in - frac_out) < 0.03


def _one_hot_argmax_reference(lab, new_shape, values, separate_z):
    """Every class's indicator interpolated over the whole grid in float64: the scores."""
    from medseg.preprocessing.resample import _taps

    scores = []
    for v in values:
        m = (lab == v).astype(np.float64)
        for a, (n, k) in enumerate(zip(lab.shape, new_shape)):
            i0, i1, w = (t.numpy() for t in _taps(n, k, separate_z and lab.ndim == 3 and a == 0))
            shape = [1] * lab.ndim
            shape[a] = -1
            m = np.take(m, i0, a) * (1 - w.reshape(shape)) + np.take(m, i1, a) * w.reshape(shape)
        scores.append(m)
    return np.stack(scores)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("separate_z", [False, True])
def test_label_resampling_is_the_arg_max_of_every_class_interpolated(seed, separate_z):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    dims = 2 if seed % 3 == 0 else 3
    shape = tuple(int(s) for s in rng.integers(4, 18, dims))
    blocks = rng.integers(0, 5, tuple(max(2, s // 3) for s in shape))
    lab = ndimage.zoom(blocks, 3, order=0)[tuple(slice(0, s) for s in shape)].astype(np.int16)
    lab[lab == 4] = 7  # values need not be consecutive
    new_shape = tuple(int(s) for s in rng.integers(3, 30, dims))
    values = [0, 1, 2, 3, 7]
    out = resample_label(lab, new_shape, values, separate_z, chunk=97)
    scores = _one_hot_argmax_reference(lab, new_shape, values, separate_z)
    top = np.sort(scores, axis=0)
    clear = top[-1] - top[-2] > 1e-5
    assert out.shape == new_shape and out.dtype == lab.dtype
    np.testing.assert_array_equal(out[clear], np.asarray(values)[scores.argmax(0)][clear])
    # A tie goes to the lower of the tied values.
    tied = ~clear
    lowest = np.asarray(values)[(scores >= top[-1] - 1e-5).argmax(0)]
    np.testing.assert_array_equal(out[tied], lowest[tied])
    assert clear.any() and len(np.unique(out)) > 2


def test_label_resampling_gives_unlisted_values_no_weight():
    lab = np.zeros((1, 4, 8), np.int16)
    lab[..., 4:] = 5  # 5 is not a listed class
    lab[..., 3] = 1
    out = resample_label(lab, (1, 4, 16), [0, 1])
    assert set(np.unique(out)) == {0, 1}
    # Output x = 8 samples from 3.75: weight 0.25 for class 1, 0.75 for the unlisted 5 -> 1.
    np.testing.assert_array_equal(out[0, 0], [0] * 6 + [1, 1, 1] + [0] * 7)


def _slabs_whole(scores, new_shape, separate_z=False, slab=3):
    parts = list(resampled_slabs(scores, new_shape, separate_z, slab))
    assert [start for start, _ in parts] == list(range(0, new_shape[0], slab))
    assert all(p.dtype == torch.float32 and p.shape[1] <= slab for _, p in parts)
    return torch.cat([p for _, p in parts], dim=1)


@pytest.mark.parametrize("new_shape", [(6, 7, 8), (13, 5, 11), (3, 14, 4), (11, 7, 8)])
@pytest.mark.parametrize("separate_z", [False, True])
def test_resampled_slabs_equal_whole_volume_resampling(new_shape, separate_z):
    # z grows, shrinks and stays; slabs of 3 output slices each read only their own inputs.
    scores = torch.rand(4, 6, 7, 8)
    expected = _resample_channels(scores, new_shape, "linear", separate_z)
    out = _slabs_whole(scores.to(torch.float16), new_shape, separate_z)
    torch.testing.assert_close(out, _resample_channels(scores.half().float(), new_shape, "linear", separate_z),
                               rtol=0, atol=2e-6)
    assert (out - expected).abs().max() < 1e-3  # float16 storage of the input
    assert out.shape == (4, *new_shape)


def test_resampled_slabs_in_2d_slice_rows():
    scores = torch.rand(3, 10, 9)
    out = _slabs_whole(scores, (17, 5))
    torch.testing.assert_close(out, _resample_channels(scores, (17, 5), "linear", False), rtol=0, atol=2e-6)


def test_resampled_slab_argmax_upsamples_blocks():
    scores = torch.zeros(2, 4, 4, 4)
    scores[1, :, :, 2:] = 5.0
    scores[0, :, :, :2] = 5.0
    out = _slabs_whole(scores, (8, 8, 8)).argmax(0)
    assert out[:, :, :4].max() == 0 and out[:, :, 4:].min() == 1


def test_label_resampling_keeps_an_ignore_slab_intact():
    """The ignore value is resampled as a class of its own: never blended, never spreading."""
    from medseg.data.phantoms import IGNORE_VALUE, ignore_slab, make_phantom_case

    _, label = make_phantom_case(5, 0.5, index=0)
    lab = ignore_slab(label.array)
    out = resample_label(lab, (lab.shape[0] * 2, lab.shape[1] // 2, lab.shape[2] * 3 // 2), [0, 1, 2, IGNORE_VALUE])
    assert set(np.unique(out)) <= {0, 1, 2, IGNORE_VALUE}
    nx, mx = lab.shape[2], out.shape[2]
    lo, hi = 7 * nx // 16, 9 * nx // 16  # the slab's columns
    cols = np.flatnonzero((out == IGNORE_VALUE).all(axis=(0, 1)))
    # The slab keeps its physical place (within a voxel at each side) and holds nothing else.
    assert abs(cols[0] - lo * mx / nx) <= 1.5 and abs(cols[-1] + 1 - hi * mx / nx) <= 1.5
    assert not (out == IGNORE_VALUE)[..., : cols[0] - 1].any() and not (out == IGNORE_VALUE)[..., cols[-1] + 2:].any()


def test_region_labels_write_values_in_order_so_nested_regions_win():
    from medseg.preprocessing.resample import region_labels

    probs = torch.zeros(2, 1, 4, 6)
    probs[0, :, :, 1:5] = 0.9  # outer region
    probs[1, :, 1:3, 2:4] = 0.8  # inner region
    probs[1, :, 3, 0] = 0.7  # the inner region outside the outer one still gets its value
    out = region_labels(probs, [1, 2]).numpy()[0]
    expected = np.array([[0, 1, 1, 1, 1, 0],
                         [0, 1, 2, 2, 1, 0],
                         [0, 1, 2, 2, 1, 0],
                         [2, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out, expected)
    # Summed over two folds: the threshold is on the mean; the first region written last wins.
    twice = region_labels(probs * 2, [1, 2], threshold=1.0).numpy()[0]
    np.testing.assert_array_equal(twice, expected)
    assert (region_labels(probs[[1, 0]], [2, 1]).numpy()[0] == 1).sum() == 16
    upsampled = region_labels(_slabs_whole(probs, (1, 8, 12), slab=1), [1, 2]).numpy()[0]
    assert upsampled.shape == (8, 12) and set(np.unique(upsampled)) == {0, 1, 2}
