"""Prediction for region models (sigmoids, values written in order) and ignore-label models,
with networks whose logits are known functions of the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.inference import Predictor
from medseg.io.image import Image


class Pointwise(torch.nn.Module):
    """Logits = weights * input - offsets, one channel per offset: the prediction is a map of
    thresholds on the input's values."""

    def __init__(self, offsets, weights=None):
        super().__init__()
        self.offsets = torch.tensor(offsets, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.weights = torch.tensor(weights or [1.0] * len(offsets), dtype=torch.float32).view(1, -1, 1, 1, 1)

    def forward(self, x):
        return self.weights * x - self.offsets


def _description(desc, labels, order=None):
    desc["labels"] = labels
    if order is not None:
        desc["regions_class_order"] = order
    # Identity normalisation and the scan already at the target spacing: the network sees the
    # scan's own values.
    desc["intensity"] = [{"mean": 0.0, "std": 1.0, "percentile_00_5": -1e4, "percentile_99_5": 1e4}]
    return desc


def _scan():
    rng = np.random.default_rng(0)
    values = rng.uniform(-2, 3, size=(10, 40, 36)).astype(np.float32)
    values[values == 0] = 0.5  # no zeros: nothing is cropped
    return values


REGIONS = {"background": 0, "organ": [1, 2], "lesion": [2], "ignore": 3}


def test_region_model_writes_nested_values_in_order(description):
    x = _scan()
    # fp32 scores: the thresholds are checked exactly (fp16 scores may move voxels within 1e-3 of them).
    pred = Predictor(_description(description, REGIONS, [1, 2]), [Pointwise([0.0, 1.0])], torch.device("cpu"),
                     accumulation="fp32")
    labels = pred.predict_array(x[None], (2.5, 1.0, 1.0))
    # organ where sigmoid(x) > .5 (x > 0), lesion where x > 1, written after the organ.
    np.testing.assert_array_equal(labels, np.where(x > 1, 2, np.where(x > 0, 1, 0)))
    assert pred.num_classes == 2
    out = pred.predict(Image(x, (2.5, 1.0, 1.0), origin=(3.0, -2.0, 1.0)))
    assert out.shape == x.shape and out.origin == (3.0, -2.0, 1.0) and out.array.dtype == np.uint8


def test_region_folds_are_thresholded_on_their_mean_probability(description):
    x = np.full((6, 32, 32), 0.5, np.float32)
    # sigmoid(0.5 - a) = 0.9 for one fold and 0.3 for the other: mean 0.6, so the region is on.
    a_high, a_low = 0.5 - np.log(9.0), 0.5 + np.log(7 / 3)
    desc = _description(description, {"background": 0, "organ": [1]}, [1])
    pred = Predictor(desc, [Pointwise([a_high]), Pointwise([a_low])], torch.device("cpu"))
    assert (pred.predict_array(x[None], (2.5, 1.0, 1.0)) == 1).all()
    alone = Predictor(desc, [Pointwise([a_low])], torch.device("cpu"))
    assert (alone.predict_array(x[None], (2.5, 1.0, 1.0)) == 0).all()


def test_ignore_label_has_no_output_channel_and_is_never_predicted(description):
    x = _scan()
    desc = _description(description, {"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
    # Logits 0, x and 2x - 2: background below 0, organ in (0, 2], lesion above 2.
    pred = Predictor(desc, [Pointwise([0.0, 0.0, 2.0], [0.0, 1.0, 2.0])], torch.device("cpu"), accumulation="fp32")
    assert pred.num_classes == 3
    labels = pred.predict_array(x[None], (2.5, 1.0, 1.0))
    np.testing.assert_array_equal(labels, np.where(x > 2, 2, np.where(x > 0, 1, 0)))
