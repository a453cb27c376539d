"""The command line: one clear line per user error, non-zero exit, nothing half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medseg.cli import main
from medseg.io.image import Image, write_image


@pytest.fixture()
def dataset(tmp_path, phantom_dataset):
    ds = tmp_path / "ds"
    shutil.copytree(phantom_dataset, ds)
    return ds


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, needle: str):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0] and "Traceback" not in err


def test_missing_label_file(dataset, tmp_path, capsys):
    (dataset / "labelsTr" / "phantom_001.nii.gz").unlink()
    code, _, err = run(capsys, "fingerprint", dataset, "-w", tmp_path / "wd")
    assert code != 0
    assert_one_line_error(err, "phantom_001.nii.gz")
    assert not (tmp_path / "wd" / "fingerprint.json").exists()


def test_shape_mismatch(dataset, tmp_path, capsys):
    write_image(Image(np.zeros((5, 6, 7), np.uint8), (3, 1, 1)), dataset / "labelsTr" / "phantom_002.nii.gz")
    code, _, err = run(capsys, "fingerprint", dataset, "-w", tmp_path / "wd")
    assert code != 0
    assert_one_line_error(err, "phantom_002")


def test_undeclared_label_value(dataset, capsys):
    from medseg.io import read_image
    path = dataset / "labelsTr" / "phantom_000.nii.gz"
    lab = read_image(path)
    lab.array[0, 0, 0] = 7
    write_image(lab, path)
    code, out, _ = run(capsys, "validate", dataset)
    assert code != 0
    assert "phantom_000.nii.gz" in out and "7" in out


def test_nan_voxel(dataset, capsys):
    from medseg.io import read_image
    path = dataset / "imagesTr" / "phantom_003_0000.nii.gz"
    img = read_image(path)
    arr = img.array.astype(np.float32)
    arr[1, 2, 3] = np.nan
    write_image(img.with_array(arr), path)
    code, out, _ = run(capsys, "validate", dataset)
    assert code != 0
    assert "phantom_003_0000.nii.gz" in out and "NaN" in out


def test_unreadable_file(dataset, tmp_path, capsys):
    (dataset / "imagesTr" / "phantom_000_0000.nii.gz").write_bytes(b"not an image at all")
    code, _, err = run(capsys, "fingerprint", dataset, "-w", tmp_path / "wd")
    assert code != 0
    assert_one_line_error(err, "phantom_000_0000.nii.gz")


def test_validate_reports_all_problems_at_once(dataset, capsys):
    (dataset / "labelsTr" / "phantom_001.nii.gz").unlink()
    (dataset / "imagesTr" / "phantom_002_0000.nii.gz").write_bytes(b"junk")
    code, out, _ = run(capsys, "validate", dataset)
    assert code != 0 and "phantom_001.nii.gz" in out and "phantom_002_0000.nii.gz" in out


def test_plan_before_fingerprint_is_explained(dataset, tmp_path, capsys):
    code, _, err = run(capsys, "plan", dataset, "-w", tmp_path / "wd")
    assert code != 0
    assert_one_line_error(err, "fingerprint")


def test_fingerprint_and_plan_write_readable_json(dataset, tmp_path, capsys):
    wd = tmp_path / "wd"
    assert run(capsys, "fingerprint", dataset, "-w", wd)[0] == 0
    code, out, _ = run(capsys, "plan", dataset, "-w", wd, "--budget-gb", "1")
    assert code == 0 and "patch size" in out
    plans = json.loads((wd / "plans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    fp = json.loads((wd / "fingerprint.json").read_text())
    assert fp["num_cases"] == 4 and len(fp["median_spacing"]) == 3


def test_bad_augmentation_option_is_one_line(dataset, tmp_path, capsys):
    for option, needle in [("contrast_p=2", "contrast_p = 2 is not a probability"),
                           ("contrast=1", "unknown setting(s) contrast"),
                           ("contrast_p", "augmentation option 'contrast_p' is not KEY=VALUE")]:
        code, _, err = run(capsys, "train", dataset, "-w", tmp_path / "wd", "--augmentation-option", option)
        assert code != 0
        assert_one_line_error(err, needle)
    assert not (tmp_path / "wd" / "models").exists()


def test_models_lists_dynunet(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "dynunet" in out


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("make-phantoms", "validate", "convert-msd", "fingerprint", "plan", "preprocess", "train", "predict",
                "evaluate", "demo", "models", "report", "datasets", "export", "postprocess", "import-nnunet", "augment-preview"):
        assert cmd in out


def test_outputs_are_not_private(dataset, tmp_path, capsys):
    import os
    import stat
    wd = tmp_path / "wd"
    assert run(capsys, "fingerprint", dataset, "-w", wd)[0] == 0
    mode = stat.S_IMODE(os.stat(wd / "fingerprint.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_predict_accepts_device_and_precision(tmp_path, capsys):
    code, _, err = run(capsys, "predict", "-i", tmp_path, "-o", tmp_path / "out", "-m", tmp_path / "no_model",
                       "--device", "cpu", "--precision", "fp32")
    assert code == 2
    assert_one_line_error(err, "model.json")


def test_make_phantoms_takes_spacing_dimensions_and_scale(tmp_path, capsys):
    from medseg.io.image import read_image

    code, out, _ = run(capsys, "make-phantoms", tmp_path / "iso", "--cases", "2", "--spacing", "1", "1", "1",
                       "--scale", "0.5")
    assert code == 0 and "2 3D phantom cases" in out
    image = read_image(tmp_path / "iso" / "imagesTr" / "phantom_000_0000.nii.gz")
    assert image.array.ndim == 3 and all(0.85 < s < 1.15 for s in image.spacing)
    # Half the default's 1 mm grid of about 72 x 90 x 90 voxels.
    assert all(25 < n < 60 for n in image.shape), image.shape
    code, out, _ = run(capsys, "make-phantoms", tmp_path / "flat", "--cases", "2", "--spatial-dims", "2")
    assert code == 0 and "2 2D phantom cases" in out
    assert read_image(tmp_path / "flat" / "imagesTr" / "phantom_001_0000.nii.gz").array.ndim == 2
    code, _, err = run(capsys, "make-phantoms", tmp_path / "bad", "--spacing", "1", "0", "1")
    assert code != 0
    assert_one_line_error(err, "spacing must be three positive")
