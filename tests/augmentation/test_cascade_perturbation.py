"""Random degradation of a previous stage's one-hot segmentation (cascade training)."""

import numpy as np
import pytest
import torch

from medseg.augmentation.cascade import (PerturbationConfig, apply_perturbation, morphology, remove_component,
                                         sample_perturbation)


def cube(shape, lo, hi):
    m = torch.zeros(shape)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1.0
    return m


def test_morphology_grows_and_shrinks_by_the_radius():
    m = cube((20, 20, 20), (8, 8, 8), (12, 12, 12))
    assert torch.equal(morphology(m, "dilation", 2), cube((20, 20, 20), (6, 6, 6), (14, 14, 14)))
    assert torch.equal(morphology(m, "erosion", 1), cube((20, 20, 20), (9, 9, 9), (11, 11, 11)))
    assert morphology(m, "erosion", 2).sum() == 0
    # Opening removes what is thinner than the cube; closing fills holes narrower than it.
    speck = m.clone()
    speck[2, 2, 2] = 1.0
    assert torch.equal(morphology(speck, "opening", 1), m)
    holed = m.clone()
    holed[10, 10, 10] = 0.0
    assert torch.equal(morphology(holed, "closing", 1), m)
    # 2D works through the same code.
    assert morphology(cube((9, 9), (4, 4), (5, 5)), "dilation", 1).sum() == 9
    with pytest.raises(ValueError, match="unknown operation"):
        morphology(m, "thinning", 1)


def test_erosion_does_not_eat_in_from_the_patch_border():
    m = cube((10, 10, 10), (0, 0, 0), (5, 10, 10))
    assert torch.equal(morphology(m, "erosion", 1), cube((10, 10, 10), (0, 0, 0), (4, 10, 10)))


def test_remove_component_picks_only_small_ones():
    mask = np.zeros((20, 20, 20), bool)
    mask[:10] = True                # 50 % of the patch: never removed
    mask[15:17, 15:17, 15:17] = True
    mask[12, 2, 2] = True
    removed = [remove_component(mask, pick, 0.15) for pick in (0.0, 0.99)]
    assert {int(r.sum()) for r in removed} == {8, 1}
    assert remove_component(mask[:10], 0.5, 0.15) is None  # only the large one there
    assert remove_component(np.zeros((4, 4), bool), 0.5, 0.15) is None


def test_perturbation_keeps_one_class_per_voxel_and_is_reproducible():
    onehot = torch.zeros((2, 16, 24, 24))
    onehot[0, 4:12, 4:14, 4:14] = 1.0
    onehot[1, 4:12, 14:20, 4:14] = 1.0
    config = PerturbationConfig(morph_p=1.0, remove_p=1.0)
    params = sample_perturbation(2, torch.Generator().manual_seed(3), config)
    assert params == sample_perturbation(2, torch.Generator().manual_seed(3), config)
    assert sorted(s["channel"] for s in params["morph"]) == [0, 1] and len(params["remove"]) == 2
    a = apply_perturbation(onehot.clone(), params, config)
    b = apply_perturbation(onehot.clone(), params, config)
    assert torch.equal(a, b) and not torch.equal(a, onehot)
    assert a.sum(0).max() <= 1.0 and set(a.unique().tolist()) <= {0.0, 1.0}
    nothing = sample_perturbation(2, torch.Generator().manual_seed(3), PerturbationConfig(morph_p=0.0, remove_p=0.0))
    assert nothing == {"morph": None, "remove": None}
    assert torch.equal(apply_perturbation(onehot.clone(), nothing), onehot)


def test_dilation_takes_voxels_from_the_other_class():
    onehot = torch.zeros((2, 8, 8, 8))
    onehot[0, :, :, :4] = 1.0
    onehot[1, :, :, 4:] = 1.0
    out = apply_perturbation(onehot.clone(), {"morph": [{"channel": 0, "operation": "dilation", "radius": 2}]})
    assert out[0, :, :, :6].eq(1).all() and out[1, :, :, :6].eq(0).all() and out[1, :, :, 6:].eq(1).all()
