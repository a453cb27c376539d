"""Surface distances between two binary masks: compute once, derive many.

`surface_distances` extracts the surface of each mask, measures, for every surface element,
the Euclidean distance (in millimetres, using the voxel spacing) to the nearest element of the
other surface, and returns both directions sorted, each element with its weight. HD95, the
Hausdorff distance, ASSD and the normalised surface Dice are small functions of that result.

Two definitions of "surface", because the field uses both and they give different numbers on
the same masks (docs/metrics.md shows both side by side):

``"surfel"`` (default)
    Surface elements as in DeepMind's ``surface-distance`` package. The mask is looked at
    through every 2x2x2 (2D: 2x2) block of voxels; a block whose voxels are neither all inside
    nor all outside holds a piece of the marching-cubes (marching-squares) surface through
    the mid-points of its edges. Each such block is one surface point, placed at the block's
    centre (a voxel corner), and weighted by the area (2D: length) of its surface piece in
    mm^2 (mm). Percentiles are area-weighted; see `percentile_distance`.
``"voxel"``
    Boundary voxels as in MONAI (``get_mask_edges`` without sub-voxels): foreground voxels
    with at least one face neighbour (6-connectivity in 3D, 4 in 2D) outside the mask or
    outside the image. Each boundary voxel weighs 1. Percentiles interpolate linearly
    between order statistics (``numpy.quantile``/``torch.quantile``).

Empty masks: if both masks are empty there is no surface and every metric is NaN. If exactly
one is empty, the other's distances are all ``inf`` (there is nothing to reach): HD, HD95 and
ASSD are ``inf`` and NSD is 0. Callers that need finite numbers substitute a documented cap
(`medseg.evaluation.metrics` uses the image diagonal).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

SURFACE_METHODS = ("surfel", "voxel")


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances between the surfaces of a predicted and a reference mask.

    pred_to_ref: distance (mm) from each prediction surface element to the reference surface,
        sorted ascending; ``inf`` everywhere if the reference is empty.
    pred_weights: weight of each of those elements, in the same order: surfel area (mm^2 in
        3D, contour length in mm in 2D) for ``"surfel"``, 1 for ``"voxel"``.
    ref_to_pred, ref_weights: the same from the reference towards the prediction.
    method: ``"surfel"`` or ``"voxel"``; it decides how percentiles are taken.
    """

    pred_to_ref: np.ndarray
    pred_weights: np.ndarray
    ref_to_pred: np.ndarray
    ref_weights: np.ndarray
    method: str

    @property
    def both_empty(self) -> bool:
        return self.pred_to_ref.size == 0 and self.ref_to_pred.size == 0


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], method: str = "surfel"
) -> SurfaceDistances:
    """Surface distances between two binary masks of one grid (2D or 3D).

    pred, ref: boolean (or 0/1) arrays of equal shape, axes (z, y, x) or (y, x).
    spacing: voxel size per axis in mm, same order as the arrays.
    method: ``"surfel"`` (DeepMind surface elements) or ``"voxel"`` (MONAI boundary voxels).

    Only the bounding box of ``pred | ref`` plus a one-voxel margin is processed, and the
    nearest-neighbour search runs over surface points only (a k-d tree), so the cost follows
    the size of the surfaces, not of the image.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {pred.ndim}D")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not fit {pred.ndim}D masks")
    if method not in SURFACE_METHODS:
        raise ValueError(f"unknown surface method {method!r}; use one of {', '.join(SURFACE_METHODS)}")

    empty = np.zeros(0)
    box = bounding_box(pred | ref)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty, method)
    # One voxel of zeros on every side: surfaces at the box (or image) border stay closed.
    pad_pred = np.pad(pred[box], 1)
    pad_ref = np.pad(ref[box], 1)
    if method == "surfel":
        table = surfel_measure_table(spacing)
        pts_pred, w_pred = _surfels(pad_pred, table)
        pts_ref, w_ref = _surfels(pad_ref, table)
    else:
        pts_pred = _boundary_voxels(pad_pred)
        pts_ref = _boundary_voxels(pad_ref)
        w_pred = np.ones(len(pts_pred))
        w_ref = np.ones(len(pts_ref))

    scale = np.asarray(spacing)
    d_pred = _nearest_distances(pts_pred * scale, pts_ref * scale)
    d_ref = _nearest_distances(pts_ref * scale, pts_pred * scale)
    d_pred, w_pred = _sorted(d_pred, w_pred)
    d_ref, w_ref = _sorted(d_ref, w_ref)
    return SurfaceDistances(d_pred, w_pred, d_ref, w_ref, method)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box (tuple of slices) holding every True voxel, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other) if other else mask)
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


# ----------------------------------------------------------------------------- derived metrics

def hausdorff(sd: SurfaceDistances) -> float:
    """Maximum (symmetric) Hausdorff distance in mm: the larger of the two directed maxima."""
    if sd.both_empty:
        return math.nan
    return float(max(_directed_max(sd.pred_to_ref), _directed_max(sd.ref_to_pred)))


def hd95(sd: SurfaceDistances) -> float:
    """95th-percentile Hausdorff distance in mm (see `percentile_distance`)."""
    return percentile_distance(sd, 95.0)


def percentile_distance(sd: SurfaceDistances, percent: float) -> float:
    """Robust Hausdorff distance: the larger of the two directed `percent`-th percentiles.

    Both definitions take the maximum of the two directed percentiles (not one percentile of
    the pooled distances). ``"surfel"``: the smallest sorted distance whose cumulative share of
    surface area reaches `percent` (DeepMind). ``"voxel"``: linear interpolation between the
    sorted boundary-voxel distances (MONAI, ``torch.quantile``). A direction whose source
    surface is empty contributes ``inf`` (surfel) as in DeepMind's package; with both surfaces
    empty the result is NaN.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    if sd.both_empty:
        return math.nan
    if sd.pred_to_ref.size == 0 or sd.ref_to_pred.size == 0:
        return math.inf
    if sd.method == "surfel":
        values = [_weighted_percentile(d, w, percent)
                  for d, w in ((sd.pred_to_ref, sd.pred_weights), (sd.ref_to_pred, sd.ref_weights))]
    else:
        values = [_interpolated_percentile(d, percent) for d in (sd.pred_to_ref, sd.ref_to_pred)]
    return float(max(values))


