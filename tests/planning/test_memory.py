"""The memory model in bytes against autograd's saved tensors and against measured peaks of
real training steps (fresh processes; docs/planning.md has the full table)."""

import pytest
import torch

from medseg.losses import DeepSupervisionLoss, DiceCELoss
from medseg.models import create_model
from medseg.planning import timing
from medseg.planning.measure import StepSpec, measure_training_step
from medseg.planning.memory import (estimate_training_bytes, estimate_training_memory, parameter_count,
                                    saved_tensor_bytes)
from medseg.planning.planner import GB, make_plans
from medseg.planning.timing import DEVICE_FLOPS, predict_iteration_seconds, reduced_for_measuring, training_flops

I3, T3, K3 = [1, 1, 1], [2, 2, 2], [3, 3, 3]

# Small enough for a test (a few seconds each), spread over 2D and 3D, depth, width, batch,
# classes and anisotropic strides. None of them is in the fitting set of the constants.
MEASURED = [
    StepSpec.make([16, 32, 32], 3, 1, 3, [8, 16, 32], [K3] * 3, [I3, T3, T3]),
    StepSpec.make([8, 64, 64], 2, 1, 2, [8, 16, 32], [[1, 3, 3], K3, K3], [I3, [1, 2, 2], T3]),
    StepSpec.make([96, 96], 8, 2, 4, [16, 32, 64], [[3, 3]] * 3, [[1, 1]] + [[2, 2]] * 2),
]
BUDGET_GB = 0.08


def fingerprint(cases: int = 40, shape=(96, 96, 96)) -> dict:
    return {
        "dataset_name": "T", "channel_names": ["CT"], "labels": {"background": 0, "a": 1, "b": 2},
        "num_cases": cases, "spatial_dims": 3,
        "intensity": [{"mean": 0, "std": 1, "percentile_00_5": -1, "percentile_99_5": 1}],
        "cases": [{"spacing": [1.0, 1.0, 1.0], "shape_after_crop": list(shape)}] * cases,
    }


@pytest.fixture(scope="module")
def budget_plan():
    """The 3d_fullres plan for a small CPU budget, and its training step."""
    plan = make_plans(fingerprint(), budget_gb=BUDGET_GB, device="cpu", base_features=4).configuration("3d_fullres")
    opts = plan.model_options
    return plan, StepSpec.from_plan(plan, 1, 3)




def predicted(spec: StepSpec, device: str = "cpu") -> int:
    return estimate_training_bytes(spec.patch_size, spec.batch_size, spec.in_channels, spec.num_classes,
                                   spec.features, spec.kernel_sizes, spec.strides, device=device,
                                   optimizer=spec.optimizer)


def build(spec: StepSpec) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    net = create_model("dynunet", spatial_dims=spec.spatial_dims, in_channels=spec.in_channels,
                       num_classes=spec.num_classes, **spec.model_options())
    x = torch.randn(spec.batch_size, spec.in_channels, *spec.patch_size)
    y = torch.randint(0, spec.num_classes, (spec.batch_size, *spec.patch_size), dtype=torch.int16)
    return net.train(), x, y


@pytest.mark.parametrize("spec", [
    StepSpec.make([16, 32, 32], 2, 1, 3, [8, 16, 32, 32], [[1, 3, 3], K3, K3, K3], [I3, [1, 2, 2], T3, T3]),
    StepSpec.make([64, 48], 3, 2, 4, [8, 16, 32], [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]]),
    StepSpec.make([32, 32], 2, 1, 2, [4, 8], [[3, 3]] * 2, [[1, 1], [2, 2]]),
], ids=["3d-deep-supervision", "2d", "2-stages"])
def test_saved_tensors_are_counted_exactly(spec):
    """What autograd keeps for the backward pass (and the logits the loop holds) is what the
    model counts; the difference is only the norms' per-channel statistics and weights."""
    net, x, y = build(spec)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
        DeepSupervisionLoss(DiceCELoss())(out, y)
    outputs = out if isinstance(out, list) else [out]
    measured = sum(kept.values()) + sum(o.numel() * o.element_size() for o in outputs)
    params = sum(p.numel() for p in net.parameters())
    model = sum(saved_tensor_bytes(spec.patch_size, spec.batch_size, spec.features, spec.strides,
                                   spec.in_channels, spec.num_classes)) + 4 * params
    assert 0 <= measured - model < 0.01 * model
    assert parameter_count(spec.in_channels, spec.features, spec.kernel_sizes, spec.num_classes, 2,
                           spec.strides) == params


def test_estimate_grows_with_batch_and_patch_and_has_its_parts():
    spec = MEASURED[0]
    e = estimate_training_memory(spec.patch_size, spec.batch_size, 1, 3, spec.features, spec.kernel_sizes,
                                 spec.strides)
    assert e.total == predicted(spec)
    assert min(e.activations, e.workspace, e.parameters, e.gradients, e.optimizer) > 0
    assert predicted(spec.with_batch(spec.batch_size + 1)) > predicted(spec)
    cuda = estimate_training_memory(spec.patch_size, 2, 1, 3, spec.features, spec.kernel_sizes, spec.strides,
                                    dtype="bfloat16", device="cuda")
    assert cuda.fragmentation == 0 and cuda.total > cuda.overhead > 0


