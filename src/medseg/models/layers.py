"""Pick convolution, normalisation, pooling and activation ops by name and dimension.

The one place where `spatial_dims` (2 or 3) turns into a concrete torch class, so every
block and network is written once for both.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_MAXUNPOOL = {2: nn.MaxUnpool2d, 3: nn.MaxUnpool3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def conv(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return _CONV[spatial_dims]


def conv_transpose(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return _CONV_T[spatial_dims]


def max_pool(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return _MAXPOOL[spatial_dims]


def max_unpool(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return _MAXUNPOOL[spatial_dims]


def dropout(spatial_dims: int, p: float) -> nn.Module:
    _check_dims(spatial_dims)
    return _DROPOUT[spatial_dims](p) if p > 0 else nn.Identity()


def norm(kind: str | None, spatial_dims: int, channels: int) -> nn.Module:
    """'instance' (affine, as nnU-Net), 'batch', 'group' (8 groups or fewer), or None."""
    _check_dims(spatial_dims)
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, eps=1e-5, affine=True)
    if kind == "batch":
        cls = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        return cls(channels, eps=1e-5)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {kind!r}; use instance, batch, group or none")


_ACT: dict[str, Callable[[int], nn.Module]] = {
    "leakyrelu": lambda c: nn.LeakyReLU(0.01, inplace=True),
    "relu": lambda c: nn.ReLU(inplace=True),
    "prelu": lambda c: nn.PReLU(c),
    "elu": lambda c: nn.ELU(inplace=True),
}


def activation(kind: str | None, channels: int) -> nn.Module:
    """'leakyrelu' (slope 0.01), 'relu', 'prelu' (one slope per channel), 'elu', or None."""
    if kind is None or kind == "none":
        return nn.Identity()
    try:
        return _ACT[kind](channels)
    except KeyError:
        raise ValueError(f"unknown activation {kind!r}; use one of {sorted(_ACT)}") from None
