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
    """The splits in `path` if it exists, else `folds` new ones written there.

    An existing file is the user's (or the dataset's) choice and is never rewritten: it may
    leave cases out (they are then not used), but every case it names must be in `case_ids`
    and every fold must have a "train" and a "val" list; otherwise MedsegError names the file.
    """
    path = Path(path)
    if not path.exists():
        splits = make_splits(case_ids, folds)
        write_json(path, splits)
        return splits
    splits = read_json(path)
    if (not isinstance(splits, list) or not splits
            or not all(isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list)
                       for s in splits)):
        raise MedsegError('splits must be a non-empty list of {"train": [...], "val": [...]} folds', path)
    unknown = sorted(_named(splits) - set(case_ids))
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise MedsegError(f"names cases that are not in the preprocessed data: {', '.join(unknown[:5])}{more}", path)
    return splits


def unused_cases(splits: list[dict[str, list[str]]], case_ids: list[str]) -> list[str]:
    """Cases that no fold of `splits` names (a hand-made split may leave some out)."""
    return sorted(set(case_ids) - _named(splits))


def _named(splits: list[dict[str, list[str]]]) -> set[str]:
    return set().union(*(set(s["train"]) | set(s["val"]) for s in splits))


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
