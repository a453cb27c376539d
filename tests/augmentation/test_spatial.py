"""Spatial augmentation: identity, known rotations, label safety, no padding where promised."""

import itertools
import math

import numpy as np
import pytest
import torch

from medseg.augmentation import AugmentationConfig, Augmenter
from medseg.augmentation.spatial import input_patch_size, transform_sample

SPATIAL_ONLY = dict(noise_p=0, blur_p=0, brightness_p=0, contrast_p=0, lowres_p=0, gamma_p=0, inverted_gamma_p=0)


def spatial(rotation=None, scale=None, mirror=(), elastic=None):
    return {"rotation_deg": rotation, "scale": scale, "mirror": list(mirror), "elastic": elastic}


def centre_crop(x, final):
    box = tuple(slice((q - p) // 2, (q - p) // 2 + p) for q, p in zip(x.shape[-len(final):], final))
    return x[(..., *box)]


def test_identity_is_an_exact_crop_and_mirror_a_flip():
    torch.manual_seed(0)
    img, lab = torch.randn(2, 14, 16, 18), torch.randint(0, 4, (14, 16, 18), dtype=torch.int16)
    final = (8, 10, 12)
    out, out_lab = transform_sample(img, lab, spatial(), final)
    assert torch.equal(out, centre_crop(img, final)) and torch.equal(out_lab, centre_crop(lab, final))
    out, out_lab = transform_sample(img, lab, spatial(mirror=[0, 2]), final)
    assert torch.equal(out, torch.flip(centre_crop(img, final), [1, 3]))
    assert torch.equal(out_lab, torch.flip(centre_crop(lab, final), [0, 2]))


@pytest.mark.parametrize("label_mode", ["linear", "nearest"])
def test_every_path_reproduces_the_input_at_identity(label_mode):
    """Scale 1 (separable path), a negligible rotation (3D grid path), in-plane and 2D grid paths:
    all must land exactly on the input's voxels, mirror folded in."""
    torch.manual_seed(1)
    img = torch.randn(1, 12, 14, 16)
    lab = torch.randint(0, 3, (12, 14, 16), dtype=torch.int16)
    final = (6, 8, 10)
    want_img = torch.flip(centre_crop(img, final), [2])
    want_lab = torch.flip(centre_crop(lab, final), [1])
    cases = [
        dict(sp=spatial(scale=1.0, mirror=[1]), in_plane=False),
        dict(sp=spatial(rotation=[1e-9, 0.0, 0.0], mirror=[1]), in_plane=False),
        dict(sp=spatial(rotation=[1e-9], mirror=[1]), in_plane=True),
    ]
    for case in cases:
        out, out_lab = transform_sample(img, lab, case["sp"], final, in_plane=case["in_plane"], label_mode=label_mode)
        torch.testing.assert_close(out, want_img, atol=1e-5, rtol=0)
        assert torch.equal(out_lab, want_lab), case
    img2, lab2 = img[:, 0], lab[0]
    out, out_lab = transform_sample(img2, lab2, spatial(rotation=[1e-9], mirror=[1]), final[1:], label_mode=label_mode)
    torch.testing.assert_close(out, torch.flip(centre_crop(img2, final[1:]), [2]), atol=1e-5, rtol=0)
    assert torch.equal(out_lab, torch.flip(centre_crop(lab2, final[1:]), [1]))


def test_scaling_paths_agree():
    """Scaling alone runs the separable resampler; a negligible extra rotation runs the 3D grid
    sampler on the same points: both must give the same image and labels."""
    torch.manual_seed(2)
    img = torch.rand(1, 20, 20, 20)
    lab = (torch.rand(20, 20, 20) > 0.6).to(torch.int16) * 2
    for s in (0.73, 1.37):
        a, la = transform_sample(img, lab, spatial(scale=s, mirror=[0]), (12, 12, 12))
        b, lb = transform_sample(img, lab, spatial(rotation=[0.0, 0.0, 1e-9], scale=s, mirror=[0]), (12, 12, 12))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert (la != lb).float().mean() < 0.002  # only exact ties may fall differently


@pytest.mark.parametrize("mode", ["3d", "in_plane", "2d"])
def test_known_rotation_moves_a_marker(mode):
    """+90 deg about axis 0 (from axis 1 towards axis 2): the output point u reads the input at
    R u, so an input marker at offset (a, b) in the (1, 2) plane appears at offset (b, -a)."""
    if mode == "2d":
        size, final, rot, in_plane = (21, 21), (11, 11), [90.0], False
    else:
        size, final, in_plane = (7, 21, 21), (5, 11, 11), mode == "in_plane"
        rot = [90.0] if in_plane else [90.0, 0.0, 0.0]
    img = torch.zeros(1, *size)
    lab = torch.zeros(size, dtype=torch.int16)
    c = [n // 2 for n in size]
    marker = list(c)
    marker[-2] += 3  # offset +3 along axis 1 (the first in-plane axis)
    img[(0, *marker)] = 1.0
    lab[tuple(marker)] = 4
    out, out_lab = transform_sample(img, lab, spatial(rotation=rot), final, in_plane=in_plane, label_mode="nearest")
    expect = [n // 2 for n in final]
    expect[-1] -= 3  # -> offset -3 along axis 2
    assert out[(0, *expect)].item() == pytest.approx(1.0, abs=1e-5)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert out_lab[tuple(expect)].item() == 4 and int((out_lab > 0).sum()) == 1


def test_labels_are_never_mixed():
    """Two touching classes 1 and 3 (no background): interpolating values would invent a 2."""
    size = (24, 24, 24)
    lab = torch.ones(size, dtype=torch.int16)
    lab[:, :, 12:] = 3
    lab[8:16, 8:16, 4:8] = 5
    img = lab[None].float()
    gen = torch.Generator().manual_seed(3)
    for label_mode in ("linear", "nearest"):
        cfg = AugmentationConfig(rotation_p=1.0, scale_p=1.0, label_interpolation=label_mode, **SPATIAL_ONLY)
        aug = Augmenter(cfg, (14, 14, 14))
        out_img, out_lab, params = aug(img.expand(3, 1, *size).contiguous(), lab.expand(3, *size).contiguous(), gen)
        values = set(torch.unique(out_lab).tolist())
        assert values <= {0, 1, 3, 5}, (label_mode, values)
        assert {1, 3} <= values
        assert out_lab.dtype == torch.int16


def test_linear_labels_follow_the_majority():
    """One-hot linear + argmax: a voxel sampled between classes takes the nearer class."""
    lab = torch.zeros((1, 10, 10), dtype=torch.int16)
    lab[..., 5:] = 2
    img = torch.zeros(1, 1, 10, 10)
    # scale 0.5 samples at half-voxel steps around the centre: points 4.25 and 4.75 on the last axis
    out, out_lab = transform_sample(img[0], lab[0], spatial(scale=0.5), (6, 6), label_mode="linear")
    row = out_lab[0].tolist()
    assert row == [0, 0, 0, 2, 2, 2]


@pytest.mark.parametrize("patch", [(16, 16, 16), (4, 24, 24), (20, 20), (12, 30)])
def test_no_padding_where_promised(patch):
    """Max rotation with max zoom-out: nothing padded inside the inscribed ellipsoid; max rotation
    without zooming out: nothing padded anywhere."""
    cfg = AugmentationConfig(**SPATIAL_ONLY)
    aug = Augmenter(cfg, patch)
    size = aug.input_patch_size()
    ones = torch.ones(1, *size)
    lab = torch.ones(size, dtype=torch.int16)
    r = aug.rotation_deg
    n_angles = 1 if len(patch) == 2 or aug.in_plane else 3
    half = (np.asarray(patch) - 1) / 2
    grids = np.meshgrid(*[np.arange(n) - h for n, h in zip(patch, half)], indexing="ij")
    inside = torch.as_tensor(sum((g / max(h, 0.5)) ** 2 for g, h in zip(grids, half)) <= 1)
    for signs in itertools.product((-1.0, 1.0), repeat=n_angles):
        rot = [s * r for s in signs]
        for a in ([rot], [[x / 2 for x in rot]]):
            out, out_lab = transform_sample(ones, lab, spatial(rotation=a[0], scale=cfg.scale_range[1]), patch,
                                            in_plane=aug.in_plane)
            assert torch.all(out[0][inside] > 1 - 1e-4), (rot, "zoomed out")
            assert torch.all(out_lab[inside] == 1)
            out, out_lab = transform_sample(ones, lab, spatial(rotation=a[0], scale=1.0), patch, in_plane=aug.in_plane)
            assert torch.all(out > 1 - 1e-4), (rot, "scale 1")
            assert torch.all(out_lab == 1)


def test_input_patch_size_rules():
    assert input_patch_size((64, 64, 64), max_rotation_deg=0, max_scale=1.0) == (64, 64, 64)
    sizes = input_patch_size((128, 128, 128), max_rotation_deg=30, max_scale=1.4)
    assert all(200 <= s <= 230 and (s - 128) % 2 == 0 for s in sizes)
    # zoom-out alone: the inscribed ellipsoid scaled by 1.4
    assert input_patch_size((50, 50), max_rotation_deg=0, max_scale=1.4)[0] == pytest.approx(70, abs=2)
    # in-plane: the first axis is never enlarged
    assert input_patch_size((12, 96, 96), max_rotation_deg=180, max_scale=1.4, in_plane=True)[0] == 12
    aug = Augmenter(AugmentationConfig(rotation_p=0, scale_p=0), (32, 48, 48))
    assert aug.input_patch_size() == (32, 48, 48)


def test_anisotropic_patches_rotate_in_plane():
    aug = Augmenter(AugmentationConfig(), (8, 64, 64))
    assert aug.in_plane and aug.rotation_deg == 180
    assert Augmenter(AugmentationConfig(), (48, 64, 64)).rotation_deg == 30
    assert Augmenter(AugmentationConfig(), (32, 64)).rotation_deg == 15  # 2D, sides differ by 2x
    assert Augmenter(AugmentationConfig(in_plane=True), (48, 64, 64)).in_plane
    params = aug.sample(20, 1, torch.Generator().manual_seed(0))
    assert all(len(p["spatial"]["rotation_deg"]) == 1 for p in params if p["spatial"]["rotation_deg"])


def test_cubic_image_interpolation_in_2d():
    torch.manual_seed(4)
    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    img = torch.sin(y / 5)[None] + torch.cos(x / 7)[None]
    for rot in ([1e-9], [37.0]):
        lin, _ = transform_sample(img, None, spatial(rotation=rot, scale=0.9), (20, 20), image_mode="linear")
        cub, _ = transform_sample(img, None, spatial(rotation=rot, scale=0.9), (20, 20), image_mode="cubic")
        assert (lin - cub).abs().max() < 0.05
    sep, _ = transform_sample(img, None, spatial(scale=0.8), (20, 20), image_mode="cubic")
    grid, _ = transform_sample(img, None, spatial(rotation=[1e-9], scale=0.8), (20, 20), image_mode="cubic")
    torch.testing.assert_close(sep, grid, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="tricubic"):
        Augmenter(AugmentationConfig(image_interpolation="cubic"), (32, 32, 32))
    Augmenter(AugmentationConfig(image_interpolation="cubic"), (4, 32, 32))  # in-plane: fine


def test_elastic_is_reproducible_and_bounded():
    torch.manual_seed(5)
    img = torch.rand(1, 30, 30, 30)
    lab = (img[0] > 0.5).to(torch.int16)
    el = {"seed": 7, "sigma": [0.2, 0.2, 0.2], "magnitude": [0.05, 0.05, 0.05]}
    a, la = transform_sample(img, lab, spatial(elastic=el), (16, 16, 16))
    b, lb = transform_sample(img, lab, spatial(elastic=el), (16, 16, 16))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.allclose(a, centre_crop(img, (16, 16, 16)))
    still = {"seed": 7, "sigma": [0.2, 0.2, 0.2], "magnitude": [0.0, 0.0, 0.0]}
    c, lc = transform_sample(img, lab, spatial(elastic=still), (16, 16, 16))
    torch.testing.assert_close(c, centre_crop(img, (16, 16, 16)), atol=1e-5, rtol=0)
    cfg = AugmentationConfig(elastic_p=1.0, **SPATIAL_ONLY)
    aug = Augmenter(cfg, (16, 16, 16))
    size = aug.input_patch_size()
    out, out_lab, params = aug(torch.ones(2, 1, *size), torch.ones(2, *size, dtype=torch.int16),
                               torch.Generator().manual_seed(0))
    assert all(p["spatial"]["elastic"] for p in params)
    assert math.isclose(out.min().item(), 1.0, abs_tol=1e-4) and int(out_lab.min()) == 1


def test_sparse_label_values_survive_linear_interpolation():
    """Values above 16 (an ignore label such as 255) are found by counting, not by a scan."""
    lab = torch.zeros((20, 20, 20), dtype=torch.int16)
    lab[7:13, 7:13, 6:10] = 255
    lab[7:13, 7:13, 10:14] = 3
    out_img, out_lab = transform_sample(lab[None].float(), lab, spatial(rotation=[10.0, 0.0, 0.0], scale=0.9),
                                        (12, 12, 12))
    assert set(torch.unique(out_lab).tolist()) == {0, 3, 255}
