"""Models by name: `create_model("dynunet", spatial_dims=3, in_channels=1, num_classes=3)`.

Each family file registers its published configurations with `@register_model`, next to
the code, so `available()` is never a list kept by hand elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class Reference:
    """The input a paper built its network for, and the parameter count it states, if any.

    `paper_params` is written as the paper gives it: an exact count ("19,069,955") is to be
    met within 2 %, a rounded one ("9.4 M") within its rounding. `part` names a sub-module
    when the paper counts only that (SegNet states its encoder's count);
    `counts_norm_statistics` when the paper's tool counted normalisation running statistics
    as parameters (Lasagne's summary, used for FC-DenseNet).
    """

    spatial_dims: int
    in_channels: int
    num_classes: int
    paper_params: str | None = None
    where: str = ""
    part: str | None = None
    counts_norm_statistics: bool = False


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    paper: str
    summary: str
    dims: tuple[int, ...] = (2, 3)
    references: tuple[Reference, ...] = ()

    def reference(self, spatial_dims: int) -> Reference | None:
        return next((r for r in self.references if r.spatial_dims == spatial_dims), None)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, paper: str, summary: str, dims: tuple[int, ...] = (2, 3),
                   references: tuple[Reference, ...] = ()):
    """Decorator: register a builder `f(spatial_dims, in_channels, num_classes, **options)`.

    `references` give the paper's input (and its parameter count) per spatial_dims, for the
    catalogue and the parameter-count tests.
    """

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, build, paper, summary, dims, tuple(references))
        return build

    return wrap


def _load_families() -> None:
    # Importing the family modules fills the registry.
    from medseg.models import dynunet, fcdensenet, fcn, segnet, unet, vnet  # noqa: F401


def available() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, *, spatial_dims: int, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model. Its `forward(x)` returns logits (N, num_classes, *spatial)."""
    entry = model_entry(name)
    if spatial_dims not in entry.dims:
        raise ValueError(f"model {name!r} is only defined for spatial_dims in {entry.dims}")
    return entry.build(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **options)
