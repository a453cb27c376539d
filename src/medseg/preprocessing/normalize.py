"""Intensity normalisation per channel.

CT: clip to the dataset's foreground 0.5 / 99.5 percentiles, then z-score with the
foreground mean and standard deviation (values in HU mean the same in every scan).
Anything else (MR, ...): z-score per image, since its intensities have no fixed unit.
"""

from __future__ import annotations

import numpy as np


def scheme_for_channel(channel_name: str) -> str:
    """'ct' for channels named CT, else 'zscore'."""
    return "ct" if channel_name.strip().lower() == "ct" else "zscore"


def normalize_ct(x: np.ndarray, p005: float, p995: float, mean: float, std: float) -> np.ndarray:
    out = np.clip(x, p005, p995).astype(np.float32, copy=False)
    out -= np.float32(mean)
    out /= np.float32(max(std, 1e-8))
    return out


def normalize_zscore(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32, copy=True)
    mean = float(out.mean())
    std = float(out.std())
    out -= mean
    out /= max(std, 1e-8)
    return out


def normalize(image: np.ndarray, schemes: list[str], intensity: list[dict]) -> np.ndarray:
    """Normalise (C, *spatial) with one scheme per channel; `intensity` holds the
    fingerprint's foreground statistics per channel (used by 'ct')."""
    out = np.empty(image.shape, dtype=np.float32)
    for c, scheme in enumerate(schemes):
        if scheme == "ct":
            st = intensity[c]
            out[c] = normalize_ct(image[c], st["percentile_00_5"], st["percentile_99_5"], st["mean"], st["std"])
        elif scheme == "zscore":
            out[c] = normalize_zscore(image[c])
        else:
            raise ValueError(f"unknown normalisation scheme {scheme!r}")
    return out
