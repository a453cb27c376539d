"""Class probabilities written beside predictions (`--save-probabilities`)."""

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.probabilities import ProbabilityWriter, read_probabilities
from medseg.io import Image, read_image
from medseg.utils.files import read_json, write_json


def _check_against_labels(probs: np.ndarray, labels: np.ndarray) -> None:
    """Probabilities sum to 1 per voxel, and their arg-max is the label map wherever the two
    largest written values differ (float16 can round a near-tie to a tie)."""
    assert probs.dtype == np.float16 and probs.shape == (3, *labels.shape)
    p = probs.astype(np.float32)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=2e-3)
    top2 = np.sort(p, axis=0)[-2:]
    decided = top2[1] > top2[0]
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(p.argmax(0)[decided], labels[decided])


def test_cli_writes_probabilities_on_each_scans_grid(tiny_model_dir, scans, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", "-i", str(scans), "-o", str(out), "-m", str(tiny_model_dir), "--device", "cpu",
                 "--precision", "fp32", "--save-probabilities"])
    assert code == 0 and "class probabilities" in capsys.readouterr().out
    for i in range(3):
        image = read_image(scans / f"case{i}_0000.nii.gz")
        labels = read_image(out / f"case{i}.nii.gz").array
        with np.load(out / f"case{i}.npz", allow_pickle=False) as npz:
            assert list(npz.keys()) == ["probabilities"]
            probs = npz["probabilities"]
        _check_against_labels(probs, labels)
        info = json.loads((out / f"case{i}.json").read_text())
        np.testing.assert_allclose(info["spacing"], image.spacing)
        np.testing.assert_allclose(info["origin"], image.origin)
        np.testing.assert_allclose(info["direction"], image.direction)
        assert info["classes"] == ["background", "a", "b"] and info["axes"] == ["class", "z", "y", "x"]
        assert info["shape"] == [3, *image.shape] and info["key"] == "probabilities"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary left


@pytest.mark.parametrize("scores", ["softmax", "logits"])
def test_background_is_certain_outside_the_cropped_box(tiny_model_dir, tmp_path, scores):
    # Zero margins are cropped away before the network; there the background has probability 1.
    if scores == "logits":
        desc = read_json(tiny_model_dir / "model.json")
        write_json(tiny_model_dir / "model.json", {**desc, "scores": "logits"})
    rng = np.random.default_rng(1)
    array = np.zeros((14, 40, 36), np.float32)
    array[3:11, 5:30, 8:33] = rng.normal(40, 60, size=(8, 25, 25))
    image = Image(array, (2.0, 0.9, 1.1), origin=(1.0, 2.0, 3.0))
    target = tmp_path / "case.npz"
    labels = Predictor.from_model_dir(tiny_model_dir, folds=[0]).predict(image, probabilities_to=target).array
    probs, info = read_probabilities(target)
    _check_against_labels(probs, labels)
    outside = np.ones(array.shape, bool)
    outside[3:11, 5:30, 8:33] = False
    assert (probs[0][outside] == 1).all() and (probs[1:][:, outside] == 0).all()
    assert (labels[outside] == 0).all()
    assert info["origin"] == [1.0, 2.0, 3.0]
    assert ("logits" in info["made_by"]) == (scores == "logits")


def test_fp32_accumulation_gives_nearly_the_same_probabilities(tiny_model_dir, scans, tmp_path):
    image = scans / "case1_0000.nii.gz"
    for acc in ("fp16", "fp32"):
        Predictor.from_model_dir(tiny_model_dir, accumulation=acc).predict(image, probabilities_to=tmp_path / f"{acc}.npz")
    p16, _ = read_probabilities(tmp_path / "fp16.npz")
    p32, _ = read_probabilities(tmp_path / "fp32.npz")
    assert np.abs(p16.astype(np.float32) - p32.astype(np.float32)).max() < 5e-3


