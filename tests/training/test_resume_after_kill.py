"""A run killed with SIGKILL mid-epoch resumes from its last checkpoint and loses nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medseg.data.phantoms import make_phantoms
from medseg.pipeline import run_fingerprint, run_plan, run_preprocess
from medseg.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow


def test_kill_minus_nine_then_resume(tmp_path):
    ds = tmp_path / "Phantoms"
    make_phantoms(ds, cases=3, seed=8)
    run_fingerprint(ds, tmp_path)
    run_plan(ds, tmp_path, budget_gb=0.5, device="cpu", base_features=4, max_patch_voxels=8 * 32 * 32)
    run_preprocess(ds, tmp_path, "3d_fullres")
    args = [sys.executable, "-m", "medseg.cli", "train", str(ds), "-w", str(tmp_path), "--fold", "0",
            "--epochs", "4", "--iters-per-epoch", "40", "--val-iters", "1"]
    fold = tmp_path / "models" / "3d_fullres" / "fold_0"
    latest = fold / "checkpoint_latest.json"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait for the first epoch's checkpoint, then kill during the second epoch.
        deadline = time.monotonic() + 600
        while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert latest.exists(), "no checkpoint was written"
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    _, state = read_checkpoint(fold / "checkpoint_latest.safetensors")
    done = state["epoch"]
    assert 1 <= done < 4
    assert not (fold / "checkpoint_final.safetensors").exists()
    # No temporary files left behind as outputs, and the JSON twin is readable.
    json.loads(latest.read_text())
    resumed = subprocess.run(args + ["--resume"], capture_output=True, encoding="utf-8", errors="replace")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    info = json.loads((fold / "training.json").read_text())
    assert info["epochs"] == 4
    _, final = read_checkpoint(fold / "checkpoint_final.safetensors")
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3, 4]
