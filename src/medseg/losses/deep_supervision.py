"""Deep supervision: one loss per supervised decoder resolution, weights halving.

Models emit no output for their lowest decoder resolution (it is "off" there, so no
parameter goes without a gradient); the weights here halve per output and sum to 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def deep_supervision_weights(n: int) -> list[float]:
    """[1, 1/2, 1/4, ...] for n outputs (full resolution first), normalised to sum 1."""
    w = [0.5**i for i in range(n)]
    total = sum(w)
    return [x / total for x in w]


def downsample_labels(target: torch.Tensor, sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Nearest-neighbour label maps at each head's spatial size. target (N, *spatial)."""
    out = []
    for size in sizes:
        if tuple(size) == tuple(target.shape[1:]):
            out.append(target)
        else:
            t = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest-exact")
            out.append(t[:, 0].to(target.dtype))
    return out


class DeepSupervisionLoss(nn.Module):
    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = deep_supervision_weights(len(outputs))
        targets = downsample_labels(target, [o.shape[2:] for o in outputs])
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, o, t in zip(weights, outputs, targets):
            total = total + w * self.loss(o, t)
        return total
