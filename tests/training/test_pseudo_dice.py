"""Validation pseudo Dice: per class or per region, ignored voxels counted nowhere."""

from __future__ import annotations

import math

import torch

from medseg.io.labels import LabelScheme
from medseg.training.pseudo_dice import confusion_counts, dice_from_counts


def test_class_counts_leave_out_ignored_voxels():
    labels = LabelScheme.parse({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
    target = torch.tensor([[0, 1, 1, 2, 3, 3]])
    pred = torch.tensor([[1, 1, 0, 2, 1, 2]])  # the last two are predictions on ignored voxels
    logits = torch.nn.functional.one_hot(pred, 3).movedim(-1, 1).float()
    counts = confusion_counts(logits, target, labels)
    assert counts.tolist() == [[1, 1, 1], [1, 0, 0]]  # organ: TP, FP, FN; lesion: TP only
    assert dice_from_counts(counts) == [0.5, 1.0]


def test_region_counts_threshold_each_sigmoid_at_one_half():
    labels = LabelScheme.parse({"background": 0, "organ": [1, 2], "lesion": [2], "ignore": 3}, [1, 2])
    target = torch.tensor([[0, 1, 2, 2, 3]])
    logits = torch.tensor([[[1.0, 1.0, 1.0, -1.0, 5.0],    # organ predicted at 0, 1, 2 (and on ignore)
                            [-1.0, -1.0, 2.0, 2.0, 5.0]]])  # lesion at 2, 3
    counts = confusion_counts(logits, target, labels)
    assert counts.tolist() == [[2, 1, 1], [2, 0, 0]]
    assert dice_from_counts(counts) == [4 / 6, 1.0]
    empty = confusion_counts(torch.full((1, 2, 3), -1.0), torch.zeros(1, 3, dtype=torch.long), labels)
    assert all(math.isnan(d) for d in dice_from_counts(empty))
