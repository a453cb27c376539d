"""Augmentation throughput on one CPU core: medseg against nnU-Net v2's pipeline (batchgeneratorsv2).

The work: batches of 2 patches, each a 1-channel 128^3 image with a 3-class label, through the
default training augmentation. nnU-Net's side is `nnUNetTrainer.get_training_transforms` of
nnunetv2 2.8.1 for a 3D, not anisotropic, 128^3 patch (rotation +-30 deg per axis with p 0.2,
scaling 0.7-1.4 with p 0.2, noise, blur, brightness, contrast, low resolution, inverted gamma,
gamma, mirroring, the -1 padding label turned into 0), rebuilt here from batchgeneratorsv2's
classes with the same arguments (nnunetv2 itself would replace this venv's torch), without the
deep-supervision downsampling of the labels, which medseg's loss does elsewhere. Each side cuts
its own input patch from the same volume: nnU-Net's `get_patch_size` (205^3 here) and medseg's
`Augmenter.input_patch_size` (216 x 220 x 218). nnU-Net transforms one sample at a time and
writes it into the batch, as its data loader does; the copy of the input that its in-place
transforms need is made outside the timer.

The frameworks alternate within each repeat (the machine is shared), every repeat runs
`--patches` patches per side, and the table gives medians over `--repeats`; the speed-up is the
median of the per-repeat ratios, which cancels most of a shared machine's drift.

Run: `python benchmarks/augmentation_speed.py [--patches 100] [--repeats 5] [--size 128]`
(needs `pip install batchgeneratorsv2`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medseg.augmentation import AugmentationConfig, Augmenter  # noqa: E402

BATCH = 2


def synthetic_volume(size, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth background, two nested structures (labels 1 and 2) brighter than it, noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in size], indexing="ij")
    r1 = sum((g / a) ** 2 for g, a in zip(grids, (0.55, 0.45, 0.5)))
    r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, (0.1, -0.1, 0.05), (0.2, 0.25, 0.15)))
    label = np.zeros(size, np.int16)
    label[r1 <= 1] = 1
    label[r2 <= 1] = 2
    image = 0.3 * grids[0] + label.astype(np.float32) + rng.normal(0, 0.3, size).astype(np.float32)
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), label


def centre_crop(a: np.ndarray, size) -> np.ndarray:
    box = tuple(slice((q - p) // 2, (q - p) // 2 + p) for q, p in zip(a.shape[-len(size):], size))
    return np.ascontiguousarray(a[(..., *box)])


def nnunet_initial_patch_size(final, rotation) -> list[int]:
    """nnunetv2's get_patch_size(final, rot, rot, rot, (0.85, 1.25)) as the trainer calls it."""
    from batchgenerators.augmentations.utils import rotate_coords_3d

    rot = min(90 / 360 * 2 * np.pi, max(np.abs(rotation)))
    coords = np.array(final, dtype=float)
    shape = np.copy(coords)
    for angles in ((rot, 0, 0), (0, rot, 0), (0, 0, rot)):
        shape = np.max(np.vstack((np.abs(rotate_coords_3d(coords, *angles)), shape)), 0)
    return [int(s) for s in (shape / 0.85).astype(int)]


def nnunet_transforms(patch_size, rotation):
    """nnUNetTrainer.get_training_transforms(patch_size, rotation, None, (0, 1, 2), False), 2.8.1."""
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

    return ComposeTransforms([
        SpatialTransform(patch_size, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                         p_rotation=0.2, rotation=rotation, p_scaling=0.2, scaling=(0.7, 1.4),
                         p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                         border_mode_seg="constant", padding_value_seg=-1),
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                        apply_probability=0.1),
        RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.0), synchronize_channels=False,
                                              synchronize_axes=False, p_per_channel=0.5, benchmark=True),
                        apply_probability=0.2),
        RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.75, 1.25)),
                                                          synchronize_channels=False, p_per_channel=1),
                        apply_probability=0.15),
        RandomTransform(ContrastTransform(contrast_range=BGContrast((0.75, 1.25)), preserve_range=True,
                                          synchronize_channels=False, p_per_channel=1), apply_probability=0.15),
        RandomTransform(SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False,
                                                       synchronize_axes=True, ignore_axes=None,
                                                       allowed_channels=None, p_per_channel=0.5),
                        apply_probability=0.25),
        RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=1, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=0.1),
        RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=0.3),
        MirrorTransform(allowed_axes=(0, 1, 2)),
        RemoveLabelTansform(-1, 0),
    ])


