"""Overlap, volume and per-case metrics against hand-computed values, edge cases included."""

import math

import numpy as np
import pytest

from medseg.evaluation import metrics as M


def box(shape, lo, hi, dtype=bool):
    m = np.zeros(shape, dtype=dtype)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


def test_counts_and_overlap_by_hand():
    pred = np.zeros((4, 5), dtype=bool)
    ref = np.zeros((4, 5), dtype=bool)
    pred[0, 0:6] = True  # 5 voxels
    pred[1, 0] = True  # 6 predicted
    ref[0, 2:5] = True
    ref[2, 2] = True  # 4 reference, 3 shared
    c = M.confusion(pred, ref)
    assert (c.tp, c.fp, c.fn, c.tn) == (3, 3, 1, 13)
    s = M.overlap_scores(c)
    assert s["dice"] == pytest.approx(6 / 10)
    assert s["iou"] == pytest.approx(3 / 7)
    assert s["precision"] == pytest.approx(3 / 6)
    assert s["recall"] == pytest.approx(3 / 4)
    assert s["specificity"] == pytest.approx(13 / 16)
    assert M.dice(pred, ref) == pytest.approx(0.6) and M.iou(pred, ref) == pytest.approx(3 / 7)


def test_shifted_cubes_dice_and_volumes():
    spacing = (2.0, 0.5, 1.0)
    ref = box((20, 20, 20), (5, 5, 5), (15, 15, 15))
    pred = box((20, 20, 20), (5, 5, 8), (15, 15, 18))  # shifted 3 of 10 along x
    out = M.class_metrics(pred, ref, spacing)
    assert out["dice"] == pytest.approx(0.7)
    assert out["iou"] == pytest.approx(700 / 1300)
    assert out["volume_ref"] == out["volume_pred"] == pytest.approx(1000 * 1.0)
    assert out["volume_rel_diff"] == 0
    assert (out["tp"], out["fp"], out["fn"]) == (700, 300, 300)
    assert out["hd"] == out["hd95"] == pytest.approx(3.0)
    assert all(isinstance(out[k], int) for k in ("tp", "fp", "fn"))


def test_spheres_dice_close_to_analytic():
    g = np.indices((50, 50, 50))
    r2 = sum((x - 25) ** 2 for x in g)
    ref, pred = r2 <= 15 ** 2, r2 <= 12 ** 2
    assert M.dice(pred, ref) == pytest.approx(2 * 12 ** 3 / (12 ** 3 + 15 ** 3), rel=0.02)
    assert M.class_metrics(pred, ref, (1, 1, 1))["volume_rel_diff"] == pytest.approx((12 / 15) ** 3 - 1, abs=0.02)


def test_single_voxel_objects():
    spacing = (3.0, 1.0, 1.0)
    ref = box((5, 5, 5), (2, 2, 2), (3, 3, 3))
    same = M.class_metrics(ref, ref, spacing)
    assert same["dice"] == 1 and same["hd95"] == 0 and same["nsd"] == 1 and same["volume_ref"] == 3.0
    pred = box((5, 5, 5), (3, 2, 2), (4, 3, 3))  # the voxel above, 3 mm away
    apart = M.class_metrics(pred, ref, spacing, surface_method="voxel")
    assert apart["dice"] == 0 and apart["hd"] == apart["assd"] == pytest.approx(3.0)
    assert apart["nsd"] == 0
    assert M.class_metrics(pred, ref, spacing, surface_method="voxel", tolerance_mm=3.0)["nsd"] == 1


def test_both_empty_nan_by_default_and_perfect_on_request():
    empty = np.zeros((6, 6, 6), dtype=bool)
    out = M.class_metrics(empty, empty, (1, 1, 1))
    for k in ("dice", "iou", "precision", "recall", "hd95", "hd", "assd", "nsd", "volume_rel_diff"):
        assert math.isnan(out[k]), k
    assert out["specificity"] == 1 and out["tp"] == out["fp"] == out["fn"] == 0
    perfect = M.class_metrics(empty, empty, (1, 1, 1), both_empty="perfect")
    assert perfect["dice"] == perfect["iou"] == perfect["precision"] == perfect["recall"] == perfect["nsd"] == 1
    assert perfect["hd95"] == perfect["hd"] == perfect["assd"] == perfect["volume_rel_diff"] == 0
    with pytest.raises(ValueError, match="both_empty"):
        M.class_metrics(empty, empty, (1, 1, 1), both_empty="one")


