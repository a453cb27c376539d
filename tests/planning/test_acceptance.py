"""Acceptance of the planner (issue #4) on phantom datasets of different geometries.

Every plan is checked against the rules as docs/planning.md states them, re-derived here from
the fingerprint and the plan alone: target spacing (median; the anisotropy rule), topology
(which axes are down-sampled at each stage and why the network stops, kernels 1 on coarse
axes, patch a multiple of the total stride, maps of at least 4 voxels), features, batch
(at least 2, the rest of the budget, at most 5 % of the dataset's voxels), which
configurations exist (`3d_lowres` exactly when the full-resolution patch covers less than a
quarter of the median image; 2D data only `2d`), and tiny images (patch clipped, images
padded at training). Then a plan for a small CPU budget trains a real step within it, and,
where nnU-Net v2 is installed, the spacing and topology agree with its planner's functions.
"""

from __future__ import annotations

from math import ceil, prod

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.planning import make_plans
from medseg.planning.measure import StepSpec, measure_training_step
from medseg.planning.memory import PLANNED_OPTIMIZER, estimate_training_bytes
from medseg.planning.planner import GB, MEMORY_HEADROOM, rule_topology, training_dtype
from medseg.preprocessing.fingerprint import compute_fingerprint

CLASSES = {"background": 0, "organ": 1, "lesion": 2}


def synthetic_fingerprint(cases: int, spacing, shape, seed: int = 0) -> dict:
    """A phantom-like fingerprint: spacings within +-9 % (z) / +-6 % (in-plane) of `spacing`
    (mm) and shapes within +-15 % of `shape` (voxels), in (z, y, x) or (y, x) order."""
    rng = np.random.default_rng(seed)
    spread = np.array([0.09, 0.06, 0.06][-len(spacing):])
    rows = []
    for _ in range(cases):
        sp = np.asarray(spacing) * (1 + rng.uniform(-spread, spread))
        sp[-2:] = sp[-1]  # in-plane spacings are equal, as in the phantoms
        sh = np.maximum(np.round(np.asarray(shape) * rng.uniform(0.85, 1.15, len(shape))), 1)
        rows.append({"spacing": [round(float(v), 4) for v in sp], "shape_after_crop": [int(v) for v in sh]})
    return {"dataset_name": "Synthetic", "channel_names": ["CT"], "labels": dict(CLASSES), "num_cases": cases,
            "spatial_dims": len(spacing), "mirror_axes": None,
            "intensity": [{"mean": 0, "std": 1, "percentile_00_5": -1, "percentile_99_5": 1}], "cases": rows}


# The variants of benchmarks/compare_planner.py, as fingerprints (cases, spacing, median shape).
VARIANTS = {
    "isotropic": (12, (1.0, 1.0, 1.0), (150, 180, 180)),
    "anisotropic": (12, (5.0, 0.7, 0.7), (31, 260, 260)),
    "large": (4, (1.0, 1.0, 1.0), (280, 300, 310)),
    "large_ct": (4, (2.5, 0.7, 0.7), (115, 440, 440)),
    "tiny": (20, (2.75, 0.8, 0.8), (8, 28, 28)),
    "2d": (40, (0.8, 0.8), (225, 224)),
    "2d_large": (12, (0.8, 0.8), (460, 456)),
}


@pytest.fixture(scope="module", params=list(VARIANTS) + ["phantoms"])
def variant(request, phantom_dataset) -> tuple[str, dict]:
    """(name, fingerprint): the synthetic variants and the real phantoms' fingerprint."""
    if request.param == "phantoms":
        return "phantoms", compute_fingerprint(phantom_dataset)
    return request.param, synthetic_fingerprint(*VARIANTS[request.param])


