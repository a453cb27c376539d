"""One training iteration (data + forward + deep-supervised Dice+CE + backward + SGD step):
medseg's dynamic U-Net against nnU-Net's PlainConvUNet (dynamic-network-architectures),
same topology, patch and batch, in one run, interleaved, medians of repeats.

    pip install --no-deps dynamic-network-architectures   # beside torch, without replacing it
    python benchmarks/train_step.py --patch 64 64 64 --batch 2 --repeats 5 --threads 2

Prints one row per contender and the ratio. Not a test: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from medseg.losses import DeepSupervisionLoss, DiceCELoss
from medseg.models import create_model
from medseg.training.device import autocast


def peer_model(features, strides, kernels, num_classes):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(
        input_channels=1, n_stages=len(features), features_per_stage=features, conv_op=nn.Conv3d,
        kernel_sizes=kernels, strides=strides, n_conv_per_stage=2, num_classes=num_classes,
        n_conv_per_stage_decoder=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=True)


class PeerLoss(nn.Module):
    """nnU-Net's weighting: all decoder outputs, halving, the lowest weighted 0."""

    def __init__(self):
        super().__init__()
        self.inner = DiceCELoss()

    def forward(self, outputs, target):
        w = [0.5**i for i in range(len(outputs))]
        w[-1] = 0
        total = sum(w)
        loss = 0
        for wi, o in zip(w, outputs):
            if wi:
                t = nn.functional.interpolate(target[:, None].float(), size=o.shape[2:], mode="nearest-exact")[:, 0]
                loss = loss + wi / total * self.inner(o, t.long())
        return loss


def step_fn(model, loss_fn, x, y, precision):
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)

    def step():
        with autocast(precision, torch.device("cpu")):
            out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    features = [32, 64, 128, 256, 320]
    strides = [[1, 1, 1]] + [[2, 2, 2]] * 4
    kernels = [[3, 3, 3]] * 5
    torch.manual_seed(0)
    x = torch.randn(a.batch, 1, *a.patch)
    y = torch.randint(0, 3, (a.batch, *a.patch))
    ours = create_model("dynunet", spatial_dims=3, in_channels=1, num_classes=3, features=features,
                        strides=strides, kernel_sizes=kernels, deep_supervision=True)
    peer = peer_model(features, strides, kernels, 3)
    contenders = {
        "medseg dynunet": step_fn(ours, DeepSupervisionLoss(DiceCELoss()), x, y, a.precision),
        "nnU-Net PlainConvUNet": step_fn(peer, PeerLoss(), x, y, a.precision),
    }
    times = {k: [] for k in contenders}
    for fn in contenders.values():
        fn()  # warm-up
    for _ in range(a.repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"patch {a.patch} batch {a.batch} {a.precision} threads {a.threads}, median of {a.repeats}")
    for k, v in med.items():
        print(f"  {k:<24} {v:7.3f} s/iteration  ({sum(p.numel() for p in (ours if 'medseg' in k else peer).parameters()) / 1e6:.2f} M parameters)")
    print(f"  ratio peer / medseg: {med['nnU-Net PlainConvUNet'] / med['medseg dynunet']:.2f}")


if __name__ == "__main__":
    main()
