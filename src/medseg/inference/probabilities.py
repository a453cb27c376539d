"""Class probabilities beside a prediction: `CASE.npz` and `CASE.json`.

`CASE.npz` holds one array, `probabilities`: (C, z, y, x) float16 ((C, y, x) in 2-D), channel
k the probability of label value k, on the input scan's own grid (the label map's shape).
Outside the box the predictor cropped to (voxels that are 0 in every input channel) the
background has probability 1. `np.load(path, allow_pickle=False)["probabilities"]` reads it;
nnU-Net v2 writes the same key (with a pickle beside it, where medseg writes `CASE.json`:
spacing, origin, direction, the class of each channel and how the values were made).

The file is written while the predictor resamples its scores back, one slab of z-slices at a
time, so no array of the full size is ever held: slabs go class-major into an uncompressed
temporary file beside the output, which is then deflated into the `.npz` piece by piece,
written under a temporary name and renamed (nothing half-written is ever at `CASE.npz`).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from math import prod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.utils.files import atomic_path, read_json, write_json

KEY = "probabilities"
PIECE_BYTES = 16 * 1024**2  # what is read, or repeated as background, per write into the zip


class ProbabilityWriter:
    """Stream (C, *shape) probabilities into `path` (.npz) and its JSON, slab by slab.

    `shape` is the full grid (z, y, x); `bbox` the [(start, stop), ...] box per axis that
    the slabs cover; outside it channel 0 (the background) is 1 and the others 0, or every
    channel 0 without `background` (region models: channel 0 is a region). Use as a context
    manager: leaving the block by an exception removes the temporary file and writes nothing.
    """

    def __init__(self, path: str | Path, num_classes: int, shape: Sequence[int],
                 bbox: Sequence[Sequence[int]], dtype: np.dtype | type = np.float16, background: bool = True):
        self.path = Path(path)
        self.background = background
        self.num_classes = int(num_classes)
        self.shape = tuple(int(s) for s in shape)
        self.bbox = [(int(a), int(b)) for a, b in bbox]
        self.dtype = np.dtype(dtype)
        self._plane = prod(self.shape[1:])
        self._rows = self.bbox[0][1] - self.bbox[0][0]
        self._inplane = tuple(slice(a, b) for a, b in self.bbox[1:])
        self._written = np.zeros(self._rows, dtype=bool)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".raw", dir=self.path.parent)
        self._raw_path = Path(tmp)
        self._raw = os.fdopen(fd, "w+b")

    def __enter__(self) -> "ProbabilityWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, start: int, slab: torch.Tensor | np.ndarray) -> None:
        """Probabilities (C, n, *box in-plane) of the box's slices start .. start + n - 1
        (counted from the box's first slice)."""
        slab = slab.numpy() if isinstance(slab, torch.Tensor) else np.asarray(slab)
        n = slab.shape[1]
        full = np.zeros((self.num_classes, n, *self.shape[1:]), dtype=self.dtype)
        if slab.shape[2:] != self.shape[1:] and self.background:
            full[0] = 1
        full[(slice(None), slice(None)) + self._inplane] = slab
        for k in range(self.num_classes):
            self._raw.seek((k * self._rows + start) * self._plane * self.dtype.itemsize)
            self._raw.write(full[k].data)
        self._written[start:start + n] = True

    def finish(self, info: dict[str, Any], compresslevel: int = 1) -> Path:
        """Deflate into `path` and write `info` (plus the array's description) as JSON beside
        it (`CASE.json`). Returns the .npz path."""
        if not self._written.all():
            raise RuntimeError(f"{self.path}: slices {np.flatnonzero(~self._written)[:5].tolist()}... never written")
        self._raw.flush()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.num_classes, *self.shape)}
        before, after = self.bbox[0][0], self.shape[0] - self.bbox[0][1]
        with atomic_path(self.path) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf, \
                    zf.open(f"{KEY}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array_header_1_0(out, header)
                for k in range(self.num_classes):
                    self._background(out, k, before)
                    self._raw.seek(k * self._rows * self._plane * self.dtype.itemsize)
                    left = self._rows * self._plane * self.dtype.itemsize
                    while left:
                        piece = self._raw.read(min(left, PIECE_BYTES))
                        out.write(piece)
                        left -= len(piece)
                    self._background(out, k, after)
        write_json(json_path(self.path), {"file": self.path.name, "key": KEY, "dtype": self.dtype.name,
                                          "shape": [self.num_classes, *self.shape], **info})
        self.close()
        return self.path

    def _background(self, out, k: int, rows: int) -> None:
        """`rows` slices of class k outside the box: 1 for the background, else 0."""
        values = rows * self._plane
        fill = 1 if k == 0 and self.background else 0
        block = np.full(min(values, PIECE_BYTES // self.dtype.itemsize), fill, dtype=self.dtype)
        while values:
            out.write(block[:min(values, block.size)].data)
            values -= min(values, block.size)

    def close(self) -> None:
        """Remove the temporary file (`finish` calls this; so does leaving the block)."""
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def json_path(npz_path: str | Path) -> Path:
    """`CASE.json` beside `CASE.npz`."""
    return Path(npz_path).with_suffix(".json")


def read_probabilities(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(probabilities (C, z, y, x), the JSON beside them) of a `CASE.npz` written by
    `medseg predict --save-probabilities`. Loads without pickle."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            array = npz[KEY]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise MedsegError(f"not a probabilities file ({err})", path) from None
    return array, read_json(json_path(path))
