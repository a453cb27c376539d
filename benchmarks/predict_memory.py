"""Peak memory of `medseg predict` on a large CT volume, against the documented formula.

A CT-like volume (default 400 x 512 x 512 voxels, z, y, x, at 1.0 x 0.78 x 0.78 mm) is
predicted by a randomly initialised dynamic U-Net with many classes (default 15), built with
the project's own functions (`rule_topology`, `model_description`, `build_model`,
`save_checkpoint`) for a plan at 1.0 x 0.8 x 0.8 mm with a realistic patch (96 x 160 x 160).
The network is narrow (features 4 ... 32) because the network is not what this measures: the
class-by-voxel arrays around it are. The plan's spacing is close to the scan's, so the
preprocessed volume is about as large as the input (the harsh case for memory).

Each run predicts the scan with `Predictor.predict_folder` (what `medseg predict` calls) in a
fresh process. Its peak is the kernel's high-water mark for that process (VmHWM), its baseline
the resident size after importing medseg and loading the model (`planning.measure.CpuPeak`).
With `--phases`, a thread samples the resident size every 2 ms and records the largest value
during each phase (read, preprocess, network, export, compress). The formula is
`medseg.inference.memory.estimate_prediction_bytes` (docs/inference.md); the report compares
baseline + formula with the measured peak.

    python benchmarks/predict_memory.py --phases --runs labels,probabilities,fp32   # ~15 min
    python benchmarks/predict_memory.py --shape 100 256 256                         # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

MB = 1024**2


def setup(work: Path, shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...],
          classes: int, patch: tuple[int, ...], base_features: int, max_features: int) -> None:
    """Write a model folder (random weights) and one scan into `work`."""
    import torch

    from medseg.io.image import Image, write_image
    from medseg.planning.plans import ConfigurationPlan, Plans
    from medseg.planning.planner import rule_topology
    from medseg.training.checkpoint import save_checkpoint
    from medseg.training.trainer import build_model, model_description
    from medseg.utils.files import write_json
    from predict_speed import ct_volume

    work, shape, spacing, target, patch = Path(work), tuple(shape), tuple(spacing), tuple(target), tuple(patch)
    topo = rule_topology(target, patch, max_stages=6)
    features = [min(base_features * 2**i, max_features) for i in range(len(topo.strides))]
    plan = ConfigurationPlan(
        name="3d_fullres", spatial_dims=3, target_spacing=list(target), patch_size=topo.patch_size, batch_size=2,
        normalization=["ct"], model_options={"features": features, "kernel_sizes": topo.kernel_sizes,
                                             "strides": topo.strides, "deep_supervision": True},
        resampling={"data": "cubic", "label": "linear", "separate_axis": None})
    labels = {"background": 0, **{f"organ_{k}": k for k in range(1, classes)}}
    intensity = [{"mean": 40.0, "std": 120.0, "percentile_00_5": -1000.0, "percentile_99_5": 400.0}]
    plans = Plans(dataset_name="MemoryBench", channel_names=["CT"], labels=labels, intensity=intensity,
                  configurations={"3d_fullres": plan.to_dict()})
    desc = model_description(plans, plan)
    write_json(work / "model" / "model.json", desc)
    torch.manual_seed(0)
    save_checkpoint(work / "model" / "fold_0", "checkpoint_final", build_model(desc), {"epoch": 0})
    volume = ct_volume(shape)[0]
    write_image(Image(volume.astype(np.int16), spacing), work / "images" / "case_0000.nii.gz")
    write_json(work / "setup.json", {"shape": list(shape), "spacing": list(spacing), "target": list(target),
                                     "classes": classes, "patch": topo.patch_size, "features": features})
    print(f"setup: volume {shape} at {spacing} mm, plan {target} mm, patch {topo.patch_size}, "
          f"{classes} classes, features {features}", flush=True)


def child(work: Path, out: Path, options: dict, phases: bool) -> dict:
    """Predict the scan in this (fresh) process as `medseg predict` does; return the peak
    resident size (VmHWM), the resident size after loading the model (the baseline) and,
    with `phases`, the largest resident size sampled during each phase."""
    import torch

    import medseg.inference.predictor as P
    from medseg.planning.measure import CpuPeak

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    pred = P.Predictor.from_model_dir(work / "model", device="cpu", precision="fp32", **options)
    baseline = CpuPeak.resident()
    peaks: dict[str, int] = {}
    current = ["other"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks[current[0]] = max(peaks.get(current[0], 0), CpuPeak.resident())
            time.sleep(0.002)

    def mark(owner, name: str, phase: str) -> None:
        fn = getattr(owner, name)

        def wrapped(*a, **k):
            current[0] = phase
            try:
                return fn(*a, **k)
            finally:
                current[0] = "other"
        setattr(owner, name, wrapped)

    if phases:
        for owner, name, phase in [(P, "_read", "read"), (P.Predictor, "_prepare", "preprocess"),
                                   (P.Predictor, "_scores", "network"), (P.Predictor, "_export", "export"),
                                   (P.ProbabilityWriter, "finish", "compress")]:
            mark(owner, name, phase)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
    t0 = time.perf_counter()
    pred.predict_folder(work / "images", out)
    seconds = time.perf_counter() - t0
    stop.set()
    return {"peak_mb": CpuPeak.high_water_mark() / MB, "baseline_mb": baseline / MB, "seconds": seconds,
            "phases_mb": {k: v / MB for k, v in peaks.items()}}


def estimate(work: Path, options: dict) -> dict:
    """The formula's phases and terms (MB) for this scan and model."""
    from medseg.inference.memory import estimate_prediction_bytes
    from medseg.io.image import read_image
    from medseg.planning.plans import ConfigurationPlan
    from medseg.preprocessing.preprocess import target_spacing_for
    from medseg.preprocessing.resample import new_shape_for_spacing
    from medseg.utils.files import read_json

    desc = read_json(work / "model" / "model.json")
    cfg = desc["configuration"]
    scan = read_image(work / "images" / "case_0000.nii.gz")
    pre = new_shape_for_spacing(scan.shape, scan.spacing, target_spacing_for(scan.spacing, ConfigurationPlan(**cfg)))
    est = estimate_prediction_bytes(scan.shape, pre, max(desc["labels"].values()) + 1,
                                    patch_size=cfg["patch_size"], features=cfg["model_options"]["features"],
                                    strides=cfg["model_options"]["strides"],
                                    accumulation=options.get("accumulation", "fp16"),
                                    save_probabilities=options.get("save_probabilities", False),
                                    file_itemsize=scan.array.dtype.itemsize)
    return {"phases_mb": {k: getattr(est, k) / MB for k in ("read", "preprocess", "network", "export")},
            "peak_mb": est.peak / MB, "terms_mb": {k: v / MB for k, v in est.terms.items()},
            "preprocessed_shape": list(pre)}


