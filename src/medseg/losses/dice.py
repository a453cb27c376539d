"""Soft Dice losses on logits, and cross-entropy, with an optional ignore label.

`soft_dice`: 1 - mean over classes of 2|P.G| / (|P| + |G|), with P the softmax and G the
one-hot target. `squared=True` gives V-Net's form (Milletari et al. 2016), whose
denominator sums squares: |P|^2 + |G|^2. `batch=True` pools the sums over the batch
(one Dice per class), else one Dice per sample and class, then the mean.

`ignore_index`: voxels whose target holds this value count nowhere: they are left out of
every Dice sum and of the cross-entropy mean, so the logits there receive no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, *spatial) integer labels -> (N, K, *spatial) float one-hot."""
    oh = F.one_hot(target.long(), num_classes)
    return oh.movedim(-1, 1).to(torch.float32)


def valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor | None:
    """(N, 1, *spatial) float: 1 where the target is annotated; None without an ignore label."""
    if ignore_index is None:
        return None
    return (target != ignore_index).unsqueeze(1).to(torch.float32)


def dice_of_probabilities(probs: torch.Tensor, gt: torch.Tensor, *, mask: torch.Tensor | None = None,
                          batch: bool = False, squared: bool = False, smooth: float = 1e-5) -> torch.Tensor:
    """Mean soft Dice of probabilities `probs` against binary targets `gt`, both (N, K, *spatial).

    mask (N, 1, *spatial): voxels with 0 are left out of every sum. A structure absent from
    target and prediction scores (smooth / smooth) = 1, so it neither helps nor hurts.
    """
    if mask is not None:
        probs, gt = probs * mask, gt * mask
    axes = tuple(range(2, probs.ndim))
    if batch:
        axes = (0,) + axes
    intersect = (probs * gt).sum(axes)
    if squared:
        denom = (probs * probs).sum(axes) + (gt * gt).sum(axes)
    else:
        denom = probs.sum(axes) + gt.sum(axes)
    if batch and torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        intersect, denom = all_reduce(torch.stack([intersect, denom]))
    return ((2 * intersect + smooth) / (denom + smooth).clamp_min(1e-8)).mean()


def soft_dice(logits: torch.Tensor, target: torch.Tensor, *, include_background: bool = False,
              batch: bool = False, squared: bool = False, smooth: float = 1e-5,
              ignore_index: int | None = None) -> torch.Tensor:
    """Mean soft Dice (a similarity in [0, 1]). logits (N, K, *spatial); target (N, *spatial)."""
    probs = torch.softmax(logits.float(), dim=1)
    mask = valid_mask(target, ignore_index)
    if mask is not None:
        target = torch.where(mask[:, 0] > 0, target, torch.zeros_like(target))
    gt = one_hot(target, logits.shape[1])
    if not include_background:
        probs, gt = probs[:, 1:], gt[:, 1:]
    return dice_of_probabilities(probs, gt, mask=mask, batch=batch, squared=squared, smooth=smooth)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Mean cross-entropy over the annotated voxels (0 when none is annotated)."""
    if ignore_index is None:
        return F.cross_entropy(logits.float(), target.long())
    total = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="sum")
    # PyTorch's own mean is 0/0 = NaN for a patch that is all ignore.
    return total / (target != ignore_index).sum().clamp_min(1)


class DiceLoss(nn.Module):
    def __init__(self, include_background: bool = False, batch: bool = False, squared: bool = False,
                 ignore_index: int | None = None):
        super().__init__()
        self.kw = dict(include_background=include_background, batch=batch, squared=squared,
                       ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - soft_dice(logits, target, **self.kw)


class DiceCELoss(nn.Module):
    """Soft Dice (foreground classes) plus cross-entropy, equally weighted: nnU-Net's default."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, batch: bool = False,
                 ignore_index: int | None = None):
        super().__init__()
        self.dice = DiceLoss(batch=batch, ignore_index=ignore_index)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = cross_entropy(logits, target, self.ignore_index)
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * ce


class CrossEntropyLoss(nn.Module):
    """Plain cross-entropy on logits (N, K, *spatial) against integer labels."""

    def __init__(self, ignore_index: int | None = None):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.ignore_index)
