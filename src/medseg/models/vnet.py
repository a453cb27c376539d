"""V-Net (Milletari, Navab & Ahmadi, 3DV 2016).

Residual stages of 5x5x5 convolutions with PReLU: the stage's input is added to the output
of its last convolution, then PReLU. Compression: stages of 1, 2, 3, 3 convolutions at 16,
32, 64, 128 channels and a bottom stage of 3 at 256, each step down a 2x2x2 convolution of
stride 2 that doubles the channels (no pooling). Decompression mirrors it: a 2x2x2 transposed
convolution of stride 2 to the skip's channel count, concatenation with the skip, a residual
stage of 3, 3, 2, 1 convolutions at twice the skip's channels; then a 1x1x1 convolution to
the classes. The first stage adds its single-channel input tiled to 16 channels.

Trained by default with the paper's Dice loss (squared terms in the denominator):
`default_loss = "vnet_dice"`.

Layout from the paper's Fig. 2. The released Caffe prototxt is lighter (1, 1, 2, 3 / 3
convolutions down, 3, 2, 1, 1 up, and a 5x5x5 + 1x1x1 output); the paper states no parameter
count. No batch norm, as in the paper (`norm` adds one). Deep supervision adds 1x1 heads on
the 1/2 and 1/4 decoder outputs (not 1/8, the lowest, which is never supervised).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medseg.models import layers
from medseg.models.blocks import ConvNormAct, ResidualBlock, SegmentationHeads, UpConv, init_he
from medseg.models.registry import Reference, register_model


class VNet(nn.Module):
    default_loss = "vnet_dice"

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, base_features: int = 16,
                 convs: Sequence[int] = (1, 2, 3, 3, 3), kernel_size: int = 5, norm: str | None = None,
                 act: str = "prelu", deep_supervision: bool = False):
        super().__init__()
        if len(convs) < 2:
            raise ValueError(f"V-Net needs at least two stages, got convs={tuple(convs)}")
        self.spatial_dims = spatial_dims
        self.n_stages = len(convs)
        self.deep_supervision = deep_supervision
        kw = dict(norm=norm, act=act)
        widths = [base_features * 2**i for i in range(len(convs))]

        self.stages = nn.ModuleList([ResidualBlock(spatial_dims, in_channels, widths[0], convs[0], kernel_size,
                                                   shortcut="repeat", **kw)])
        self.down = nn.ModuleList()
        for i in range(1, len(convs)):
            self.down.append(ConvNormAct(spatial_dims, widths[i - 1], widths[i], 2, stride=2, **kw))
            self.stages.append(ResidualBlock(spatial_dims, widths[i], widths[i], convs[i], kernel_size, **kw))

        # Decompression mirrors compression: each level's channels and convolution count are
        # read from the encoder stage it joins.
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        ch = widths[-1]
        for i in range(len(convs) - 2, -1, -1):
            up = [UpConv(spatial_dims, ch, widths[i], 2), layers.norm(norm, spatial_dims, widths[i]),
                  layers.activation(act, widths[i])]
            self.up.append(nn.Sequential(*[m for m in up if not isinstance(m, nn.Identity)]))
            ch = 2 * widths[i]
            self.decoder.append(ResidualBlock(spatial_dims, ch, ch, convs[i], kernel_size, **kw))
        self.heads = SegmentationHeads(spatial_dims, [2 * w for w in widths[:-1]], num_classes, deep_supervision)
        init_he(self, slope=0.25)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of this, per axis (z, y, x)."""
        return (2 ** (self.n_stages - 1),) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = [self.stages[0](x)]
        for down, stage in zip(self.down, self.stages[1:]):
            skips.append(stage(down(skips[-1])))
        x = skips.pop()
        features = []
        for up, stage, skip in zip(self.up, self.decoder, reversed(skips)):
            x = stage(torch.cat([up(x), skip], dim=1))
            features.append(x)
        return self.heads(features[::-1], self.deep_supervision and self.training)


@register_model("vnet", paper="Milletari, Navab & Ahmadi, 3DV 2016 (V-Net)",
                references=(Reference(3, 1, 2, None, "Fig. 2 (1 channel, 2 classes); no count stated"),),
                summary="residual 5x5x5 stages with PReLU, strided-conv down, transposed-conv up; V-Net Dice loss")
def vnet(spatial_dims: int, in_channels: int, num_classes: int, **options) -> VNet:
    return VNet(spatial_dims, in_channels, num_classes, **options)
