import json

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.planning.plans import Plans
from medseg.planning.planner import (make_plans, plan_configuration, rule_initial_patch, rule_shrink_patch,
                                     rule_target_spacing, rule_topology)


def fingerprint(spacings, shapes, channels=("CT",), labels=None):
    return {
        "dataset_name": "T", "channel_names": list(channels),
        "labels": labels or {"background": 0, "a": 1, "b": 2}, "num_cases": len(spacings),
        "spatial_dims": len(spacings[0]),
        "intensity": [{"mean": 0, "std": 1, "percentile_00_5": -1, "percentile_99_5": 1}] * len(channels),
        "cases": [{"spacing": list(s), "shape_after_crop": list(h)} for s, h in zip(spacings, shapes)],
    }


def test_target_spacing_is_median_for_isotropic_data():
    sp = np.array([[1.0, 1.0, 1.0], [1.2, 1.2, 1.2], [0.8, 0.8, 0.8]])
    target, _ = rule_target_spacing(sp, np.full((3, 3), 100.0))
    assert target == [1.0, 1.0, 1.0]


def test_anisotropic_axis_takes_10th_percentile():
    sp = np.array([[5.0, 0.7, 0.7], [3.0, 0.8, 0.8], [4.0, 0.75, 0.75], [6.0, 0.7, 0.7], [5.0, 0.7, 0.7]])
    shapes = np.array([[30, 512, 512]] * 5, dtype=float)
    target, notes = rule_target_spacing(sp, shapes)
    assert target[0] == pytest.approx(np.percentile(sp[:, 0], 10))
    assert target[1:] == [0.7, 0.7]
    assert any("anisotropic" in n for n in notes)


def test_anisotropic_spacing_but_many_slices_keeps_median():
    sp = np.array([[3.0, 0.7, 0.7]] * 3)
    target, _ = rule_target_spacing(sp, np.array([[300, 512, 512]] * 3, dtype=float))
    assert target == [3.0, 0.7, 0.7]


def test_topology_keeps_coarse_axis_unpooled_until_in_plane_catches_up():
    topo = rule_topology([3.0, 0.75, 0.75], [32, 192, 192], max_stages=6)
    assert topo.strides[1] == [1, 2, 2]
    assert topo.kernel_sizes[0] == [1, 3, 3]
    # Once in-plane spacing reaches 1.5 mm, z (3 mm) is within 2x: pooled and 3-wide.
    assert topo.strides[2] == [1, 2, 2] or topo.strides[2] == [2, 2, 2]
    assert all(p % d == 0 for p, d in zip(topo.patch_size, topo.divisor))
    # Feature maps never shrink below 4 voxels.
    assert all(p // d >= 4 for p, d in zip(topo.patch_size, topo.divisor))


def test_isotropic_topology_pools_all_axes_equally():
    topo = rule_topology([1.0, 1.0, 1.0], [128, 128, 128], max_stages=6)
    assert topo.strides == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert topo.kernel_sizes == [[3, 3, 3]] * 6


def test_initial_patch_follows_inverse_spacing_and_median_shape():
    p = rule_initial_patch([2.0, 1.0, 1.0], [1000, 1000, 1000])
    assert p[1] == p[2] and abs(p[1] / p[0] - 2) < 0.05
    assert rule_initial_patch([1.0, 1.0, 1.0], [20, 300, 300])[0] == 20


def test_plan_respects_budget_and_prefers_patch():
    sp = np.array([[1.0, 1.0, 1.0]] * 10)
    sh = np.array([[200, 200, 200]] * 10, dtype=float)
    small = plan_configuration("x", sp, sh, in_channels=1, num_classes=3, budget_gb=1.0, normalization=["ct"],
                               num_cases=10)
    big = plan_configuration("x", sp, sh, in_channels=1, num_classes=3, budget_gb=8.0, normalization=["ct"],
                             num_cases=10)
    assert small.predicted_memory_gb <= 1.0
    assert big.predicted_memory_gb <= 8.0
    assert np.prod(small.patch_size) < np.prod(big.patch_size)
    assert small.batch_size >= 2 and big.batch_size >= 2
    assert small.model_options["features"][0] == 32
    assert max(big.model_options["features"]) <= 320


def test_plans_round_trip_and_inherit(tmp_path):
    fp = fingerprint([[2.5, 0.8, 0.8]] * 4, [[40, 128, 128]] * 4)
    plans = make_plans(fp, budget_gb=2.0)
    path = tmp_path / "plans.json"
    plans.save(path)
    raw = json.loads(path.read_text())
    raw["configurations"]["3d_fullres_bs4"] = {"inherits": "3d_fullres", "batch_size": 4,
                                               "model_options": {"deep_supervision": False}}
    path.write_text(json.dumps(raw))
    loaded = Plans.load(path)
    base, child = loaded.configuration("3d_fullres"), loaded.configuration("3d_fullres_bs4")
    assert child.batch_size == 4 and child.patch_size == base.patch_size
    assert child.model_options["strides"] == base.model_options["strides"]
    assert child.model_options["deep_supervision"] is False
    assert Plans.load(path).to_dict() == loaded.to_dict()


def test_unknown_configuration_and_cycles_are_user_errors(tmp_path):
    plans = make_plans(fingerprint([[1.0, 1.0, 1.0]] * 2, [[32, 32, 32]] * 2), budget_gb=1.0)
    with pytest.raises(MedsegError, match="no configuration"):
        plans.configuration("3d_lowres")
    plans.configuration("3d_fullres")
    plans.configurations["a"] = {"inherits": "b"}
    plans.configurations["b"] = {"inherits": "a"}
    with pytest.raises(MedsegError, match="circle"):
        plans.configuration("a")


def test_2d_dataset_gets_2d_configuration():
    plans = make_plans(fingerprint([[0.5, 0.5]] * 3, [[256, 256]] * 3), budget_gb=4.0)
    assert plans.names() == ["2d"]
    c = plans.configuration("2d")
    assert c.spatial_dims == 2 and len(c.patch_size) == 2


def test_mirror_axes_from_dataset_json_reach_every_configuration():
    fp = fingerprint([[1.0, 1.0, 1.0]] * 3, [[40, 40, 40]] * 3)
    fp["mirror_axes"] = [0, 1]
    plans = make_plans(fp, budget_gb=1.0)
    assert plans.configuration("3d_fullres").mirror_axes == [0, 1]
    assert plans.configuration("2d").mirror_axes == [0]  # the volume's y is the slice's first axis
    fp["mirror_axes"] = None
    assert make_plans(fp, budget_gb=1.0).configuration("3d_fullres").mirror_axes is None


def test_shrinking_takes_the_last_largest_axis_by_the_smaller_networks_stride():
    topo = rule_topology([1.0, 1.0], [256, 256])
    assert topo.divisor == [64, 64]
    # Ties go to the last axis; 256 - 64 = 192 has stride 32, so 224 is the next size, not 192.
    assert rule_shrink_patch([1.0, 1.0], topo, [300, 300]) == [256, 224]
    # An axis at its smallest gives way to the next largest.
    small = rule_topology([1.0, 1.0], [4, 64])
    assert small.divisor == [1, 8] and rule_shrink_patch([1.0, 1.0], small, [4, 100]) == [4, 56]
    assert rule_shrink_patch([1.0, 1.0], rule_topology([1.0, 1.0], [4, 4]), [10, 10]) is None
