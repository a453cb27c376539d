"""Cross-validation splits, deterministic and saved as `splits.json`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.utils.files import read_json, write_json


def make_splits(case_ids: list[str], folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """K folds over the sorted case ids (shuffled with a fixed seed). With fewer cases than
    folds, every case still lands in exactly one validation set."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    k = max(1, min(folds, len(ids)))
    out = []
    for f in range(k):
        val = sorted(ids[i] for i in order[f::k])
        out.append({"train": sorted(set(ids) - set(val)), "val": val})
    return out


def load_or_make_splits(path: str | Path, case_ids: list[str], folds: int = 5) -> list[dict[str, list[str]]]:
    """Reuse `path` if it exists and covers the same cases; otherwise write new splits."""
    path = Path(path)
    if path.exists():
        splits = read_json(path)
        covered = set().union(*(set(s["train"]) | set(s["val"]) for s in splits))
        if covered == set(case_ids):
            return splits
    splits = make_splits(case_ids, folds)
    write_json(path, splits)
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: int | str) -> tuple[list[str], list[str]]:
    """(train, val) case ids of a fold; 'all' trains on everything and validates on it too."""
    if fold == "all":
        every = sorted(set(splits[0]["train"]) | set(splits[0]["val"]))
        return every, every
    fold = int(fold)
    if not 0 <= fold < len(splits):
        raise MedsegError(f"fold {fold} does not exist; there are {len(splits)} folds (0..{len(splits) - 1})")
    if not splits[fold]["train"]:
        return splits[fold]["val"], splits[fold]["val"]
    return splits[fold]["train"], splits[fold]["val"]
