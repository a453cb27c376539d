"""Whole-volume prediction: medseg against nnU-Net v2's nnUNetPredictor and MONAI's
sliding_window_inference, with the same network weights, volume, step and mirroring.

The weights are a randomly initialised nnU-Net PlainConvUNet of a typical CT 3d_fullres
shape (6 stages, 32..320 features, first stage 1x3x3 kernels), written as an nnU-Net v2
results folder and imported into medseg with `import_nnunet`; all three contenders run
that network. Each contender runs in its own process (one torch thread, OMP_NUM_THREADS=1),
so its peak RSS (ru_maxrss) is its own; contenders are interleaved and repeated, and the
report gives medians and ratios from this one run.

- medseg: `Predictor.predict_array` (normalise, sliding window, softmax, arg-max), fp32.
- nnU-Net: `nnUNetPredictor.predict_single_npy_array` (its preprocessing, sliding window with
  float16 accumulation, export), device cpu.
- MONAI: the same normalisation as medseg, `sliding_window_inference(mode="gaussian",
  sigma_scale=0.125, overlap=1-step)`, arg-max.

bf16 is not run on a CPU without native bf16 (AVX-512 BF16 / AMX): there oneDNN emulates it
and a 3x3x3 convolution is hundreds of times slower than fp32 (docs/architecture.md);
`--precisions fp32,bf16` runs it where the CPU has it.

Needs nnunetv2 (see docs/benchmarks.md for the install line) and monai.

    .venv/bin/python benchmarks/predict_speed.py --shape 96 192 192 --repeats 2
"""

from __future__ import annotations

import argparse
import importlib.util
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

ROOT = Path(__file__).resolve().parents[1]
SPACING = (2.5, 0.8, 0.8)  # (z, y, x) mm: the plan's spacing, so no contender resamples


def _results_helpers():
    """The nnU-Net results-folder writer shared with the import tests."""
    spec = importlib.util.spec_from_file_location("nnunet_results", ROOT / "tests" / "inference" / "nnunet_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ct_volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """CT-like test volume (HU): air, an elliptic body, blobs of other densities, noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    img = np.full(shape, -1000.0, np.float32)
    body = (y / 0.9) ** 2 + (x / 0.8) ** 2 < 1
    img[body] = 40
    for _ in range(8):
        c, r = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.1, 0.3)
        img[body & (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < r**2)] = rng.uniform(-100, 300)
    img += rng.normal(0, 20, shape).astype(np.float32)
    return img[None]


def setup(work: Path, shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    import torch

    from medseg.inference.nnunet_import import import_nnunet

    R = _results_helpers()
    plans = R.plans_dict(
        features=(32, 64, 128, 256, 320, 320),
        kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
        strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)),
        patch_size=patch, spacing=SPACING)
    net = R.nnunet_network(plans, 1, 3)
    root = R.write_results_folder(work / "nnUNetTrainer__nnUNetPlans__3d_fullres", plans, R.dataset_dict(),
                                  {0: net.state_dict()})
    import_nnunet(root, work / "medseg_model")
    np.save(work / "image.npy", ct_volume(shape))
    print(f"network: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, patch {patch}, "
          f"volume {shape} at {SPACING} mm", flush=True)
    del torch


