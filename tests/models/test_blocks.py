"""The shared blocks: what the families rely on, and that dynunet's behaviour is unchanged."""

from __future__ import annotations

import pytest
import torch

from medseg.models.blocks import (ChannelRepeat, ConvChain, ResidualBlock, SegmentationHeads, StackedConvs, UpConv,
                                  same_padding)


@pytest.mark.parametrize("kernel", [None, 2, 3, 4, 5])
@pytest.mark.parametrize("dims", [2, 3])
def test_upconv_transpose_doubles_exactly_for_any_kernel(dims, kernel):
    up = UpConv(dims, 3, 2, 2, transpose_kernel=kernel)
    x = torch.randn(1, 3, *(5,) * dims)
    assert up(x).shape == (1, 2, *(10,) * dims)
    assert up.op.kernel_size == (kernel or 2,) * dims


def test_upconv_default_is_unchanged():
    up = UpConv(3, 4, 2, (1, 2, 2))
    assert up.op.kernel_size == up.op.stride == (1, 2, 2) and up.op.padding == (0, 0, 0)
    assert up.op.bias is not None
    assert UpConv(2, 4, 2, bias=False, transpose_kernel=4).op.bias is None


def test_same_padding():
    assert same_padding(3, 3) == (1, 1, 1)
    assert same_padding((1, 3, 5), 3) == (0, 1, 2)
    assert same_padding(7, 2) == (3, 3)
    assert same_padding(2, 3) == (0, 0, 0)  # even kernels go with stride = kernel


def test_stacked_convs_keep_their_layout():
    convs = StackedConvs(3, 2, 8, n=3, stride=2)
    assert isinstance(convs, ConvChain) and convs.out_channels == 8
    assert [k for k in convs.state_dict() if k.endswith("weight")][:2] == ["0.0.weight", "0.1.weight"]
    assert convs(torch.randn(1, 2, 8, 8, 8)).shape == (1, 8, 4, 4, 4)


def test_conv_chain_widths():
    chain = ConvChain(2, 3, [4, 8, 6], norm=None, act="relu")
    assert [u[0].out_channels for u in chain] == [4, 8, 6] and chain.out_channels == 6
    with pytest.raises(ValueError):
        ConvChain(2, 3, [])


def test_residual_block_repeat_shortcut():
    block = ResidualBlock(2, 3, 8, n=1, kernel_size=5, norm=None, act="prelu", shortcut="repeat")
    assert not list(block.shortcut.parameters())
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(ChannelRepeat(3, 8)(x)[:, [0, 3, 6]], x[:, [0, 0, 0]])
    assert block(x).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError):
        ResidualBlock(2, 3, 8, shortcut="dense")


def test_segmentation_heads_skip_the_lowest_resolution():
    heads = SegmentationHeads(2, [4, 8, 16, 32], 3, deep_supervision=True)
    assert [h.in_channels for h in heads.extra] == [8, 16]
    feats = [torch.randn(1, c, s, s) for c, s in [(4, 16), (8, 8), (16, 4), (32, 2)]]
    assert [tuple(o.shape) for o in heads(feats, True)] == [(1, 3, 16, 16), (1, 3, 8, 8), (1, 3, 4, 4)]
    assert heads(feats, False).shape == (1, 3, 16, 16)
    assert not SegmentationHeads(2, [4, 8], 3, deep_supervision=False).extra
