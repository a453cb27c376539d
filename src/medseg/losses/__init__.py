"""Segmentation losses: Dice (plain and V-Net's squared form), Dice + CE, region losses
(sigmoid: Dice + BCE), deep supervision; all take an optional ignore label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from medseg.losses.dice import CrossEntropyLoss, DiceCELoss, DiceLoss, soft_dice
from medseg.losses.regions import RegionLoss, region_targets

if TYPE_CHECKING:
    from medseg.io.labels import LabelScheme

# Names a plan or `--loss` can give: (Dice weight, cross-entropy weight, options). Dice is per
# sample unless "batch" says it pools the batch. For region datasets the same names mean the
# sigmoid forms (binary cross-entropy; no background channel to include).
LOSSES = {
    "dice_ce": (1.0, 1.0, {}),
    "dice_ce_batch": (1.0, 1.0, {"batch": True}),
    "dice": (1.0, 0.0, {}),
    "dice_batch": (1.0, 0.0, {"batch": True}),
    "vnet_dice": (1.0, 0.0, {"squared": True, "include_background": True}),
    "ce": (0.0, 1.0, {}),
}


def create_loss(name: str, labels: "LabelScheme | None" = None):
    """The loss `name` for a dataset's `labels` (regions, ignore label); plain classes without."""
    try:
        dice_weight, ce_weight, options = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}") from None
    ignore = labels.ignore if labels is not None else None
    if labels is not None and labels.has_regions:
        options = {k: v for k, v in options.items() if k != "include_background"}
        return RegionLoss(labels.regions, ignore, dice_weight=dice_weight, bce_weight=ce_weight, **options)
    if not ce_weight:
        return DiceLoss(ignore_index=ignore, **options)
    if not dice_weight:
        return CrossEntropyLoss(ignore_index=ignore)
    return DiceCELoss(dice_weight, ce_weight, ignore_index=ignore, **options)


__all__ = ["CrossEntropyLoss", "DeepSupervisionLoss", "DiceCELoss", "DiceLoss", "RegionLoss", "create_loss",
           "deep_supervision_weights", "region_targets", "soft_dice"]
