"""Dimension-agnostic building blocks shared by every model family.

`ConvNormAct` is the unit; `ConvChain`/`StackedConvs`, `ResidualBlock`, `DenseBlock`,
`UpConv` and the `VGGEncoder` (FCN's and SegNet's backbone) are assembled from it.
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
    """Padding that keeps the size for odd kernels; none for even kernels, which are used with
    stride = kernel (V-Net's 2x2x2 stride-2 down-sampling halves the size exactly)."""
    return tuple((k - 1) // 2 for k in as_tuple(kernel_size, spatial_dims))


def init_he(module: nn.Module, slope: float = 1e-2) -> None:
    """He (Kaiming) normal initialisation of every convolution for (leaky/parametric) ReLU
    networks with negative slope `slope` (0 for ReLU, 0.25 for PReLU's start); biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            if m.weight.is_meta:  # built only to be counted or inspected: nothing to fill
                continue
            nn.init.kaiming_normal_(m.weight, a=slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


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


class ConvChain(nn.Sequential):
    """ConvNormAct units in a row, one per entry of `widths` (its output channels); the first
    carries the stride. Keyword arguments go to every unit."""

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int],
                 kernel_size: Size = 3, stride: Size = 1, **kwargs):
        if not widths:
            raise ValueError("a ConvChain needs at least one width")
        chans = [in_channels, *widths]
        super().__init__(*[
            ConvNormAct(spatial_dims, chans[i], chans[i + 1], kernel_size, stride if i == 0 else 1, **kwargs)
            for i in range(len(widths))
        ])
        self.out_channels = int(widths[-1])


class StackedConvs(ConvChain):
    """`n` ConvNormAct units; the first one carries the stride and changes the channel count."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2,
                 kernel_size: Size = 3, stride: Size = 1, **kwargs):
        super().__init__(spatial_dims, in_channels, [out_channels] * n, kernel_size, stride, **kwargs)


class ChannelRepeat(nn.Module):
    """Tile the input's channels cyclically up to `out_channels` (no parameters): V-Net's way of
    adding a 1-channel input to the 16 channels of its first stage."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.register_buffer("index", torch.arange(out_channels) % in_channels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


class ResidualBlock(nn.Module):
    """`n` convolutions with an identity (or projected) shortcut, activation after the sum.

    The last convolution has no activation of its own; with `stride` > 1 the shortcut is
    ResNet-D style: average pooling then a 1x1 convolution, so no input voxel is skipped.
    A change of channel count is a 1x1 projection (`shortcut="projection"`) or, with
    `shortcut="repeat"`, the input's channels tiled (V-Net's first stage; no parameters).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n: int = 2,
                 kernel_size: Size = 3, stride: Size = 1, norm: str | None = "instance",
                 act: str | None = "leakyrelu", dropout: float = 0.0, shortcut: str = "projection"):
        super().__init__()
        if shortcut not in ("projection", "repeat"):
            raise ValueError(f"unknown shortcut {shortcut!r}; use projection or repeat")
        stride_t = as_tuple(stride, spatial_dims)
        units: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            units.append(ConvNormAct(
                spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                stride_t if i == 0 else 1, norm=norm, act=None if last else act, dropout=dropout if last else 0.0,
            ))
        self.convs = nn.Sequential(*units)
        shortcut_ops: list[nn.Module] = []
        if any(s > 1 for s in stride_t):
            pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
            shortcut_ops.append(pool(stride_t, stride_t, ceil_mode=True))
        if in_channels != out_channels and shortcut == "repeat":
            shortcut_ops.append(ChannelRepeat(in_channels, out_channels))
        elif in_channels != out_channels:
            shortcut_ops.append(ConvNormAct(spatial_dims, in_channels, out_channels, 1, norm=norm, act=None, bias=False))
        self.shortcut = nn.Sequential(*shortcut_ops)
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
    """Up-sampling by `scale`: transposed convolution, or interpolation ('nearest' / 'linear')
    followed by a convolution of `kernel_size`.

    The transposed convolution's kernel is `transpose_kernel` (default: the scale, as in U-Net;
    FC-DenseNet uses 3, FCN 4 for a 2x step); padding is chosen so the output is exactly
    `scale` times the input, whatever the kernel.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Size = 2,
                 mode: str = "transpose", kernel_size: Size = 3, transpose_kernel: Size | None = None,
                 bias: bool = True):
        super().__init__()
        self.scale = as_tuple(scale, spatial_dims)
        self.mode = mode
        if mode == "transpose":
            kernel = self.scale if transpose_kernel is None else as_tuple(transpose_kernel, spatial_dims)
            if any(k < s for k, s in zip(kernel, self.scale)):
                raise ValueError(f"transposed-convolution kernel {kernel} is smaller than its stride {self.scale}")
            # out = (in - 1) * s - 2 * pad + k + out_pad = s * in  <=>  2 * pad - out_pad = k - s
            pad = tuple((k - s + 1) // 2 for k, s in zip(kernel, self.scale))
            out_pad = tuple(2 * p - (k - s) for p, k, s in zip(pad, kernel, self.scale))
            self.op = layers.conv_transpose(spatial_dims)(in_channels, out_channels, kernel, stride=self.scale,
                                                          padding=pad, output_padding=out_pad, bias=bias)
        elif mode in ("nearest", "linear"):
            self.op = layers.conv(spatial_dims)(in_channels, out_channels, as_tuple(kernel_size, spatial_dims),
                                                padding=same_padding(kernel_size, spatial_dims), bias=bias)
        else:
            raise ValueError(f"unknown up-sampling mode {mode!r}; use transpose, nearest or linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            return self.op(x)
        interp = "nearest" if self.mode == "nearest" else ("bilinear" if x.ndim == 4 else "trilinear")
        x = nn.functional.interpolate(x, scale_factor=self.scale, mode=interp,
                                      align_corners=False if interp != "nearest" else None)
        return self.op(x)


class VGGEncoder(nn.Module):
    """VGG-16's 13 convolutions (Simonyan & Zisserman 2015): five stages of 2, 2, 3, 3, 3
    3x3 ConvNormAct units of widths base x (1, 2, 4, 8, 8), each stage followed by a 2x max-pool.

    The backbone of FCN (no norm) and SegNet (batch norm, pooling indices kept).
    `forward` returns the pooled output of every stage, and with `return_indices` also the
    argmax indices of every pooling, which SegNet's decoder un-pools with.
    """

    convs_per_stage = (2, 2, 3, 3, 3)
    width_factors = (1, 2, 4, 8, 8)

    def __init__(self, spatial_dims: int, in_channels: int, base_features: int = 64,
                 norm: str | None = None, act: str | None = "relu", return_indices: bool = False):
        super().__init__()
        if base_features < 1:
            raise ValueError(f"base_features must be positive, got {base_features}")
        self.in_channels = in_channels
        self.widths = [base_features * f for f in self.width_factors]
        self.return_indices = return_indices
        self.stages = nn.ModuleList()
        ch = in_channels
        for n, width in zip(self.convs_per_stage, self.widths):
            self.stages.append(ConvChain(spatial_dims, ch, [width] * n, 3, norm=norm, act=act))
            ch = width
        self.pool = layers.max_pool(spatial_dims)(2, 2, return_indices=return_indices)

    @property
    def reduction(self) -> int:
        """Total down-sampling factor per axis."""
        return 2 ** len(self.stages)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pooled, indices = [], []
        for stage in self.stages:
            x = stage(x)
            if self.return_indices:
                x, idx = self.pool(x)
                indices.append(idx)
            else:
                x = self.pool(x)
            pooled.append(x)
        return pooled, indices


class SegmentationHeads(nn.Module):
    """1x1 classifiers on decoder features, given finest first.

    `final` reads the finest features (the model's output). With `deep_supervision`, one more
    head reads each coarser decoder resolution except the lowest: the loss would give that one
    no weight, and a parameter without a gradient breaks DistributedDataParallel.
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], num_classes: int, deep_supervision: bool = False):
        super().__init__()
        conv = layers.conv(spatial_dims)
        self.final = conv(channels[0], num_classes, 1)
        extra = channels[1:-1] if deep_supervision else []
        self.extra = nn.ModuleList(conv(c, num_classes, 1) for c in extra)

    def forward(self, features: Sequence[torch.Tensor], all_outputs: bool) -> torch.Tensor | list[torch.Tensor]:
        """`features` finest first; a list of logits (finest first) when `all_outputs`, else one tensor."""
        out = self.final(features[0])
        if not all_outputs or not self.extra:
            return [out] if all_outputs else out
        return [out, *(head(f) for head, f in zip(self.extra, features[1:]))]
