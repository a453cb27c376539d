"""Synthetic CT-like phantoms: the embedded default dataset.

`make_phantoms(out_dir)` writes a small, deterministic dataset in the nnU-Net v2 raw layout
(``dataset.json``, ``imagesTr/phantom_XXX_0000.nii.gz`` in int16 HU, ``labelsTr/phantom_XXX.nii.gz``
in uint8) that a network can learn on a CPU in minutes, yet that a global intensity threshold
cannot solve. `make_phantom_case` builds one case in memory.

What a case holds (sizes at ``shape_scale=1``; all lengths scale with ``shape_scale``):

- an anisotropic grid: 22-30 slices of 2.5-3.0 mm, 96-128 x 96-128 in-plane voxels of
  0.75-0.85 mm, a non-zero origin and identity direction;
- air (-1000 HU) around an elliptical body whose rim is a 3-6 mm fat layer (-120 to -80 HU)
  over a 3-5 mm muscle wall; inside, soft tissue (34-44 HU) with a smooth texture and patches
  of visceral fat;
- a bright spine-like column (cancellous 200-300 HU, cortical shell 550-700 HU, with darker
  discs every 25-32 mm) flanked by two paraspinal muscles, a vessel-like tube in front of it,
  an oblique vessel crossing the slices and three or four small blobs; muscles, vessels and
  blobs are about as bright as the organ, so a threshold picks them up too;
- label 1, "organ": a smoothly deformed ellipsoid (65-80 HU, at least 28 HU above the soft
  tissue) of random size, orientation and position, semi-axes 16-30 mm, kept 3 mm clear of
  its neighbours;
- label 2, "lesion": a smaller deformed ellipsoid strictly inside the organ (never touching
  anything else), 30-40 HU darker (so in the range of soft tissue; even case numbers) or
  brighter (odd case numbers) than it, semi-axes 8-12 mm (capped to 0.62 of the organ's
  smallest), spanning 6-9 slices;
- a slight partial-volume blur, a smooth additive bias field (peak 5-10 HU), and Gaussian
  noise of 10-11.5 HU.

The best global intensity band, even chosen per case knowing the answer, reaches an organ
Dice of only about 0.4 on average (below 0.6 in every case tried).

Every case draws from its own random generator derived from ``(seed, case index)``, so a case
is the same whichever number of cases is generated, and the same seed gives byte-identical
arrays.

Two variants exercise nnU-Net v2's label features on the same images:

- ``regions=True``: dataset.json declares regions, ``"organ": [1, 2]`` (the organ with its
  lesion) and ``"lesion": [2]``, with ``"regions_class_order": [1, 2]``; label files are as usual.
- ``ignore=True``: ``"ignore": 3`` is declared, and in every label map a slab across x (the
  middle eighth of the columns, all slices and rows) holds 3: unannotated voxels through the
  middle of the body, usually a quarter to a half of the organ.

Two more change the geometry, for planning (the default is unchanged by them):

- ``spacing=(z, y, x)`` centres each case's spacing there (mm) instead of about
  (2.75, 0.8, 0.8), keeping the default's relative spread (z within +-9 %, in-plane +-6 %).
  The voxel counts scale inversely, so the field of view and the anatomy keep their size in
  millimetres: ``spacing=(1, 1, 1)`` gives about 72 x 90 x 90 voxels of 1 mm.
- ``spatial_dims=2`` keeps one axial slice per case, the one with the most lesion voxels (so
  every 2D case holds both labels), as a 2D image of spacing (y, x).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.io.image import Image, write_image
from medseg.utils.files import read_json, write_json

__all__ = ["make_phantoms", "make_phantom_case", "case_rng", "ignore_slab", "PHANTOM_LABELS", "PHANTOM_REGIONS",
           "IGNORE_VALUE", "GENERATOR_VERSION"]

PHANTOM_LABELS = {"background": 0, "organ": 1, "lesion": 2}
PHANTOM_REGIONS = {"background": 0, "organ": [1, 2], "lesion": [2]}
IGNORE_VALUE = 3
# Bumped whenever the same seed would start to give different arrays.
GENERATOR_VERSION = 1
# The centre of the default spacing ranges (z, y, x) in mm; `spacing=` rescales around it.
_DEFAULT_SPACING = (2.75, 0.8, 0.8)
_FILE_ENDING = ".nii.gz"
_CASE_RE = re.compile(r"^phantom_(\d+)(_0000)?\.nii\.gz$")


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of case `index` of a dataset made with `seed`."""
    if seed < 0 or index < 0:
        raise MedsegError(f"seed and case index must be non-negative, got seed {seed}, index {index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), GENERATOR_VERSION]))


def make_phantom_case(
    rng_or_seed: int | np.random.Generator,
    shape_scale: float = 1.0,
    *,
    index: int = 0,
    lesion_darker: bool | None = None,
    spacing: tuple[float, float, float] | None = None,
    spatial_dims: int = 3,
) -> tuple[Image, Image]:
    """One synthetic case: ``(image, label)``, both with identical geometry.

    rng_or_seed: a `numpy.random.Generator` (used as is), or an integer dataset seed, in which
        case the result is exactly case `index` of ``make_phantoms(..., seed=rng_or_seed)``.
    shape_scale: multiplies the voxel counts (and every anatomical length with them) while
        keeping the spacing; 2.0 gives volumes about twice as large along each axis.
    lesion_darker: whether the lesion is darker than the organ (True) or brighter (False).
        By default it follows the case index when a seed is given (even: darker, odd:
        brighter, so any run of consecutive cases holds both kinds in equal measure) and is
        drawn at random when a Generator is given.
    spacing: the centre spacing (z, y, x) in mm (module docstring); None keeps the default
        ranges.
    spatial_dims: 3 for volumes; 2 for one axial slice per case, with spacing (y, x).

    The image is int16 Hounsfield-like units; the label is uint8 with 0 background,
    1 organ, 2 lesion (every case has all three).
    """
    if isinstance(rng_or_seed, np.random.Generator):
        rng = rng_or_seed
    elif isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool):
        rng = case_rng(int(rng_or_seed), index)
        if lesion_darker is None:
            lesion_darker = index % 2 == 0
    else:
        raise TypeError(f"rng_or_seed must be an int or numpy Generator, got {type(rng_or_seed).__name__}")
    if not shape_scale > 0:
        raise MedsegError(f"shape_scale must be positive, got {shape_scale}")
    spacing = _check_variant(spacing, spatial_dims)
    image, label = _Phantom(rng, float(shape_scale), lesion_darker, spacing).build()
    return _axial_slice(image, label) if spatial_dims == 2 else (image, label)


