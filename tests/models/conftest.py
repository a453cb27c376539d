"""Tiny versions of every registered model, for the contract tests.

Every name in `available()` needs an entry in TINY (the contract test checks it), so a new
family cannot slip in untested. Builders reach tests through fixtures, not imports.
"""

from __future__ import annotations

import pytest
import torch

from medseg.models import create_model

# Options that shrink each family to a few thousand parameters (prefix of the model name).
TINY = {
    "dynunet": dict(features=[4, 8, 16], strides=[1, 2, 2]),
    "fcdensenet": dict(growth_rate=2, stem_features=4, dropout=0.0),
    "fcn": dict(base_features=8, fc_features=32, dropout=0.0),
    "segnet": dict(base_features=4),
    "unet": dict(base_features=4, dropout=0.0),
    "vnet": dict(base_features=4),
}


def tiny_options(name: str) -> dict | None:
    return next((dict(v) for k, v in TINY.items() if name.startswith(k)), None)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions gain nothing from a second thread, and on a shared, busy 2-core
    # machine OpenMP's barriers make two threads up to 100x slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny():
    """tiny(name, dims, in_channels=2, num_classes=3, **extra) -> a small model of that name."""

    def build(name: str, dims: int, in_channels: int = 2, num_classes: int = 3, **extra):
        options = tiny_options(name)
        if options is None:
            raise KeyError(f"no tiny options for model {name!r}: add them to tests/models/conftest.py")
        torch.manual_seed(0)
        return create_model(name, spatial_dims=dims, in_channels=in_channels, num_classes=num_classes,
                            **(options | extra))

    return build


@pytest.fixture
def tiny_options_for():
    return tiny_options
