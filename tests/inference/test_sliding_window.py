import numpy as np
import torch

from medseg.inference.sliding_window import gaussian_weight, sliding_window, tile_starts


def test_tile_starts_cover_image_with_step():
    starts = tile_starts((100, 40), (32, 40), 0.5)
    assert starts[0][0] == 0 and starts[0][-1] == 100 - 32
    assert max(np.diff(starts[0])) <= 16
    assert starts[1] == [0]


def test_gaussian_weight_centre_highest_and_positive():
    w = gaussian_weight((9, 17, 17))
    assert w.shape == (9, 17, 17) and w.min() > 0
    assert w[4, 8, 8] == w.max() == 1.0


def test_identity_network_reproduces_input_scores():
    # A "network" that returns its input as logits must come back unchanged, at any size.
    image = torch.randn(3, 21, 37, 30)
    out = sliding_window(image, lambda x: x, (8, 16, 16), 3, step=0.5, tile_batch=3)
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_small_image_is_padded_and_unpadded():
    image = torch.randn(2, 5, 6, 7)
    out = sliding_window(image, lambda x: x, (8, 16, 16), 2)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_mirroring_averages_flipped_predictions():
    image = torch.randn(1, 8, 16, 16)
    # A network that is not flip-equivariant: adds a ramp along x.
    ramp = torch.linspace(0, 1, 16)

    def net(x):
        return x + ramp

    plain = sliding_window(image, net, (8, 16, 16), 1)
    mirrored = sliding_window(image, net, (8, 16, 16), 1, mirror_axes=(2,))
    torch.testing.assert_close(plain, image + ramp)
    # Flipping, adding the ramp, flipping back adds the reversed ramp: the average is flat.
    torch.testing.assert_close(mirrored, image + 0.5, rtol=1e-5, atol=1e-5)