def run_child(work: Path, run: str, options: dict, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--workdir", str(work), "--child", run, "--options", json.dumps(options)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{run} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[400, 512, 512], help="volume (z, y, x)")
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.0, 0.78, 0.78], help="scan spacing (z, y, x) mm")
    ap.add_argument("--target", type=float, nargs=3, default=[1.0, 0.8, 0.8], help="plan spacing (z, y, x) mm")
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--patch", type=int, nargs=3, default=[96, 160, 160])
    ap.add_argument("--features", type=int, nargs=2, default=[4, 32], help="first stage's and largest width")
    ap.add_argument("--step", type=float, default=1.0, help="tile step (a fraction of the patch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="labels,probabilities",
                    help="comma-separated: labels (label maps only), probabilities (--save-probabilities too), "
                         "fp32 (labels with fp32 accumulation)")
    ap.add_argument("--phases", action="store_true", help="sample the resident size per phase (a little slower)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model and scan here (reused if present)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        opts = json.loads(args.options)
        phases = opts.pop("phases", False)
        print(json.dumps(child(args.workdir, args.workdir / f"out_{args.child}", opts, phases)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg_predict_memory_"))
    if not (work / "setup.json").exists():
        # In its own process: the parent stays small, so nothing of the setup is counted anywhere.
        subprocess.run([sys.executable, "-c", "import sys, json; sys.path.insert(0, sys.argv[1]); "
                        "from predict_memory import setup; setup(*json.loads(sys.argv[2]))", str(ROOT),
                        json.dumps([str(work), args.shape, args.spacing, args.target, args.classes, args.patch,
                                    *args.features])], check=True)
    print(f"setup: {json.loads((work / 'setup.json').read_text())}", flush=True)
    runs = {"labels": {}, "probabilities": {"save_probabilities": True}, "fp32": {"accumulation": "fp32"}}
    rows = []
    for run in args.runs.split(","):
        options = {"step": args.step, **runs[run]}
        res = run_child(work, run, {**options, "phases": args.phases}, args.threads)
        est = estimate(work, options)
        rows.append((run, res, est))
        print(f"{run}: peak RSS {res['peak_mb']:.0f} MB (baseline {res['baseline_mb']:.0f} MB), "
              f"formula {res['baseline_mb'] + est['peak_mb']:.0f} MB, {res['seconds']:.0f} s", flush=True)
        print(json.dumps({"run": run, "measured": res, "formula": est}), flush=True)
    print("\n| run | peak RSS (MB) | baseline (MB) | formula: baseline + peak phase (MB) | measured / formula | seconds |")
    print("|---|---|---|---|---|---|")
    for run, res, est in rows:
        f = res["baseline_mb"] + est["peak_mb"]
        print(f"| {run} | {res['peak_mb']:.0f} | {res['baseline_mb']:.0f} | {f:.0f} | {res['peak_mb'] / f:.2f} | "
              f"{res['seconds']:.0f} |")


if __name__ == "__main__":
    main()
