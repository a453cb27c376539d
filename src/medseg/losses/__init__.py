"""Segmentation losses: Dice (plain and V-Net's squared form), Dice + CE, deep supervision."""

from medseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from medseg.losses.dice import DiceCELoss, DiceLoss, soft_dice

LOSSES = {"dice_ce": DiceCELoss, "dice": DiceLoss, "vnet_dice": lambda: DiceLoss(squared=True, include_background=True)}


def create_loss(name: str):
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}") from None


__all__ = ["DeepSupervisionLoss", "DiceCELoss", "DiceLoss", "create_loss", "deep_supervision_weights", "soft_dice"]
