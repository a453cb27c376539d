"""Random patches from preprocessed cases, read through memory maps (only the patch is touched).

A fraction of each batch (`oversample`, default 1/3) is centred on a random voxel of a
random foreground class present in the case; the rest is placed uniformly. Patches that
reach past the case are padded: image with 0 (the normalised mean), labels with 0. A cascade
stage also reads the previous stage's segmentation at the same place (`sample_previous`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError


class PreprocessedCase:
    """Memory-mapped arrays of one preprocessed case; with `previous_dir`, also the previous
    stage's segmentation of the case on the same grid (a cascade stage's extra input)."""

    def __init__(self, folder: Path, case_id: str, previous_dir: Path | None = None):
        self.case_id = case_id
        try:
            self.image = np.load(folder / f"{case_id}.npy", mmap_mode="r", allow_pickle=False)
            self.seg = np.load(folder / f"{case_id}_seg.npy", mmap_mode="r", allow_pickle=False)
            self.fg = np.load(folder / f"{case_id}_fg.npy", allow_pickle=False)
        except FileNotFoundError as err:
            raise MedsegError("preprocessed case is missing; run `medseg preprocess` first", err.filename) from None
        self.classes = sorted(set(self.fg[:, 0].tolist())) if len(self.fg) else []
        self.previous = None if previous_dir is None else _load_previous(Path(previous_dir) / f"{case_id}.npy",
                                                                         self.seg.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.seg.shape)


def _load_previous(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        prev = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise MedsegError("previous-stage prediction is missing; run `medseg predict-next-stage`", path) from None
    if prev.shape != shape:
        raise MedsegError(f"previous-stage prediction has shape {list(prev.shape)} but the preprocessed case "
                          f"{list(shape)}; run `medseg predict-next-stage` again", path)
    return prev


def _window(array: np.ndarray, start: Sequence[int], size: Sequence[int], dtype) -> np.ndarray:
    """A copy of `array`'s trailing spatial axes from `start` (may be negative or run past the
    end; the outside reads 0), leading axes (channels) kept whole."""
    lead = (slice(None),) * (array.ndim - len(size))
    shape = array.shape[-len(size):]
    lo = [max(s, 0) for s in start]
    hi = [min(s + n, d) for s, n, d in zip(start, size, shape)]
    out = np.zeros((*array.shape[:array.ndim - len(size)], *size), dtype=dtype)
    src = tuple(slice(a, b) for a, b in zip(lo, hi))
    dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
    out[lead + dst] = array[lead + src]
    return out


def read_patch(case: PreprocessedCase, start: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Patch of `size` whose first voxel is `start` (may be negative or run past the end)."""
    return _window(case.image, start, size, np.float32), _window(case.seg, start, size, np.int16)


def read_previous(case: PreprocessedCase, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The previous stage's segmentation at the patch `read_patch` reads (background outside)."""
    if case.previous is None:
        raise ValueError(f"case {case.case_id} was loaded without a previous stage")
    return _window(case.previous, start, size, np.int16)


class PatchSampler:
    """Draws batches of patches. `patch_size` is in (z, y, x) voxels of the preprocessed grid.

    Sample `i` of step `step` is drawn from its own generator seeded by (seed, step, i), so a
    batch is the same whether one process draws it whole or several ranks each draw a slice
    of it (`indices`): distributed training sees exactly what a single process would.
    """

    def __init__(self, folder: str | Path, case_ids: Sequence[str], patch_size: Sequence[int], batch_size: int,
                 oversample: float = 1 / 3, seed: int = 0, cut_size: Sequence[int] | None = None,
                 previous_dir: str | Path | None = None):
        """`cut_size` (>= patch_size): read this much around the patch's centre, for spatial
        augmentation that needs context beyond the final patch; placement still follows the
        final `patch_size`. `previous_dir`: the previous stage's segmentations (CASE.npy on the
        preprocessed grid), read by `sample_previous` at the same places."""
        folder = Path(folder)
        if not case_ids:
            raise MedsegError("no cases to sample from", folder)
        prev = Path(previous_dir) if previous_dir is not None else None
        self.cases = [PreprocessedCase(folder, c, prev) for c in case_ids]
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

    def _placements(self, step: int, indices: Sequence[int] | None
                    ) -> list[tuple[PreprocessedCase, list[int], list[int]]]:
        """(case, first voxel, size) of what samples `indices` of step `step` read: a function
        of (seed, step, index) only."""
        indices = range(self.batch_size) if indices is None else indices
        n_fg = int(round(self.batch_size * self.oversample))
        out = []
        for i in indices:
            rng = self.sample_rng(step, i)
            case = self.cases[rng.integers(len(self.cases))]
            # The last n_fg samples of the global batch are forced onto foreground.
            start = self._start(rng, case, i >= self.batch_size - n_fg)
            size = self._size(case, self.cut_size)
            margin = [(c - p) // 2 for c, p in zip(size, self._size(case))]
            out.append((case, [s - m for s, m in zip(start, margin)], size))
        return out

    def _flat(self, size: list[int]) -> bool:
        return len(size) > len(self.patch_size)  # a 2D patch from a volume: drop the slice axis

    def sample(self, step: int, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples `indices` (default: all) of the global batch of `step`:
        (image (b, C, *patch) float32, labels (b, *patch) int16)."""
        images, segs = [], []
        for case, start, size in self._placements(step, indices):
            img, seg = read_patch(case, start, size)
            if self._flat(size):
                img, seg = img[:, 0], seg[0]
            images.append(img)
            segs.append(seg)
        return np.stack(images), np.stack(segs)

    def sample_previous(self, step: int, indices: Sequence[int] | None = None) -> np.ndarray:
        """The previous stage's segmentation (b, *patch) int16 where `sample(step, indices)` reads."""
        out = []
        for case, start, size in self._placements(step, indices):
            prev = read_previous(case, start, size)
            out.append(prev[0] if self._flat(size) else prev)
        return np.stack(out)