def run(contender: str, work: Path, step: float, mirror: bool) -> dict:
    """One prediction in this process; returns seconds, RSS and where the labels went."""
    import torch

    torch.set_num_threads(1)
    image = np.load(work / "image.npy")
    name, _, precision = contender.partition(":")
    if name == "medseg":
        from medseg.inference.predictor import Predictor

        pred = Predictor.from_model_dir(work / "medseg_model", device="cpu", precision=precision or "fp32",
                                        step=step, mirror=mirror)
        go = lambda: pred.predict_array(image, SPACING)  # noqa: E731
    elif name == "nnunet":
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        R = _results_helpers()
        pred = nnUNetPredictor(tile_step_size=step, use_gaussian=True, use_mirroring=mirror,
                               device=torch.device("cpu"), allow_tqdm=False)
        R.initialize_nnunet_predictor(pred, work / "nnUNetTrainer__nnUNetPlans__3d_fullres", (0,))
        go = lambda: pred.predict_single_npy_array(image, {"spacing": list(SPACING)})  # noqa: E731
    elif name == "monai":
        from monai.inferers import sliding_window_inference

        from medseg.inference.predictor import Predictor
        from medseg.preprocessing.normalize import normalize

        pred = Predictor.from_model_dir(work / "medseg_model", device="cpu", precision="fp32")
        net, plan, intensity = pred.models[0], pred.plan, pred.desc["intensity"]

        def go():
            with torch.inference_mode():
                x = torch.from_numpy(normalize(image, plan.normalization, intensity))[None]
                logits = sliding_window_inference(x, plan.patch_size, 1, net, overlap=1 - step, mode="gaussian",
                                                  sigma_scale=0.125, padding_mode="constant")
                if mirror:
                    raise SystemExit("MONAI's sliding_window_inference has no mirroring; run without --mirror")
                return logits[0].argmax(0).to(torch.uint8).numpy()
    else:
        raise SystemExit(f"unknown contender {contender}")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    labels = go()
    seconds = time.perf_counter() - t0
    out = work / f"labels_{contender.replace(':', '_')}.npy"
    np.save(out, np.asarray(labels).astype(np.uint8))
    return {"contender": contender, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss_before, "labels": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 192, 192], help="volume (z, y, x)")
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 128, 128], help="plan patch (z, y, x)")
    ap.add_argument("--step", type=float, default=0.5)
    ap.add_argument("--mirror", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precisions", default="fp32", help="medseg precisions, e.g. fp32,bf16")
    ap.add_argument("--contenders", default="medseg,nnunet,monai")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.workdir, args.step, args.mirror)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg_predict_speed_"))
    setup(work, tuple(args.shape), tuple(args.patch))
    contenders = []
    for c in args.contenders.split(","):
        contenders += [f"medseg:{p}" for p in args.precisions.split(",")] if c == "medseg" else [c]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "nnUNet_def_n_proc": "1"}
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    for r in range(args.repeats):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]  # rotate: no fixed slot
        for c in order:
            cmd = [sys.executable, __file__, "--child", c, "--workdir", str(work), "--step", str(args.step)]
            if args.mirror:
                cmd.append("--mirror")
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{c} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[c].append(res)
            print(f"repeat {r + 1} {c}: {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    labels = {c: np.load(results[c][-1]["labels"]) for c in contenders}
    ref = "nnunet" if "nnunet" in labels else contenders[0]
    t_ref = statistics.median(x["seconds"] for x in results[ref])
    print(f"\nvolume {tuple(args.shape)} at {SPACING} mm, patch {tuple(args.patch)}, step {args.step}, "
          f"mirroring {'on' if args.mirror else 'off'}, 1 thread each, {args.repeats} repeats (medians)\n")
    print(f"| contender | wall time (s) | speed vs {ref} | peak RSS (MB) | RSS before predicting (MB) | labels = {ref} |")
    print("|---|---|---|---|---|---|")
    for c in contenders:
        t = statistics.median(x["seconds"] for x in results[c])
        rss = statistics.median(x["peak_rss_mb"] for x in results[c])
        before = statistics.median(x["rss_before_mb"] for x in results[c])
        agree = float((labels[c] == labels[ref]).mean())
        print(f"| {c} | {t:.1f} | {t_ref / t:.2f}x | {rss:.0f} | {before:.0f} | {100 * agree:.3f} % |")
    if "medseg:fp32" in labels and "medseg:bf16" in labels:
        print(f"\nmedseg bf16 labels = fp32 labels on {100 * float((labels['medseg:bf16'] == labels['medseg:fp32']).mean()):.3f} %")
    if "monai" in labels and "medseg:fp32" in labels:
        print(f"MONAI labels = medseg fp32 labels on {100 * float((labels['monai'] == labels['medseg:fp32']).mean()):.3f} %")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
