"""The prediction memory formula against what the predictor allocates."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from medseg.inference.memory import SLAB_BYTES, estimate_prediction_bytes, export_slab
from medseg.inference.sliding_window import sliding_window
from medseg.utils.files import read_json

MB = 1024**2


@pytest.mark.parametrize("classes, plane", [(2, 64 * 64), (15, 512 * 512), (15, 499 * 499), (200, 1024 * 1024)])
def test_export_slab_keeps_a_slab_within_its_budget(classes, plane):
    rows = export_slab(classes, plane)
    assert rows >= 1
    assert rows == 1 or 4 * classes * rows * plane <= SLAB_BYTES
    assert 4 * classes * (rows + 1) * plane > SLAB_BYTES  # and uses it


def test_float16_accumulation_agrees_with_float32_to_half_precision():
    # Normalised weights: every term added is a fraction of a logit, so float16 sums keep
    # float16's relative precision, also on the faint outermost voxels.
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 23, 41, 37, generator=gen) * 4
    net = lambda x: torch.cat([x, -x], 1) * torch.linspace(0.5, 1.5, x.shape[-1])  # noqa: E731
    full = sliding_window(image, net, (8, 16, 16), 4, step=0.5, dtype=torch.float32)
    half = sliding_window(image, net, (8, 16, 16), 4, step=0.5, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.shape == full.shape
    err = (half.float() - full).abs() / full.abs().clamp_min(1.0)
    assert err.max() < 4e-3


def test_formula_counts_the_accumulator_in_its_dtype_and_folds():
    args = dict(patch_size=(32, 64, 64), features=(8, 16, 32), strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)))
    one = estimate_prediction_bytes((100, 200, 200), (90, 180, 180), 15, **args)
    assert one.terms["scores"] == 2 * 15 * 90 * 180 * 180 and one.terms["fold_sum"] == 0
    full = estimate_prediction_bytes((100, 200, 200), (90, 180, 180), 15, accumulation="fp32", **args)
    assert full.terms["scores"] == 2 * one.terms["scores"]
    five = estimate_prediction_bytes((100, 200, 200), (90, 180, 180), 15, folds=5, **args)
    assert five.network - one.network == one.terms["scores"]  # one more buffer, whatever the number of folds
    assert one.peak == one.network


CHILD = r"""
import gc, json, sys
import numpy as np, torch
from medseg.inference import Predictor
from medseg.planning.measure import CpuPeak

torch.set_num_threads(1)
req = json.loads(sys.argv[1])
pred = Predictor.from_model_dir(req["model"], device="cpu", precision="fp32", step=1.0,
                                accumulation=req["accumulation"])
pred.predict_array(np.zeros((1, 8, 40, 40), np.float32) + 5, req["spacing"])  # libraries, kernels
volume = np.random.default_rng(0).normal(40, 80, size=[1] + req["shape"]).astype(np.float32)
gc.collect()
peak = CpuPeak()
before = peak.rss()
peak.start()
labels = pred.predict_array(volume, req["spacing"])
print(json.dumps({"delta": peak.stop() - before, "labels": int(labels.max())}))
"""


def _measure(model_dir, accumulation: str, shape, spacing) -> int:
    request = json.dumps({"model": str(model_dir), "accumulation": accumulation, "shape": list(shape),
                          "spacing": list(spacing)})
    proc = subprocess.run([sys.executable, "-c", CHILD, request], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": ":".join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["delta"]


def test_measured_peak_of_a_prediction_stays_within_the_formula(make_model_dir):
    """A fresh process predicts a 15-class volume whose scores dominate (patch and network
    small). Its peak resident growth must stay within the formula (plus allocator slack) and
    move with the accumulation dtype as the formula says."""
    model_dir = make_model_dir(num_classes=15, patch_size=[16, 64, 64], folds=(0,))
    desc = read_json(model_dir / "model.json")
    shape, spacing = (64, 256, 256), (2.5, 0.9, 0.9)
    pre = (64, 230, 230)  # at the plan's 2.5 x 1 x 1 mm
    cfg = desc["configuration"]
    expected = {}
    for acc in ("fp16", "fp32"):
        est = estimate_prediction_bytes(shape, pre, 15, patch_size=cfg["patch_size"],
                                        features=desc["model_options"]["features"],
                                        strides=desc["model_options"]["strides"], accumulation=acc, input_held=True)
        expected[acc] = est.peak - est.terms["input"]  # the caller's input is resident before
    # Resident growth varies from run to run by about 10 MB (allocator slack, above what the
    # prediction needs; once 25 MB in CI): the smaller of two fresh processes is the measurement.
    measured = {acc: min(_measure(model_dir, acc, shape, spacing) for _ in range(2)) for acc in ("fp16", "fp32")}
    scores16 = 2 * 15 * np.prod(pre)
    assert measured["fp16"] >= scores16
    for acc in ("fp16", "fp32"):
        assert measured[acc] <= 1.15 * expected[acc] + 24 * MB, (acc, measured[acc] / MB, expected[acc] / MB)
    grew, predicted = measured["fp32"] - measured["fp16"], expected["fp32"] - expected["fp16"]
    assert abs(grew - predicted) < 0.25 * predicted, (grew / MB, predicted / MB)


def test_unknown_accumulation_is_a_user_error(tiny_model_dir):
    from medseg.errors import MedsegError
    from medseg.inference import Predictor

    with pytest.raises(MedsegError, match="accumulation 'int8'"):
        Predictor.from_model_dir(tiny_model_dir, accumulation="int8")