def run_nnunet(pipeline, image: torch.Tensor, label: torch.Tensor, patch, patches: int, seed: int) -> float:
    """Seconds for `patches` samples, one at a time into batches of BATCH (as nnU-Net's loader)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    data_all = torch.empty((BATCH, 1, *patch))
    seg_all = torch.empty((BATCH, 1, *patch), dtype=torch.int16)
    total = 0.0
    with torch.no_grad():
        for i in range(patches):
            sample = {"image": image.clone(), "segmentation": label.clone()}
            t = time.perf_counter()
            out = pipeline(**sample)
            data_all[i % BATCH] = out["image"]
            seg_all[i % BATCH] = out["segmentation"]
            total += time.perf_counter() - t
    return total


def run_medseg(aug: Augmenter, image: torch.Tensor, label: torch.Tensor, patches: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(patches // BATCH):
            aug(image, label, gen)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=100, help="patches per side per repeat (even)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="side of the cubic final patch")
    args = parser.parse_args()
    patch = (args.size,) * 3
    torch.set_num_threads(1)
    import batchgeneratorsv2  # noqa: F401  (fail early with a clear ImportError)
    from importlib.metadata import version

    rotation = (-30.0 / 360 * 2 * np.pi, 30.0 / 360 * 2 * np.pi)
    nn_size = nnunet_initial_patch_size(patch, rotation)
    variants = {
        "medseg (labels one-hot linear, default)": Augmenter(AugmentationConfig(), patch),
        "medseg (labels nearest)": Augmenter(AugmentationConfig(label_interpolation="nearest"), patch),
    }
    ms_size = variants["medseg (labels one-hot linear, default)"].input_patch_size()
    big = [max(a, b) for a, b in zip(nn_size, ms_size)]
    volume, labels = synthetic_volume(big)
    nn_img = torch.from_numpy(centre_crop(volume[None], nn_size))
    nn_lab = torch.from_numpy(centre_crop(labels[None], nn_size))
    ms_img = torch.from_numpy(np.repeat(centre_crop(volume[None, None], ms_size), BATCH, 0))
    ms_lab = torch.from_numpy(np.repeat(centre_crop(labels[None], ms_size), BATCH, 0))
    pipeline = nnunet_transforms(patch, rotation)

    print(f"torch {torch.__version__}, batchgeneratorsv2 {version('batchgeneratorsv2')}, "
          f"{platform.processor() or platform.machine()}, 1 thread, load average {os.getloadavg()[0]:.2f}")
    print(f"patch {patch}, 1 channel, labels 0-2, batch {BATCH}; input patch nnU-Net {nn_size}, medseg {ms_size}")
    # Warm-up (nnU-Net's blur benchmarks its FFT/conv choice on first use).
    run_nnunet(pipeline, nn_img, nn_lab, patch, 4, 1234)
    for aug in variants.values():
        run_medseg(aug, ms_img, ms_lab, 4, 1234)

    rates: dict[str, list[float]] = {"nnU-Net v2 (batchgeneratorsv2)": [], **{k: [] for k in variants}}
    for r in range(args.repeats):
        order = list(rates) if r % 2 == 0 else list(reversed(rates))
        for name in order:
            if name in variants:
                seconds = run_medseg(variants[name], ms_img, ms_lab, args.patches, r)
            else:
                seconds = run_nnunet(pipeline, nn_img, nn_lab, patch, args.patches, r)
            rates[name].append(args.patches / seconds)
        print(f"repeat {r + 1}: " + ", ".join(f"{k.split(' (')[0] if k.startswith('nnU') else k}: {v[-1]:.1f}/s"
                                                 for k, v in rates.items()))
    base = rates["nnU-Net v2 (batchgeneratorsv2)"]
    print(f"\n| pipeline | patches/s (median of {args.repeats}) | range | speed-up: median of the repeats' ratios "
          "| ratio of the medians |")
    print("|---|---|---|---|---|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f}-{max(values):.1f} | {ratio:.2f}x "
              f"| {med / statistics.median(base):.2f}x |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
