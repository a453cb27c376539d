"""medseg's planner against nnU-Net v2's default ExperimentPlanner, on the same phantom datasets.

Each phantom variant (`medseg.data.phantoms.make_phantoms` with another spacing, size or
dimensionality) is written once, in nnU-Net's raw layout, under WORKDIR/raw/Dataset9NN_<name>.
Then, on the same files:

- medseg: `compute_fingerprint` and `make_plans(budget_gb=8, device="cuda")` (the default 8 GB
  GPU budget; the memory model predicts bytes, nothing is measured, no GPU is needed);
- nnU-Net v2: `DatasetFingerprintExtractor` and the default `ExperimentPlanner` (8 GB), in a
  child process whose nnUNet_raw / nnUNet_preprocessed / nnUNet_results point into WORKDIR.

It prints one Markdown table per dataset: per configuration and planner, the target spacing,
patch, batch, pooling (strides per stage, first stage included), kernels and features, all
in medseg's (z, y, x) order (nnU-Net's transposed axes are put back; its `2d` slices along
its first transposed axis, which the table names). Needs nnunetv2 (not a CI dependency).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_planner.py [--workdir DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

# name -> (cases, make_phantoms options). Spacings are the centres of each case's spacing (z, y, x), mm.
VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "default": (20, {}),  # 22-30 x 96-128^2 voxels of 2.5-3.0 x 0.75-0.85 mm
    "isotropic": (12, {"spacing": (1.0, 1.0, 1.0), "shape_scale": 2.0}),  # about 160^3, 1 mm
    "anisotropic": (12, {"spacing": (5.0, 0.7, 0.7), "shape_scale": 2.0}),  # about 32 x 260^2, 5 x 0.7 mm
    "large": (4, {"spacing": (1.0, 1.0, 1.0), "shape_scale": 3.5}),  # about 280 x 310^2, 1 mm
    "large_ct": (4, {"spacing": (2.5, 0.7, 0.7), "shape_scale": 3.5}),  # about 110 x 450^2, 2.5 x 0.7 mm
    "tiny": (20, {"shape_scale": 0.25}),  # about 8 x 28^2: smaller than any patch
    "2d": (40, {"spatial_dims": 2, "shape_scale": 2.0}),  # about 230^2 slices, 0.8 mm
    # About 460^2 slices of 0.8 mm, cut from volumes with 8 mm slices (fewer voxels to paint).
    "2d_large": (12, {"spatial_dims": 2, "shape_scale": 4.0, "spacing": (8.0, 0.8, 0.8)}),
}
CONFIGS = ("2d", "3d_fullres", "3d_lowres")
BUDGET_GB = 8.0


def make_datasets(raw: Path, names: Sequence[str]) -> dict[str, Path]:
    """Write each variant once (a folder that is already complete is reused)."""
    from medseg.data.phantoms import make_phantoms

    out = {}
    for i, name in enumerate(VARIANTS):
        if name not in names:
            continue
        cases, options = VARIANTS[name]
        folder = raw / f"Dataset{901 + i}_{name}"
        done = folder / "dataset.json"
        if not (done.is_file() and json.loads(done.read_text())["numTraining"] == cases):
            print(f"writing {name}: {cases} cases {options}", flush=True)
            make_phantoms(folder, cases=cases, seed=0, **options)
        out[name] = folder
    return out


def medseg_plans(folder: Path) -> dict[str, dict[str, Any]]:
    """medseg's configurations for an 8 GB GPU, in (z, y, x) order."""
    from medseg.planning import make_plans
    from medseg.preprocessing.fingerprint import compute_fingerprint

    plans = make_plans(compute_fingerprint(folder), budget_gb=BUDGET_GB, device="cuda")
    out = {}
    for name in plans.names():
        if name not in CONFIGS:
            continue  # 3d_cascade_fullres: inherits 3d_fullres
        c = plans.configuration(name)
        out[name] = {"spacing": c.target_spacing, "patch": c.patch_size, "batch": c.batch_size,
                     "strides": c.model_options["strides"], "kernels": c.model_options["kernel_sizes"],
                     "features": c.model_options["features"], "median_shape": c.median_shape,
                     **_batch_limits(c.notes)}
    return out


def _batch_limits(notes: Sequence[str]) -> dict[str, int]:
    """The batch that fits the memory and the 5 % cap, from the plan's notes."""
    for note in notes:
        m = re.match(r"batch \d+: (\d+) fit the memory budget; .*?, (\d+) patches", note)
        if m:
            return {"memory_batch": int(m.group(1)), "cap": int(m.group(2))}
    raise ValueError(f"no batch note in {notes}")


