"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015) and 3D U-Net (Cicek et al., MICCAI 2016).

Per level two 3x3(x3) convolutions, each followed by ReLU (batch norm before it optional);
2x max-pooling down; up-sampling by a 2x transposed convolution, or by nearest/linear
interpolation followed by a 3x3(x3) convolution (`up_mode`); skips by concatenation; a 1x1
convolution to the classes.

Two layouts, the default chosen by `spatial_dims`:
- "ronneberger" (2D default): five levels of 64, 128, 256, 512, 1024 channels, both
  convolutions of a level at its width; the up-convolution halves the channels; no batch
  norm; dropout (0.5) at the end of the contracting path.
- "cicek" (3D default): four levels; the first convolution of a level gives half the level's
  width (32-64, 64-128, 128-256, 256-512: channels double before each pooling); the
  up-convolution keeps its channel count; batch norm before every ReLU; no dropout.
Both papers use valid (unpadded) convolutions, so their outputs are smaller than their inputs;
here every convolution is same-padded, so the output has the input's size.

Deep supervision adds 1x1 heads on every decoder resolution but the finest (which has the
output head) and the lowest (never supervised).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models import layers
from medseg.models.blocks import ConvChain, SegmentationHeads, UpConv, init_he
from medseg.models.registry import Reference, register_model

_LAYOUTS = ("ronneberger", "cicek")


class UNet(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, base_features: int = 64,
                 n_levels: int | None = None, layout: str | None = None, norm: str | None = "auto",
                 up_mode: str = "transpose", dropout: float | None = None, deep_supervision: bool = False):
        super().__init__()
        layout = layout or ("ronneberger" if spatial_dims == 2 else "cicek")
        if layout not in _LAYOUTS:
            raise ValueError(f"unknown U-Net layout {layout!r}; use one of {_LAYOUTS}")
        ronneberger = layout == "ronneberger"
        n_levels = n_levels or (5 if ronneberger else 4)
        if n_levels < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got {n_levels}")
        if norm == "auto":
            norm = None if ronneberger else "batch"
        dropout = (0.5 if ronneberger else 0.0) if dropout is None else dropout
        self.spatial_dims = spatial_dims
        self.n_levels = n_levels
        self.layout = layout
        self.deep_supervision = deep_supervision
        conv_kw = dict(norm=norm, act="relu")

        widths = [base_features * 2**i for i in range(n_levels)]
        self.encoder = nn.ModuleList()
        ch = in_channels
        for w in widths:
            first = w if ronneberger else max(1, w // 2)
            self.encoder.append(ConvChain(spatial_dims, ch, [first, w], 3, **conv_kw))
            ch = w
        self.pool = layers.max_pool(spatial_dims)(2, 2)
        self.bottom_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        # The decoder reads its layout from the encoder's widths.
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(n_levels - 2, -1, -1):
            skip = self.encoder[level].out_channels
            up_out = skip if ronneberger else ch
            self.up.append(UpConv(spatial_dims, ch, up_out, 2, mode=up_mode))
            self.decoder.append(ConvChain(spatial_dims, up_out + skip, [skip, skip], 3, **conv_kw))
            ch = skip
        decoder_widths = [stage.out_channels for stage in self.decoder]
        self.heads = SegmentationHeads(spatial_dims, decoder_widths[::-1], num_classes, deep_supervision)
        init_he(self, slope=0.0)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of this, per axis (z, y, x)."""
        return (2 ** (self.n_levels - 1),) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        x = self.bottom_dropout(x)
        features = []
        for up, stage, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            x = stage(torch.cat([up(x), skip], dim=1))
            features.append(x)
        return self.heads(features[::-1], self.deep_supervision and self.training)


@register_model(
    "unet", paper="Ronneberger et al., MICCAI 2015 (2D); Cicek et al., MICCAI 2016 (3D)",
    references=(
        Reference(2, 1, 2, None, "Fig. 1 (1 channel, 2 classes); no count stated"),
        # Sec. 2: "The architecture has 19069955 parameters in total." (3 channels, 3 labels)
        Reference(3, 3, 3, "19,069,955", "Sec. 2"),
    ),
    summary="two convs per level, max-pool down, transposed-conv (or interpolation) up, concatenated skips",
)
def unet(spatial_dims: int, in_channels: int, num_classes: int, **options) -> UNet:
    return UNet(spatial_dims, in_channels, num_classes, **options)
