"""The validation pseudo Dice: TP/FP/FN per structure from patches, summed, then Dice.

Structures are the foreground classes (arg-max of the softmax) or the regions (sigmoid > 0.5,
i.e. logit > 0); voxels holding the ignore label count in no cell.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medseg.io.labels import LabelScheme
from medseg.losses.regions import region_targets


def confusion_counts(logits: torch.Tensor, target: torch.Tensor, labels: LabelScheme) -> np.ndarray:
    """(S, 3) int64 rows of (TP, FP, FN), one per name of `labels.output_names`, summed over the
    batch. logits (N, K, *spatial); target (N, *spatial) integer labels."""
    valid = None if labels.ignore is None else target != labels.ignore
    if labels.has_regions:
        pred = logits > 0
        truth = region_targets(target, labels.regions) > 0
        pairs = [(pred[:, i], truth[:, i]) for i in range(len(labels.regions))]
    else:
        am = logits.argmax(1)
        pairs = [(am == labels.foreground[n][0], target == labels.foreground[n][0]) for n in labels.output_names]
    out = np.zeros((len(pairs), 3), dtype=np.int64)
    for i, (p, t) in enumerate(pairs):
        if valid is not None:
            p = p & valid  # the target is never a structure where it holds the ignore value
        out[i] = [int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())]
    return out


def dice_from_counts(counts: np.ndarray) -> list[float]:
    """Dice 2TP / (2TP + FP + FN) per row; NaN where the structure is in neither side."""
    return [2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan for tp, fp, fn in counts.tolist()]
