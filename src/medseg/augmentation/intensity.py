"""Intensity transforms, in torch: deterministic kernels on one sample and random batch helpers.

The kernels (`add_noise_`, `blur_`, `multiply_`, `contrast_`, `low_resolution_`, `gamma_`) change
one sample (C, *spatial) in place and take their parameters as plain numbers, one per channel
where nnU-Net draws one per channel (None leaves that channel alone). `medseg.augmentation.Augmenter`
draws those numbers and records them.

The batch helpers (`gaussian_noise`, `gaussian_blur`, `brightness`, `contrast`,
`simulate_low_resolution`, `gamma`, `augment_intensity`) draw parameters for a batch
(N, C, *spatial) from a `torch.Generator` and return a new tensor; they follow nnU-Net v2's
sampling, so they also serve code that wants one transform without the whole pipeline.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from medseg.augmentation.config import AugmentationConfig

EPS = 1e-7


# -- how nnU-Net draws its numbers -----------------------------------------------------------------


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen))


def two_sided(gen: torch.Generator, low: float, high: float) -> float:
    """Half the time in [low, 1), half in [1, high] (when low < 1): as often darker as brighter,
    however asymmetric the range (nnU-Net's `BGContrast`)."""
    below = float(torch.rand(1, generator=gen)) < 0.5
    if below and low < 1:
        return uniform(gen, low, 1.0)
    return uniform(gen, max(low, 1.0), high)


def draw_seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


# -- kernels: one sample (C, *spatial), in place -----------------------------------------------------


def _stats(v: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation in one pass each, float64 accumulation at the end."""
    flat = v.reshape(-1)
    n = flat.numel()
    mean = float(flat.sum()) / n
    var = float(torch.dot(flat, flat)) / n - mean * mean
    return mean, math.sqrt(max(var, 0.0))


def add_noise_(x: torch.Tensor, std: float, seed: int, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Add zero-mean Gaussian noise with standard deviation `std`, the field drawn from `seed`
    (on the tensor's device; CPU and GPU draw different fields from one seed). `scratch`, a
    tensor of x's shape, saves allocating the field."""
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    if scratch is None:
        scratch = torch.empty_like(x)
    torch.randn(x.shape, generator=gen, out=scratch)
    return x.add_(scratch, alpha=float(std))


def _gauss_taps(sigma: float, size: int) -> list[float]:
    radius = min(max(1, int(3 * sigma + 0.5)), size - 1)
    taps = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]
    total = sum(taps)
    return [t / total for t in taps]


def _blur_axis(v: torch.Tensor, ax: int, taps: list[float], out: torch.Tensor) -> torch.Tensor:
    """Symmetric 1D filter along `ax` with mirrored borders (the edge voxel not repeated), as
    shifted adds into `out`: no padded copy."""
    n = v.shape[ax]
    r = len(taps) // 2
    torch.mul(v, taps[r], out=out)
    for t in range(1, r + 1):
        w = taps[r + t]
        out.narrow(ax, t, n - t).add_(v.narrow(ax, 0, n - t), alpha=w)
        out.narrow(ax, 0, n - t).add_(v.narrow(ax, t, n - t), alpha=w)
        for i in range(t):  # the reflected neighbours near both ends
            out.select(ax, i).add_(v.select(ax, t - i), alpha=w)
            out.select(ax, n - 1 - i).add_(v.select(ax, n - 1 - t + i), alpha=w)
    return out


def blur_(x: torch.Tensor, sigmas: Sequence[Sequence[float] | None],
          scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Separable Gaussian blur; `sigmas[c]` lists one sigma (voxels) per spatial axis, or None.
    `scratch`, a tensor of one channel's shape, saves allocating the intermediate."""
    for c, sig in enumerate(sigmas):
        if sig is None:
            continue
        axes = [(ax, float(s)) for ax, s in enumerate(sig) if x.shape[ax + 1] > 1 and s > 0]
        if not axes:
            continue
        spare = scratch if scratch is not None else torch.empty_like(x[c])
        src, dst = x[c], spare
        for ax, s in axes:
            _blur_axis(src, ax, _gauss_taps(s, src.shape[ax]), dst)
            src, dst = dst, src
        if src.data_ptr() != x[c].data_ptr():
            x[c].copy_(src)
    return x


def multiply_(x: torch.Tensor, factors: Sequence[float | None]) -> torch.Tensor:
    """Multiplicative brightness per channel."""
    for c, f in enumerate(factors):
        if f is not None:
            x[c].mul_(float(f))
    return x


def contrast_(x: torch.Tensor, factors: Sequence[float | None]) -> torch.Tensor:
    """Scale each channel's deviations from its mean, then clip to its former range."""
    for c, f in enumerate(factors):
        if f is None:
            continue
        v = x[c]
        mean = float(v.mean())
        lo, hi = torch.aminmax(v)
        v.mul_(float(f)).add_(mean * (1 - float(f))).clamp_(float(lo), float(hi))
    return x


def low_resolution_(x: torch.Tensor, scales: Sequence[float | None], keep_axes: Sequence[int] = ()) -> torch.Tensor:
    """Downsample each chosen channel by `scale` (nearest) and back (linear): a coarser scanner.
    Axes in `keep_axes` keep their resolution."""
    spatial = x.shape[1:]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    for c, s in enumerate(scales):
        if s is None:
            continue
        small = [n if ax in keep_axes else max(1, round(n * float(s))) for ax, n in enumerate(spatial)]
        if list(small) == list(spatial):
            continue
        down = F.interpolate(x[c][None, None], size=small, mode="nearest-exact")
        x[c] = F.interpolate(down, size=tuple(spatial), mode=mode, align_corners=False)[0, 0]
    return x


def gamma_(x: torch.Tensor, gammas: Sequence[float | None], invert: bool = False) -> torch.Tensor:
    """Gamma on each channel rescaled to [0, 1], then mean and standard deviation restored.
    `invert` applies it to the negated channel (bright and dark swap roles)."""
    sign = -1.0 if invert else 1.0
    for c, g in enumerate(gammas):
        if g is None:
            continue
        v = x[c]
        mean, std = _stats(v)
        lo, hi = (float(t) for t in torch.aminmax(v))
        span = max(hi - lo, EPS)
        # to [0, 1]: (x - lo) / span, or for the inverted image (hi - x) / span
        v.mul_(sign / span).add_((-lo if sign > 0 else hi) / span).clamp_(0.0, 1.0)
        v.log_().mul_(float(g)).exp_()  # x ** g; twice as fast as pow_ on CPU, and 0 stays 0
        p_mean, p_std = _stats(v)
        k = sign * std / max(p_std, EPS)
        v.mul_(k).add_(mean - k * p_mean)
    return x


# -- random batch helpers (nnU-Net's sampling) ----------------------------------------------------------


def _chosen(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand(1, generator=gen)) < p


def gaussian_noise(x: torch.Tensor, gen: torch.Generator, p: float, variance: tuple[float, float]) -> torch.Tensor:
    """Noise with standard deviation drawn from `variance` (nnU-Net's name), one per sample."""
    x = x.clone()
    for i in range(x.shape[0]):
        if _chosen(gen, p):
            add_noise_(x[i], uniform(gen, *variance), draw_seed(gen))
    return x


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, p: float, sigma: tuple[float, float],
                  p_per_channel: float = 0.5) -> torch.Tensor:
    x = x.clone()
    dims = x.ndim - 2
    for i in range(x.shape[0]):
        if _chosen(gen, p):
            sig = [[uniform(gen, *sigma) for _ in range(dims)] if _chosen(gen, p_per_channel) else None
                   for _ in range(x.shape[1])]
            blur_(x[i], sig)
    return x


def brightness(x: torch.Tensor, gen: torch.Generator, p: float, rng: tuple[float, float]) -> torch.Tensor:
    x = x.clone()
    for i in range(x.shape[0]):
        if _chosen(gen, p):
            multiply_(x[i], [two_sided(gen, *rng) for _ in range(x.shape[1])])
    return x


def contrast(x: torch.Tensor, gen: torch.Generator, p: float, rng: tuple[float, float]) -> torch.Tensor:
    """Scale deviations from each channel's mean, keeping its range (as nnU-Net preserves it)."""
    x = x.clone()
    for i in range(x.shape[0]):
        if _chosen(gen, p):
            contrast_(x[i], [two_sided(gen, *rng) for _ in range(x.shape[1])])
    return x


def simulate_low_resolution(x: torch.Tensor, gen: torch.Generator, p: float, scale: tuple[float, float],
                            p_per_channel: float = 0.5, keep_axes: Sequence[int] = ()) -> torch.Tensor:
    x = x.clone()
    for i in range(x.shape[0]):
        if _chosen(gen, p):
            low_resolution_(x[i], [uniform(gen, *scale) if _chosen(gen, p_per_channel) else None
                                   for _ in range(x.shape[1])], keep_axes)
    return x


def gamma(x: torch.Tensor, gen: torch.Generator, p: float, rng: tuple[float, float],
          invert: bool = False) -> torch.Tensor:
    """Gamma on intensities rescaled to [0, 1] per channel, then mapped back (mean and std kept).
    `invert` applies it to the negated image (nnU-Net's inverted gamma)."""
    x = x.clone()
    for i in range(x.shape[0]):
        if _chosen(gen, p):
            gamma_(x[i], [two_sided(gen, *rng) for _ in range(x.shape[1])], invert=invert)
    return x


def augment_intensity(x: torch.Tensor, gen: torch.Generator, cfg: AugmentationConfig) -> torch.Tensor:
    """All intensity transforms of `cfg` (its probabilities and ranges) in nnU-Net's order, on a
    batch (N, C, *spatial)."""
    x = gaussian_noise(x, gen, cfg.noise_p, cfg.noise_std)
    x = gaussian_blur(x, gen, cfg.blur_p, cfg.blur_sigma, cfg.blur_p_per_channel)
    x = brightness(x, gen, cfg.brightness_p, cfg.brightness_range)
    x = contrast(x, gen, cfg.contrast_p, cfg.contrast_range)
    x = simulate_low_resolution(x, gen, cfg.lowres_p, cfg.lowres_scale, cfg.lowres_p_per_channel)
    x = gamma(x, gen, cfg.inverted_gamma_p, cfg.gamma_range, invert=True)
    x = gamma(x, gen, cfg.gamma_p, cfg.gamma_range)
    return x
