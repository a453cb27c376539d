"""One case as the report shows it: image, reference and prediction on one grid.

`load_case` reads the three files (the image is optional), `viewer_payload` turns a case into
what the page's slice viewer decodes (a display window applied to the image, the grid
subsampled to a voxel budget, the three uint8 volumes deflated and base64-encoded), and
`write_overlay_png` draws one axial slice with reference outlines and prediction fills for
papers. Volumes are (z, y, x); a 2D case is a volume of one slice.
"""

from __future__ import annotations

import base64
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.image import read_image
from medseg.utils.files import atomic_path

# Class colours, bright enough to read on a grey image; class value v takes PALETTE[(v - 1) % len].
PALETTE = ("#ff5e3a", "#2ee86f", "#3da5ff", "#ffd23f", "#c77dff", "#ff4fa3", "#3ee0e6", "#b5f23d",
           "#ff9f1c", "#8f9bff")


def class_color(value: int) -> str:
    return PALETTE[(int(value) - 1) % len(PALETTE)]


@dataclass
class CaseVolume:
    """image: (z, y, x) float32 or None; ref, pred: (z, y, x) integer label maps; spacing in mm."""

    case_id: str
    image: np.ndarray | None
    ref: np.ndarray
    pred: np.ndarray
    spacing: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)


def load_case(case_id: str, pred_path: Path, ref_path: Path, image_path: Path | None) -> CaseVolume:
    """Read a case. Raises `MedsegError` when the prediction or reference cannot be shown."""
    ref_img = read_image(ref_path)
    pred_img = read_image(pred_path)
    if pred_img.shape != ref_img.shape:
        raise MedsegError(f"prediction shape {pred_img.shape} differs from reference shape {ref_img.shape}", pred_path)
    ref, pred = _as_volume(_labels(ref_img.array, ref_path)), _as_volume(_labels(pred_img.array, pred_path))
    spacing = tuple(ref_img.spacing) if ref_img.ndim == 3 else (1.0,) + tuple(ref_img.spacing)
    notes = []
    image = None
    if image_path is None:
        notes.append("image not found: labels are shown on black")
    else:
        img = read_image(image_path)
        if img.shape != ref_img.shape:
            notes.append(f"image {image_path.name} has shape {img.shape}, the reference {ref_img.shape}: "
                         f"labels are shown on black")
        else:
            image = _as_volume(np.asarray(img.array, dtype=np.float32))
    return CaseVolume(case_id, image, ref, pred, spacing, notes)


