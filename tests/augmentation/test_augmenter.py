"""The pipeline: shapes, seeds, recorded parameters, configuration, intensity kernels."""

import json

import pytest
import torch

from medseg.augmentation import AugmentationConfig, Augmenter, augment_intensity, describe
from medseg.augmentation import intensity as I


def batch(final, aug, channels=1, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = aug.input_patch_size(final)
    img = torch.randn((n, channels, *size), generator=g)
    lab = torch.randint(0, 3, (n, *size), generator=g).to(torch.int16)
    return img, lab


@pytest.mark.parametrize("final,channels", [((16, 20, 24), 1), ((4, 24, 24), 2), ((24, 28), 3)])
def test_output_shapes_and_dtypes(final, channels):
    aug = Augmenter(AugmentationConfig(), final)
    img, lab = batch(final, aug, channels)
    out, out_lab, params = aug(img, lab, torch.Generator().manual_seed(1))
    assert out.shape == (3, channels, *final) and out.dtype == torch.float32
    assert out_lab.shape == (3, *final) and out_lab.dtype == torch.int16
    assert len(params) == 3 and torch.isfinite(out).all()
    assert set(torch.unique(out_lab).tolist()) <= {0, 1, 2}


def test_seed_reproduces_and_params_replay():
    cfg = AugmentationConfig(rotation_p=0.7, scale_p=0.7, noise_p=0.5, blur_p=0.5, lowres_p=0.5)
    aug = Augmenter(cfg, (12, 14, 16))
    img, lab = batch((12, 14, 16), aug, channels=2, n=6)
    a = aug(img, lab, torch.Generator().manual_seed(9))
    b = aug(img, lab, torch.Generator().manual_seed(9))
    assert a[2] == b[2] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = aug(img, lab, torch.Generator().manual_seed(10))
    assert c[2] != a[2]
    # the parameters alone, through JSON, give the same output
    replay = json.loads(json.dumps(a[2]))
    out, out_lab = aug.apply(img, lab, replay)
    assert torch.equal(out, a[0]) and torch.equal(out_lab, a[1])
    assert img.equal(batch((12, 14, 16), aug, channels=2, n=6)[0])  # the input is untouched


def test_no_augmentation_is_a_centre_crop():
    off = AugmentationConfig(rotation_p=0, scale_p=0, mirror_p=0, noise_p=0, blur_p=0, brightness_p=0,
                             contrast_p=0, lowres_p=0, gamma_p=0, inverted_gamma_p=0)
    aug = Augmenter(off, (10, 12, 14))
    assert aug.input_patch_size() == (10, 12, 14)
    img = torch.randn(2, 1, 14, 16, 18)
    lab = torch.randint(0, 2, (2, 14, 16, 18), dtype=torch.int16)
    out, out_lab, params = aug(img, lab, torch.Generator().manual_seed(0))
    assert torch.equal(out, img[:, :, 2:12, 2:14, 2:16]) and torch.equal(out_lab, lab[:, 2:12, 2:14, 2:16])
    assert all(describe(p) == "none" for p in params)


def test_probabilities_match_the_config():
    aug = Augmenter(AugmentationConfig(), (32, 32, 32))
    params = aug.sample(4000, 1, torch.Generator().manual_seed(0))
    rate = lambda f: sum(bool(f(p)) for p in params) / len(params)  # noqa: E731
    assert rate(lambda p: p["spatial"]["rotation_deg"]) == pytest.approx(0.2, abs=0.025)
    assert rate(lambda p: p["spatial"]["scale"] is not None) == pytest.approx(0.2, abs=0.025)
    assert rate(lambda p: p["noise"]) == pytest.approx(0.1, abs=0.02)
    assert rate(lambda p: p["blur"]) == pytest.approx(0.2 * 0.5, abs=0.02)
    assert rate(lambda p: p["lowres"]) == pytest.approx(0.25 * 0.5, abs=0.02)
    assert rate(lambda p: p["inverted_gamma"]) == pytest.approx(0.1, abs=0.02)
    assert rate(lambda p: p["gamma"]) == pytest.approx(0.3, abs=0.03)
    assert rate(lambda p: 2 in p["spatial"]["mirror"]) == pytest.approx(0.5, abs=0.03)
    angles = [a for p in params if p["spatial"]["rotation_deg"] for a in p["spatial"]["rotation_deg"]]
    assert max(abs(a) for a in angles) <= 30
    scales = [p["spatial"]["scale"] for p in params if p["spatial"]["scale"] is not None]
    assert 0.7 <= min(scales) and max(scales) <= 1.4
    gammas = [p["gamma"][0] for p in params if p["gamma"]]
    below = sum(g < 1 for g in gammas) / len(gammas)
    assert below == pytest.approx(0.5, abs=0.08)  # nnU-Net draws below and above 1 equally often


def test_config_json_round_trip_and_validation():
    cfg = AugmentationConfig(rotation_deg=20, mirror_axes=(1, 2), label_interpolation="nearest")
    again = AugmentationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="noise_p"):
        AugmentationConfig(noise_p=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentationConfig(scale_range=(1.4, 0.7))
    with pytest.raises(ValueError, match="unknown"):
        AugmentationConfig.from_dict({"rotation": 3})
    with pytest.raises(ValueError, match="label_interpolation"):
        AugmentationConfig(label_interpolation="cubic")
    with pytest.raises(ValueError, match="mirror_axes"):
        Augmenter(AugmentationConfig(mirror_axes=(2,)), (32, 32))


def test_bad_inputs_are_refused():
    aug = Augmenter(AugmentationConfig(), (8, 8, 8))
    with pytest.raises(ValueError, match="spatial"):
        aug(torch.zeros(1, 20, 20, 20), torch.zeros(1, 20, 20, 20, dtype=torch.int16), torch.Generator())
    with pytest.raises(ValueError, match="smaller"):
        aug.apply(torch.zeros(1, 1, 6, 8, 8), None, [{"spatial": {"mirror": []}}])


def test_gamma_keeps_mean_and_std_and_range_order():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 16, 16) * 3 + 1
    for invert in (False, True):
        y = I.gamma_(x.clone(), [0.7, 1.5], invert=invert)
        torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-3, rtol=0)
        torch.testing.assert_close(y.std((1, 2, 3)), x.std((1, 2, 3)), atol=1e-3, rtol=1e-3)
        # monotonic: the order of voxels is kept
        flat_x, flat_y = x[0].flatten(), y[0].flatten()
        assert torch.equal(torch.argsort(flat_x)[:50], torch.argsort(flat_y)[:50])
    assert torch.equal(I.gamma_(x.clone(), [None, None]), x)


