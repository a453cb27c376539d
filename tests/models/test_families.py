"""What is special about each family: the part of its paper a generic contract cannot see."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses import create_loss
from medseg.models import create_model
from medseg.models.blocks import ChannelRepeat


def meta(name: str, dims: int, in_channels: int = 1, num_classes: int = 3, **options) -> nn.Module:
    """A full-size model on the meta device: its layout, without memory or initialisation."""
    with torch.device("meta"):
        return create_model(name, spatial_dims=dims, in_channels=in_channels, num_classes=num_classes, **options)


def of_type(model: nn.Module, *types) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, types)]


CONV = (nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose2d, nn.ConvTranspose3d)


# --- SegNet -------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [2, 3])
def test_segnet_decoder_unpools_with_the_encoders_indices(tiny, dims):
    """Each decoder stage puts every value back exactly where the encoder's maximum was and
    zeros elsewhere. Plain (nearest, linear or learned) up-sampling fills every position, so
    it fails this test."""
    model = tiny("segnet", dims).eval()
    x = torch.randn(1, 2, *model.divisor)
    with torch.no_grad():
        _, indices = model.encoder(x)
    seen = []
    hook = model.unpool.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
    with torch.no_grad():
        model(x)
    hook.remove()
    assert len(seen) == len(indices) == 5
    for (pooled, unpooled), idx in zip(seen, reversed(indices)):
        flat = unpooled.flatten(2)
        expected = torch.zeros_like(flat).scatter_(2, idx.flatten(2), pooled.flatten(2))
        assert torch.equal(flat, expected)
        window = 2**dims
        assert (flat != 0).sum() <= flat.numel() // window


def test_segnet_output_depends_on_where_the_maxima_were(tiny, monkeypatch):
    """Same pooled values, maxima moved by one column inside their windows: the output moves."""
    model = tiny("segnet", 2).eval()
    x = torch.randn(1, 2, 32, 32)
    encode = model.encoder.forward
    with torch.no_grad():
        ref = model(x)
        monkeypatch.setattr(model.encoder, "forward",
                            lambda inp: (encode(inp)[0], [i ^ 1 for i in encode(inp)[1]]))
        out = model(x)
    assert out.shape == ref.shape and not torch.allclose(out, ref)


def test_segnet_learns_no_upsampling():
    model = meta("segnet", 2)
    assert not of_type(model, *CONV_T)
    assert len(of_type(model, nn.MaxUnpool2d)) == 1
    assert len(of_type(model.encoder, *CONV)) == 13
    assert len(of_type(model.decoder, *CONV)) == 13
    assert len(of_type(model, nn.BatchNorm2d)) == 26


def test_segnet_decoder_mirrors_the_encoder():
    model = meta("segnet", 2, in_channels=3)
    enc = [(c.in_channels, c.out_channels) for c in of_type(model.encoder, *CONV)]
    dec = [(c.in_channels, c.out_channels) for c in of_type(model.decoder, *CONV)]
    # Mirrored, except that the last decoder keeps 64 channels for the classifier.
    assert dec[:-1] == [(o, i) for i, o in reversed(enc)][:-1]
    assert dec[-1] == (64, 64)


# --- FCN ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, skips", [("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)])
def test_fcn_is_fully_convolutional_with_score_skips(name, skips):
    model = meta(name, 2, in_channels=3, num_classes=21)
    assert not of_type(model, nn.Linear)
    fc6 = model.classifier[0][0]
    assert fc6.kernel_size == (7, 7) and fc6.out_channels == 4096
    assert len(model.skip_scores) == len(model.up) == skips
    assert [s.in_channels for s in model.skip_scores] == [512, 256][:skips]  # pool4, then pool3
    assert meta(name, 3).classifier[0][0].kernel_size == (3, 3, 3)


@pytest.mark.parametrize("dims", [2, 3])
def test_fcn_learned_upsampling_starts_bilinear_and_skips_start_silent(tiny, dims):
    model = tiny("fcn8s", dims)
    up = model.up[0]
    assert up.op.kernel_size == (4,) * dims and up.op.bias is None
    z = torch.randn(1, 3, *(6,) * dims)
    mode = "bilinear" if dims == 2 else "trilinear"
    with torch.no_grad():
        ours = up(z)
    reference = F.interpolate(z, scale_factor=2, mode=mode, align_corners=False)
    inner = (slice(None), slice(None)) + (slice(1, -1),) * dims
    assert torch.allclose(ours[inner], reference[inner], atol=1e-6)
    assert all(s.weight.abs().sum() == 0 and s.bias.abs().sum() == 0 for s in model.skip_scores)


# --- U-Net --------------------------------------------------------------------------------

def test_unet_2d_default_is_ronnebergers():
    model = meta("unet", 2, num_classes=2)
    assert [stage.out_channels for stage in model.encoder] == [64, 128, 256, 512, 1024]
    assert [c.out_channels for c in of_type(model.encoder[0], *CONV)] == [64, 64]
    assert [u.op.out_channels for u in model.up] == [512, 256, 128, 64]  # up-conv halves
    assert all(u.op.kernel_size == (2, 2) for u in model.up)
    assert not of_type(model, nn.BatchNorm2d)
    assert model.divisor == (16, 16)


def test_unet_3d_default_is_ciceks():
    model = meta("unet", 3, in_channels=3, num_classes=3)
    firsts = [of_type(stage, *CONV)[0].out_channels for stage in model.encoder]
    assert firsts == [32, 64, 128, 256]  # channels double before each pooling
    assert [stage.out_channels for stage in model.encoder] == [64, 128, 256, 512]
    assert [u.op.out_channels for u in model.up] == [512, 256, 128]  # up-conv keeps channels
    assert len(of_type(model, nn.BatchNorm3d)) == 14
    assert model.divisor == (8, 8, 8)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("dims", [2, 3])
def test_unet_interpolation_upsampling(tiny, dims, mode):
    model = tiny("unet", dims, up_mode=mode)
    assert not of_type(model, *CONV_T)
    x = torch.randn(2, 2, *(16,) * dims)
    assert model(x).shape == (2, 3, *(16,) * dims)


def test_unet_rejects_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        create_model("unet", spatial_dims=2, in_channels=1, num_classes=2, layout="resnet")


# --- V-Net --------------------------------------------------------------------------------

def test_vnet_trains_with_its_dice_by_default():
    model = meta("vnet", 3, num_classes=2)
    assert model.default_loss == "vnet_dice"
    assert create_loss(model.default_loss) is not None


def test_vnet_layout_is_the_papers():
    model = meta("vnet", 3, num_classes=2)
    assert [len(of_type(s.convs, *CONV)) for s in model.stages] == [1, 2, 3, 3, 3]
    assert [len(of_type(s.convs, *CONV)) for s in model.decoder] == [3, 3, 2, 1]
    assert [s.convs[0][0].out_channels for s in model.stages] == [16, 32, 64, 128, 256]
    assert [s.convs[0][0].out_channels for s in model.decoder] == [256, 128, 64, 32]
    assert all(c.kernel_size == (5, 5, 5) for s in [*model.stages, *model.decoder] for c in of_type(s, *CONV))
    assert all(d[0].kernel_size == (2, 2, 2) and d[0].stride == (2, 2, 2) for d in model.down)
    assert all(u[0].op.kernel_size == (2, 2, 2) for u in model.up)
    assert of_type(model, nn.PReLU) and not of_type(model, nn.ReLU, nn.BatchNorm3d)
    assert isinstance(model.stages[0].shortcut[0], ChannelRepeat)
    assert not list(model.stages[0].shortcut.parameters())


# --- FC-DenseNet --------------------------------------------------------------------------

def test_fcdensenet103_upsamples_only_new_feature_maps():
    model = meta("fcdensenet103", 2, in_channels=3, num_classes=11)
    # The bottleneck's 15 x 16 new maps, then each up block's new maps (12, 10, 7, 5 layers).
    assert [t.op.in_channels for t in model.transitions_up] == [240, 192, 160, 112, 80]
    assert all(t.op.kernel_size == (3, 3) and t.op.stride == (2, 2) for t in model.transitions_up)
    # Skips: 112, 192, 304, 464, 656; the last block sees 192 + 64 new = 256 (paper Table 2).
    assert [b.out_channels for b in model.down_blocks] == [112, 192, 304, 464, 656]
    assert model.up_blocks[-1].out_channels == 256
    layer = model.down_blocks[0].layers[0]
    assert [type(m).__name__ for m in layer] == ["BatchNorm2d", "ReLU", "Conv2d", "Dropout2d"]


@pytest.mark.parametrize("name, layers, growth", [("fcdensenet56", [4] * 11, 12), ("fcdensenet67", [5] * 11, 16),
                                                  ("fcdensenet103", [4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4], 16)])
def test_fcdensenet_published_layouts(name, layers, growth):
    model = meta(name, 2, in_channels=3, num_classes=11)
    blocks = [*model.down_blocks, model.bottleneck, *model.up_blocks]
    assert [len(b.layers) for b in blocks] == layers
    assert {b.layers[0][2].out_channels for b in blocks} == {growth}
    # The name counts the convolutions: first conv + dense layers + transitions + classifier.
    assert 1 + sum(layers) + 2 * len(model.down_blocks) + 1 == int(name.removeprefix("fcdensenet"))
