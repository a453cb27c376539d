"""FC-DenseNet, "The One Hundred Layers Tiramisu" (Jegou et al., CVPRW 2017).

A 3x3 convolution to 48 channels, then five dense blocks down, a bottleneck dense block and
five dense blocks up. A dense layer is BN -> ReLU -> 3x3 conv (growth rate k channels) ->
dropout 0.2, and sees the concatenation of the block's input and every earlier layer.
Transition down: BN -> ReLU -> 1x1 conv (same channels) -> dropout -> 2x max-pool.
Transition up: a 3x3 transposed convolution of stride 2 applied to the *new* feature maps of
the block below only (not its input, to keep the up path linear in size), concatenated with
the skip (the output of the dense block of the same resolution on the way down). The last
dense block's full output goes to a 1x1 convolution to the classes.

Published configurations: FC-DenseNet56 (4 layers per block, k = 12), FC-DenseNet67
(5 layers, k = 16), FC-DenseNet103 (4, 5, 7, 10, 12 layers down, 15 in the bottleneck,
mirrored up, k = 16). Deep supervision adds 1x1 heads on the new feature maps of the up
blocks at 1/2, 1/4 and 1/8 (not 1/16, the lowest, which is never supervised).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.models import layers
from medseg.models.blocks import ConvNormAct, DenseBlock, SegmentationHeads, UpConv, init_he
from medseg.models.registry import Reference, register_model


class FCDenseNet(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 down_layers: Sequence[int] = (4, 5, 7, 10, 12), bottleneck_layers: int = 15,
                 growth_rate: int = 16, stem_features: int = 48, dropout: float = 0.2,
                 norm: str | None = "batch", deep_supervision: bool = False):
        super().__init__()
        if not down_layers:
            raise ValueError("FC-DenseNet needs at least one dense block on the way down")
        self.spatial_dims = spatial_dims
        self.n_down = len(down_layers)
        self.deep_supervision = deep_supervision
        kw = dict(norm=norm, act="relu", dropout=dropout)

        self.stem = ConvNormAct(spatial_dims, in_channels, stem_features, 3, norm=None, act=None)
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        ch = stem_features
        skip_widths = []
        for n in down_layers:
            block = DenseBlock(spatial_dims, ch, n, growth_rate, **kw)
            ch = block.out_channels
            skip_widths.append(ch)
            self.down_blocks.append(block)
            self.transitions_down.append(nn.Sequential(
                ConvNormAct(spatial_dims, ch, ch, 1, preactivation=True, **kw),
                layers.max_pool(spatial_dims)(2, 2),
            ))
        self.bottleneck = DenseBlock(spatial_dims, ch, bottleneck_layers, growth_rate, return_new_only=True, **kw)
        ch = self.bottleneck.out_channels

        # The up path mirrors the down path: layer counts reversed, skips read from the encoder.
        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i, (n, skip) in enumerate(zip(reversed(down_layers), reversed(skip_widths))):
            last = i == len(down_layers) - 1
            self.transitions_up.append(UpConv(spatial_dims, ch, ch, 2, transpose_kernel=3))
            block = DenseBlock(spatial_dims, ch + skip, n, growth_rate, return_new_only=not last, **kw)
            self.up_blocks.append(block)
            ch = block.out_channels
        up_widths = [b.out_channels for b in self.up_blocks]
        self.heads = SegmentationHeads(spatial_dims, up_widths[::-1], num_classes, deep_supervision)
        init_he(self, slope=0.0)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of this, per axis (z, y, x)."""
        return (2**self.n_down,) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        features = []
        for up, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
            features.append(x)
        return self.heads(features[::-1], self.deep_supervision and self.training)


_PAPER = "Jegou et al., CVPRW 2017 (FC-DenseNet, Tiramisu)"


def _camvid(count: str) -> tuple[Reference, ...]:
    # CamVid results table: RGB input, 11 classes; parameters in millions, as the authors'
    # Lasagne summary counts them (batch-norm running mean and inverse std included).
    return (Reference(2, 3, 11, count, "CamVid results table", counts_norm_statistics=True),)


@register_model("fcdensenet56", paper=_PAPER, references=_camvid("1.5 M"),
                summary="FC-DenseNet: 5 dense blocks of 4 layers down and up, growth rate 12")
def fcdensenet56(spatial_dims: int, in_channels: int, num_classes: int, **options) -> FCDenseNet:
    options = {"down_layers": (4,) * 5, "bottleneck_layers": 4, "growth_rate": 12, **options}
    return FCDenseNet(spatial_dims, in_channels, num_classes, **options)


@register_model("fcdensenet67", paper=_PAPER, references=_camvid("3.5 M"),
                summary="FC-DenseNet: 5 dense blocks of 5 layers down and up, growth rate 16")
def fcdensenet67(spatial_dims: int, in_channels: int, num_classes: int, **options) -> FCDenseNet:
    options = {"down_layers": (5,) * 5, "bottleneck_layers": 5, "growth_rate": 16, **options}
    return FCDenseNet(spatial_dims, in_channels, num_classes, **options)


@register_model("fcdensenet103", paper=_PAPER, references=_camvid("9.4 M"),
                summary="FC-DenseNet: dense blocks of 4-5-7-10-12 layers, bottleneck 15, growth rate 16")
def fcdensenet103(spatial_dims: int, in_channels: int, num_classes: int, **options) -> FCDenseNet:
    options = {"down_layers": (4, 5, 7, 10, 12), "bottleneck_layers": 15, "growth_rate": 16, **options}
    return FCDenseNet(spatial_dims, in_channels, num_classes, **options)
