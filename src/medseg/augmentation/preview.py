"""See what the network sees: a PNG grid of training patches before and after augmentation.

`write_preview` cuts `n` enlarged input patches as training does, each centred on a random
foreground voxel (so the labels show; a case without foreground gives a random centre),
augments them with a seeded generator and draws, per patch, the centre slice (first axis) of
the first channel with the labels over it: the top row without augmentation (the centre
crop), the bottom row augmented, and under each the parameters that were drawn. The
parameters are also written beside the PNG as JSON, so any patch can be reproduced.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.augmentation.augmenter import Augmenter, describe
from medseg.augmentation.config import AugmentationConfig
from medseg.errors import MedsegError
from medseg.utils.files import atomic_path, read_json, write_json


def preprocessed_folder(source: str | Path, configuration: str | None = None) -> Path:
    """`source` is a preprocessed configuration folder (holding plan.json) or a working directory,
    in which case `configuration` names the folder under preprocessed/ (default: 3d_fullres, 2d,
    or the only one there is)."""
    source = Path(source)
    if (source / "plan.json").exists():
        return source
    root = source / "preprocessed"
    if configuration is not None:
        folder = root / configuration
        if not (folder / "plan.json").exists():
            raise MedsegError(f"configuration {configuration!r} is not preprocessed; run `medseg preprocess`", folder)
        return folder
    found = sorted(p.parent.name for p in root.glob("*/plan.json"))
    if not found:
        raise MedsegError("no preprocessed data here; run `medseg preprocess` or pass a preprocessed folder", source)
    for name in ("3d_fullres", "2d"):
        if name in found:
            return root / name
    if len(found) == 1:
        return root / found[0]
    raise MedsegError(f"several configurations are preprocessed ({', '.join(found)}); choose one", source)


def write_preview(source: str | Path, out_png: str | Path, *, configuration: str | None = None, n: int = 8,
                  seed: int = 0, augmentation: AugmentationConfig | None = None) -> list[dict[str, Any]]:
    """Draw `n` augmented patches with their labels into `out_png`; returns their parameters
    (also written to the same name with .json)."""
    from medseg.training.sampler import PreprocessedCase, read_patch

    if n < 1:
        raise ValueError("n must be at least 1")
    folder = preprocessed_folder(source, configuration)
    plan = read_json(folder / "plan.json")
    patch = [int(p) for p in plan["patch_size"]]
    config = augmentation or AugmentationConfig()
    aug = Augmenter(config, patch)
    case_ids = sorted(p.stem for p in folder.glob("*.json") if p.name != "plan.json")
    if not case_ids:
        raise MedsegError("no preprocessed cases here", folder)
    cases = [PreprocessedCase(folder, c) for c in case_ids]
    rng = np.random.default_rng(seed)
    size = aug.input_patch_size()
    images, labels = [], []
    for i in range(n):
        case = cases[int(rng.integers(len(cases)))]
        if len(case.fg):
            centre = case.fg[int(rng.integers(len(case.fg))), 1:]
        else:
            centre = [int(rng.integers(d)) for d in case.shape]
        img, seg = read_patch(case, [int(c) - s // 2 for c, s in zip(centre, size)], size)
        images.append(img)
        labels.append(seg)
    image, label = torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))
    out, out_label, params = aug(image, label, torch.Generator().manual_seed(seed))
    box = tuple(slice((q - p) // 2, (q - p) // 2 + p) for q, p in zip(image.shape[2:], patch))
    plain, plain_label = image[(slice(None), slice(None), *box)], label[(slice(None), *box)]
    _draw(plain, plain_label, out, out_label, params, Path(out_png),
          title=f"{folder.parent.parent.name} {plan.get('configuration', folder.name)}: patch {patch}, "
                f"cut {list(aug.input_patch_size())}, seed {seed}")
    write_json(Path(out_png).with_suffix(".json"),
               {"source": str(folder), "patch_size": patch, "input_patch_size": list(aug.input_patch_size()),
                "seed": seed, "augmentation": config.to_dict(), "params": params})
    return params


def _centre_slice(x: torch.Tensor) -> np.ndarray:
    """(*spatial) -> its middle slice along the first axis (3D), or itself (2D)."""
    a = x.numpy()
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def _draw(plain, plain_label, out, out_label, params, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = out.shape[0]
    top = int(max(plain_label.max(), out_label.max(), 1))
    colours = plt.get_cmap("tab10")(np.arange(top) % 10)
    cmap = ListedColormap(np.vstack([[0, 0, 0, 0], colours]))
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 6.2), squeeze=False)
    for i in range(n):
        ref = _centre_slice(plain[i, 0])
        lo, hi = np.percentile(ref, [1, 99]) if ref.size else (0, 1)
        hi = hi if hi > lo else lo + 1
        for row, (img, lab) in enumerate(((plain[i, 0], plain_label[i]), (out[i, 0], out_label[i]))):
            ax = axes[row, i]
            ax.imshow(_centre_slice(img), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            lab2 = _centre_slice(lab).astype(float)
            ax.imshow(np.ma.masked_equal(lab2, 0), cmap=cmap, vmin=0, vmax=top, alpha=0.45, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, i].set_title(f"patch {i}", fontsize=8)
        axes[1, i].set_xlabel("\n".join(textwrap.wrap(describe(params[i]), 26)), fontsize=7)
    axes[0, 0].set_ylabel("not augmented", fontsize=8)
    axes[1, 0].set_ylabel("augmented", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