@pytest.mark.parametrize("spec", MEASURED, ids=lambda s: f"{'x'.join(map(str, s.patch_size))}-b{s.batch_size}")
def test_prediction_within_25_percent_of_measured_peak_on_cpu(spec):
    result = measure_training_step(spec, device="cpu", steps=1)
    assert result["step_seconds"] > 0
    error = predicted(spec) / result["peak_bytes"] - 1
    mib = (predicted(spec) / 2**20, result["peak_bytes"] / 2**20)
    assert abs(error) <= 0.25, "predicted %.0f MiB, measured %.0f MiB" % mib


def test_adamw_costs_one_more_buffer_per_weight_than_sgd_as_measured():
    """AdamW keeps two moments per weight where SGD keeps one momentum buffer: the model adds
    one fp32 copy of the weights, and real steps of a network whose weights dominate (7.8 M,
    30 MiB) differ by about that much (24-25 MiB on a quiet machine: the heap reuses some freed
    blocks)."""
    kernels, strides = [[3, 3]] * 5, [[1, 1]] + [[2, 2]] * 4
    sgd, adamw = (StepSpec.make([32, 32], 2, 1, 3, [32, 64, 128, 256, 512], kernels, strides, optimizer=o)
                  for o in ("sgd", "adamw"))
    weights = 4 * parameter_count(1, sgd.features, kernels, 3, 2, strides)
    assert predicted(adamw) - predicted(sgd) == weights
    measured = {s.optimizer: measure_training_step(s, device="cpu", steps=3)["peak_bytes"] for s in (sgd, adamw)}
    # One copy, not none and not two.
    assert measured["adamw"] - measured["sgd"] == pytest.approx(weights, rel=0.4)
    for spec in (sgd, adamw):
        assert abs(predicted(spec) / measured[spec.optimizer] - 1) <= 0.25, spec.optimizer


def test_plans_are_sized_for_adamw_and_their_measured_step_is_an_adamw_step(monkeypatch):
    seen = []

    def fake_measure(spec, device="cpu", steps=3, precision="auto", timeout=600.0):
        seen.append(spec)
        return {"peak_bytes": 1, "step_seconds": 0.5, "method": "fake"}

    monkeypatch.setattr(timing, "measure_training_step", fake_measure)
    # 32 base features: millions of weights, so one more buffer per weight shows in the rounded GB.
    plans = make_plans(fingerprint(), budget_gb=2.0, device="cpu", base_features=32, measure_time=True)
    plan = plans.configuration("3d_fullres")
    opts = plan.model_options
    args = (plan.patch_size, plan.batch_size, 1, 3, opts["features"], opts["kernel_sizes"], opts["strides"])
    adamw, sgd = (estimate_training_bytes(*args, optimizer=o) for o in ("adamw", "sgd"))
    assert adamw - sgd > 0.01 * GB
    assert plan.predicted_memory_gb == round(adamw / GB, 3)
    assert seen and all(s.optimizer == "adamw" for s in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("spec", MEASURED[:2], ids=["3d", "3d-anisotropic"])
def test_prediction_within_25_percent_of_measured_peak_on_cuda(spec):
    result = measure_training_step(spec, device="cuda", steps=2)
    peak = result["peak_bytes"] + result["context_bytes"]
    bf16 = estimate_training_bytes(spec.patch_size, spec.batch_size, spec.in_channels, spec.num_classes,
                                   spec.features, spec.kernel_sizes, spec.strides, dtype="bfloat16", device="cuda")
    assert abs(bf16 / peak - 1) <= 0.25


def test_a_plan_for_a_cpu_budget_trains_within_it_and_its_iteration_time_is_measured(budget_plan):
    plan, spec = budget_plan
    assert plan.predicted_memory_gb <= BUDGET_GB
    assert plan.predicted_iteration_s == pytest.approx(training_flops(spec) / DEVICE_FLOPS["cpu"], rel=0.01)
    timed = predict_iteration_seconds(spec, "cpu", max_seconds=1e9, steps=1)  # real steps, real network
    assert timed["how"].startswith("measured: median") and timed["seconds"] > 0
    peak = timed["measurement"]["peak_bytes"]
    assert peak <= BUDGET_GB * GB
    assert peak >= 0.5 * BUDGET_GB * GB  # the budget is used, not wasted


def test_iteration_time_is_measured_on_a_smaller_patch_when_the_full_one_is_slow(monkeypatch):
    spec = MEASURED[0]
    small = reduced_for_measuring(spec, max_seconds=0)
    assert small.patch_size == (8, 8, 8)  # twice the divisor: the lowest stage keeps 2 voxels per axis
    assert reduced_for_measuring(spec, max_seconds=1e9) == spec
    seen = []

    def fake_measure(s, device, steps):
        seen.append(s)
        return {"step_seconds": 1.0, "peak_bytes": 1}

    monkeypatch.setattr(timing, "measure_training_step", fake_measure)
    timed = predict_iteration_seconds(spec, "cpu", max_seconds=0)
    assert seen == [small] and timed["how"].startswith("measured on patch 8x8x8")
    assert timed["seconds"] == pytest.approx(training_flops(spec) / training_flops(small))
    estimated = predict_iteration_seconds(spec, "cuda", measure=False)
    assert estimated["how"].startswith("estimated") and "cuda" in estimated["how"]
    assert estimated["seconds"] == pytest.approx(training_flops(spec) / DEVICE_FLOPS["cuda"])
