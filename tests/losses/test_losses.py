import pytest
import torch

from medseg.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, create_loss, deep_supervision_weights, soft_dice


def perfect_logits(target, k, scale=50.0):
    return torch.nn.functional.one_hot(target, k).movedim(-1, 1).float() * scale


def test_perfect_prediction_has_dice_one_and_tiny_loss():
    t = torch.randint(0, 3, (2, 6, 7, 8))
    logits = perfect_logits(t, 3)
    assert soft_dice(logits, t).item() == pytest.approx(1.0, abs=1e-4)
    assert DiceCELoss()(logits, t).item() < 1e-3


def test_dice_of_half_overlap_matches_hand_count():
    t = torch.zeros(1, 1, 4, dtype=torch.long)
    t[..., :2] = 1
    p = torch.zeros(1, 1, 4, dtype=torch.long)
    p[..., 1:3] = 1
    # Hard predictions: 2 * 1 / (2 + 2) = 0.5 for the foreground class.
    assert soft_dice(perfect_logits(p, 2, 100.0), t).item() == pytest.approx(0.5, abs=1e-3)


def test_squared_denominator_differs_for_soft_predictions():
    t = torch.randint(0, 2, (2, 16, 16))
    logits = torch.randn(2, 2, 16, 16)
    assert not torch.isclose(soft_dice(logits, t), soft_dice(logits, t, squared=True))


def test_batch_dice_pools_over_samples():
    t = torch.zeros(2, 8, dtype=torch.long)
    t[0, :4] = 1  # second sample has no foreground
    logits = perfect_logits(t, 2)
    logits[1, 1, 0] = 100  # one false positive in the empty sample
    per_sample = soft_dice(logits, t).item()
    pooled = soft_dice(logits, t, batch=True).item()
    assert pooled > per_sample  # one FP barely hurts the pooled Dice, ruins the empty sample's


def test_deep_supervision_weights_halve_and_sum_to_one():
    w = deep_supervision_weights(4)
    assert w == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])


def test_deep_supervision_downsamples_targets():
    t = torch.randint(0, 3, (2, 8, 16, 16))
    outs = [perfect_logits(t, 3), torch.randn(2, 3, 4, 8, 8, requires_grad=True)]
    loss = DeepSupervisionLoss(DiceCELoss())(outs, t)
    loss.backward()
    assert outs[1].grad is not None and loss.item() > 0


def test_loss_registry():
    assert isinstance(create_loss("dice_ce"), DiceCELoss)
    assert isinstance(create_loss("vnet_dice"), DiceLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("focal")