def average_distances(sd: SurfaceDistances) -> tuple[float, float]:
    """Directed average surface distances in mm: (prediction -> reference, reference -> prediction).

    Weighted by surfel area (``"surfel"``) or plain means over boundary voxels (``"voxel"``).
    A direction whose source surface is empty is NaN; towards an empty surface it is ``inf``.
    """
    return (_weighted_mean(sd.pred_to_ref, sd.pred_weights),
            _weighted_mean(sd.ref_to_pred, sd.ref_weights))


def assd(sd: SurfaceDistances) -> float:
    """Average symmetric surface distance in mm: the weighted mean of both directions pooled.

    ``(sum(d_pred * w_pred) + sum(d_ref * w_ref)) / (sum(w_pred) + sum(w_ref))``. With unit
    weights (``"voxel"``) this is MONAI's ``compute_average_surface_distance(symmetric=True)``.
    It differs from the plain mean of the two directed averages when the surfaces differ in size.
    NaN if both masks are empty, ``inf`` if exactly one is.
    """
    if sd.both_empty:
        return math.nan
    d = np.concatenate([sd.pred_to_ref, sd.ref_to_pred])
    w = np.concatenate([sd.pred_weights, sd.ref_weights])
    return _weighted_mean(d, w)


def nsd(sd: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalised surface Dice at `tolerance_mm`: the share of both surfaces within tolerance.

    ``(sum(w_pred[d_pred <= t]) + sum(w_ref[d_ref <= t])) / (sum(w_pred) + sum(w_ref))``,
    surfel-area weighted (DeepMind ``compute_surface_dice_at_tolerance``) or counted over
    boundary voxels (MONAI ``compute_surface_dice``). In [0, 1]; 0 if exactly one mask is
    empty, NaN if both are.
    """
    if tolerance_mm < 0 or not math.isfinite(tolerance_mm):
        raise ValueError(f"tolerance must be a finite, non-negative number of mm, got {tolerance_mm}")
    total = float(sd.pred_weights.sum() + sd.ref_weights.sum())
    if total == 0:
        return math.nan
    close = (sd.pred_weights[sd.pred_to_ref <= tolerance_mm].sum()
             + sd.ref_weights[sd.ref_to_pred <= tolerance_mm].sum())
    return float(close / total)


def _directed_max(d: np.ndarray) -> float:
    return float(d[-1]) if d.size else -math.inf


def _weighted_mean(d: np.ndarray, w: np.ndarray) -> float:
    total = float(w.sum())
    if total == 0:
        return math.nan
    if np.isinf(d).any():
        return math.inf
    return float(np.dot(d, w) / total)


def _weighted_percentile(d: np.ndarray, w: np.ndarray, percent: float) -> float:
    share = np.cumsum(w) / np.sum(w)
    idx = int(np.searchsorted(share, percent / 100.0))
    return float(d[min(idx, d.size - 1)])


def _interpolated_percentile(d: np.ndarray, percent: float) -> float:
    return float(np.quantile(d, percent / 100.0))


# ----------------------------------------------------------------------------- surface extraction

def _nearest_distances(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest target point (inf when there are no targets)."""
    if len(points) == 0:
        return np.zeros(0)
    if len(targets) == 0:
        return np.full(len(points), np.inf)
    return cKDTree(targets, leafsize=32, balanced_tree=False).query(points, k=1)[0]


def _sorted(d: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Sort by distance, then weight: the order of DeepMind's sorted (distance, area) pairs, so
    # cumulative sums, and hence percentiles, see the elements in the same order.
    order = np.lexsort((w, d))
    return d[order], w[order]


def _boundary_voxels(padded: np.ndarray) -> np.ndarray:
    """Indices of foreground voxels with a face neighbour in the background (zero-padded input)."""
    core = tuple(slice(1, -1) for _ in range(padded.ndim))
    inner = padded[core].copy()
    for axis in range(padded.ndim):
        for step in (-1, 1):
            shifted = list(core)
            shifted[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            inner &= padded[tuple(shifted)]
    boundary = padded[core] & ~inner
    return np.argwhere(boundary).astype(np.float64)


def _surfels(padded: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (block indices) and their surfel areas for a zero-padded mask."""
    codes = neighbour_codes(padded)
    on_surface = (codes != 0) & (codes != len(table) - 1)
    idx = np.nonzero(on_surface)
    return np.stack(idx, axis=1).astype(np.float64), table[codes[idx]]


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Code of every 2x2x2 (2D: 2x2) block of `mask`, one bit per block corner.

    Output shape is the input's minus one per axis; corner offset (a, b, c) sets bit
    ``7 - (4a + 2b + c)`` (2D: ``3 - (2a + b)``), the bit order of DeepMind's kernel.
    """
    ndim = mask.ndim
    m = mask.astype(np.uint8)
    out_shape = tuple(s - 1 for s in m.shape)
    codes = np.zeros(out_shape, dtype=np.uint8)
    for corner in itertools.product((0, 1), repeat=ndim):
        window = tuple(slice(c, c + n) for c, n in zip(corner, out_shape))
        codes |= m[window] << np.uint8(_corner_bit(corner))
    return codes


def _corner_bit(corner: Sequence[int]) -> int:
    n = len(corner)
    return (2 ** n - 1) - sum(c << (n - 1 - i) for i, c in enumerate(corner))


@functools.lru_cache(maxsize=64)
def surfel_measure_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Surface measure of each block code for this spacing (mm^2 per surfel in 3D, mm in 2D).

    Index ``2**(2**ndim) - 1`` (all corners inside) and 0 (all outside) hold 0.
    """
    ndim = len(spacing)
    scale = np.asarray(spacing, dtype=np.float64)
    facets = _unit_facets(ndim)
    table = np.zeros(2 ** (2 ** ndim))
    for code, pieces in enumerate(facets):
        if pieces.size == 0:
            continue
        v = pieces * scale  # (n, ndim, ndim) vertices in mm
        if ndim == 2:
            table[code] = np.linalg.norm(v[:, 1] - v[:, 0], axis=1).sum()
        else:
            table[code] = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum()
    return table


# ----------------------------------------------------------------------------- block triangulation
#
# The surface piece inside one block is built, not looked up. Corners are the block's 2**ndim
# voxel centres; the surface passes through the mid-point of every block edge whose two corners
# differ. Each face (2D: the square itself) contributes segments joining those mid-points; on a
# face whose two inside corners sit on a diagonal, each inside corner is cut off by its own
# segment. The segments close into loops (3D), and a loop is split into triangles fanned from
# the vertex that leaves the fewest distinct facet orientations, so a non-planar pentagon or
# hexagon is cut into its planar parts. For more than half the corners inside, the complement (same
# surface) is used. This reproduces the surface areas of DeepMind's marching-cubes table for all
# 256 codes (tests/evaluation check it against the package for anisotropic spacings).

@functools.lru_cache(maxsize=2)
def _unit_facets(ndim: int) -> tuple[np.ndarray, ...]:
    """Per code: segments (n, 2, 2) in 2D or triangles (n, 3, 3) in 3D, unit block coordinates."""
    corners = list(itertools.product((0, 1), repeat=ndim))
    out = []
    for code in range(2 ** len(corners)):
        inside = {c for c in corners if code >> _corner_bit(c) & 1}
        if len(inside) > len(corners) // 2:
            inside = set(corners) - inside
        segments = _face_segments(inside, ndim)
        if ndim == 2:
            pieces = [[_midpoint(a), _midpoint(b)] for a, b in segments]
        else:
            pieces = [tri for loop in _loops(segments) for tri in _fan(loop)]
        out.append(np.asarray(pieces, dtype=np.float64).reshape(-1, ndim, ndim))
    return tuple(out)


def _faces(ndim: int) -> list[list[tuple[int, ...]]]:
    """The block's square faces, each as its four corners in cyclic order."""
    cycle = [(0, 0), (0, 1), (1, 1), (1, 0)]
    if ndim == 2:
        return [cycle]
    faces = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for level in (0, 1):
            ring = []
            for u, v in cycle:
                c = [0, 0, 0]
                c[axis], c[others[0]], c[others[1]] = level, u, v
                ring.append(tuple(c))
            faces.append(ring)
    return faces


def _face_segments(inside: set, ndim: int) -> list[tuple[tuple, tuple]]:
    """Segments (pairs of edges, each edge a sorted corner pair) of the surface on each face."""
    segments = []
    for ring in _faces(ndim):
        edges = [tuple(sorted((ring[i], ring[(i + 1) % 4]))) for i in range(4)]
        crossing = [e for e in edges if (e[0] in inside) != (e[1] in inside)]
        if len(crossing) == 2:
            segments.append((crossing[0], crossing[1]))
        elif len(crossing) == 4:
            for i, corner in enumerate(ring):
                if corner in inside:
                    segments.append((edges[i - 1], edges[i]))
    return segments


def _loops(segments: list[tuple[tuple, tuple]]) -> list[list[tuple]]:
    neighbours: dict[tuple, list[tuple]] = {}
    for a, b in segments:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    seen: set = set()
    loops = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, current = [start], start
        seen.add(start)
        while True:
            nxt = [n for n in neighbours[current] if n not in seen]
            if not nxt:
                break
            current = nxt[0]
            loop.append(current)
            seen.add(current)
        loops.append(loop)
    return loops


def _midpoint(edge: tuple[tuple, tuple]) -> list[float]:
    return [(a + b) / 2 for a, b in zip(*edge)]


def _fan(loop: list[tuple]) -> list[list[list[float]]]:
    points = [_midpoint(e) for e in loop]
    best, fewest = None, None
    for start in range(len(points)):
        p = points[start:] + points[:start]
        tris = [[p[0], p[i], p[i + 1]] for i in range(1, len(p) - 1)]
        orientations = _count_orientations(tris)
        if fewest is None or orientations < fewest:
            best, fewest = tris, orientations
    return best


def _count_orientations(tris: list) -> int:
    normals: list[np.ndarray] = []
    for a, b, c in tris:
        n = np.cross(np.subtract(b, a), np.subtract(c, a))
        n = n / np.linalg.norm(n)
        if not any(abs(abs(float(n @ m)) - 1) < 1e-9 for m in normals):
            normals.append(n)
    return len(normals)
