"""The model contract, run by every registered name in 2D and 3D (tiny widths).

- forward(x) gives logits (N, num_classes, *spatial) at the input's size, for any size that
  is a multiple of the model's `divisor`;
- with deep supervision: a list in training mode (full resolution first, then coarser
  decoder resolutions that divide the input), one tensor in eval mode;
- every parameter receives a gradient (also with deep supervision, as DDP needs);
- a few optimisation steps on a tiny batch lower the loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.losses import DeepSupervisionLoss
from medseg.models import available, model_entry

CASES = [(name, dims) for name in available() for dims in model_entry(name).dims]
IDS = [f"{name}-{dims}d" for name, dims in CASES]


def cube(model, dims: int) -> tuple[int, ...]:
    """The smallest accepted input that is at least 8 per axis."""
    return tuple(max(8, d) for d in model.divisor)


def batch(model, dims: int, size=None, in_channels: int = 2, num_classes: int = 3, n: int = 2):
    """Random images and a target to learn: the class by the first channel's intensity
    (thresholds 0.5 and 1.5, so about 69/24/7 %: even a model that sees only 1/32 of the
    resolution, like FCN-32s, can lower its loss by learning the class frequencies).
    Two samples: batch norm needs more than one value per channel at the 1x1x1 bottom."""
    g = torch.Generator().manual_seed(1)
    size = size or cube(model, dims)
    x = torch.randn(n, in_channels, *size, generator=g)
    y = torch.bucketize(x[:, 0].contiguous(), torch.tensor([0.5, 1.5])).clamp(max=num_classes - 1)
    return x, y


def test_every_name_has_tiny_options(tiny_options_for):
    missing = [name for name in available() if tiny_options_for(name) is None]
    assert not missing, f"add tiny options for {missing} to tests/models/conftest.py"


@pytest.mark.parametrize("name, dims", CASES, ids=IDS)
def test_divisor_is_per_axis(tiny, name, dims):
    model = tiny(name, dims)
    assert len(model.divisor) == dims and all(isinstance(d, int) and d >= 1 for d in model.divisor)


@pytest.mark.parametrize("name, dims", CASES, ids=IDS)
def test_output_shape_at_input_size(tiny, name, dims):
    model = tiny(name, dims, deep_supervision=False)
    base = cube(model, dims)
    size = base[:-1] + (2 * base[-1],)  # not a cube: axes are not interchangeable
    x, _ = batch(model, dims, size)
    model.train()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, *size)
    model.eval()
    with torch.no_grad():
        out = model(x[:1])
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, dims", CASES, ids=IDS)
def test_deep_supervision_outputs(tiny, name, dims):
    model = tiny(name, dims, deep_supervision=True)
    x, y = batch(model, dims)
    model.train()
    outs = model(x)
    assert isinstance(outs, list) and len(outs) >= 1
    assert outs[0].shape == (2, 3, *x.shape[2:])
    for finer, coarser in zip(outs, outs[1:]):
        assert coarser.shape[:2] == (2, 3)
        assert all(c <= f for c, f in zip(coarser.shape[2:], finer.shape[2:]))
        assert coarser.shape[2:] != finer.shape[2:]
    for o in outs:
        assert all(s % c == 0 for s, c in zip(x.shape[2:], o.shape[2:]))
    loss = DeepSupervisionLoss(torch.nn.CrossEntropyLoss())(outs, y)
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, *x.shape[2:])


@pytest.mark.parametrize("deep_supervision", [False, True], ids=["plain", "ds"])
@pytest.mark.parametrize("name, dims", CASES, ids=IDS)
def test_gradients_reach_every_parameter(tiny, name, dims, deep_supervision):
    model = tiny(name, dims, deep_supervision=deep_supervision)
    x, y = batch(model, dims)
    model.train()
    loss = DeepSupervisionLoss(torch.nn.CrossEntropyLoss())(model(x), y)
    loss.backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not starved, f"no gradient reaches {starved}"


@pytest.mark.parametrize("name, dims", CASES, ids=IDS)
def test_few_steps_lower_the_loss(tiny, name, dims):
    model = tiny(name, dims, deep_supervision=False)
    x, y = batch(model, dims)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(F.cross_entropy(model(x), y).item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
