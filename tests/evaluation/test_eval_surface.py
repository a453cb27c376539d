"""Surface distances against values computed by hand: single voxels, boxes, spheres, 2D."""

import math

import numpy as np
import pytest

from medseg.evaluation import surface as S


def box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def box_surfel_area(dims, s):
    """Area of the marching-cubes surface of an a x b x c voxel box: faces, edge chamfers, corners."""
    (a, b, c), (s0, s1, s2) = dims, s
    la, lb, lc = (a - 1) * s0, (b - 1) * s1, (c - 1) * s2
    faces = 2 * (la * lb + lb * lc + la * lc)
    chamfers = 4 * (la * math.hypot(s1 / 2, s2 / 2) + lb * math.hypot(s0 / 2, s2 / 2)
                    + lc * math.hypot(s0 / 2, s1 / 2))
    corners = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2)  # 8 triangles of |n|/8
    return faces + chamfers + corners


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 1.3)])
def test_single_voxel_surface_is_an_octahedron(spacing):
    m = box((5, 5, 5), (2, 2, 2), (3, 3, 3))
    sd = S.surface_distances(m, m, spacing)
    s0, s1, s2 = spacing
    assert sd.pred_weights.size == 8
    assert sd.pred_weights.sum() == pytest.approx(math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2))
    assert S.hausdorff(sd) == 0 and S.assd(sd) == 0 and S.nsd(sd, 0.0) == 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 1.1)])
@pytest.mark.parametrize("dims", [(1, 1, 1), (4, 3, 2), (6, 5, 7)])
def test_box_surfel_area(dims, spacing):
    m = box((10, 10, 10), (1, 2, 1), tuple(d + o for d, o in zip(dims, (1, 2, 1))))
    sd = S.surface_distances(m, m, spacing)
    assert sd.pred_weights.sum() == pytest.approx(box_surfel_area(dims, spacing), rel=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.6, 2.0)])
def test_rectangle_contour_length_2d(spacing):
    a, b = 5, 3
    m = box((9, 9), (2, 3), (2 + a, 3 + b))
    sd = S.surface_distances(m, m, spacing)
    diag = 0.5 * math.hypot(*spacing)
    expected = 2 * ((a - 1) * spacing[0] + (b - 1) * spacing[1]) + 4 * diag
    assert sd.ref_weights.sum() == pytest.approx(expected)


def test_single_voxels_one_apart():
    spacing = (2.0, 0.5, 0.75)
    a = box((4, 4, 6), (1, 1, 1), (2, 2, 2))
    b = box((4, 4, 6), (1, 1, 2), (2, 2, 3))  # one voxel further along x
    sx = spacing[2]
    sd = S.surface_distances(a, b, spacing, "surfel")
    # Four of eight corners coincide, the other four are one x-step away; all surfels weigh the same.
    assert S.hausdorff(sd) == pytest.approx(sx)
    assert S.hd95(sd) == pytest.approx(sx)
    assert S.assd(sd) == pytest.approx(sx / 2)
    assert S.nsd(sd, sx / 2) == pytest.approx(0.5)
    vd = S.surface_distances(a, b, spacing, "voxel")
    assert S.hausdorff(vd) == S.hd95(vd) == S.assd(vd) == pytest.approx(sx)
    assert S.nsd(vd, sx * 0.99) == 0 and S.nsd(vd, sx) == 1


@pytest.mark.parametrize("method", ["surfel", "voxel"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.7, 0.9)])
def test_shifted_box_hausdorff(method, spacing):
    ref = box((12, 14, 20), (2, 3, 2), (8, 10, 12))
    pred = np.roll(ref, 3, axis=2)
    sd = S.surface_distances(pred, ref, spacing, method)
    assert S.hausdorff(sd) == pytest.approx(3 * spacing[2])
    assert S.hd95(sd) == pytest.approx(3 * spacing[2])