def _labels(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise MedsegError("label map holds non-integer values", path)
        a = a.astype(np.int32)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise MedsegError("label values outside 0..255 cannot be shown", path)
    return a.astype(np.uint8)


def _as_volume(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a


def ct_window(foreground: dict) -> tuple[float, float]:
    """A CT soft-tissue window from the fingerprint's foreground intensity statistics: at least
    400 HU wide around the foreground median, widened to the 0.5-99.5 percentiles."""
    med = float(foreground.get("median", 40.0))
    lo = min(float(foreground.get("percentile_00_5", med)), med - 200.0)
    hi = max(float(foreground.get("percentile_99_5", med)), med + 200.0)
    return lo, hi


def display_window(image: np.ndarray) -> tuple[float, float]:
    """Intensities mapped to black and white for a non-CT case: the 0.5-99.5 percentiles of its
    non-zero voxels (of all voxels if none is non-zero)."""
    values = image[image != 0]
    if values.size == 0:
        values = image.ravel()
    if values.size > 2_000_000:
        values = values[:: values.size // 1_000_000]
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def to_uint8(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    scaled = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def subsample_indices(shape: tuple[int, ...], max_side: int, max_voxels: int) -> list[np.ndarray]:
    """Evenly spaced indices per axis so that no axis exceeds `max_side` and the grid holds at
    most `max_voxels` voxels (the largest axis shrinks first). Identity when the grid fits."""
    sizes = [min(int(n), max_side) for n in shape]
    while math.prod(sizes) > max_voxels:
        i = int(np.argmax(sizes))
        if sizes[i] <= 1:
            break
        sizes[i] = max(1, int(sizes[i] * 0.9))
    return [np.unique(np.rint(np.linspace(0, n - 1, m)).astype(np.int64)) for n, m in zip(shape, sizes)]


def start_point(ref: np.ndarray, pred: np.ndarray) -> list[int]:
    """Where the viewer opens: the centroid of the disagreeing voxels, else of the foreground,
    else the centre, then moved onto the nearest voxel that shows something."""
    for mask in (ref != pred, (ref > 0) | (pred > 0)):
        idx = np.argwhere(mask)
        if idx.size:
            centre = idx.mean(axis=0)
            nearest = idx[np.argmin(((idx - centre) ** 2).sum(axis=1))]
            return [int(v) for v in nearest]
    return [int(n) // 2 for n in ref.shape]


def viewer_payload(case: CaseVolume, window: tuple[float, float] | None, max_side: int,
                   max_voxels: int) -> tuple[dict, str]:
    """(spec, base64 text) for the page's viewer: the bytes are image (if any), reference and
    prediction as uint8 volumes of `spec["shape"]`, one after the other, zlib-deflated."""
    shape = case.ref.shape
    index = subsample_indices(shape, max_side, max_voxels)
    grid = np.ix_(*index)
    ref, pred = case.ref[grid], case.pred[grid]
    parts = []
    if case.image is not None:
        parts.append(to_uint8(case.image[grid], window or display_window(case.image)).tobytes())
    parts += [np.ascontiguousarray(ref).tobytes(), np.ascontiguousarray(pred).tobytes()]
    data = base64.b64encode(zlib.compress(b"".join(parts), 6)).decode("ascii")
    sub = [len(i) for i in index]
    spacing = [s * n / m for s, n, m in zip(case.spacing, shape, sub)]
    notes = list(case.notes)
    if tuple(sub) != tuple(shape):
        notes.append(f"shown on a {' x '.join(map(str, sub))} subsample of the {' x '.join(map(str, shape))} "
                     f"voxel grid (evenly spaced slices, nearest voxel) to keep the page small")
    spec = {
        "id": case.case_id,
        "shape": sub,
        "spacing": [round(s, 5) for s in spacing],
        "full_shape": list(shape),
        "index": None if tuple(sub) == tuple(shape) else [i.tolist() for i in index],
        "has_image": case.image is not None,
        "start": start_point(ref, pred),
        "notes": notes,
    }
    return spec, data


def worst_slice(ref: np.ndarray, pred: np.ndarray) -> int:
    """The axial slice with the most voxels whose predicted label differs from the reference."""
    errors = (ref != pred).reshape(ref.shape[0], -1).sum(axis=1)
    if errors.max(initial=0) == 0:
        return best_slice(ref, pred)
    return int(np.argmax(errors))


def best_slice(ref: np.ndarray, pred: np.ndarray) -> int:
    """The axial slice that best shows a good result: among the slices whose reference holds the
    most classes, those with at least half the largest reference foreground area; of these the
    one with the highest foreground Dice (label-wise agreement over both foregrounds)."""
    flat_r, flat_p = ref.reshape(ref.shape[0], -1), pred.reshape(pred.shape[0], -1)
    area = (flat_r > 0).sum(axis=1)
    if area.max(initial=0) == 0:
        return int(np.argmax((flat_p > 0).sum(axis=1))) if pred.any() else ref.shape[0] // 2
    n_classes = np.array([np.unique(row[row > 0]).size for row in flat_r])
    eligible = n_classes == n_classes.max()
    eligible &= area >= 0.5 * area[eligible].max()
    agree = ((flat_r == flat_p) & (flat_r > 0)).sum(axis=1)
    dice = 2 * agree / np.maximum(area + (flat_p > 0).sum(axis=1), 1)
    dice[~eligible] = -1
    return int(np.argmax(dice))


def write_overlay_png(case: CaseVolume, z: int, window: tuple[float, float] | None, labels: dict[str, int],
                      path: Path, title: str) -> None:
    """One axial slice: image in grey, reference as solid outlines, prediction as translucent
    fills, one colour per class, a legend; physical aspect ratio; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ref, pred = case.ref[z], case.pred[z]
    ny, nx = ref.shape
    _, sy, sx = case.spacing
    extent = (0, nx * sx, ny * sy, 0)
    fig_w = 5.0
    fig_h = min(max(fig_w * (ny * sy) / (nx * sx), 2.0), 9.0) + 0.9
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    if case.image is not None:
        lo, hi = window or display_window(case.image)
        ax.imshow(case.image[z], cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="bilinear")
    else:
        ax.imshow(np.zeros((ny, nx)), cmap="gray", vmin=0, vmax=1, extent=extent)
    overlay = np.zeros((ny, nx, 4))
    xs, ys = (np.arange(nx) + 0.5) * sx, (np.arange(ny) + 0.5) * sy
    handles = []
    for name, value in labels.items():
        rgb = to_rgb(class_color(value))
        overlay[pred == value] = (*rgb, 0.45)
        mask = (ref == value).astype(np.float32)
        if mask.any() and not mask.all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax.contour(xs, ys, mask, levels=[0.5], colors=[rgb], linewidths=1.6)
        handles.append(Patch(facecolor=(*rgb, 0.45), edgecolor=rgb, label=name))
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    handles += [Line2D([], [], color="0.25", lw=1.6, label="reference: outline"),
                Patch(facecolor=(0.5, 0.5, 0.5, 0.45), edgecolor="none", label="prediction: fill")]
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(4, len(handles)),
                    fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
