import numpy as np

from medseg.preprocessing.crop import crop, nonzero_bbox, uncrop
from medseg.preprocessing.normalize import normalize, scheme_for_channel


def test_bbox_crop_uncrop_round_trip():
    img = np.zeros((2, 10, 12, 14), np.float32)
    img[0, 2:5, 3:9, 4:6] = 1
    img[1, 7, 1, 13] = 2
    box = nonzero_bbox(img)
    assert box == [(2, 8), (1, 9), (4, 14)]
    c = crop(img, box)
    assert c.shape == (2, 6, 8, 10)
    np.testing.assert_array_equal(uncrop(c, box, (10, 12, 14)), img)


def test_empty_image_keeps_full_box():
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == [(0, 3), (0, 4), (0, 5)]


def test_ct_normalisation_clips_then_zscores():
    img = np.array([[[[-2000.0, 0.0, 50.0, 100.0, 5000.0]]]], np.float32)
    stats = [{"percentile_00_5": -100.0, "percentile_99_5": 200.0, "mean": 50.0, "std": 25.0}]
    out = normalize(img, ["ct"], stats)
    np.testing.assert_allclose(out.ravel(), [-6.0, -2.0, 0.0, 2.0, 6.0])


def test_zscore_per_image():
    img = np.random.default_rng(1).normal(7, 3, size=(1, 8, 8, 8)).astype(np.float32)
    out = normalize(img, ["zscore"], [{}])
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4


def test_scheme_from_channel_name():
    assert scheme_for_channel("CT") == "ct"
    assert scheme_for_channel("T1") == "zscore"
