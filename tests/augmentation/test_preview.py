"""The augmentation preview: a PNG grid and the parameters that reproduce it."""

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.augmentation.preview import preprocessed_folder, write_preview
from medseg.errors import MedsegError
from medseg.preprocessing.preprocess import class_locations, save_array
from medseg.utils.files import write_json


def make_preprocessed(root: Path, patch, shape) -> Path:
    folder = root / "preprocessed" / ("2d" if len(patch) == 2 else "3d_fullres")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        img = rng.normal(size=(1, *shape)).astype(np.float32)
        seg = np.zeros(shape, np.int16)
        seg[tuple(slice(n // 3, 2 * n // 3) for n in shape)] = 1
        seg[tuple(slice(n // 2, n // 2 + 3) for n in shape)] = 2
        img[0][seg > 0] += 2
        save_array(folder / f"{case}.npy", img)
        save_array(folder / f"{case}_seg.npy", seg)
        save_array(folder / f"{case}_fg.npy", class_locations(seg, [1, 2], 50, 0))
        write_json(folder / f"{case}.json", {"case_id": case})
    write_json(folder / "plan.json",
               {"configuration": folder.name, "patch_size": list(patch), "spatial_dims": len(patch)})
    return folder


@pytest.mark.parametrize("patch,shape", [((12, 20, 20), (24, 40, 40)), ((24, 24), (48, 48))])
def test_write_preview(tmp_path, patch, shape):
    folder = make_preprocessed(tmp_path, patch, shape)
    out = tmp_path / "preview.png"
    params = write_preview(tmp_path, out, n=4, seed=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(params) == 4
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["params"] == params and record["patch_size"] == list(patch)
    assert write_preview(folder, tmp_path / "again.png", n=4, seed=3) == params  # same seed, same patches


def test_preview_names_missing_data(tmp_path):
    with pytest.raises(MedsegError, match="preprocess"):
        preprocessed_folder(tmp_path)
    with pytest.raises(MedsegError, match="3d_lowres"):
        preprocessed_folder(tmp_path, "3d_lowres")