def test_phantom_variants_have_the_geometry_asked_for():
    """`spacing` moves the spacing's centre and keeps the field of view in millimetres;
    `spatial_dims=2` keeps the axial slice with the most lesion."""
    from medseg.data.phantoms import make_phantom_case

    base, _ = make_phantom_case(0, index=1)
    iso, _ = make_phantom_case(0, index=1, spacing=(1.0, 1.0, 1.0))
    aniso, _ = make_phantom_case(0, index=1, spacing=(5.0, 0.7, 0.7))
    np.testing.assert_allclose(np.array(iso.spacing) / [1.0, 1.0, 1.0], np.array(base.spacing) / [2.75, 0.8, 0.8],
                               rtol=1e-3)
    np.testing.assert_allclose(np.array(aniso.spacing) / [5.0, 0.7, 0.7], np.array(base.spacing) / [2.75, 0.8, 0.8],
                               rtol=1e-3)
    for img in (iso, aniso):
        extent = np.array(img.array.shape) * img.spacing
        np.testing.assert_allclose(extent, np.array(base.array.shape) * base.spacing, rtol=0.08)
    vol_img, vol_lab = make_phantom_case(0, index=1)
    img2, lab2 = make_phantom_case(0, index=1, spatial_dims=2)
    k = int(np.argmax([(sl == 2).sum() for sl in vol_lab.array]))
    assert img2.spacing == vol_img.spacing[1:] and lab2.array.ndim == 2
    np.testing.assert_array_equal(lab2.array, vol_lab.array[k])
    np.testing.assert_array_equal(img2.array, vol_img.array[k])
    assert set(np.unique(lab2.array)) == {0, 1, 2}
    with pytest.raises(MedsegError, match="spatial_dims"):
        make_phantom_case(0, spatial_dims=4)
    with pytest.raises(MedsegError, match="spacing"):
        make_phantom_case(0, spacing=(1.0, -1.0, 1.0))


def arrays(fp: dict) -> tuple[np.ndarray, np.ndarray]:
    spacings = np.array([c["spacing"] for c in fp["cases"]], dtype=float)
    shapes = np.array([c["shape_after_crop"] for c in fp["cases"]], dtype=float)
    return spacings, shapes


def expected_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """The spacing rule as the issue states it."""
    target = np.median(spacings, axis=0)
    if len(target) == 3:
        med_shape = np.median(shapes, axis=0)
        worst = int(np.argmax(target))
        others = [a for a in range(3) if a != worst]
        if target[worst] > 3 * target[others].min() and 3 * med_shape[worst] < med_shape[others].min():
            target[worst] = max(np.percentile(spacings[:, worst], 10), target[others].max())
    return target