@pytest.mark.parametrize("missing", ["pred", "ref"])
def test_one_empty_is_worst_never_undefined(missing):
    m = box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    empty = np.zeros_like(m)
    pred, ref = (empty, m) if missing == "pred" else (m, empty)
    out = M.class_metrics(pred, ref, (1, 1, 1))
    assert out["dice"] == out["iou"] == out["precision"] == out["recall"] == out["nsd"] == 0
    assert out["hd95"] == out["hd"] == out["assd"] == math.inf
    capped = M.class_metrics(pred, ref, (2, 1, 1), empty_distance=M.image_diagonal(m.shape, (2, 1, 1)))
    assert capped["hd95"] == capped["hd"] == capped["assd"] == pytest.approx(math.sqrt(16 ** 2 + 8 ** 2 + 8 ** 2))
    if missing == "pred":
        assert out["volume_rel_diff"] == -1
    else:
        assert math.isnan(out["volume_rel_diff"])


def test_metric_selection():
    m = box((6, 6, 6), (1, 1, 1), (4, 4, 4))
    out = M.class_metrics(m, m, (1, 1, 1), metrics=["tp", "dice"])
    assert list(out) == ["dice", "tp"]
    with pytest.raises(ValueError, match="unknown metric"):
        M.class_metrics(m, m, (1, 1, 1), metrics=["dice", "jaccard"])


def test_case_metrics_matches_binary_masks():
    rng = np.random.default_rng(3)
    ref = np.zeros((20, 24, 22), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[3:12, 4:15, 2:10] = 1
    ref[14:18, 5:9, 12:20] = 2
    pred[4:12, 4:16, 3:10] = 1
    pred[13:18, 5:10, 13:20] = 2
    pred[0:2, 20:23, 0:3] = 2  # a far false positive
    pred[rng.random(pred.shape) < 0.01] = 3  # scattered class 3, absent from the reference
    spacing = (2.0, 0.8, 0.9)
    labels = {"background": 0, "a": 1, "b": 2, "c": 3, "d": 4}
    out = M.case_metrics(pred, ref, spacing, labels, tolerance_mm={"a": 1.0, 2: 2.0, "3": 0.5, "d": 1.0})
    assert list(out) == ["a", "b", "c", "d"]
    for name, value, tol in (("a", 1, 1.0), ("b", 2, 2.0), ("c", 3, 0.5), ("d", 4, 1.0)):
        expected = M.class_metrics(pred == value, ref == value, spacing, tolerance_mm=tol)
        for k, v in expected.items():
            assert out[name][k] == pytest.approx(v, nan_ok=True), (name, k)
    assert out["c"]["dice"] == 0 and out["c"]["hd95"] == math.inf
    assert math.isnan(out["d"]["dice"])


def test_case_metrics_2d_and_errors():
    ref = box((30, 40), (5, 5), (20, 25), np.int16)
    pred = box((30, 40), (6, 5), (21, 27), np.int16)
    out = M.case_metrics(pred, ref, (0.5, 0.5), {"x": 1})
    assert out["x"]["dice"] == pytest.approx(2 * 14 * 20 / (15 * 20 + 15 * 22))
    assert out["x"]["volume_ref"] == pytest.approx(300 * 0.25)
    with pytest.raises(ValueError, match="tolerance"):
        M.case_metrics(pred, ref, (0.5, 0.5), {"x": 1}, tolerance_mm={"y": 1.0})
    with pytest.raises(ValueError, match="integer"):
        M.case_metrics(pred.astype(float), ref, (0.5, 0.5), {"x": 1})
    with pytest.raises(ValueError, match="negative"):
        M.case_metrics(pred - 1, ref, (0.5, 0.5), {"x": 1})
    assert M.case_metrics(pred, ref, (0.5, 0.5), {"background": 0}) == {}


def test_specificity_undefined_without_background():
    full = np.ones((3, 3), dtype=bool)
    assert math.isnan(M.class_metrics(full, full, (1, 1))["specificity"])
