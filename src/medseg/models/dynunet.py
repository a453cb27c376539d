"""The self-configuring dynamic U-Net (Isensee et al., nnU-Net, Nature Methods 2021).

Per stage: conv -> instance norm -> leaky ReLU, twice; the first conv of a stage carries the
stride (down-sampling by strided convolution); up-sampling by transposed convolution with
kernel = stride; skips by concatenation; deep-supervision heads at every decoder resolution but the lowest.
Kernel sizes and strides are per stage and per axis, as a plan decides them. The residual
variant replaces each encoder stage with ResNet-D basic blocks, more of them deeper down.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.models import layers
from medseg.models.blocks import ConvNormAct, ResidualBlock, StackedConvs, as_tuple, init_he
from medseg.models.registry import register_model


def default_features(n_stages: int, spatial_dims: int, base: int = 32) -> list[int]:
    """32, 64, 128, ... capped at 320 (3D) or 512 (2D)."""
    cap = 320 if spatial_dims == 3 else 512
    return [min(base * 2**i, cap) for i in range(n_stages)]


def per_stage(value: int | Sequence[int], n: int, name: str) -> list[int]:
    """An int for every stage, or one count per stage (checked)."""
    counts = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(counts) != n or min(counts, default=1) < 1:
        raise ValueError(f"{name} needs one positive count per stage ({n}), got {value}")
    return counts


class DynUNet(nn.Module):
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        kernel_sizes: Sequence[Sequence[int] | int] | None = None,
        strides: Sequence[Sequence[int] | int] | None = None,
        features: Sequence[int] | None = None,
        n_stages: int = 5,
        conv_per_stage: int | Sequence[int] = 2,
        decoder_convs: int | Sequence[int] | None = None,
        deep_supervision: bool = False,
        residual: bool = False,
        blocks_per_stage: Sequence[int] | None = None,
        norm: str = "instance",
        act: str = "leakyrelu",
    ):
        super().__init__()
        if strides is None:
            strides = [1] + [2] * (n_stages - 1)
        n_stages = len(strides)
        if kernel_sizes is None:
            kernel_sizes = [3] * n_stages
        if features is None:
            features = default_features(n_stages, spatial_dims)
        if not (len(kernel_sizes) == len(features) == n_stages):
            raise ValueError("kernel_sizes, strides and features need one entry per stage")
        self.spatial_dims = spatial_dims
        self.strides = [as_tuple(s, spatial_dims) for s in strides]
        self.kernel_sizes = [as_tuple(k, spatial_dims) for k in kernel_sizes]
        self.features = list(features)
        self.deep_supervision = deep_supervision
        conv_kw = dict(norm=norm, act=act)

        self.encoder = nn.ModuleList()
        if residual:
            blocks_per_stage = list(blocks_per_stage or [1, 3, 4, 6, 6, 6, 6, 6][:n_stages])
            self.stem: nn.Module = ConvNormAct(spatial_dims, in_channels, features[0], self.kernel_sizes[0], **conv_kw)
            ch = features[0]
            for s in range(n_stages):
                blocks = [ResidualBlock(spatial_dims, ch if b == 0 else features[s], features[s], 2,
                                        self.kernel_sizes[s], self.strides[s] if b == 0 else 1, **conv_kw)
                          for b in range(blocks_per_stage[s])]
                self.encoder.append(nn.Sequential(*blocks))
                ch = features[s]
            decoder_convs = decoder_convs or 1
        else:
            self.stem = nn.Identity()
            ch = in_channels
            encoder_convs = per_stage(conv_per_stage, n_stages, "conv_per_stage")
            for s in range(n_stages):
                self.encoder.append(StackedConvs(spatial_dims, ch, features[s], encoder_convs[s],
                                                 self.kernel_sizes[s], self.strides[s], **conv_kw))
                ch = features[s]
            decoder_convs = decoder_convs or (conv_per_stage if isinstance(conv_per_stage, int) else 2)
        # One count per decoder stage, lowest resolution first (the order the decoder runs in).
        decoder_counts = per_stage(decoder_convs, n_stages - 1, "decoder_convs")

        # The decoder reads its layout from the encoder's: nothing is said twice.
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i, s in enumerate(range(n_stages - 1, 0, -1)):
            self.up.append(layers.conv_transpose(spatial_dims)(
                features[s], features[s - 1], self.strides[s], stride=self.strides[s]))
            self.decoder.append(StackedConvs(spatial_dims, 2 * features[s - 1], features[s - 1], decoder_counts[i],
                                             self.kernel_sizes[s - 1], 1, **conv_kw))
            # The lowest decoder resolution gets no head: it would never be supervised, and
            # parameters without gradients break DistributedDataParallel.
            lowest = s == n_stages - 1 and n_stages > 2
            self.heads.append(nn.Identity() if lowest else layers.conv(spatial_dims)(features[s - 1], num_classes, 1))
        init_he(self)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of this, per axis (z, y, x)."""
        out = [1] * self.spatial_dims
        for s in self.strides:
            out = [o * v for o, v in zip(out, s)]
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        want_all = self.deep_supervision and self.training
        outputs = []
        for i, (up, dec) in enumerate(zip(self.up, self.decoder)):
            x = dec(torch.cat([up(x), skips[-(i + 2)]], dim=1))
            if (want_all and not isinstance(self.heads[i], nn.Identity)) or i == len(self.decoder) - 1:
                outputs.append(self.heads[i](x))
        return outputs[::-1] if want_all else outputs[-1]


@register_model("dynunet", paper="Isensee et al., Nature Methods 2021 (nnU-Net)",
                summary="self-configuring U-Net: strided-conv down, transposed-conv up, instance norm")
def dynunet(spatial_dims: int, in_channels: int, num_classes: int, **options) -> DynUNet:
    return DynUNet(spatial_dims, in_channels, num_classes, **options)


@register_model("dynunet_resenc", paper="Isensee et al., MICCAI 2024 (nnU-Net ResEnc)",
                summary="dynamic U-Net with a residual (ResNet-D) encoder, 1-3-4-6-6-6 blocks")
def dynunet_resenc(spatial_dims: int, in_channels: int, num_classes: int, **options) -> DynUNet:
    options.setdefault("residual", True)
    return DynUNet(spatial_dims, in_channels, num_classes, **options)