def stage_geometry(plan) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Spacing (mm) and feature-map size (voxels) at each stage, from the plan alone."""
    spacing = np.asarray(plan.target_spacing, dtype=float)
    size = np.asarray(plan.patch_size, dtype=float)
    spacings, sizes = [], []
    for stride in plan.model_options["strides"]:
        spacing, size = spacing * np.asarray(stride), size / np.asarray(stride)
        spacings.append(spacing)
        sizes.append(size)
    return spacings, sizes


def poolable(spacing: np.ndarray, size: np.ndarray) -> list[int]:
    """Axes the topology rule down-samples from a stage with this spacing and map size."""
    fits = [a for a in range(len(size)) if size[a] >= 8]
    if not fits:
        return []
    finest = min(spacing[a] for a in fits)
    pool = [a for a in fits if spacing[a] / finest < 2]
    return [] if len(pool) == 1 and size[pool[0]] < 12 else pool


def dataset_voxels(fp: dict, plan) -> float:
    """Voxels of the dataset at the plan's spacing; a 2D plan on volumes keeps each case's slices."""
    spacings, shapes = arrays(fp)
    target = np.asarray(plan.target_spacing)
    inplane = shapes[:, -len(target):] * spacings[:, -len(target):] / target
    slices = shapes[:, 0] if plan.spatial_dims < spacings.shape[1] else 1.0
    return float(np.sum(slices * np.prod(inplane, axis=1)))


def plans_for(fp: dict):
    return make_plans(fp)  # the defaults: an 8 GB GPU


def test_configurations_exist_exactly_as_the_rules_say(variant):
    name, fp = variant
    plans = plans_for(fp)
    if fp["spatial_dims"] == 2:
        assert plans.names() == ["2d"]
        return
    full = plans.configuration("3d_fullres")
    covers = prod(full.patch_size) / prod(full.median_shape)
    assert ("3d_lowres" in plans.names()) == (covers < 0.25), f"{name}: full-res patch covers {covers:.0%}"
    assert ("3d_cascade_fullres" in plans.names()) == ("3d_lowres" in plans.names())
    assert "2d" in plans.names()
    if "3d_lowres" in plans.names():
        low = plans.configuration("3d_lowres")
        assert prod(low.patch_size) / prod(low.median_shape) >= 0.25
        assert all(lo >= f for lo, f in zip(low.target_spacing, full.target_spacing))
        assert low.target_spacing != full.target_spacing


def test_dice_pools_the_batch_where_nnunet_does(variant):
    """2D: batch Dice (a slice rarely holds every class); 3d_fullres (and the cascade that
    inherits it): batch Dice exactly when a 3d_lowres exists; 3d_lowres: per sample."""
    name, fp = variant
    plans = plans_for(fp)
    expected = {"2d": "dice_ce_batch", "3d_lowres": "dice_ce",
                "3d_fullres": "dice_ce_batch" if "3d_lowres" in plans.names() else "dice_ce"}
    expected["3d_cascade_fullres"] = expected["3d_fullres"]
    for cfg in plans.names():
        assert plans.configuration(cfg).loss == expected[cfg], f"{name}: {cfg}"


def test_target_spacing_is_the_median_with_the_anisotropy_rule(variant):
    name, fp = variant
    spacings, shapes = arrays(fp)
    plans = plans_for(fp)
    for cfg in plans.names():
        plan = plans.configuration(cfg)
        if cfg == "3d_lowres":
            continue  # coarsened on purpose (test above)
        dims = plan.spatial_dims
        expected = expected_spacing(spacings[:, -dims:], shapes[:, -dims:])
        np.testing.assert_allclose(plan.target_spacing, expected, rtol=1e-5, err_msg=f"{name} {cfg}")
    if name == "anisotropic":  # 5 mm slices, 8x fewer voxels along z: the 10th percentile
        full = plans.configuration("3d_fullres")
        assert full.target_spacing[0] < np.median(spacings[:, 0])
        assert full.resampling == {"data": "spline", "label": "linear", "separate_axis": 0}  # as nnU-Net


def test_topology_obeys_the_rules(variant):
    name, fp = variant
    plans = plans_for(fp)
    for cfg in plans.names():
        plan = plans.configuration(cfg)
        opts = plan.model_options
        strides, kernels, features = opts["strides"], opts["kernel_sizes"], opts["features"]
        dims = plan.spatial_dims
        cap = 320 if dims == 3 else 512
        where = f"{name} {cfg}"
        assert features == [min(32 * 2**i, cap) for i in range(len(strides))], where
        assert len(kernels) == len(strides) and strides[0] == [1] * dims
        divisor = [2 ** sum(s[a] == 2 for s in strides) for a in range(dims)]
        assert all(p % d == 0 for p, d in zip(plan.patch_size, divisor)), where
        assert all(p // d >= 4 for p, d in zip(plan.patch_size, divisor)), where
        spacings, sizes = stage_geometry(plan)
        coarse_so_far = np.ones(dims, bool)
        for s in range(len(strides)):
            # Each stage down-samples exactly the axes the rule allows from the stage above it...
            if s > 0:
                pooled = [a for a in range(dims) if strides[s][a] == 2]
                assert pooled == poolable(spacings[s - 1], sizes[s - 1]), f"{where} stage {s}"
            # ...and a kernel is 1 exactly on axes that were never within 2x of the finest spacing.
            coarse_so_far &= spacings[s] / spacings[s].min() >= 2
            assert kernels[s] == [1 if c else 3 for c in coarse_so_far], f"{where} stage {s}"
        assert poolable(spacings[-1], sizes[-1]) == [], f"{where}: the network stops while it could go deeper"


def test_batch_takes_the_leftover_memory_within_5_percent_of_the_data(variant):
    name, fp = variant
    plans = plans_for(fp)
    budget = MEMORY_HEADROOM * 8.0 * GB
    for cfg in plans.names():
        plan = plans.configuration(cfg)
        opts = plan.model_options
        voxels = prod(plan.patch_size)

        def fits(batch: int) -> bool:
            return estimate_training_bytes(plan.patch_size, batch, 1, 3, opts["features"], opts["kernel_sizes"],
                                           opts["strides"], dtype=training_dtype("cuda"), device="cuda",
                                           optimizer=PLANNED_OPTIMIZER) <= budget

        share = 0.05 * dataset_voxels(fp, plan)
        assert plan.batch_size >= 2 and fits(plan.batch_size), f"{name} {cfg}"
        assert plan.batch_size == 2 or plan.batch_size * voxels <= share * 1.001, f"{name} {cfg}"
        more = plan.batch_size + 1
        assert not fits(more) or more * voxels > share * 0.999, f"{name} {cfg}: batch {more} would still fit"


def test_patch_is_preferred_over_batch_when_memory_is_short():
    """With a budget that cannot hold the image-sized patch, the patch shrinks (largest axis
    relative to the median image first) and the batch stays at 2; with room, the patch is the
    image and the batch grows."""
    _, spacing, shape = VARIANTS["isotropic"]
    fp = synthetic_fingerprint(200, spacing, shape)  # enough data for the 5 % cap to allow a larger batch
    tight = make_plans(fp, budget_gb=2.0).configuration("3d_fullres")
    roomy = make_plans(fp, budget_gb=80.0).configuration("3d_fullres")
    assert tight.batch_size == 2 and prod(tight.patch_size) < prod(roomy.patch_size)
    assert all(p >= m for p, m in zip(roomy.patch_size, roomy.median_shape))  # the whole median image
    assert roomy.batch_size > 2


def test_tiny_images_get_a_clipped_patch_and_are_padded_at_training(tmp_path):
    from medseg.data.phantoms import make_phantoms
    from medseg.planning.plans import Plans
    from medseg.preprocessing.preprocess import preprocess_dataset
    from medseg.training.sampler import PatchSampler

    dataset = make_phantoms(tmp_path / "tiny", cases=3, seed=1, shape_scale=0.25)
    fp = compute_fingerprint(dataset)
    plans: Plans = make_plans(fp)
    plan = plans.configuration("3d_fullres")
    divisor = plan.divisor
    # The patch is the median image, padded up to the network's total stride, never more.
    for p, m, d in zip(plan.patch_size, plan.median_shape, divisor):
        assert m <= p < m + d
    folder = preprocess_dataset(dataset, tmp_path / "work", plans, "3d_fullres")
    ids = [c["case_id"] for c in fp["cases"]]
    shapes = [np.load(folder / f"{i}_seg.npy", mmap_mode="r").shape for i in ids]
    assert all(any(s < p for s, p in zip(shape, plan.patch_size)) for shape in shapes)
    x, y = PatchSampler(folder, ids, plan.patch_size, batch_size=4, seed=0).sample(0)
    assert x.shape == (4, 1, *plan.patch_size) and y.shape == (4, *plan.patch_size)
    # Each patch holds a whole case plus padding: as many labelled voxels as one of the cases.
    counts = sorted(int((np.load(folder / f"{i}_seg.npy") > 0).sum()) for i in ids)
    assert all(int((y[b] > 0).sum()) in counts for b in range(4))
    assert all(((x[b] == 0).all(axis=0) & (y[b] == 0)).sum() > 0 for b in range(4))  # padded voxels


@pytest.mark.parametrize("kind", ["3d_fullres", "2d"])
def test_a_phantom_plan_for_a_small_cpu_budget_trains_a_real_step_within_it(tmp_path, phantom_dataset, kind):
    """Anisotropic phantoms (3d_fullres) and 2D phantoms (2d): the real network's measured
    peak memory of a training step, in a fresh process, stays within the budget."""
    from medseg.data.phantoms import make_phantoms

    if kind == "2d":
        dataset, budget_gb = make_phantoms(tmp_path / "p2d", cases=3, seed=2, spatial_dims=2), 0.06
    else:
        dataset, budget_gb = phantom_dataset, 0.08
    fp = compute_fingerprint(dataset)
    plan = make_plans(fp, budget_gb=budget_gb, device="cpu", base_features=4).configuration(kind)
    assert plan.predicted_memory_gb <= budget_gb
    peak = measure_training_step(StepSpec.from_plan(plan, 1, 3), device="cpu", steps=1)["peak_bytes"]
    assert peak <= budget_gb * GB, f"measured {peak / 2**20:.0f} MiB for {plan.patch_size} x {plan.batch_size}"


# ---- Agreement with nnU-Net v2's planner (where nnunetv2 is installed; it is not a CI dependency).


def test_topology_equals_nnunet_get_pool_and_conv_props():
    """On random spacings and patches, strides, padded patch and kernels equal nnU-Net's
    `get_pool_and_conv_props`, except nnU-Net's bottleneck kernel, which is always 3: medseg
    keeps 1 on an axis still 2x coarser than the finest there (the kernel rule)."""
    topology = pytest.importorskip("nnunetv2.experiment_planning.experiment_planners.network_topology")
    rng = np.random.default_rng(0)
    bottleneck_differs = 0
    for trial in range(400):
        dims = 2 + trial % 2
        spacing = list(rng.choice([0.5, 0.7, 0.8, 1.0, 1.5, 2.5, 3.0, 5.0, 8.0], dims))
        patch = [float(v) for v in rng.integers(4, 300, dims) + rng.choice([0, 0.5], dims)]
        _, strides, kernels, padded, _ = topology.get_pool_and_conv_props(spacing, patch, 4, 999999)
        ours = rule_topology(spacing, patch)
        where = f"spacing {spacing}, patch {patch}"
        assert ours.strides == [list(s) for s in strides], where
        assert ours.patch_size == [int(p) for p in padded], where
        assert ours.kernel_sizes[:-1] == [list(k) for k in kernels[:-1]], where
        last_spacing = np.asarray(spacing) * np.asarray(ours.divisor)
        coarse = last_spacing / last_spacing.min() >= 2
        bottleneck_differs += ours.kernel_sizes[-1] != list(kernels[-1])
        assert all(k == 3 or c for k, c in zip(ours.kernel_sizes[-1], coarse)), where
    assert bottleneck_differs < 40  # a rare case (an axis left coarse when pooling stops)


def test_target_spacing_equals_nnunet_for_the_variants(variant):
    """nnU-Net's `determine_fullres_target_spacing` on the same spacings and shapes (its
    planner object is made without its constructor, which needs nnU-Net's folders)."""
    planner_module = pytest.importorskip("nnunetv2.experiment_planning.experiment_planners.default_experiment_planner")
    name, fp = variant
    if fp["spatial_dims"] == 2:
        pytest.skip("nnU-Net reads 2D images as volumes of one slice with a 999 mm slice spacing")
    spacings, shapes = arrays(fp)
    planner = object.__new__(planner_module.ExperimentPlanner)
    planner.dataset_fingerprint = {"spacings": spacings.tolist(), "shapes_after_crop": shapes.tolist()}
    planner.anisotropy_threshold, planner.overwrite_target_spacing = 3, None
    theirs = planner.determine_fullres_target_spacing()
    ours = plans_for(fp).configuration("3d_fullres").target_spacing
    np.testing.assert_allclose(ours, theirs, atol=2e-5, err_msg=name)  # nnU-Net adds 1e-5 when it clamps