def _check_variant(spacing: tuple[float, float, float] | None, spatial_dims: int) -> tuple[float, ...] | None:
    if spatial_dims not in (2, 3):
        raise MedsegError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if spacing is None:
        return None
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise MedsegError(f"spacing must be three positive millimetre values (z, y, x), got {spacing!r}")
    return values


def _axial_slice(image: Image, label: Image) -> tuple[Image, Image]:
    """The slice with the most lesion voxels (then the most organ voxels) as 2D images of
    spacing (y, x); the origin keeps the volume's in-plane position."""
    counts = [(int(np.sum(sl == 2)), int(np.sum(sl == 1))) for sl in label.array]
    k = max(range(len(counts)), key=lambda i: counts[i])
    spacing, origin = image.spacing[1:], image.origin[:2]  # origin is in ITK (x, y, z) order
    return Image(image.array[k].copy(), spacing, origin, ()), Image(label.array[k].copy(), spacing, origin, ())


def make_phantoms(out_dir: str | Path, cases: int = 8, seed: int = 0, shape_scale: float = 1.0, *,
                  regions: bool = False, ignore: bool = False, spacing: tuple[float, float, float] | None = None,
                  spatial_dims: int = 3) -> Path:
    """Write `cases` phantoms and their dataset.json to `out_dir`; return `out_dir`.

    `out_dir` may be missing, empty, or an earlier phantom dataset (which is overwritten,
    including removing phantom cases beyond `cases`); any other non-empty folder is refused
    rather than mixed with. `regions` declares the organ and lesion as nested regions;
    `ignore` marks a slab of every label map with the ignore label 3 (module docstring).
    `spacing` and `spatial_dims` change the geometry (module docstring); the dataset.json
    records them when they differ from the default.
    """
    out = Path(out_dir)
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise MedsegError(f"number of cases must be a positive integer, got {cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MedsegError(f"seed must be a non-negative integer, got {seed!r}")
    if not shape_scale > 0:
        raise MedsegError(f"shape_scale must be positive, got {shape_scale}")
    spacing = _check_variant(spacing, spatial_dims)
    if out.exists() and not out.is_dir():
        raise MedsegError("exists and is not a folder", out)
    _check_target(out)

    width = max(3, len(str(cases - 1)))
    ids = [f"phantom_{i:0{width}d}" for i in range(cases)]
    for i, case_id in enumerate(ids):
        image, label = make_phantom_case(int(seed), shape_scale, index=i, spacing=spacing,
                                         spatial_dims=spatial_dims)
        if ignore:
            label = Image(ignore_slab(label.array), label.spacing, label.origin, label.direction)
        write_image(image, out / "imagesTr" / f"{case_id}_0000{_FILE_ENDING}")
        write_image(label, out / "labelsTr" / f"{case_id}{_FILE_ENDING}")
    _remove_stale(out, set(ids))

    variant, grid = {}, "anisotropic volume (about 0.8 x 0.8 mm in-plane, 2.5-3.0 mm slices)"
    if spacing is not None:
        variant["spacing"] = list(spacing)
        grid = "volume (spacing about {} mm, z y x)".format(" x ".join(f"{v:g}" for v in spacing))
    if spatial_dims == 2:
        variant["spatial_dims"] = 2
        grid = "axial slice through the lesion, from a " + grid
    arguments = "".join(f", {k}={tuple(v) if isinstance(v, list) else v}" for k, v in variant.items())
    write_json(out / "dataset.json", {
        "name": "Phantoms",
        "description": (
            "Synthetic CT-like phantoms generated by medseg (medseg.data.phantoms). Each case is an "
            f"{grid} of air around an "
            "elliptical body with fat and muscle rims, soft tissue with fat patches, a spine-like bone "
            "column with paraspinal muscles, vessel-like tubes and blobs as bright as the organ, a "
            "smoothly deformed ellipsoidal "
            "organ (label 1) holding a smaller darker or brighter lesion (label 2), a smooth bias "
            "field and Gaussian noise. No patient data is involved."
        ),
        "reference": (
            "Synthetic: generated with `medseg make-phantoms` / medseg.data.phantoms.make_phantoms"
            f"(cases={cases}, seed={int(seed)}, shape_scale={float(shape_scale)}"
            + (", regions=True" if regions else "") + (", ignore=True" if ignore else "") + arguments
            + f"), generator version {GENERATOR_VERSION}; the same arguments reproduce identical arrays."
        ),
        "licence": "CC0-1.0 (synthetic data)",
        "channel_names": {"0": "CT"},
        **_declared_labels(regions, ignore),
        "numTraining": cases,
        "file_ending": _FILE_ENDING,
        "synthetic": {
            "generator": "medseg.data.phantoms",
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "shape_scale": float(shape_scale),
            "regions": bool(regions),
            "ignore": bool(ignore),
            **variant,
        },
    })
    return out


def ignore_slab(label: np.ndarray) -> np.ndarray:
    """A copy of a label map (z, y, x) whose middle eighth of columns (x) holds `IGNORE_VALUE`."""
    out = label.copy()
    nx = label.shape[-1]
    out[..., 7 * nx // 16: 9 * nx // 16] = IGNORE_VALUE
    return out


def _declared_labels(regions: bool, ignore: bool) -> dict:
    """dataset.json's `labels` (and `regions_class_order`) of a phantom variant."""
    labels: dict = dict(PHANTOM_REGIONS if regions else PHANTOM_LABELS)
    if ignore:
        labels["ignore"] = IGNORE_VALUE
    out: dict = {"labels": labels}
    if regions:
        out["regions_class_order"] = [1, 2]
    return out


def _check_target(out: Path) -> None:
    if not out.is_dir() or not any(out.iterdir()):
        return
    meta = out / "dataset.json"
    is_phantoms = False
    if meta.is_file():
        try:
            raw = read_json(meta)
        except MedsegError:
            raw = None
        is_phantoms = isinstance(raw, dict) and raw.get("name") == "Phantoms" and "synthetic" in raw
    if not is_phantoms:
        raise MedsegError("folder is not empty and is not a phantom dataset; choose another folder", out)


def _remove_stale(out: Path, keep: set[str]) -> None:
    for sub in ("imagesTr", "labelsTr"):
        folder = out / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _CASE_RE.match(p.name)
            if m and p.name[: -len(_FILE_ENDING)].removesuffix("_0000") not in keep:
                p.unlink()


# ----------------------------------------------------------------------------------------------
# Generation


class _Phantom:
    """Draws one case's parameters, then paints masks and intensities on its grid."""

    def __init__(self, rng: np.random.Generator, scale: float, lesion_darker: bool | None = None,
                 spacing: tuple[float, ...] | None = None):
        self.scale = scale
        self.lesion_darker = lesion_darker
        self.centre_spacing = spacing
        # Independent streams: the scalar parameters do not depend on the grid size, so a case at
        # shape_scale 2 is the same anatomy as at 1, only larger.
        seeds = rng.integers(0, 2**63 - 1, size=3)
        self.p = np.random.default_rng(int(seeds[0]))
        self.place = np.random.default_rng(int(seeds[1]))
        self.noise = np.random.default_rng(int(seeds[2]))

    # -- helpers ------------------------------------------------------------------------------

    def _u(self, lo: float, hi: float) -> float:
        return float(self.p.uniform(lo, hi))

    def _smooth(self, coarse: tuple[int, int, int]) -> np.ndarray:
        """A smooth random field of unit standard deviation on the grid."""
        field = self.noise.standard_normal(coarse)
        mz, my, mx = (_interp_matrix(n, m) for n, m in zip(self.shape, coarse))
        field = np.tensordot(mz, field, axes=1)  # (nz, coarse y, coarse x)
        field = (my @ field).astype(np.float32)  # (nz, ny, coarse x)
        field = field @ mx.T.astype(np.float32)
        field -= field.mean()
        return (field / (field.std() + 1e-12)).astype(np.float32)

    def _free_point(self, grid, candidates: np.ndarray) -> np.ndarray | None:
        """World position (mm, array order) of a random voxel among `candidates`."""
        idx = np.flatnonzero(candidates)
        if idx.size == 0:
            return None
        flat = int(idx[self.place.integers(idx.size)])
        return np.array([float(g.ravel()[i]) for g, i in zip(grid, np.unravel_index(flat, candidates.shape))])

    # -- the case -----------------------------------------------------------------------------

    def build(self) -> tuple[Image, Image]:
        s = self.scale
        u = self._u
        p = self.p

        # Grid and geometry.
        sxy = round(u(0.75, 0.85), 3)
        sz = round(u(2.5, 3.0), 3)
        nz0, ny0, nx0 = u(22, 30.99), u(96, 128.99), u(96, 128.99)
        sy = sx = sxy
        if self.centre_spacing is not None:
            # Same relative spread around another centre; voxel counts keep the field of view.
            f = [c / d for c, d in zip(self.centre_spacing, _DEFAULT_SPACING)]
            sz, sy, sx = round(sz * f[0], 4), round(sxy * f[1], 4), round(sxy * f[2], 4)
            nz0, ny0, nx0 = nz0 / f[0], ny0 / f[1], nx0 / f[2]
        self.shape = shape = (max(8, int(nz0 * s)), max(16, int(ny0 * s)), max(16, int(nx0 * s)))
        self.spacing = spacing = (sz, sy, sx)
        nz, ny, nx = shape
        ext_z, ext_y, ext_x = nz * sz, ny * sy, nx * sx
        origin = (
            round(-(nx - 1) * sx / 2 + u(-25, 25), 2),
            round(-(ny - 1) * sy / 2 + u(-25, 25), 2),
            round(u(-400, -100), 2),
        )
        # World coordinates in mm relative to the centre of the field, array axis order.
        zc = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)[:, None, None]
        yc = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)[None, :, None]
        xc = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)[None, None, :]
        grid = (zc, yc, xc)

        # Intensities (HU).
        hu_tissue = u(34, 44)
        hu_organ = max(u(65, 80), hu_tissue + 28)
        darker = p.random() < 0.5 if self.lesion_darker is None else self.lesion_darker
        hu_lesion = hu_organ + (-1 if darker else 1) * u(30, 40)
        hu_muscle = hu_organ + u(-10, 0)
        hu_fat = u(-120, -80)
        hu_distractor = [hu_organ + u(-8, 8) for _ in range(4)]
        hu_cancellous, hu_cortical, hu_disc = u(200, 300), u(550, 700), u(75, 100)
        noise_sigma = u(10, 11.5)
        bias_amp = u(5, 10)
        texture_amp = u(3, 5)

        # Body: an ellipse with a lobed outline, slowly varying along z, and a fat rim.
        body_c = (u(-3, 3) * s, u(-3, 3) * s)
        body_ax = (ext_y / 2 * u(0.78, 0.9), ext_x / 2 * u(0.86, 0.96))
        lobes = (u(0, 0.04), u(0, 2 * np.pi), u(0, 0.03), u(0, 2 * np.pi))
        body_z = (u(0, 0.03), u(0, 2 * np.pi))
        fat_t = u(3, 6) * s
        muscle_t = u(3, 5) * s

        # Spine: a vertical column near the back of the body, slightly tilted.
        spine_r = u(6, 8) * s
        spine_tilt = (u(-0.06, 0.06), u(-0.06, 0.06))
        spine_x = body_c[1] + u(-3, 3) * s
        spine_y = body_c[0] + body_ax[0] - fat_t - spine_r - u(3, 6) * s
        disc_period, disc_phase = u(25, 32) * s, u(0, 1)
        # Paraspinal muscles: one each side of the spine, a little behind it.
        para_ax = (u(6, 9) * s, u(8, 12) * s)
        para_y = spine_y + u(1, 4) * s
        para_dx = spine_r + para_ax[1] + u(0.5, 2) * s

        # Vessel-like tube in front of the spine, to one side.
        side = 1 if p.random() < 0.5 else -1
        tube_r = u(4, 6.5) * s
        tube_x = spine_x + side * u(6, 12) * s
        tube_y = spine_y - spine_r - tube_r - u(2, 5) * s
        tube_wiggle = (u(0, 2.5) * s, u(0, 2 * np.pi), u(-0.05, 0.05))

        # Organ: on the other side from the tube, towards the front.
        half = min(ext_y, ext_x) / 2
        organ_ax = np.array([ext_z / 2 * u(0.5, 0.7), half * u(0.42, 0.55), half * u(0.42, 0.55)])
        organ_ax = np.clip(organ_ax, 18 * s, 30 * s)
        wall = fat_t + muscle_t
        organ_c = np.array([
            ext_z * u(-0.08, 0.08),
            body_c[0] - (body_ax[0] - wall) * u(0.12, 0.3),
            body_c[1] - side * (body_ax[1] - wall) * u(0.1, 0.3),
        ])
        organ_rot = _rotation(u(0, np.pi), u(-0.35, 0.35), u(-0.35, 0.35))
        organ_amp = u(0.08, 0.16)
        organ_def = _deformation(p, organ_amp)
        gap = 3.0 * s  # soft tissue kept between the organ and its neighbours
        # Move the organ away from the tube where the body leaves room, then the tube away from
        # the organ, then shrink the organ a little, so that it is seldom dented by the tube;
        # whatever overlap remains becomes a dent with a rim of soft tissue.
        tube_c = np.array([tube_y, tube_x])
        tube_reach = tube_r + gap + tube_wiggle[0] + abs(tube_wiggle[2]) * ext_z / 2

        def clearance() -> tuple[float, float, np.ndarray]:
            # In-plane gap between the organ (its extent towards the tube: the support function
            # of the rotated ellipsoid, grown by the deformation) and the tube's reach.
            away = organ_c[1:] - tube_c
            dist = float(np.linalg.norm(away)) + 1e-9
            towards = organ_rot.T @ np.array([0.0, *(-away / dist)])
            extent = float(np.sqrt(np.sum((organ_ax * towards) ** 2))) * (1 + organ_amp)
            return dist - extent - tube_reach, extent, away / dist

        short, extent, away = clearance()
        if short < 0:
            moved = organ_c[1:] - away * short
            room = np.array([body_ax[0] - wall, body_ax[1] - wall]) - organ_ax[1:].min()
            rel = (moved - np.array(body_c)) / np.maximum(room, 1e-6)
            norm = float(np.linalg.norm(rel))
            if norm > 1:
                moved = np.array(body_c) + rel / norm * np.maximum(room, 1e-6)
            organ_c[1:] = moved
            short, extent, away = clearance()
        if short < 0:
            # Slide the tube sideways, away from the organ, by up to 8 mm.
            tube_x += side * min(-short / max(abs(float(away[1])), 0.3), 8 * s)
            tube_c = np.array([tube_y, tube_x])
            short, extent, _ = clearance()
        if short < 0:
            fit = max((extent + short) / extent, 0.85)
            organ_ax[1:] = np.maximum(organ_ax[1:] * fit, 16 * s)

        # Lesion: well inside the organ, capped to fit its smallest semi-axis.
        lesion_ax = np.minimum(
            np.array([u(8, 11), u(8.5, 12), u(8.5, 12)]) * s, 0.62 * organ_ax.min())
        lesion_dir = p.standard_normal(3)
        lesion_dir /= np.linalg.norm(lesion_dir) + 1e-12
        lesion_off = lesion_dir * u(0, 0.25)
        lesion_rot = _rotation(u(0, np.pi), u(-0.3, 0.3), u(-0.3, 0.3))
        lesion_def = _deformation(p, u(0.04, 0.1))

        # Distractors as bright as the organ: an oblique vessel crossing the slices, and three
        # blobs (a fourth in some cases), placed in the free space left by the structures above.
        vessel_r = u(3.5, 6) * s
        vessel_dir = np.array([u(0.35, 0.8), 0.0, 0.0])
        a = u(0, 2 * np.pi)
        vessel_dir[1:] = np.sqrt(1 - vessel_dir[0] ** 2) * np.array([np.sin(a), np.cos(a)])
        n_blobs = 3 + int(p.random() < 0.4)
        blob_ax = [np.array([u(5, 9), u(5, 9), u(5, 9)]) * s for _ in range(4)]
        blob_rot = [_rotation(u(0, np.pi), 0.0, 0.0) for _ in range(4)]
        fat_patch_level = u(0.9, 1.4)

        # ---- masks -----------------------------------------------------------------------
        dy, dx = yc - body_c[0], xc - body_c[1]
        theta = np.arctan2(dy, dx)
        outline = 1 + lobes[0] * np.cos(2 * theta + lobes[1]) + lobes[2] * np.cos(3 * theta + lobes[3])
        zscale = 1 + body_z[0] * np.sin(2 * np.pi * zc / ext_z + body_z[1])
        q = np.sqrt((dy / body_ax[0]) ** 2 + (dx / body_ax[1]) ** 2) / outline  # (1, ny, nx)
        q = q / zscale  # (nz, ny, nx)
        body = q <= 1
        inside_fat = q <= 1 - fat_t / max(body_ax)
        interior = q <= 1 - wall / max(body_ax)

        sx_z = spine_x + spine_tilt[1] * zc
        sy_z = spine_y + spine_tilt[0] * zc
        spine_d = np.sqrt((yc - sy_z) ** 2 + (xc - sx_z) ** 2)
        spine = spine_d <= spine_r
        cortex = spine & (spine_d > spine_r - 1.6 * s)
        disc = (np.mod(zc / disc_period + disc_phase, 1.0) < 0.22) & spine & ~cortex

        ty_z = tube_y + tube_wiggle[0] * np.sin(2 * np.pi * zc / ext_z + tube_wiggle[1])
        tx_z = tube_x + tube_wiggle[2] * zc
        tube_d = np.sqrt((yc - ty_z) ** 2 + (xc - tx_z) ** 2)
        tube = tube_d <= tube_r
        para_f = np.full(shape, np.inf, np.float32)  # normalised radius, grown by `gap` below
        for sgn in (-1, 1):
            para_f = np.minimum(para_f, np.sqrt(
                ((yc - para_y - spine_tilt[0] * zc) / para_ax[0]) ** 2
                + ((xc - sx_z - sgn * para_dx) / para_ax[1]) ** 2))
        para = (para_f <= 1) & interior & ~spine
        muscle = (inside_fat & ~interior) | para

        organ_f = _shape_field(grid, organ_c, organ_ax, organ_rot, organ_def)
        organ = (organ_f <= 1) & (q <= 1 - (wall + gap) / max(body_ax))
        organ &= (spine_d > spine_r + gap) & (tube_d > tube_r + gap)
        organ &= para_f > 1 + gap / min(para_ax)

        lesion_c = organ_c + organ_rot @ (organ_ax * lesion_off)
        lesion = _shape_field(grid, lesion_c, lesion_ax, lesion_rot, lesion_def) <= 1
        inner = ndimage.binary_erosion(organ, structure=np.ones((3, 3, 3), bool), border_value=0)
        lesion &= inner
        if lesion.sum() < 0.5 * _ellipsoid_voxels(lesion_ax, spacing):
            # The organ was clipped where the lesion sat: fall back to its centre, shrinking
            # until the lesion fits (deterministic, no further random draws).
            ax = lesion_ax.copy()
            for _ in range(8):
                lesion = (_shape_field(grid, organ_c, ax, lesion_rot, lesion_def) <= 1) & inner
                if lesion.sum() >= 0.5 * _ellipsoid_voxels(ax, spacing):
                    break
                ax *= 0.85
        if not lesion.any():
            # Last resort: the innermost organ voxels (the organ always has some interior).
            depth = ndimage.distance_transform_edt(organ, sampling=spacing)
            lesion = depth >= np.quantile(depth[organ], 0.9)
            lesion &= inner

        occupied = ~interior | para | (organ_f <= 1 + gap / organ_ax.min()) | (spine_d <= spine_r + gap) \
            | (tube_d <= tube_r + gap)
        # Room left for a distractor around each voxel, on a grid halved in-plane (plenty for
        # choosing centres, four times cheaper).
        free = ndimage.distance_transform_edt(~occupied[:, ::2, ::2], sampling=(sz, 2 * sy, 2 * sx))
        half_grid = (zc, yc[:, ::2], xc[:, :, ::2])
        blobs: list[np.ndarray] = []
        placed: list[tuple[np.ndarray, float]] = []
        vessel_c = self._free_point(half_grid, free >= vessel_r)
        if vessel_c is not None:
            d = [g - c for g, c in zip(grid, vessel_c)]
            along = d[0] * vessel_dir[0] + d[1] * vessel_dir[1] + d[2] * vessel_dir[2]
            vessel_d2 = d[0] ** 2 + d[1] ** 2 + d[2] ** 2 - along ** 2
            vessel = (vessel_d2 <= vessel_r ** 2) & ~occupied
            placed.append((vessel_c, vessel_r))
        else:
            vessel = np.zeros(shape, bool)
        for b in range(n_blobs):
            ax = blob_ax[b].copy()
            r = float(ax.max())
            cand = free >= r
            for c0, r0 in placed:
                cand &= _dist(half_grid, c0) >= r + r0 + gap
            if not cand.any():
                # Not enough room: shrink to the largest free ball.
                r_avail = float(free.max())
                if r_avail < 3 * s:
                    break
                ax *= r_avail / r
                r = r_avail
                cand = free >= r * 0.999
            centre = self._free_point(half_grid, cand)
            blob = _shape_field(grid, centre, ax, blob_rot[b], None) <= 1
            blobs.append(blob & ~occupied)
            placed.append((centre, r))

        # ---- intensities -----------------------------------------------------------------
        img = np.full(shape, -1000.0, np.float32)
        img[body] = hu_fat + 6 * self._smooth((4, 6, 6))[body]
        texture = self._smooth((5, 9, 9))
        tissue = hu_tissue + texture_amp * texture
        patches = (self._smooth((6, 10, 10)) > fat_patch_level) & interior
        img[interior] = tissue[interior]
        img[patches] = (hu_fat + 15 + 5 * texture)[patches]
        img[muscle] = hu_muscle + 3 * texture[muscle]
        img[tube] = hu_distractor[0] + 3 * texture[tube]
        img[vessel] = hu_distractor[1] + 3 * texture[vessel]
        for b, m in enumerate(blobs):
            img[m] = hu_distractor[2 + b % 2] + 3 * texture[m]
        img[spine] = hu_cancellous + 25 * texture[spine]
        img[cortex] = hu_cortical + 30 * texture[cortex]
        img[disc] = hu_disc + 5 * texture[disc]
        organ_tex = self._smooth((6, 8, 8))
        img[organ] = hu_organ + 4 * organ_tex[organ]
        img[lesion] = hu_lesion + 3 * organ_tex[lesion]

        # Partial-volume blur, smooth bias, Gaussian noise.
        img = ndimage.gaussian_filter(img, sigma=(0.35, 0.6, 0.6), mode="nearest")
        bias = self._smooth((3, 3, 3))
        img += bias * (bias_amp / float(np.abs(bias).max()))
        img += noise_sigma * self.noise.standard_normal(shape, dtype=np.float32)
        img = np.clip(np.rint(img), -1024, 3071).astype(np.int16)

        label = np.zeros(shape, np.uint8)
        label[organ] = 1
        label[lesion] = 2
        return (
            Image(img, spacing, origin, ()),
            Image(label, spacing, origin, ()),
        )


