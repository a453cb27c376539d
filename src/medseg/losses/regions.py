"""Region-based training: one sigmoid channel per region, BCE-with-logits plus soft Dice.

A region is a set of label values (nnU-Net's lists in dataset.json); regions may overlap or
nest. Targets stay integer label maps until the loss, which builds one binary channel per
region, so nearest-neighbour downsampling for deep supervision is unchanged (it commutes with
the conversion). Voxels holding the ignore label count in neither term.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses.dice import dice_of_probabilities, valid_mask


def region_targets(target: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(N, *spatial) integer labels -> (N, R, *spatial) float: channel r is 1 where the label is
    one of region r's values."""
    out = torch.zeros((target.shape[0], len(regions), *target.shape[1:]), dtype=torch.float32, device=target.device)
    for i, region in enumerate(regions):
        for v in region:
            out[:, i] += target == v  # a region's values are distinct: the sum stays 0 or 1
    return out


class RegionLoss(nn.Module):
    """`dice_weight` * (1 - soft Dice of the sigmoids) + `bce_weight` * BCE-with-logits.

    logits (N, R, *spatial), one channel per region; target (N, *spatial) integer labels. Dice
    is per sample and region (pooled over the batch with `batch`), V-Net's squared form with
    `squared`. The BCE is the mean over the annotated voxels and the regions.
    """

    def __init__(self, regions: Sequence[Sequence[int]], ignore_index: int | None = None, dice_weight: float = 1.0,
                 bce_weight: float = 1.0, batch: bool = False, squared: bool = False):
        super().__init__()
        self.regions = [tuple(int(v) for v in r) for r in regions]
        self.ignore_index = ignore_index
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        self.batch, self.squared = batch, squared

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"{logits.shape[1]} output channels for {len(self.regions)} regions")
        logits = logits.float()
        gt = region_targets(target, self.regions)
        mask = valid_mask(target, self.ignore_index)
        loss = logits.new_zeros(())
        if self.bce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
            if mask is None:
                bce = bce.mean()
            else:
                bce = (bce * mask).sum() / (mask.sum() * logits.shape[1]).clamp_min(1)
            loss = loss + self.bce_weight * bce
        if self.dice_weight:
            dice = dice_of_probabilities(torch.sigmoid(logits), gt, mask=mask, batch=self.batch, squared=self.squared)
            loss = loss + self.dice_weight * (1 - dice)
        return loss
