"""Time medseg's metrics on a 512 x 512 x 300 label-map pair with three classes.

Compares, in the same run, with DeepMind's surface-distance (surfel definition) and MONAI
(boundary-voxel definition) on the same masks, when they are installed (`pip install -e
'.[compare]'`). Run: `python benchmarks/evaluation_speed.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from medseg.evaluation import metrics as M

SHAPE = (300, 512, 512)
SPACING = (1.5, 0.8, 0.8)
LABELS = {"organ": 1, "kidney": 2, "lesion": 3}


def ellipsoid(centre, radii):
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1


def make_pair() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    ref[ellipsoid((150, 250, 200), (70, 120, 110))] = 1
    ref[ellipsoid((140, 260, 400), (40, 40, 30))] = 2
    ref[ellipsoid((160, 230, 180), (12, 15, 15))] = 3
    pred[ellipsoid((152, 253, 198), (68, 124, 108))] = 1
    pred[ellipsoid((141, 262, 401), (42, 38, 31))] = 2
    pred[ellipsoid((163, 235, 184), (10, 14, 17))] = 3
    pred[20:25, 20:30, 450:460] = 2  # a far-away false positive
    return pred, ref


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pred, ref = make_pair()
    print(f"{SHAPE[2]} x {SHAPE[1]} x {SHAPE[0]} voxels, spacing {SPACING} mm, {len(LABELS)} classes")
    results = {}
    for method in ("surfel", "voxel"):
        results[method] = best_of(lambda: M.case_metrics(pred, ref, SPACING, LABELS, surface_method=method), args.repeat)
        print(f"medseg case_metrics, all metrics, {method:6s}: {results[method]:.2f} s")
    only_overlap = best_of(lambda: M.case_metrics(pred, ref, SPACING, LABELS, metrics=list(M.OVERLAP_METRICS)),
                           args.repeat)
    print(f"medseg case_metrics, overlap only:          {only_overlap:.2f} s")

    try:
        import surface_distance as dm
    except ImportError:
        dm = None
    if dm is not None:
        np.Inf = np.inf  # the package predates NumPy 2

        def run_dm():
            for v in LABELS.values():
                p, r = pred == v, ref == v
                d = dm.compute_surface_distances(r, p, SPACING)
                dm.compute_robust_hausdorff(d, 95), dm.compute_average_surface_distance(d)
                dm.compute_surface_dice_at_tolerance(d, 1.0), dm.compute_dice_coefficient(r, p)
        t = best_of(run_dm, 1)
        print(f"surface-distance (HD95, ASD, NSD, Dice):    {t:.2f} s   medseg is {t / results['surfel']:.1f}x faster")
    try:
        import torch
        from monai import metrics as mm
    except ImportError:
        mm = None
    if mm is not None:
        def run_monai():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for v in LABELS.values():
                    p = torch.from_numpy(np.stack([pred != v, pred == v])[None])
                    r = torch.from_numpy(np.stack([ref != v, ref == v])[None])
                    mm.compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING)
                    mm.compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING)
                    mm.compute_surface_dice(p.float(), r.float(), [1.0], spacing=SPACING)
                    mm.compute_dice(p, r)
        t = best_of(run_monai, 1)
        print(f"MONAI (HD95, ASSD, NSD, Dice):              {t:.2f} s   medseg is {t / results['voxel']:.1f}x faster")


if __name__ == "__main__":
    main()