@pytest.mark.parametrize("method", ["surfel", "voxel"])
def test_concentric_cubes(method):
    spacing = (1.5, 0.5, 1.0)
    inner = box((20, 20, 20), (5, 5, 5), (15, 15, 15))
    outer = box((20, 20, 20), (3, 3, 3), (17, 17, 17))
    sd = S.surface_distances(outer, inner, spacing, method)
    # The farthest pair is corner to corner: two voxels along every axis.
    assert S.hausdorff(sd) == pytest.approx(2 * math.sqrt(sum(s * s for s in spacing)))
    # Every inner surface point lies exactly two steps from the outer surface along its face normal,
    # at most: inner -> outer never exceeds the largest two-step distance.
    assert sd.ref_to_pred.max() <= 2 * max(spacing) + 1e-12
    assert sd.ref_to_pred.min() == pytest.approx(2 * min(spacing))


@pytest.mark.parametrize("method", ["surfel", "voxel"])
def test_concentric_spheres(method):
    shape, c = (40, 40, 40), (20, 20, 20)
    inner, outer = ball(shape, c, 10), ball(shape, c, 13)
    sd = S.surface_distances(outer, inner, (1.0, 1.0, 1.0), method)
    if method == "voxel":
        assert S.assd(sd) == pytest.approx(3.0, abs=0.35)
    else:
        # Surfel points sit on the band of blocks straddling each surface (about one voxel
        # thick), so nearest-point distances across a 3-voxel gap average a little less.
        assert 2.0 < S.assd(sd) < 3.0
    assert S.hd95(sd) == pytest.approx(3.0, abs=0.75)
    assert S.hausdorff(sd) == pytest.approx(3.0, abs=1.0)
    assert S.nsd(sd, 1.0) < 0.1 and S.nsd(sd, 4.0) == 1.0


def test_sphere_surface_area_close_to_analytic():
    r = 15
    m = ball((40, 40, 40), (20, 20, 20), r)
    sd = S.surface_distances(m, m, (1.0, 1.0, 1.0))
    # The mask holds centres within r; its surface runs half a voxel further out, and marching
    # cubes over a staircase overestimates a smooth area by a few per cent.
    assert sd.pred_weights.sum() == pytest.approx(4 * math.pi * (r + 0.5) ** 2, rel=0.05)


def test_the_two_definitions_differ_on_the_same_masks():
    a = ball((40, 40, 40), (20, 20, 20), 10)
    b = np.roll(a, 1, axis=2)
    surfel = S.surface_distances(b, a, (1.0, 1.0, 1.0), "surfel")
    voxel = S.surface_distances(b, a, (1.0, 1.0, 1.0), "voxel")
    assert S.hd95(surfel) == S.hd95(voxel) == 1.0
    assert S.assd(surfel) == pytest.approx(0.266, abs=0.001)
    assert S.assd(voxel) == pytest.approx(0.591, abs=0.001)


@pytest.mark.parametrize("method", ["surfel", "voxel"])
def test_identical_masks(method):
    m = ball((20, 20, 20), (10, 10, 10), 6)
    sd = S.surface_distances(m, m, (1.0, 2.0, 0.5), method)
    assert S.hausdorff(sd) == S.hd95(sd) == S.assd(sd) == 0.0
    assert S.nsd(sd, 0.0) == 1.0


@pytest.mark.parametrize("method", ["surfel", "voxel"])
def test_empty_masks(method):
    empty = np.zeros((8, 8, 8), dtype=bool)
    m = box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    both = S.surface_distances(empty, empty, (1, 1, 1), method)
    assert both.both_empty
    assert all(math.isnan(f(both)) for f in (S.hausdorff, S.hd95, S.assd))
    assert math.isnan(S.nsd(both, 1.0))
    for pred, ref in ((m, empty), (empty, m)):
        sd = S.surface_distances(pred, ref, (1, 1, 1), method)
        assert S.hausdorff(sd) == S.hd95(sd) == S.assd(sd) == math.inf
        assert S.nsd(sd, 100.0) == 0.0


