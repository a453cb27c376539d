"""Losses with an ignore label and region (sigmoid) losses: hand-computed values, and ignored
voxels that change nothing."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.io.labels import LabelScheme
from medseg.losses import LOSSES, DeepSupervisionLoss, DiceCELoss, RegionLoss, create_loss, region_targets

CLASSES = LabelScheme.parse({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
REGIONS = LabelScheme.parse({"background": 0, "organ": [1, 2], "lesion": [2], "ignore": 3}, [1, 2])
LN3 = math.log(3.0)


def test_dice_ce_with_ignore_matches_a_hand_computation():
    # Four voxels, two classes (ignore = 2); the last voxel is unannotated.
    target = torch.tensor([[0, 1, 1, 2]])
    logits = torch.tensor([[[0.0, 0.0, LN3, 5.0], [LN3, 0.0, 0.0, -5.0]]])  # p(class 1) = .75, .5, .25
    # CE over the 3 annotated voxels: -ln .25, -ln .5, -ln .25.  Dice of class 1:
    # 2 (.5 + .25) / ((.75 + .5 + .25) + 2) = 1.5 / 3.5.
    expected = (1 - 1.5 / 3.5) + 5 * math.log(2) / 3
    loss = DiceCELoss(ignore_index=2)(logits, target)
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_region_loss_matches_a_hand_computation():
    # Regions (1, 2) and (2,), ignore 3; voxels hold 0, 1, 2, 3.
    target = torch.tensor([[0, 1, 2, 3]])
    logits = torch.tensor([[[0.0, LN3, LN3, 9.0], [-LN3, 0.0, LN3, -9.0]]])  # sigmoids .5 .75 .75 | .25 .5 .75
    # BCE over 2 regions x 3 annotated voxels: ln 2 + 2 ln(4/3) and ln(4/3) + ln 2 + ln(4/3).
    bce = (2 * math.log(2) + 4 * math.log(4 / 3)) / 6
    # Dice: region 0: 2 (.75 + .75) / (2 + 2) = .75; region 1: 2 (.75) / (1.5 + 1) = .6.
    expected = (1 - (0.75 + 0.6) / 2) + bce
    loss = RegionLoss([(1, 2), (2,)], ignore_index=3)(logits, target)
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_region_targets_are_unions_of_values():
    t = torch.tensor([[0, 1, 2, 3]])
    assert region_targets(t, [(1, 2), (2,)]).tolist() == [[[0, 1, 1, 0], [0, 0, 1, 0]]]


def _loss_and_grad(loss_fn, logits, target):
    x = logits.clone().requires_grad_(True)
    loss = loss_fn(x, target)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("scheme", [CLASSES, REGIONS], ids=["classes", "regions"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_logits_at_ignored_voxels_change_neither_loss_nor_gradient(scheme, name):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 6, 7, 5), generator=g)
    target[:, 2:4] = 3  # a slab of ignored voxels
    target[1, :, :2] = 3
    ignored = (target == 3).unsqueeze(1).expand(-1, scheme.num_outputs, -1, -1, -1)
    logits = torch.randn(2, scheme.num_outputs, 6, 7, 5, generator=g) * 3
    changed = logits.clone()
    changed[ignored] = torch.randn(int(ignored.sum()), generator=g) * 50
    loss_fn = create_loss(name, scheme)
    loss_a, grad_a = _loss_and_grad(loss_fn, logits, target)
    loss_b, grad_b = _loss_and_grad(loss_fn, changed, target)
    assert torch.isfinite(loss_a)
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(grad_a, grad_b)
    assert grad_a[ignored].abs().max() == 0 and grad_a[~ignored].abs().max() > 0


@pytest.mark.parametrize("scheme", [CLASSES, REGIONS], ids=["classes", "regions"])
def test_a_patch_that_is_all_ignore_gives_zero_loss_and_gradient(scheme):
    target = torch.full((1, 4, 4, 4), 3)
    logits = torch.randn(1, scheme.num_outputs, 4, 4, 4)
    loss, grad = _loss_and_grad(create_loss("dice_ce", scheme), logits, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and grad.abs().max() == 0


def test_region_loss_with_deep_supervision_downsamples_the_label_map():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6, 2:6] = 1
    target[:, 3:5, 3:5, 3:5] = 2
    perfect = region_targets(target, REGIONS.regions) * 40 - 20
    # nearest-exact halving keeps voxels 1, 3, 5, ...
    half = region_targets(target[:, 1::2, 1::2, 1::2], REGIONS.regions) * 40 - 20
    loss = DeepSupervisionLoss(create_loss("dice_ce", REGIONS))([perfect, half], target)
    assert loss.item() < 1e-3
    assert DeepSupervisionLoss(create_loss("dice_ce", REGIONS))([perfect, -half], target).item() > 1


def test_loss_names_pick_the_form_the_labels_need():
    assert isinstance(create_loss("dice_ce", CLASSES), DiceCELoss)
    region = create_loss("vnet_dice", REGIONS)
    assert isinstance(region, RegionLoss) and region.squared and region.bce_weight == 0
    assert create_loss("ce", REGIONS).dice_weight == 0
    with pytest.raises(ValueError, match="2 output channels for 3 regions"):
        RegionLoss([(1,), (2,), (3,)])(torch.zeros(1, 2, 4), torch.zeros(1, 4, dtype=torch.long))
