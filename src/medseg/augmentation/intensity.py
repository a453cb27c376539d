"""Intensity transforms on batches (N, C, *spatial), in torch, with sampled parameters.

Each transform draws its parameters from a `torch.Generator` per sample, so a seed
reproduces a batch exactly. Defaults follow nnU-Net v2's training pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _uniform(gen: torch.Generator, low: float, high: float, n: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chosen(gen: torch.Generator, p: float, n: int) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def _bshape(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.ndim - 1)


@dataclass
class IntensityConfig:
    noise_p: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    inverted_gamma_p: float = 0.1


def gaussian_noise(x: torch.Tensor, gen: torch.Generator, p: float, variance: tuple[float, float]) -> torch.Tensor:
    on = _chosen(gen, p, x.shape[0])
    if not on.any():
        return x
    sigma = _uniform(gen, *variance, x.shape[0]).sqrt() * on
    return x + torch.randn(x.shape, generator=gen) * sigma.view(_bshape(x))


def brightness(x: torch.Tensor, gen: torch.Generator, p: float, rng: tuple[float, float]) -> torch.Tensor:
    on = _chosen(gen, p, x.shape[0])
    factor = torch.where(on, _uniform(gen, *rng, x.shape[0]), torch.ones(x.shape[0]))
    return x * factor.view(_bshape(x))


def contrast(x: torch.Tensor, gen: torch.Generator, p: float, rng: tuple[float, float]) -> torch.Tensor:
    """Scale deviations from each channel's mean, keeping its range (as nnU-Net preserves it)."""
    on = _chosen(gen, p, x.shape[0])
    if not on.any():
        return x
    factor = torch.where(on, _uniform(gen, *rng, x.shape[0]), torch.ones(x.shape[0])).view(_bshape(x))
    dims = tuple(range(2, x.ndim))
    mean = x.mean(dims, keepdim=True)
    lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    return torch.minimum(torch.maximum((x - mean) * factor + mean, lo), hi)


def gamma(x: torch.Tensor, gen: torch.Generator, p: float, rng: tuple[float, float], invert: bool = False) -> torch.Tensor:
    """Gamma on intensities rescaled to [0, 1] per channel, then mapped back (mean and std kept).
    `invert` applies it to the negated image (nnU-Net's inverted gamma)."""
    on = _chosen(gen, p, x.shape[0])
    if not on.any():
        return x
    g = torch.empty(x.shape[0])
    for i in range(x.shape[0]):
        # Half the time below 1, half above: as often darker as brighter.
        if torch.rand(1, generator=gen) < 0.5 and rng[0] < 1:
            g[i] = _uniform(gen, rng[0], 1.0, 1)
        else:
            g[i] = _uniform(gen, max(rng[0], 1.0), rng[1], 1)
    dims = tuple(range(2, x.ndim))
    y = -x if invert else x
    mean, std = y.mean(dims, keepdim=True), y.std(dims, keepdim=True)
    lo, hi = y.amin(dims, keepdim=True), y.amax(dims, keepdim=True)
    unit = (y - lo) / (hi - lo).clamp_min(1e-7)
    out = unit.pow(g.view(_bshape(x))) * (hi - lo) + lo
    out = (out - out.mean(dims, keepdim=True)) / out.std(dims, keepdim=True).clamp_min(1e-7) * std + mean
    out = -out if invert else out
    return torch.where(on.view(_bshape(x)), out, x)


def augment_intensity(x: torch.Tensor, gen: torch.Generator, cfg: IntensityConfig) -> torch.Tensor:
    x = gaussian_noise(x, gen, cfg.noise_p, cfg.noise_variance)
    x = brightness(x, gen, cfg.brightness_p, cfg.brightness_range)
    x = contrast(x, gen, cfg.contrast_p, cfg.contrast_range)
    x = gamma(x, gen, cfg.inverted_gamma_p, cfg.gamma_range, invert=True)
    x = gamma(x, gen, cfg.gamma_p, cfg.gamma_range)
    return x