def _nnunet_child(raw: Path, dataset_id: int) -> None:
    """Runs in the child process, with nnU-Net's environment variables set: fingerprint and plan,
    then print the plans as one JSON line."""
    import contextlib
    import io

    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    with contextlib.redirect_stdout(io.StringIO()):  # both print their progress
        extractor = DatasetFingerprintExtractor(dataset_id, num_processes=1)
        extractor.show_progress_bar = False
        extractor.run(overwrite_existing=True)
        planner = ExperimentPlanner(dataset_id, gpu_memory_target_in_gb=BUDGET_GB)
        plans = planner.plan_experiment()
        # The batch its memory criterion gives (before the 5 % cap and the minimum of 2), as it computes it.
        inputs, outputs = len(planner.dataset_json["channel_names"]), len(planner.dataset_json["labels"])
        for c in plans["configurations"].values():
            if "architecture" not in c:
                continue
            arch, dims = c["architecture"], len(c["patch_size"])
            estimate = planner.static_estimate_VRAM_usage(c["patch_size"], inputs, outputs, arch["network_class_name"],
                                                          arch["arch_kwargs"], arch["_kw_requires_import"])
            reference = (planner.UNet_reference_val_2d if dims == 2 else planner.UNet_reference_val_3d) * \
                BUDGET_GB / planner.UNet_reference_val_corresp_GB
            ref_batch = planner.UNet_reference_val_corresp_bs_2d if dims == 2 else planner.UNet_reference_val_corresp_bs_3d
            c["memory_batch"] = round(reference / estimate * ref_batch)
    print(json.dumps(plans, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def nnunet_plans(work: Path, dataset_id: int) -> dict[str, dict[str, Any]]:
    """nnU-Net's configurations, put back into (z, y, x) order."""
    env = {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
           "nnUNet_results": str(work / "nnunet_results"), "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--nnunet-child", str(dataset_id), "--workdir", str(work)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nnU-Net failed on dataset {dataset_id}:\n{proc.stderr[-3000:]}")
    plans = json.loads(proc.stdout.strip().splitlines()[-1])
    back = plans["transpose_backward"]
    forward = plans["transpose_forward"]
    cases = json.loads((work / "raw" / plans["dataset_name"] / "dataset.json").read_text())["numTraining"]
    configs = plans["configurations"]
    # nnU-Net's 5 % cap counts the median image of 3d_fullres (2d too) or 3d_lowres, times the cases.
    counted = {name: math.prod(configs.get("3d_fullres" if name == "2d" else name, c)["median_image_size_in_voxels"])
               for name, c in configs.items() if "architecture" in c}
    out = {}
    for name, c in plans["configurations"].items():
        if "architecture" not in c:
            continue  # 3d_cascade_fullres: inherits 3d_fullres
        arch = c["architecture"]["arch_kwargs"]
        dims = len(c["patch_size"])

        def axes(v: Sequence) -> list:  # transposed order -> (z, y, x)
            return [v[back[i]] for i in range(3)] if dims == 3 else list(v)

        out[name] = {"spacing": axes(c["spacing"]), "patch": axes(c["patch_size"]), "batch": c["batch_size"],
                     "strides": [axes(s) for s in arch["strides"]], "kernels": [axes(k) for k in arch["kernel_sizes"]],
                     "features": list(arch["features_per_stage"]), "median_shape": axes(c["median_image_size_in_voxels"]),
                     "slices_along": forward[0] if dims == 2 else None}
        out[name]["cap"] = max(2, round(0.05 * counted[name] * cases / math.prod(c["patch_size"])))
        out[name]["memory_batch"] = c["memory_batch"]
    return out


def _fmt(v: Sequence[float], digits: int = 4) -> str:
    return "x".join(f"{x:.{digits}g}" if isinstance(x, float) else str(x) for x in v)


def _runs(items: Sequence[Sequence[int]]) -> str:
    """[[1,1,1],[1,2,2],[1,2,2],[2,2,2]] -> '1x1x1, 1x2x2 (2), 2x2x2'."""
    out: list[list] = []
    for it in items:
        if out and out[-1][0] == list(it):
            out[-1][1] += 1
        else:
            out.append([list(it), 1])
    return ", ".join(_fmt(v) + (f" ({n})" if n > 1 else "") for v, n in out)


def pools_per_axis(strides: Sequence[Sequence[int]]) -> list[int]:
    return [sum(1 for s in strides if s[a] == 2) for a in range(len(strides[0]))]


def table(ours: dict, theirs: dict) -> str:
    lines = ["| configuration | planner | target spacing (mm) | median shape | patch | batch (memory, 5 % cap) "
             "| pools per axis "
             "| strides per stage | kernels per stage | features |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for config in CONFIGS:
        for planner, plans in (("medseg", ours), ("nnU-Net", theirs)):
            c = plans.get(config)
            if c is None:
                if config in ours or config in theirs:
                    lines.append(f"| {config} | {planner} | (none) | | | | | | | |")
                continue
            note = f" (slices along axis {c['slices_along']})" if c.get("slices_along") not in (None, 0) else ""
            lines.append(
                f"| {config} | {planner}{note} | {_fmt(c['spacing'], 5)} | {_fmt(c['median_shape'])} "
                f"| {_fmt(c['patch'])} | {c['batch']} ({c['memory_batch']}, {c['cap']}) | {_fmt(pools_per_axis(c['strides']))} | {_runs(c['strides'])} "
                f"| {_runs(c['kernels'])} | {'-'.join(map(str, c['features']))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="keep datasets and plans here (default: a temp dir)")
    ap.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--nnunet-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nnunet_child is not None:
        _nnunet_child(args.workdir / "raw", args.nnunet_child)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg_compare_planner_"))
    try:
        datasets = make_datasets(work / "raw", args.only)
        print(f"budget {BUDGET_GB:g} GB; medseg device cuda (predicted bytes), nnU-Net ExperimentPlanner\n")
        for name, folder in datasets.items():
            dataset_id = int(folder.name[len("Dataset"):].split("_")[0])
            cases, options = VARIANTS[name]
            print(f"**{name}**: {cases} cases, `make_phantoms({', '.join(f'{k}={v}' for k, v in options.items())})`\n",
                  flush=True)
            print(table(medseg_plans(folder), nnunet_plans(work, dataset_id)) + "\n", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
