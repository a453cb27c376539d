"""Dimension-agnostic building blocks shared by every model family.

`ConvNormAct` is the unit; `ResidualBlock`, `DenseBlock` and `UpConv` are assembled from it.
Kernel sizes and strides are an int or one value per spatial axis (z, y, x).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.models import layers

Size = int | Sequence[int]


def as_tuple(value: Size, spatial_dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(f"expected {spatial_dims} values, got {value}")
    return value


def same_padding(kernel_size: Size, spatial_dims: int) -> tuple[int, ...]:
    return tuple(k // 2 for k in as_tuple(kernel_size, spatial_dims))


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act (-> dropout), or with `preactivation`: norm -> act -> conv (-> dropout).

    Pre-activation order is what DenseNets use (BN-ReLU-conv).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Size = 3,
        stride: Size = 1,
        norm: str | None = "instance",
        act: str | None = "leakyrelu",
        dropout: float = 0.0,
        bias: bool = True,
        preactivation: bool = False,
    ):
        conv = layers.conv(spatial_dims)(
            in_channels, out_channels, as_tuple(kernel_size, spatial_dims),
            stride=as_tuple(stride, spatial_dims), padding=same_padding(kernel_size, spatial_dims), bias=bias,
        )
        if preactivation:
            mods = [layers.norm(norm, spatial_dims, in_channels), layers.activation(act, in_channels), conv]
        else:
            mods = [conv, layers.norm(norm, spatial_dims, out_channels), layers.activation(act, out_channels)]
        mods.append(layers.dropout(spatial_dims, dropout))
        super().__init__(*[m for m in mods if not isinstance(m, nn.Identity)])


class StackedConvs(nn.Sequential):
    """`n` ConvNormAct units; the first one carries the stride and changes the channel count."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2,
                 kernel_size: Size = 3, stride: Size = 1, **kwargs):
        units = [ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, **kwargs)]
        units += [ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, **kwargs) for _ in range(n - 1)]
        super().__init__(*units)


class ResidualBlock(nn.Module):
    """`n` convolutions with an identity (or projected) shortcut, activation after the sum.

    The last convolution has no activation of its own; with `stride` > 1 the shortcut is
    ResNet-D style: average pooling then a 1x1 convolution, so no input voxel is skipped.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2,
                 kernel_size: Size = 3, stride: Size = 1, norm: str | None = "instance",
                 act: str | None = "leakyrelu", dropout: float = 0.0):
        super().__init__()
        stride_t = as_tuple(stride, spatial_dims)
        units: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            units.append(ConvNormAct(
                spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                stride_t if i == 0 else 1, norm=norm, act=None if last else act, dropout=dropout if last else 0.0,
            ))
        self.convs = nn.Sequential(*units)
        shortcut: list[nn.Module] = []
        if any(s > 1 for s in stride_t):
            pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
            shortcut.append(pool(stride_t, stride_t, ceil_mode=True))
        if in_channels != out_channels:
            shortcut.append(ConvNormAct(spatial_dims, in_channels, out_channels, 1, norm=norm, act=None, bias=False))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = layers.activation(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class DenseBlock(nn.Module):
    """`n_layers` pre-activation layers (norm-act-conv-dropout), each seeing all before it.

    Returns only the new feature maps (n_layers * growth channels) when `return_new_only`,
    else the input concatenated with them.
    """

    def __init__(self, spatial_dims: int, in_channels: int, n_layers: int, growth: int,
                 kernel_size: Size = 3, norm: str | None = "batch", act: str | None = "relu",
                 dropout: float = 0.2, return_new_only: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormAct(spatial_dims, in_channels + i * growth, growth, kernel_size,
                        norm=norm, act=act, dropout=dropout, preactivation=True)
            for i in range(n_layers)
        )
        self.return_new_only = return_new_only
        self.out_channels = n_layers * growth if return_new_only else in_channels + n_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            out = layer(x)
            new.append(out)
            x = torch.cat([x, out], dim=1)
        return torch.cat(new, dim=1) if self.return_new_only else x


class UpConv(nn.Module):
    """Up-sampling by `scale`: transposed convolution (kernel = stride), or interpolation
    ('nearest' / 'linear') followed by a convolution."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Size = 2,
                 mode: str = "transpose", kernel_size: Size = 3):
        super().__init__()
        self.scale = as_tuple(scale, spatial_dims)
        self.mode = mode
        if mode == "transpose":
            self.op = layers.conv_transpose(spatial_dims)(in_channels, out_channels, self.scale, stride=self.scale)
        elif mode in ("nearest", "linear"):
            self.op = layers.conv(spatial_dims)(in_channels, out_channels, as_tuple(kernel_size, spatial_dims),
                                                padding=same_padding(kernel_size, spatial_dims))
        else:
            raise ValueError(f"unknown up-sampling mode {mode!r}; use transpose, nearest or linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            return self.op(x)
        interp = "nearest" if self.mode == "nearest" else ("bilinear" if x.ndim == 4 else "trilinear")
        x = nn.functional.interpolate(x, scale_factor=self.scale, mode=interp,
                                      align_corners=False if interp != "nearest" else None)
        return self.op(x)
