"""Soft Dice losses on logits.

`soft_dice`: 1 - mean over classes of 2|P.G| / (|P| + |G|), with P the softmax and G the
one-hot target. `squared=True` gives V-Net's form (Milletari et al. 2016), whose
denominator sums squares: |P|^2 + |G|^2. `batch=True` pools the sums over the batch
(one Dice per class), else one Dice per sample and class, then the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, *spatial) integer labels -> (N, K, *spatial) float one-hot."""
    oh = F.one_hot(target.long(), num_classes)
    return oh.movedim(-1, 1).to(torch.float32)


def soft_dice(logits: torch.Tensor, target: torch.Tensor, *, include_background: bool = False,
              batch: bool = False, squared: bool = False, smooth: float = 1e-5) -> torch.Tensor:
    """Mean soft Dice (a similarity in [0, 1]). logits (N, K, *spatial); target (N, *spatial)."""
    probs = torch.softmax(logits.float(), dim=1)
    gt = one_hot(target, logits.shape[1])
    if not include_background:
        probs, gt = probs[:, 1:], gt[:, 1:]
    axes = tuple(range(2, probs.ndim))
    if batch:
        axes = (0,) + axes
    intersect = (probs * gt).sum(axes)
    if squared:
        denom = (probs * probs).sum(axes) + (gt * gt).sum(axes)
    else:
        denom = probs.sum(axes) + gt.sum(axes)
    return ((2 * intersect + smooth) / (denom + smooth).clamp_min(1e-8)).mean()


class DiceLoss(nn.Module):
    def __init__(self, include_background: bool = False, batch: bool = False, squared: bool = False):
        super().__init__()
        self.kw = dict(include_background=include_background, batch=batch, squared=squared)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - soft_dice(logits, target, **self.kw)


class DiceCELoss(nn.Module):
    """Soft Dice (foreground classes) plus cross-entropy, equally weighted: nnU-Net's default."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, batch: bool = False):
        super().__init__()
        self.dice = DiceLoss(batch=batch)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target.long())
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * ce


class CrossEntropyLoss(nn.Module):
    """Plain cross-entropy on logits (N, K, *spatial) against integer labels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long())