def test_contrast_brightness_blur_lowres_noise_kernels():
    torch.manual_seed(0)
    x = torch.rand(1, 12, 14, 16)
    y = I.contrast_(x.clone(), [1.25])
    assert y.min() >= x.min() and y.max() <= x.max()
    torch.testing.assert_close(I.multiply_(x.clone(), [2.0]), 2 * x)
    const = torch.full((1, 9, 9, 9), 3.0)
    torch.testing.assert_close(I.blur_(const.clone(), [[1.0, 0.5, 0.7]]), const)
    impulse = torch.zeros(1, 9, 9, 9)
    impulse[0, 4, 4, 4] = 1
    blurred = I.blur_(impulse.clone(), [[1.0, 1.0, 1.0]])
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 4, 4, 4] < 0.1 and blurred[0, 4, 4, 5] == pytest.approx(blurred[0, 4, 4, 3].item())
    torch.testing.assert_close(I.blur_(x.clone(), [None]), x)
    torch.testing.assert_close(I.low_resolution_(x.clone(), [1.0]), x)
    low = I.low_resolution_(x.clone(), [0.5])
    assert low.shape == x.shape and not torch.allclose(low, x)
    keep = I.low_resolution_(x.clone(), [0.5], keep_axes=(0, 1, 2))
    torch.testing.assert_close(keep, x)
    n1, n2 = I.add_noise_(x.clone(), 0.1, 5), I.add_noise_(x.clone(), 0.1, 5)
    assert torch.equal(n1, n2) and (n1 - x).std().item() == pytest.approx(0.1, rel=0.1)


def test_batch_helpers_keep_their_names():
    x = torch.randn(4, 2, 8, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = augment_intensity(x, gen, AugmentationConfig(noise_p=1, blur_p=1, brightness_p=1, contrast_p=1,
                                                        lowres_p=1, gamma_p=1, inverted_gamma_p=1))
    assert out.shape == x.shape and not torch.equal(out, x) and torch.isfinite(out).all()
    for fn, args in ((I.gaussian_noise, (1.0, (0, 0.1))), (I.brightness, (1.0, (0.75, 1.25))),
                     (I.contrast, (1.0, (0.75, 1.25))), (I.gamma, (1.0, (0.7, 1.5))),
                     (I.gaussian_blur, (1.0, (0.5, 1.0))), (I.simulate_low_resolution, (1.0, (0.5, 1.0)))):
        y = fn(x, gen, *args)
        assert y.shape == x.shape and y is not x