def test_a_failed_prediction_leaves_no_probability_file(tiny_model_dir, scans, tmp_path, monkeypatch):
    def broken(self, start, slab):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ProbabilityWriter, "write", broken)
    pred = Predictor.from_model_dir(tiny_model_dir, folds=[0], save_probabilities=True)
    with pytest.raises(RuntimeError, match="disk full"):
        pred.predict_folder(scans, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_writer_streams_slabs_class_major_with_background_outside(tmp_path):
    # Slabs in any order; the file is (C, z, y, x) in C order, background 1 outside the box.
    shape, bbox = (5, 4, 6), [(1, 4), (1, 3), (0, 6)]
    rng = np.random.default_rng(0)
    inside = rng.dirichlet(np.ones(3), size=(3, 2, 6)).transpose(3, 0, 1, 2).astype(np.float32)
    with ProbabilityWriter(tmp_path / "c.npz", 3, shape, bbox) as w:
        w.write(2, inside[:, 2:])
        w.write(0, inside[:, :2])
        w.finish({"note": "test"})
    probs, info = read_probabilities(tmp_path / "c.npz")
    expected = np.zeros((3, *shape), np.float16)
    expected[0] = 1
    expected[:, 1:4, 1:3, :] = inside
    np.testing.assert_array_equal(probs, expected)
    assert info["note"] == "test" and info["shape"] == [3, 5, 4, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.npz"]


def test_writer_refuses_to_finish_with_missing_slices(tmp_path):
    with ProbabilityWriter(tmp_path / "c.npz", 2, (4, 3, 3), [(0, 4), (0, 3), (0, 3)]) as w:
        w.write(0, np.full((2, 2, 3, 3), 0.5, np.float32))
        with pytest.raises(RuntimeError, match="never written"):
            w.finish({})
    assert list(tmp_path.iterdir()) == []


def test_reading_something_else_is_a_user_error(tmp_path):
    bad = tmp_path / "case.npz"
    bad.write_text("not a zip")
    with pytest.raises(MedsegError, match="case.npz"):
        read_probabilities(bad)


def test_region_model_writes_one_sigmoid_per_region_and_zero_outside_the_box(description, tmp_path):
    import torch

    class TwoRegions(torch.nn.Module):  # logits x and x - 1: organ where x > 0, lesion where x > 1
        def forward(self, x):
            return torch.cat([x, x - 1], 1)

    description.update(labels={"background": 0, "organ": [1, 2], "lesion": [2]}, regions_class_order=[1, 2],
                       intensity=[{"mean": 0.0, "std": 1.0, "percentile_00_5": -1e4, "percentile_99_5": 1e4}])
    rng = np.random.default_rng(2)
    array = np.zeros((10, 36, 30), np.float32)
    inside = rng.uniform(-2, 3, size=(6, 30, 24)).astype(np.float32)
    inside[inside == 0] = 0.5
    array[2:8, 3:33, 4:28] = inside
    pred = Predictor(description, [TwoRegions()], torch.device("cpu"))
    labels = pred.predict(Image(array, (2.5, 1.0, 1.0)), probabilities_to=tmp_path / "r.npz").array
    probs, info = read_probabilities(tmp_path / "r.npz")
    assert probs.shape == (2, *array.shape) and info["classes"] == ["organ", "lesion"]
    box = (slice(2, 8), slice(3, 33), slice(4, 28))
    expected = 1 / (1 + np.exp(-np.stack([inside, inside - 1])))
    np.testing.assert_allclose(probs[(slice(None),) + box].astype(np.float32), expected, atol=2e-3)
    outside = np.ones(array.shape, bool)
    outside[box] = False
    assert (probs[:, outside] == 0).all() and (labels[outside] == 0).all()
    clear = (np.abs(inside) > 0.01) & (np.abs(inside - 1) > 0.01)
    np.testing.assert_array_equal(labels[box][clear], np.where(inside > 1, 2, np.where(inside > 0, 1, 0))[clear])
