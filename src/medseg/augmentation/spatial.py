"""Spatial transforms on batches: image (N, C, *spatial) and labels (N, *spatial) together."""

from __future__ import annotations

from typing import Sequence

import torch


def mirror(image: torch.Tensor, label: torch.Tensor, gen: torch.Generator, axes: Sequence[int],
           p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample along each spatial axis in `axes` (0 = first spatial axis) with probability p."""
    image, label = image.clone(), label.clone()
    for i in range(image.shape[0]):
        flips = [a for a in axes if torch.rand(1, generator=gen).item() < p]
        if flips:
            image[i] = torch.flip(image[i], [a + 1 for a in flips])
            label[i] = torch.flip(label[i], flips)
    return image, label
