"""Segmentation losses: Dice (plain and V-Net's squared form), Dice + CE, deep supervision."""

from medseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from medseg.losses.dice import CrossEntropyLoss, DiceCELoss, DiceLoss, soft_dice

# Names a plan or `--loss` can give. Dice is per sample unless "batch" says it pools the batch.
LOSSES = {
    "dice_ce": DiceCELoss,
    "dice_ce_batch": lambda: DiceCELoss(batch=True),
    "dice": DiceLoss,
    "dice_batch": lambda: DiceLoss(batch=True),
    "vnet_dice": lambda: DiceLoss(squared=True, include_background=True),
    "ce": CrossEntropyLoss,
}


def create_loss(name: str):
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}") from None


__all__ = ["CrossEntropyLoss", "DeepSupervisionLoss", "DiceCELoss", "DiceLoss", "create_loss", "deep_supervision_weights", "soft_dice"]