def _interp_matrix(n: int, m: int) -> np.ndarray:
    """(n, m) weights that smoothly interpolate m coarse nodes onto n fine positions."""
    x = np.arange(n, dtype=np.float64)
    step = max(n - 1, 1) / max(m - 1, 1)
    nodes = np.arange(m) * step
    w = np.exp(-0.5 * ((x[:, None] - nodes[None, :]) / (0.8 * step)) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def _rotation(a_yx: float, a_zy: float, a_zx: float) -> np.ndarray:
    """Rotation in (z, y, x) coordinates: in-plane angle, then two tilts out of the plane."""
    def plane(i: int, j: int, a: float) -> np.ndarray:
        r = np.eye(3)
        c, s = np.cos(a), np.sin(a)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r
    return plane(1, 2, a_yx) @ plane(0, 1, a_zy) @ plane(0, 2, a_zx)


_MONOMIALS = [(a, b, c) for a in range(4) for b in range(4) for c in range(4) if 1 <= a + b + c <= 3]


def _fibonacci_sphere(n: int = 256) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(phi), np.sin(phi) * np.sin(theta), np.sin(phi) * np.cos(theta)], axis=1)


def _deformation(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Coefficients of a smooth radius modulation (polynomial of degree <= 3 in the direction),
    scaled so that its largest excursion over the sphere is `amplitude`."""
    coef = rng.standard_normal(len(_MONOMIALS)) / np.array([1.0 + sum(m) for m in _MONOMIALS])
    dirs = _fibonacci_sphere()
    vals = sum(c * dirs[:, 0] ** a * dirs[:, 1] ** b * dirs[:, 2] ** d for c, (a, b, d) in zip(coef, _MONOMIALS))
    return coef * (amplitude / (np.abs(vals).max() + 1e-12))


def _shape_field(grid, centre, axes, rot, deform) -> np.ndarray:
    """Normalised radius of a deformed ellipsoid: <= 1 inside, growing outwards."""
    # Python floats keep the float32 grid in float32.
    rot = [[float(v) for v in row] for row in rot]
    d = [g - float(c) for g, c in zip(grid, centre)]
    u = [(d[0] * rot[0][k] + d[1] * rot[1][k] + d[2] * rot[2][k]) / float(axes[k]) for k in range(3)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    if deform is None:
        return rho
    inv = 1.0 / (rho + 1e-6)
    n = [ui * inv for ui in u]
    powers = [[np.ones_like(rho), ni, ni * ni, ni * ni * ni] for ni in n]
    delta = np.zeros_like(rho)
    for c, (a, b, e) in zip(deform, _MONOMIALS):
        delta += float(c) * (powers[0][a] * powers[1][b] * powers[2][e])
    return rho / (1 + delta)


def _dist(grid, centre) -> np.ndarray:
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))


def _ellipsoid_voxels(axes, spacing) -> float:
    return 4 / 3 * np.pi * float(np.prod(axes)) / float(np.prod(spacing))
