"""Resampling: medseg against nnU-Net v2's default resampling functions, in the same run.

A CT-like grid of 512 x 512 x 100 voxels at 0.8 x 0.8 x 2.5 mm is resampled to 1 mm and back
(the round trip a prediction makes: preprocessing forward, export backward), for
- an image: a smooth test volume (sums of broad Gaussians, HU-like values), so the round
  trip's error against the original measures the interpolation, not aliasing of noise;
- a label map: background and K-1 organ-like ellipsoids (nnU-Net: one-hot per class, order 1,
  `>= 0.5`; medseg: arg-max of the one-hot linear interpolation, voted on boundary cells only);
- K-class probability maps (one-hot float32 channels), as the export resamples them
  (nnU-Net: its probabilities function, order 1; medseg: `resample_probabilities`).

nnU-Net's functions are `resample_data_or_seg_to_shape` with its default plans' arguments:
images order 3 in-plane and order 0 along z (`force_separate_z=None`: decided per call from
the spacings; here always separate, as 2.5 / 0.8 > 3), labels and probabilities order 1 / 0.
medseg runs twice: `medseg` as its planner sets it up for a 1 mm isotropic target (images
'cubic': bicubic in-plane, linear along z; `separate_axis` None), and `medseg_sepz` as an
imported nnU-Net model runs (images 'spline': nnU-Net's values; nearest along z).

Each contender runs in its own process with one thread (torch and OpenMP), so its peak RSS
(ru_maxrss) is its own, and its CPU time (process_time) is what it spent whatever else runs
on the machine; contenders are interleaved and repeated; medians and ratios from
this one run are printed as a Markdown table.

    .venv/bin/python benchmarks/resample_speed.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPACING = (2.5, 0.8, 0.8)  # (z, y, x) mm
TARGET = (1.0, 1.0, 1.0)
TASKS = ("image", "labels", "probabilities")
CONTENDERS = ("nnunet", "medseg", "medseg_sepz")


def smooth_volume(shape: tuple[int, ...], spacing: tuple[float, ...], seed: int = 0) -> np.ndarray:
    """A sum of broad 3-D Gaussians (sigma 15-40 mm) on a -1000..1000 HU-like scale."""
    rng = np.random.default_rng(seed)
    axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing)]
    out = np.full(shape, -200.0, np.float32)
    for _ in range(12):
        centre = [rng.uniform(0, a[-1]) for a in axes]
        sigma = rng.uniform(15, 40)
        amp = rng.uniform(-800, 1200)
        g = [np.exp(-0.5 * ((a - c) / sigma) ** 2).astype(np.float32) for a, c in zip(axes, centre)]
        out += amp * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return out


def label_map(shape: tuple[int, ...], spacing: tuple[float, ...], classes: int, seed: int = 1) -> np.ndarray:
    """Background and K-1 organ-like ellipsoids (10-60 mm semi-axes), as CT label maps are:
    most voxels background, each organ a compact region."""
    rng = np.random.default_rng(seed)
    axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing)]
    lab = np.zeros(shape, np.uint8)
    for k in range(1, classes):
        centre = [rng.uniform(0.25, 0.75) * a[-1] for a in axes]
        radii = rng.uniform(10, 60, size=3)
        d = sum(((a - c) / r) ** 2 for a, c, r in zip(
            np.meshgrid(*axes, indexing="ij", sparse=True), centre, radii))
        lab[d < 1] = k
    return lab


def new_shape(shape, spacing, target):
    return tuple(int(round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def run(task: str, contender: str, work: Path, classes: int) -> dict:
    import torch

    torch.set_num_threads(1)
    shape0 = tuple(np.load(work / "image.npy", mmap_mode="r").shape)
    shape1 = new_shape(shape0, SPACING, TARGET)
    if task == "image":
        data = np.load(work / "image.npy")[None]
    elif task == "labels":
        data = np.load(work / "labels.npy")
    else:
        lab = np.load(work / "labels.npy")
        data = np.stack([(lab == k).astype(np.float32) for k in range(classes)])
        del lab
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if contender == "nnunet":
        from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape as rs

        kw = {"image": dict(is_seg=False, order=3, order_z=0), "labels": dict(is_seg=True, order=1, order_z=0),
              "probabilities": dict(is_seg=False, order=1, order_z=0)}[task]

        def there_and_back(x):
            x = x[None] if task == "labels" else x
            y = rs(x, shape1, SPACING, TARGET, force_separate_z=None, **kw)
            z = rs(y, shape0, TARGET, SPACING, force_separate_z=None, **kw)
            return z[0] if task == "labels" else z
    else:
        from medseg.preprocessing.resample import resample_image, resample_label, resample_probabilities

        sep = 0 if contender == "medseg_sepz" else None  # z, the coarse axis, on its own
        order = "spline" if sep is not None else "cubic"

        def there_and_back(x):
            if task == "image":
                return resample_image(resample_image(x, shape1, order, sep), shape0, order, sep)
            if task == "labels":
                values = list(range(classes))
                return resample_label(resample_label(x, shape1, values, sep), shape0, values, sep)
            t = torch.from_numpy(x)
            return resample_probabilities(resample_probabilities(t, shape1, sep), shape0, sep).numpy()

    t0, c0 = time.perf_counter(), time.process_time()
    out = there_and_back(data)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"task": task, "contender": contender, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak,
              "rss_before_mb": rss_before, "out_dtype": str(out.dtype)}
    if task == "image":
        err = out[0].astype(np.float32) - data[0]
        result.update(rmse=float(np.sqrt(np.mean(err.astype(np.float64) ** 2))), max_abs=float(np.abs(err).max()))
    elif task == "labels":
        result.update(changed=float((out != data).mean()))
    else:
        result.update(changed=float((out.argmax(0) != data.argmax(0)).mean()),
                      rmse=float(np.sqrt(np.mean((out.astype(np.float32) - data) ** 2, dtype=np.float64))))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[100, 512, 512], help="(z, y, x)")
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        task, contender = args.child.split(":")
        print(json.dumps(run(task, contender, args.workdir, args.classes)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg_resample_speed_"))
    vol = smooth_volume(tuple(args.shape), SPACING)
    np.save(work / "image.npy", vol)
    np.save(work / "labels.npy", label_map(tuple(args.shape), SPACING, args.classes))
    del vol
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    tasks, contenders = args.tasks.split(","), args.contenders.split(",")
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for task in tasks:
            order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
            for c in order:
                cmd = [sys.executable, __file__, "--child", f"{task}:{c}", "--workdir", str(work),
                       "--classes", str(args.classes)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{task}:{c} failed:\n{proc.stderr[-3000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                results.setdefault((task, c), []).append(res)
                print(f"repeat {r + 1} {task} {c}: {res['seconds']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB",
                      flush=True)
    print(f"\n{tuple(args.shape)} voxels at {SPACING} mm -> {TARGET} mm "
          f"({new_shape(args.shape, SPACING, TARGET)}) and back; {args.classes} classes; 1 thread each; "
          f"medians of {args.repeats} repeats\n")
    print("| task | contender | round trip (s) | speed-up vs nnU-Net | CPU time (s) | CPU speed-up | peak RSS (MB) "
          "| input loaded (MB) | error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        ref = results.get((task, "nnunet"), [{"seconds": float("nan"), "cpu_seconds": float("nan")}])
        base = statistics.median(x["seconds"] for x in ref)
        base_cpu = statistics.median(x["cpu_seconds"] for x in ref)
        for c in contenders:
            rs = results[(task, c)]
            t = statistics.median(x["seconds"] for x in rs)
            cpu = statistics.median(x["cpu_seconds"] for x in rs)
            last = rs[-1]
            if task == "image":
                err = f"RMSE {last['rmse']:.2f} HU, max {last['max_abs']:.1f} HU"
            elif task == "labels":
                err = f"{100 * last['changed']:.3f} % voxels changed"
            else:
                err = f"arg-max changed on {100 * last['changed']:.3f} %, RMSE {last['rmse']:.4f}"
            print(f"| {task} | {c} | {t:.2f} | {base / t:.1f}x | {cpu:.2f} | {base_cpu / cpu:.1f}x | "
                  f"{statistics.median(x['peak_rss_mb'] for x in rs):.0f} | "
                  f"{statistics.median(x['rss_before_mb'] for x in rs):.0f} | {err} |")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
