import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.planning.plans import ConfigurationPlan, Plans
from medseg.preprocessing.preprocess import preprocess_image, separate_axis_for
from medseg.preprocessing.resample import (_resample_channels, _taps, new_shape_for_spacing, nnunet_separate_axis,
                                           resample_image, resample_label, resample_probabilities, resampled_slabs)
from medseg.utils.files import write_json


def test_new_shape_keeps_extent():
    assert new_shape_for_spacing((30, 100, 100), (3.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == (90, 80, 80)
    assert new_shape_for_spacing((1, 5, 5), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


@pytest.mark.parametrize("order,separate_axis", [("linear", None), ("cubic", None), ("cubic", 0), ("linear", 0)])
def test_smooth_volume_down_and_up_is_close(order, separate_axis):
    z, y, x = np.meshgrid(np.linspace(0, 1, 12), np.linspace(0, 1, 40), np.linspace(0, 1, 40), indexing="ij")
    vol = (np.sin(2 * np.pi * y) * np.cos(2 * np.pi * x) + z)[None].astype(np.float32)
    down = resample_image(vol, (12, 20, 20), order, separate_axis)
    assert down.shape == (1, 12, 20, 20) and down.dtype == np.float32
    up = resample_image(down, (12, 40, 40), order, separate_axis)
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


def _one_hot_argmax_reference(lab, new_shape, values, separate_axis):
    """Every class's indicator interpolated over the whole grid in float64: the scores."""
    from medseg.preprocessing.resample import _taps

    scores = []
    for v in values:
        m = (lab == v).astype(np.float64)
        for a, (n, k) in enumerate(zip(lab.shape, new_shape)):
            i0, i1, w = (t.numpy() for t in _taps(n, k, lab.ndim == 3 and a == separate_axis))
            shape = [1] * lab.ndim
            shape[a] = -1
            m = np.take(m, i0, a) * (1 - w.reshape(shape)) + np.take(m, i1, a) * w.reshape(shape)
        scores.append(m)
    return np.stack(scores)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("separate_axis", [None, 0, 2])
def test_label_resampling_is_the_arg_max_of_every_class_interpolated(seed, separate_axis):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    dims = 2 if seed % 3 == 0 else 3
    shape = tuple(int(s) for s in rng.integers(4, 18, dims))
    blocks = rng.integers(0, 5, tuple(max(2, s // 3) for s in shape))
    lab = ndimage.zoom(blocks, 3, order=0)[tuple(slice(0, s) for s in shape)].astype(np.int16)
    lab[lab == 4] = 7  # values need not be consecutive
    new_shape = tuple(int(s) for s in rng.integers(3, 30, dims))
    values = [0, 1, 2, 3, 7]
    out = resample_label(lab, new_shape, values, separate_axis, chunk=97)
    scores = _one_hot_argmax_reference(lab, new_shape, values, separate_axis)
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


def _slabs_whole(scores, new_shape, separate_axis=None, slab=3):
    parts = list(resampled_slabs(scores, new_shape, separate_axis, slab))
    assert [start for start, _ in parts] == list(range(0, new_shape[0], slab))
    assert all(p.dtype == torch.float32 and p.shape[1] <= slab for _, p in parts)
    return torch.cat([p for _, p in parts], dim=1)


@pytest.mark.parametrize("new_shape", [(6, 7, 8), (13, 5, 11), (3, 14, 4), (11, 7, 8)])
@pytest.mark.parametrize("separate_axis", [None, 0, 1, 2])
def test_resampled_slabs_equal_whole_volume_resampling(new_shape, separate_axis):
    # Each axis grows, shrinks and stays; slabs of 3 output slices each read only their own inputs.
    scores = torch.rand(4, 6, 7, 8)
    expected = _resample_channels(scores, new_shape, "linear", separate_axis)
    out = _slabs_whole(scores.to(torch.float16), new_shape, separate_axis)
    torch.testing.assert_close(out, _resample_channels(scores.half().float(), new_shape, "linear", separate_axis),
                               rtol=0, atol=2e-6)
    assert (out - expected).abs().max() < 1e-3  # float16 storage of the input
    assert out.shape == (4, *new_shape)


def test_resampled_slabs_in_2d_slice_rows():
    scores = torch.rand(3, 10, 9)
    out = _slabs_whole(scores, (17, 5))
    torch.testing.assert_close(out, _resample_channels(scores, (17, 5), "linear", None), rtol=0, atol=2e-6)


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


# ----------------------------------------------------------------- a separate axis other than z

# From (7, 9, 11), each axis shrinks, grows and keeps its size in one of these.
SHAPES = [(5, 12, 8), (9, 6, 14), (7, 9, 11), (4, 13, 16)]


def _moved(shape, a):
    """(z, y, x) sizes with axis a moved to the front, the others in their order."""
    return (shape[a], *[s for b, s in enumerate(shape) if b != a])


def _blocky_labels(shape, seed, block=2):
    """Values 0..3 in random blocks of `block` voxels per axis (int16)."""
    from scipy import ndimage

    blocks = np.random.default_rng(seed).integers(0, 4, tuple(max(2, -(-s // block)) for s in shape))
    return ndimage.zoom(blocks, block, order=0)[tuple(slice(0, s) for s in shape)].astype(np.int16)


@pytest.mark.parametrize("a", [0, 1, 2])
@pytest.mark.parametrize("order", ["linear", "cubic", "spline", "nearest"])
def test_image_separate_axis_is_axis_0_of_the_moved_image(a, order):
    img = (100 * np.random.default_rng(a).normal(size=(2, 7, 9, 11))).astype(np.float32)
    for shape in SHAPES:
        out = resample_image(img, shape, order, a)
        moved = resample_image(np.moveaxis(img, 1 + a, 1), _moved(shape, a), order, 0)
        assert out.shape == (2, *shape) and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, np.moveaxis(moved, 1, 1 + a))


@pytest.mark.parametrize("a", [0, 1, 2])
def test_label_separate_axis_is_axis_0_of_the_moved_map(a):
    lab = _blocky_labels((7, 9, 11), seed=a)
    for shape in SHAPES:
        out = resample_label(lab, shape, [0, 1, 2, 3], a, chunk=50)
        moved = resample_label(np.ascontiguousarray(np.moveaxis(lab, a, 0)), _moved(shape, a), [0, 1, 2, 3], 0,
                               chunk=50)
        np.testing.assert_array_equal(out, np.moveaxis(moved, 0, a))
        assert len(np.unique(out)) == 4


@pytest.mark.parametrize("a", [0, 1, 2])
def test_probabilities_separate_axis_are_axis_0_of_the_moved_scores(a):
    probs = torch.softmax(torch.randn(5, 7, 9, 11, generator=torch.Generator().manual_seed(a)), 0)
    for shape in SHAPES:
        out = resample_probabilities(probs, shape, a, chunk=2)
        moved = resample_probabilities(probs.movedim(1 + a, 1).contiguous(), _moved(shape, a), 0, chunk=2)
        assert out.shape == (5, *shape) and out.is_contiguous()
        assert torch.equal(out, moved.movedim(1, 1 + a))


@pytest.mark.parametrize("a", [1, 2])
def test_slabs_with_separate_y_or_x_pick_the_whole_volume_slices(a):
    # Slabs run along z; a separate y or x lies whole within each, so its nearest taps are the
    # whole volume's. Values equal the moved array's axis-0 resampling to float rounding
    # (z and the in-plane axis are interpolated in separate steps here, in one there).
    scores = torch.rand(3, 7, 9, 11, generator=torch.Generator().manual_seed(a)).half()
    for shape in SHAPES:
        out = _slabs_whole(scores, shape, a, slab=2)
        moved = _resample_channels(scores.float().movedim(1 + a, 1).contiguous(), _moved(shape, a), "linear", 0)
        torch.testing.assert_close(out, moved.movedim(1, 1 + a), rtol=0, atol=2e-6)
    # Each slice along a holds its source slice's index: exactly one source per output slice.
    n = scores.shape[1 + a]
    view = [1, 1, 1, 1]
    view[1 + a] = n
    index = torch.arange(n, dtype=torch.float16).view(view).expand(scores.shape)
    for shape in SHAPES:
        out = _slabs_whole(index, shape, a, slab=2)
        pick = _taps(n, shape[a], True)[0].float().view([1] + [-1 if b == a else 1 for b in range(3)])
        assert torch.equal(out.round(), pick.expand(out.shape)) and (out - out.round()).abs().max() < 1e-5


def test_nnunet_rule_for_the_separate_axis():
    assert nnunet_separate_axis((0.8, 0.8, 2.5), (1.0, 1.0, 1.0)) == 2       # the current spacing decides
    assert nnunet_separate_axis((1.0, 1.0, 1.0), (0.7, 3.0, 0.7)) == 1       # else the new one
    assert nnunet_separate_axis((3.0, 0.7, 0.7), (0.8, 0.8, 2.5)) == 0       # current first, even if new differs
    assert nnunet_separate_axis((0.5, 2.0, 2.0), (3.0, 1.0, 1.0)) is None    # a tie in the deciding spacing:
    assert nnunet_separate_axis((1.0, 1.0, 1.0), (2.0, 0.5, 2.0)) is None    # all together, no fallback
    assert nnunet_separate_axis((1.0, 1.0, 2.9), (1.0, 1.0, 3.0)) is None    # ratios not above the threshold
    assert nnunet_separate_axis((1.0, 1.0, 3.1), (1.0, 1.0, 1.0), threshold=4) is None
    assert nnunet_separate_axis((1.0, 4.0), (1.0, 1.0)) is None              # 2-D: nothing to separate


def test_nnunet_rule_matches_nnunet():
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    rng = np.random.default_rng(0)
    pairs = [((0.5, 2.0, 2.0), (3.0, 1.0, 1.0)), ((1.0, 1.0, 1.0), (2.0, 0.5, 2.0)), ((1.0, 1.0, 1.0), (1.0,) * 3)]
    choices = np.array([0.5, 0.7, 0.8, 1.0, 1.2, 2.5, 3.0, 4.0])  # few values: ties and exact ratios happen
    pairs += [(tuple(rng.choice(choices, 3)), tuple(rng.choice(choices, 3))) for _ in range(300)]
    for current, new in pairs:
        separate, axis = determine_do_sep_z_and_axis(None, current, new)
        assert nnunet_separate_axis(current, new) == (int(axis) if separate else None), (current, new)


def test_separate_x_matches_nnunet_resampling():
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape as nnunet

    rng = np.random.default_rng(4)
    spacing, target = (0.8, 0.75, 2.5), (1.0, 1.0, 1.0)  # x is the coarse axis
    img = (100 * rng.normal(size=(1, 30, 34, 7))).astype(np.float32)
    # Blocks of 3: with 2-voxel blocks, where three or four values meet, nnU-Net's per-class
    # threshold and medseg's arg-max differ on ~0.3 % of voxels, along z just the same.
    lab = _blocky_labels((30, 34, 7), seed=4, block=3)
    probs = torch.softmax(torch.randn(3, 24, 26, 18, generator=torch.Generator().manual_seed(4)), 0)
    fwd = new_shape_for_spacing(img.shape[1:], spacing, target)  # x grows 7 -> 18 (preprocessing)
    assert nnunet_separate_axis(spacing, target) == 2 and fwd == (24, 26, 18)
    kw = dict(order_z=0, force_separate_z=None)
    ref = nnunet(img, fwd, spacing, target, is_seg=False, order=3, **kw)
    np.testing.assert_allclose(resample_image(img, fwd, "spline", 2), ref, atol=1e-3)
    ref = nnunet(lab[None], fwd, spacing, target, is_seg=True, order=1, **kw)[0]
    assert (resample_label(lab, fwd, [0, 1, 2, 3], 2) == ref).mean() >= 0.999
    # Export: from the target grid back to the scan's, x shrinks 18 -> 7.
    back = (30, 34, 7)
    ref = nnunet(probs.numpy(), back, target, spacing, is_seg=False, order=1, **kw)
    np.testing.assert_allclose(resample_probabilities(probs, back, 2).numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(_slabs_whole(probs, back, 2, slab=4).numpy(), ref, atol=1e-5)
    ref = nnunet(img, (12, 40, 5), spacing, target, is_seg=False, order=3, **kw)  # x shrinks, z and y too
    np.testing.assert_allclose(resample_image(img, (12, 40, 5), "spline", 2), ref, atol=1e-3)


def test_nearest_taps_round_as_nnunet_does_at_halves():
    from scipy import ndimage

    for n, m in [(2, 49), (6, 15), (3, 9), (5, 15), (7, 21), (10, 4), (9, 3)]:
        c = (float(n) / m) * (np.arange(m) + 0.5) - 0.5  # nnU-Net's coordinates along the separate axis
        ref = ndimage.map_coordinates(np.arange(n, dtype=np.float64), c[None], order=0, mode="nearest")
        np.testing.assert_array_equal(_taps(n, m, True)[0].numpy(), ref.astype(np.int64))


# ----------------------------------------------------------------- which axis, from the plan


def _plan(resampling, dims=3, target=(2.5, 0.8, 0.8)):
    return ConfigurationPlan(name="3d_fullres", spatial_dims=dims, target_spacing=list(target[-dims:]),
                             patch_size=[16] * dims, batch_size=2, normalization=["zscore"], resampling=resampling)


def test_plans_read_the_old_separate_z_key_and_the_new_one():
    assert _plan({"separate_z": True}).separate_axis == 0
    assert _plan({"separate_z": False}).separate_axis is None
    assert _plan({"separate_axis": 2}).separate_axis == 2
    assert _plan({"separate_axis": None}).separate_axis is None
    assert _plan({}).separate_axis is None
    assert _plan({"separate_axis": 0, "separate_z": True}).separate_axis == 0
    for bad in ({"separate_axis": True}, {"separate_axis": 3}, {"separate_axis": 1, "separate_z": True}):
        with pytest.raises(MedsegError, match="separate"):
            _plan(bad).separate_axis


def test_old_plans_json_preprocesses_as_separate_axis_0(tmp_path):
    config = {"spatial_dims": 3, "target_spacing": [2.5, 0.8, 0.8], "patch_size": [8, 16, 16], "batch_size": 2,
              "normalization": ["zscore"], "resampling": {"data": "spline", "label": "linear", "separate_z": True}}
    write_json(tmp_path / "plans.json", {"dataset_name": "Old", "channel_names": ["MR"], "labels": {"background": 0},
                                         "intensity": [{}], "configurations": {"3d_fullres": config}})
    old = Plans.load(tmp_path / "plans.json").configuration("3d_fullres")
    new = _plan({"data": "spline", "label": "linear", "separate_axis": 0})
    img = np.random.default_rng(5).normal(size=(1, 7, 20, 18)).astype(np.float32)
    a, props = preprocess_image(img, (1.5, 0.9, 0.7), old, [{}])
    b, _ = preprocess_image(img, (1.5, 0.9, 0.7), new, [{}])
    assert old.separate_axis == 0 and props["shape_after_resample"] == [4, 22, 16]
    np.testing.assert_array_equal(a, b)
    c, _ = preprocess_image(img, (1.5, 0.9, 0.7), _plan({"data": "spline", "separate_axis": None}), [{}])
    assert not np.allclose(a, c)  # the key decides something here


def test_separate_axis_for_a_case():
    fixed = _plan({"separate_axis": 0})
    assert separate_axis_for((1.0, 1.0, 4.0), fixed) == 0 and separate_axis_for((1.0, 1.0), fixed) is None
    assert separate_axis_for((3.0, 1.0, 1.0), _plan({"separate_axis": None}, dims=2)) == 0  # 2D plan: slices
    # Imported nnU-Net plans decide per case, from the spacing resampled from, else the one resampled to.
    per_case = _plan({"separate_axis": 2, "anisotropy_threshold": 3.0}, target=(0.8, 0.8, 2.5))
    assert separate_axis_for((3.0, 0.7, 0.75), per_case) == 0                    # the case's coarse z
    assert separate_axis_for((3.0, 0.7, 0.75), per_case, to_target=False) == 2   # back: the target's x
    assert separate_axis_for((1.0, 1.0, 1.0), per_case) == 2
    assert separate_axis_for((0.5, 2.0, 2.0), per_case) is None                  # the case's tie decides
    assert separate_axis_for((0.9, 0.9, 1.0), _plan({"anisotropy_threshold": 3.0}, target=(1, 1, 1))) is None
