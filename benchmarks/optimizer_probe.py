"""How fast each optimiser leaves the all-background start, on a preprocessed 2d dataset.

A bare loop, no augmentation and no deep supervision, so that only the optimiser differs:
batches of foreground slices of the training cases, the plan's `2d` network, Dice + CE with
batch Dice, and every `--every` steps the validation cases' Dice (mean over the classes each
case holds) and the fraction of voxels predicted foreground. Made for the subcortical dataset
(docs/training.md, "Optimiser"):

    .venv/bin/python benchmarks/real_results.py subcortical --config 2d --minutes 1 --workdir /tmp/real
    .venv/bin/python benchmarks/optimizer_probe.py /tmp/real/subcortical/work --steps 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from medseg.losses import create_loss
from medseg.models import create_model

OPTIMISERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5),
    "sgd_momentum_0.9": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=3e-5),
    "sgd_warmup_50": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=3e-5),
}


def _stack(folder: Path, cases: list[str], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c in cases:
        x, y = np.load(folder / f"{c}.npy")[0], np.load(folder / f"{c}_seg.npy")
        pad = ((0, 0), (0, shape[0] - x.shape[1]), (0, shape[1] - x.shape[2]))
        xs.append(np.pad(x, pad))
        ys.append(np.pad(y, pad))
    return np.concatenate(xs), np.concatenate(ys)


def _dice(pred: np.ndarray, ref: np.ndarray, classes: int) -> float:
    scores = [2 * ((pred == k) & (ref == k)).sum() / ((pred == k).sum() + (ref == k).sum())
              for k in range(1, classes) if (ref == k).any()]
    return float(np.mean(scores))


def run(workdir: Path, name: str, steps: int, every: int, seed: int) -> list[dict]:
    plans = json.loads((workdir / "plans.json").read_text())
    plan = plans["configurations"]["2d"]
    split = json.loads((workdir / "splits.json").read_text())[0]
    folder = workdir / "preprocessed" / "2d"
    shape = tuple(plan["patch_size"])
    x, y = _stack(folder, split["train"], shape)
    xv, yv = _stack(folder, split["val"], shape)
    classes = max(plans["labels"].values()) + 1
    torch.manual_seed(seed)
    net = create_model(plan["model"], spatial_dims=2, in_channels=1, num_classes=classes,
                       **{**plan["model_options"], "deep_supervision": False})
    opt = OPTIMISERS[name](net.parameters())
    loss_fn = create_loss("dice_ce_batch")
    with_fg = np.flatnonzero(y.reshape(len(y), -1).max(1) > 0)
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(steps + 1):
        if step % every == 0:
            net.eval()
            with torch.no_grad():
                pred = torch.cat([net(torch.from_numpy(xv[i:i + 32, None])).argmax(1)
                                  for i in range(0, len(xv), 32)]).numpy()
            net.train()
            rows.append({"optimizer": name, "step": step, "val_dice": round(_dice(pred, yv, classes), 3),
                         "foreground_fraction": round(float((pred > 0).mean()), 4)})
            print(json.dumps(rows[-1]), flush=True)
        if step == steps:
            break
        if name == "sgd_warmup_50":
            for g in opt.param_groups:
                g["lr"] = 1e-2 * min(1.0, (step + 1) / 50)
        idx = rng.choice(with_fg, plan["batch_size"])
        loss = loss_fn(net(torch.from_numpy(x[idx, None])), torch.from_numpy(y[idx]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="a medseg workdir with plans.json, splits.json and preprocessed/2d")
    ap.add_argument("--optimizers", default=",".join(OPTIMISERS))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for name in a.optimizers.split(","):
        run(a.workdir, name, a.steps, a.every, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
