"""medseg's two surface definitions against the packages that define them.

Needs the `compare` extras (surface-distance, monai); skipped cleanly without them.
"""

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from medseg.evaluation import surface as S

TOL = 1e-6
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def blob(shape, seed, sigma=3.0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), sigma) > 0.5


def box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def _shared_cases():
    cases = []
    for spacing in ((1.0, 1.0, 1.0), (2.5, 0.8, 1.1)):
        cases.append((f"blobs3d-{spacing}", blob((36, 44, 40), 1), blob((36, 44, 40), 2), spacing))
    cases.append(("blob-vs-dilated", blob((30, 30, 30), 5), ndimage.binary_dilation(blob((30, 30, 30), 5), iterations=2),
                  (3.0, 0.7, 0.7)))
    cases.append(("shifted-cubes", box((16, 18, 20), (3, 3, 3), (11, 12, 13)), box((16, 18, 20), (4, 3, 5), (12, 12, 15)),
                  (1.5, 1.0, 0.6)))
    cases.append(("single-voxels", box((7, 7, 7), (2, 2, 2), (3, 3, 3)), box((7, 7, 7), (4, 3, 2), (5, 4, 3)),
                  (2.0, 0.9, 1.3)))
    cases.append(("at-border", box((10, 10, 10), (0, 0, 0), (4, 10, 5)), box((10, 10, 10), (0, 1, 0), (5, 9, 4)),
                  (1.0, 1.0, 2.0)))
    for spacing in ((1.0, 1.0), (0.6, 1.7)):
        cases.append((f"blobs2d-{spacing}", blob((70, 60), 3, 4.0), blob((70, 60), 4, 4.0), spacing))
    return cases


CASES = _shared_cases()
IDS = [c[0] for c in CASES]


@pytest.fixture
def deepmind(monkeypatch):
    sd = pytest.importorskip("surface_distance")
    # The package predates NumPy 2, which removed these aliases (used on empty masks).
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)
    return sd


@pytest.fixture
def monai_metrics():
    pytest.importorskip("monai")
    import torch
    from monai import metrics

    def one_hot(m):
        return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

    def run(pred, ref, spacing, tolerance):
        p, r = one_hot(pred), one_hot(ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {
                "hd95": metrics.compute_hausdorff_distance(p, r, percentile=95, spacing=spacing).item(),
                "hd": metrics.compute_hausdorff_distance(p, r, spacing=spacing).item(),
                "assd": metrics.compute_average_surface_distance(p, r, symmetric=True, spacing=spacing).item(),
                "nsd": metrics.compute_surface_dice(p, r, [tolerance], spacing=spacing).item(),
            }
    return run


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9), (3.1, 0.4, 1.7), (1.0, 2.0), (0.3, 1.9)])
def test_block_areas_match_deepmind_table(deepmind, spacing):
    lt = deepmind.lookup_tables
    theirs = (lt.create_table_neighbour_code_to_surface_area(spacing) if len(spacing) == 3
              else lt.create_table_neighbour_code_to_contour_length(spacing))
    np.testing.assert_allclose(S.surfel_measure_table(tuple(spacing)), theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,pred,ref,spacing", CASES, ids=IDS)
def test_surfel_matches_deepmind(deepmind, name, pred, ref, spacing):
    theirs = deepmind.compute_surface_distances(ref, pred, spacing)  # (gt, pred)
    ours = S.surface_distances(pred, ref, spacing, "surfel")
    np.testing.assert_allclose(ours.ref_to_pred, theirs["distances_gt_to_pred"], atol=TOL)
    np.testing.assert_allclose(ours.pred_to_ref, theirs["distances_pred_to_gt"], atol=TOL)
    np.testing.assert_allclose(np.sort(ours.ref_weights), np.sort(theirs["surfel_areas_gt"]), atol=TOL)
    np.testing.assert_allclose(np.sort(ours.pred_weights), np.sort(theirs["surfel_areas_pred"]), atol=TOL)
    assert S.hd95(ours) == pytest.approx(deepmind.compute_robust_hausdorff(theirs, 95), abs=TOL)
    assert S.percentile_distance(ours, 50) == pytest.approx(deepmind.compute_robust_hausdorff(theirs, 50), abs=TOL)
    assert S.hausdorff(ours) == pytest.approx(
        max(theirs["distances_gt_to_pred"].max(), theirs["distances_pred_to_gt"].max()), abs=TOL)
    gt_to_pred, pred_to_gt = deepmind.compute_average_surface_distance(theirs)
    ours_pred, ours_ref = S.average_distances(ours)
    assert ours_ref == pytest.approx(gt_to_pred, abs=TOL) and ours_pred == pytest.approx(pred_to_gt, abs=TOL)
    a_gt, a_pred = theirs["surfel_areas_gt"], theirs["surfel_areas_pred"]
    pooled = ((gt_to_pred * a_gt.sum() + pred_to_gt * a_pred.sum()) / (a_gt.sum() + a_pred.sum()))
    assert S.assd(ours) == pytest.approx(pooled, abs=TOL)
    for tol in (0.0, 0.5, 1.0, 2.5):
        assert S.nsd(ours, tol) == pytest.approx(deepmind.compute_surface_dice_at_tolerance(theirs, tol), abs=TOL)


@pytest.mark.parametrize("name,pred,ref,spacing", CASES, ids=IDS)
def test_voxel_matches_monai(monai_metrics, name, pred, ref, spacing):
    theirs = monai_metrics(pred, ref, spacing, 1.5)
    ours = S.surface_distances(pred, ref, spacing, "voxel")
    assert S.hd95(ours) == pytest.approx(theirs["hd95"], rel=TOL, abs=TOL)
    assert S.hausdorff(ours) == pytest.approx(theirs["hd"], rel=TOL, abs=TOL)
    assert S.assd(ours) == pytest.approx(theirs["assd"], rel=TOL, abs=TOL)
    assert S.nsd(ours, 1.5) == pytest.approx(theirs["nsd"], rel=TOL, abs=TOL)


def test_empty_masks_against_both(deepmind, monai_metrics):
    m = box((10, 10, 10), (3, 3, 3), (6, 6, 6))
    empty = np.zeros_like(m)
    for pred, ref in ((m, empty), (empty, m)):
        dm = deepmind.compute_surface_distances(ref, pred, (1, 1, 1))
        mo = monai_metrics(pred, ref, (1, 1, 1), 1.0)
        s = S.surface_distances(pred, ref, (1, 1, 1), "surfel")
        v = S.surface_distances(pred, ref, (1, 1, 1), "voxel")
        assert S.hd95(s) == deepmind.compute_robust_hausdorff(dm, 95) == math.inf
        assert S.nsd(s, 1.0) == deepmind.compute_surface_dice_at_tolerance(dm, 1.0) == 0
        assert S.hausdorff(v) == mo["hd"] == math.inf and S.assd(v) == mo["assd"] == math.inf
        assert S.nsd(v, 1.0) == mo["nsd"] == 0
        # MONAI's hd95 is NaN here (a percentile of infinities); medseg keeps inf for all four.
        assert math.isnan(mo["hd95"]) and S.hd95(v) == math.inf
    both = monai_metrics(empty, empty, (1, 1, 1), 1.0)
    assert all(math.isnan(x) for x in both.values())
    assert math.isnan(S.hd95(S.surface_distances(empty, empty, (1, 1, 1), "voxel")))
