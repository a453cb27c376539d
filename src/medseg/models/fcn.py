"""Fully convolutional networks (Long, Shelhamer & Darrell, CVPR 2015): FCN-32s, -16s, -8s.

VGG-16's 13 convolutions, then VGG's classifier made convolutional: fc6 (7x7 convolution to
4096 channels), fc7 (1x1 to 4096), each ReLU and dropout 0.5, and a 1x1 "score" convolution
to the classes at 1/32 resolution. No dense layers. FCN-16s adds a 1x1 score map of pool4:
the coarse scores go up 2x by a learned transposed convolution (4x4 kernel, bilinear
initialisation, no bias) and the two are summed; FCN-8s does the same once more with pool3.
The last up-sampling to the input size is fixed bilinear interpolation, as in the paper
("the final layer deconvolutional filters are fixed to bilinear interpolation").

Differences from the paper, on purpose:
- same padding everywhere instead of the 100-pixel pad on conv1_1 and the crop layers, so
  the output has the input's size for any size that is a multiple of 32;
- in 3D fc6's kernel is 3x3x3 (a 7x7x7 one from 512 to 4096 channels alone is 720 M
  parameters); `fc_kernel` sets it;
- training starts from random (He) weights, not from ImageNet VGG-16, so only the new
  skip score layers are zero-initialised (as in the paper); the 1/32 score layer is not,
  or nothing below it would receive a gradient at the first step.

Deep supervision returns the fused score maps too, finest first: FCN-8s gives the full-size
logits, then its 1/8 and 1/16 maps; FCN-16s the full-size and 1/16; FCN-32s only the
full-size one (its single score map is the lowest resolution, which is never supervised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models import layers
from medseg.models.blocks import ConvNormAct, UpConv, VGGEncoder, init_he
from medseg.models.registry import Reference, register_model


def bilinear_kernel(size: int, spatial_dims: int) -> torch.Tensor:
    """A separable (bi/tri)linear interpolation kernel of `size` per axis, for 2x up-sampling
    by a transposed convolution with stride size // 2."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    kernel = ramp
    for _ in range(spatial_dims - 1):
        kernel = kernel[..., None] * ramp
    return kernel


class FCN(nn.Module):
    """FCN-`output_stride`s: 32 (no skips), 16 (pool4 skip) or 8 (pool4 and pool3 skips)."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, output_stride: int = 8,
                 base_features: int = 64, fc_features: int | None = None, fc_kernel: int | None = None,
                 dropout: float = 0.5, deep_supervision: bool = False):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.spatial_dims = spatial_dims
        self.output_stride = output_stride
        self.deep_supervision = deep_supervision
        self.encoder = VGGEncoder(spatial_dims, in_channels, base_features, norm=None, act="relu")
        fc_features = fc_features or 64 * base_features
        fc_kernel = fc_kernel or (7 if spatial_dims == 2 else 3)
        self.classifier = nn.Sequential(
            ConvNormAct(spatial_dims, self.encoder.widths[-1], fc_features, fc_kernel, norm=None, act="relu"),
            nn.Dropout(dropout),
            ConvNormAct(spatial_dims, fc_features, fc_features, 1, norm=None, act="relu"),
            nn.Dropout(dropout),
        )
        conv = layers.conv(spatial_dims)
        self.score = conv(fc_features, num_classes, 1)
        # One learned 2x step and one skip score map per halving of the output stride,
        # reading pool4 first, then pool3.
        n_skips = {32: 0, 16: 1, 8: 2}[output_stride]
        skip_widths = [self.encoder.widths[3], self.encoder.widths[2]][:n_skips]
        self.up = nn.ModuleList(
            UpConv(spatial_dims, num_classes, num_classes, 2, transpose_kernel=4, bias=False) for _ in skip_widths)
        self.skip_scores = nn.ModuleList(conv(w, num_classes, 1) for w in skip_widths)
        init_he(self, slope=0.0)
        with torch.no_grad():
            kernel = bilinear_kernel(4, spatial_dims)
            for up in self.up:
                up.op.weight.zero_()
                for c in range(num_classes):
                    up.op.weight[c, c].copy_(kernel)
            for s in self.skip_scores:
                s.weight.zero_()
                s.bias.zero_()

    @property
    def divisor(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of this, per axis (z, y, x)."""
        return (self.encoder.reduction,) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        pooled, _ = self.encoder(x)
        score = self.score(self.classifier(pooled[-1]))
        fused = []
        for up, skip_score, feature in zip(self.up, self.skip_scores, (pooled[3], pooled[2])):
            score = up(score) + skip_score(feature)
            fused.append(score)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        out = F.interpolate(score, size=x.shape[2:], mode=mode, align_corners=False)
        if self.deep_supervision and self.training:
            return [out, *fused[::-1]]
        return out


_PAPER = "Long, Shelhamer & Darrell, CVPR 2015 (FCN)"
# Table 1: FCN-VGG16, 134 M parameters (PASCAL VOC: RGB, 21 classes). The skip layers add < 0.1 M.
_REFERENCES = (Reference(2, 3, 21, "134 M", "Table 1 (FCN-VGG16)"),)


@register_model("fcn32s", paper=_PAPER, references=_REFERENCES,
                summary="VGG-16 encoder, convolutionalised classifier, 32x bilinear up-sampling")
def fcn32s(spatial_dims: int, in_channels: int, num_classes: int, **options) -> FCN:
    return FCN(spatial_dims, in_channels, num_classes, output_stride=32, **options)


@register_model("fcn16s", paper=_PAPER, references=_REFERENCES,
                summary="FCN-32s + pool4 score map fused by addition after a learned 2x up-sampling")
def fcn16s(spatial_dims: int, in_channels: int, num_classes: int, **options) -> FCN:
    return FCN(spatial_dims, in_channels, num_classes, output_stride=16, **options)


@register_model("fcn8s", paper=_PAPER, references=_REFERENCES,
                summary="FCN-16s + pool3 score map: two learned 2x steps, then 8x bilinear")
def fcn8s(spatial_dims: int, in_channels: int, num_classes: int, **options) -> FCN:
    return FCN(spatial_dims, in_channels, num_classes, output_stride=8, **options)
