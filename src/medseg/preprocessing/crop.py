"""Crop to the region that holds data (non-zero in any channel), and undo it."""

from __future__ import annotations

import numpy as np


def nonzero_bbox(image: np.ndarray) -> list[tuple[int, int]]:
    """Bounding box [(start, stop), ...] per spatial axis of voxels non-zero in any channel.

    image: (C, *spatial). An image with no non-zero voxel keeps its full extent.
    """
    mask = np.any(image != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, mask.shape[axis]))
    return box


def crop(array: np.ndarray, bbox: list[tuple[int, int]]) -> np.ndarray:
    """Crop the trailing spatial axes of `array` to `bbox` (a view, no copy)."""
    lead = (slice(None),) * (array.ndim - len(bbox))
    return array[lead + tuple(slice(a, b) for a, b in bbox)]


def uncrop(array: np.ndarray, bbox: list[tuple[int, int]], shape: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """Place `array` (cropped trailing axes) back into a full array of spatial `shape`."""
    lead = array.shape[: array.ndim - len(bbox)]
    out = np.full(lead + tuple(shape), fill, dtype=array.dtype)
    out[(slice(None),) * len(lead) + tuple(slice(a, b) for a, b in bbox)] = array
    return out
