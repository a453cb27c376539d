"""Random patches from preprocessed cases, read through memory maps (only the patch is touched).

A fraction of each batch (`oversample`, default 1/3) is centred on a random voxel of a
random foreground class present in the case; the rest is placed uniformly. Patches that
reach past the case are padded: image with 0 (the normalised mean), labels with 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError


class PreprocessedCase:
    """Memory-mapped arrays of one preprocessed case."""

    def __init__(self, folder: Path, case_id: str):
        self.case_id = case_id
        try:
            self.image = np.load(folder / f"{case_id}.npy", mmap_mode="r", allow_pickle=False)
            self.seg = np.load(folder / f"{case_id}_seg.npy", mmap_mode="r", allow_pickle=False)
            self.fg = np.load(folder / f"{case_id}_fg.npy", allow_pickle=False)
        except FileNotFoundError as err:
            raise MedsegError("preprocessed case is missing; run `medseg preprocess` first", err.filename) from None
        self.classes = sorted(set(self.fg[:, 0].tolist())) if len(self.fg) else []

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.seg.shape)


def read_patch(case: PreprocessedCase, start: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Patch of `size` whose first voxel is `start` (may be negative or run past the end)."""
    shape = case.shape
    lo = [max(s, 0) for s in start]
    hi = [min(s + n, d) for s, n, d in zip(start, size, shape)]
    img = np.zeros((case.image.shape[0], *size), dtype=np.float32)
    seg = np.zeros(tuple(size), dtype=np.int16)
    src = tuple(slice(a, b) for a, b in zip(lo, hi))
    dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
    img[(slice(None),) + dst] = case.image[(slice(None),) + src]
    seg[dst] = case.seg[src]
    return img, seg


class PatchSampler:
    """Draws batches of patches. `patch_size` is in (z, y, x) voxels of the preprocessed grid.

    Sample `i` of step `step` is drawn from its own generator seeded by (seed, step, i), so a
    batch is the same whether one process draws it whole or several ranks each draw a slice
    of it (`indices`): distributed training sees exactly what a single process would.
    """

    def __init__(self, folder: str | Path, case_ids: Sequence[str], patch_size: Sequence[int], batch_size: int,
                 oversample: float = 1 / 3, seed: int = 0, cut_size: Sequence[int] | None = None):
        """`cut_size` (>= patch_size): read this much around the patch's centre, for spatial
        augmentation that needs context beyond the final patch; placement still follows the
        final `patch_size`."""
        folder = Path(folder)
        if not case_ids:
            raise MedsegError("no cases to sample from", folder)
        self.cases = [PreprocessedCase(folder, c) for c in case_ids]
        self.patch_size = list(patch_size)
        self.batch_size = batch_size
        self.oversample = oversample
        self.seed = seed
        self.cut_size = list(cut_size) if cut_size is not None else list(patch_size)
        if any(c < p or (c - p) % 2 for c, p in zip(self.cut_size, self.patch_size)):
            raise ValueError(f"cut size {self.cut_size} must exceed patch size {self.patch_size} by even margins")

    def _size(self, case: PreprocessedCase, size: list[int] | None = None) -> list[int]:
        """Patch size in the case's axes: a 2D patch is one slice thick in a volume."""
        size = self.patch_size if size is None else size
        extra = len(case.shape) - len(size)
        return [1] * extra + size

    def sample_rng(self, step: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, index])

    def _start(self, rng: np.random.Generator, case: PreprocessedCase, force_fg: bool) -> list[int]:
        shape, size = case.shape, self._size(case)
        if force_fg and case.classes:
            cls = rng.choice(case.classes)
            rows = case.fg[case.fg[:, 0] == cls]
            centre = rows[rng.integers(len(rows)), 1:]
            return [int(c) - n // 2 for c, n in zip(centre, size)]
        # Uniform over placements; a patch larger than the case is centred with jitter.
        return [int(rng.integers(min(0, d - n), max(0, d - n) + 1)) for d, n in zip(shape, size)]

    def sample(self, step: int, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples `indices` (default: all) of the global batch of `step`:
        (image (b, C, *patch) float32, labels (b, *patch) int16)."""
        indices = range(self.batch_size) if indices is None else indices
        n_fg = int(round(self.batch_size * self.oversample))
        images, segs = [], []
        for i in indices:
            rng = self.sample_rng(step, i)
            case = self.cases[rng.integers(len(self.cases))]
            # The last n_fg samples of the global batch are forced onto foreground.
            start = self._start(rng, case, i >= self.batch_size - n_fg)
            size = self._size(case, self.cut_size)
            margin = [(c - p) // 2 for c, p in zip(size, self._size(case))]
            img, seg = read_patch(case, [s - m for s, m in zip(start, margin)], size)
            if len(size) > len(self.patch_size):  # a 2D patch from a volume: drop the slice axis
                img, seg = img[:, 0], seg[0]
            images.append(img)
            segs.append(seg)
        return np.stack(images), np.stack(segs)