@pytest.mark.parametrize("method", ["surfel", "voxel"])
def test_bounding_box_crop_changes_nothing(method):
    small_p = ball((16, 16, 16), (7, 8, 8), 5)
    small_r = ball((16, 16, 16), (8, 8, 7), 5)
    big_p = np.zeros((40, 50, 45), dtype=bool)
    big_r = np.zeros_like(big_p)
    big_p[10:26, 20:36, 5:21] = small_p
    big_r[10:26, 20:36, 5:21] = small_r
    spacing = (1.2, 0.8, 2.0)
    a = S.surface_distances(small_p, small_r, spacing, method)
    b = S.surface_distances(big_p, big_r, spacing, method)
    for f in (S.hausdorff, S.hd95, S.assd):
        assert f(a) == pytest.approx(f(b), rel=1e-12)
    np.testing.assert_allclose(a.pred_weights, b.pred_weights)


def test_structure_at_image_border_is_closed():
    m = np.zeros((6, 6, 6), dtype=bool)
    m[:3, :3, :3] = True  # a 3-voxel cube in the corner of the image
    sd = S.surface_distances(m, m, (1.0, 1.0, 1.0), "surfel")
    assert sd.pred_weights.sum() == pytest.approx(box_surfel_area((3, 3, 3), (1.0, 1.0, 1.0)))
    vd = S.surface_distances(m, m, (1.0, 1.0, 1.0), "voxel")
    assert vd.pred_to_ref.size == 26  # all but the centre voxel


def test_2d_single_pixel_and_shift():
    a = box((5, 7), (2, 2), (3, 3))
    b = box((5, 7), (2, 4), (3, 5))
    sd = S.surface_distances(a, b, (1.0, 0.5), "voxel")
    assert S.hausdorff(sd) == pytest.approx(1.0)
    sd = S.surface_distances(a, a, (3.0, 4.0), "surfel")
    assert sd.pred_weights.sum() == pytest.approx(2 * 5.0)  # four half-diagonals of a 3 x 4 pixel


def test_block_table_is_symmetric_under_complement():
    for spacing in ((1.0, 1.0, 1.0), (0.5, 1.7, 3.0)):
        t = S.surfel_measure_table(spacing)
        np.testing.assert_allclose(t, t[::-1])
        assert t[0] == t[255] == 0 and (t[1:255] > 0).all()
    t2 = S.surfel_measure_table((1.0, 2.0))
    np.testing.assert_allclose(t2, t2[::-1])


def test_weighted_percentile_definitions():
    sd = S.SurfaceDistances(np.array([0.0, 1.0, 2.0, 10.0]), np.array([1.0, 1.0, 1.0, 1.0]),
                            np.array([0.0]), np.array([1.0]), "surfel")
    assert S.percentile_distance(sd, 50) == 1.0  # first distance reaching half the area
    assert S.percentile_distance(sd, 95) == 10.0
    vd = S.SurfaceDistances(sd.pred_to_ref, sd.pred_weights, sd.ref_to_pred, sd.ref_weights, "voxel")
    assert S.percentile_distance(vd, 50) == pytest.approx(1.5)  # linear interpolation
    assert S.percentile_distance(vd, 95) == pytest.approx(2.0 + 0.85 * 8.0)


def test_bad_arguments():
    m = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="shapes differ"):
        S.surface_distances(m, m[:3], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        S.surface_distances(m, m, (1, 1))
    with pytest.raises(ValueError, match="method"):
        S.surface_distances(m, m, (1, 1, 1), "mesh")
    with pytest.raises(ValueError, match="2D or 3D"):
        S.surface_distances(m[0, 0], m[0, 0], (1,))
    sd = S.surface_distances(m, m, (1, 1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        S.nsd(sd, -1.0)
