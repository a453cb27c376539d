"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

Encoder: VGG-16's 13 convolutions, each conv -> batch norm -> ReLU, five 2x max-poolings
whose argmax indices are kept. Decoder: the mirror image. Each decoder stage un-pools its
input with the indices of the matching encoder pooling (max-unpooling: every value goes back
to the position its maximum came from, the rest are zero, nothing is learned), then
convolves the sparse map densely; every decoder stage but the last ends with as many
channels as its encoder stage took in, the last keeps 64. A 1x1 classifier ("trainable
soft-max classifier") gives the class scores. No skip connections carry features: only the
indices cross from encoder to decoder.

Deep supervision adds 1x1 heads on the decoder's 1/2, 1/4 and 1/8 outputs (not on 1/16, the
lowest, which is never supervised).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models import layers
from medseg.models.blocks import ConvChain, SegmentationHeads, VGGEncoder, init_he
from medseg.models.registry import Reference, register_model


class SegNet(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, base_features: int = 64,
                 norm: str | None = "batch", deep_supervision: bool = False):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.encoder = VGGEncoder(spatial_dims, in_channels, base_features, norm=norm, act="relu",
                                  return_indices=True)
        self.unpool = layers.max_unpool(spatial_dims)(2, 2)
        # The decoder reads its layout from the encoder: stage s mirrored, ending with the
        # channel count stage s took in (the first stage's decoder keeps its width).
        widths = self.encoder.widths
        stage_inputs = [in_channels, *widths[:-1]]
        self.decoder = nn.ModuleList()
        for s in reversed(range(len(widths))):
            n = self.encoder.convs_per_stage[s]
            last = stage_inputs[s] if s > 0 else widths[s]
            self.decoder.append(ConvChain(spatial_dims, widths[s], [widths[s]] * (n - 1) + [last], 3,
                                          norm=norm, act="relu"))
        decoder_widths = [stage.out_channels for stage in self.decoder]
        self.heads = SegmentationHeads(spatial_dims, decoder_widths[::-1], num_classes, deep_supervision)
        init_he(self, slope=0.0)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of this, per axis (z, y, x)."""
        return (self.encoder.reduction,) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        pooled, indices = self.encoder(x)
        x = pooled[-1]
        features = []
        for stage, idx in zip(self.decoder, reversed(indices)):
            x = stage(self.unpool(x, idx))
            features.append(x)
        return self.heads(features[::-1], self.deep_supervision and self.training)


@register_model("segnet", paper="Badrinarayanan, Kendall & Cipolla, TPAMI 2017 (SegNet)",
                # Sec. 3: removing VGG-16's fully connected layers leaves the encoder 14.7 M
                # parameters; CamVid: RGB, 11 classes.
                references=(Reference(2, 3, 11, "14.7 M", "Sec. 3, encoder only", part="encoder"),),
                summary="VGG-16 encoder with batch norm; decoder up-samples by max-unpooling with the encoder's indices")
def segnet(spatial_dims: int, in_channels: int, num_classes: int, **options) -> SegNet:
    return SegNet(spatial_dims, in_channels, num_classes, **options)
