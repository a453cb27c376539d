"""Folder evaluation: pairing, geometry checks, summary.json, metrics.csv, means, the table."""

import csv
import json
import math

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.evaluation import case_metrics, evaluate_folders, format_table
from medseg.evaluation.metrics import image_diagonal
from medseg.io.image import Image, write_image

SPACING = (2.0, 0.8, 0.8)
SHAPE = (12, 20, 18)


def label_map(boxes):
    a = np.zeros(SHAPE, dtype=np.uint8)
    for value, (lo, hi) in boxes.items():
        a[tuple(slice(x, y) for x, y in zip(lo, hi))] = value
    return a


def case_pairs():
    """(reference, prediction) per case. Class 2 is found in case_a, missed in case_b, absent on
    both sides in case_c, and a false alarm in case_d."""
    return {
        "case_a": (label_map({1: ((2, 3, 3), (8, 12, 10)), 2: ((3, 13, 11), (7, 18, 16))}),
                   label_map({1: ((2, 3, 4), (8, 12, 11)), 2: ((3, 13, 11), (8, 18, 16))})),
        "case_b": (label_map({1: ((1, 2, 2), (6, 9, 9)), 2: ((6, 12, 12), (10, 17, 17))}),
                   label_map({1: ((1, 2, 3), (6, 10, 9))})),
        "case_c": (label_map({1: ((4, 4, 4), (9, 9, 9))}),
                   label_map({1: ((4, 4, 4), (9, 9, 10))})),
        "case_d": (label_map({1: ((4, 4, 4), (9, 9, 9))}),
                   label_map({1: ((4, 4, 4), (9, 9, 9)), 2: ((1, 15, 15), (2, 17, 17))})),
    }


@pytest.fixture
def folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for name, (ref, pred) in case_pairs().items():
        write_image(Image(ref, SPACING), ref_dir / f"{name}.nii.gz")
        write_image(Image(pred, SPACING), pred_dir / f"{name}.nii.gz")
    (pred_dir / "notes.txt").write_text("not an image")
    return pred_dir, ref_dir


def strict_json(path):
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_summary_and_csv(folders, tmp_path):
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    summary = evaluate_folders(pred_dir, ref_dir, labels={"organ": 1, "lesion": 2}, out_dir=out)
    on_disk = strict_json(out / "summary.json")
    assert on_disk["labels"] == {"organ": 1, "lesion": 2}
    assert [c["case"] for c in on_disk["metric_per_case"]] == ["case_a", "case_b", "case_c", "case_d"]

    # Per-case values are those of the array function, with the image diagonal as the cap.
    diag = image_diagonal(SHAPE, SPACING)
    for case, (ref, pred) in zip(summary["metric_per_case"], case_pairs().values()):
        expected = case_metrics(pred, ref, SPACING, {"organ": 1, "lesion": 2}, empty_distance=diag)
        for name in expected:
            for k, v in expected[name].items():
                assert case["metrics"][name][k] == pytest.approx(v, nan_ok=True)

    lesion = [c["metrics"]["lesion"] for c in summary["metric_per_case"]]
    assert lesion[1]["dice"] == 0 and lesion[1]["hd95"] == pytest.approx(diag)  # missed
    assert math.isnan(lesion[2]["dice"])  # absent on both sides
    assert on_disk["metric_per_case"][2]["metrics"]["lesion"]["dice"] is None
    assert lesion[3]["dice"] == 0 and lesion[3]["hd"] == pytest.approx(diag)  # false alarm
    # The miss and the false alarm count in the mean, the both-empty case does not ...
    assert summary["mean"]["lesion"]["dice"] == pytest.approx(lesion[0]["dice"] / 3)
    assert summary["n_averaged"]["mean"]["lesion"]["dice"] == 3
    # ... and the mean over cases whose reference holds the class keeps only the miss.
    assert summary["mean_nonempty"]["lesion"]["dice"] == pytest.approx(lesion[0]["dice"] / 2)
    assert summary["n_cases"]["mean"]["lesion"] == 3 and summary["n_cases"]["mean_nonempty"]["lesion"] == 2
    assert summary["empty"]["lesion"] == {"cases": 4, "reference_empty": 2, "prediction_empty": 2, "both_empty": 1}
    organ = np.mean([c["metrics"]["organ"]["dice"] for c in summary["metric_per_case"]])
    assert summary["mean"]["organ"]["dice"] == pytest.approx(organ)
    assert summary["foreground_mean"]["dice"] == pytest.approx((organ + summary["mean"]["lesion"]["dice"]) / 2)
    assert summary["foreground_mean_nonempty"]["hd95"] == pytest.approx(
        (summary["mean_nonempty"]["organ"]["hd95"] + summary["mean_nonempty"]["lesion"]["hd95"]) / 2)

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert rows[0]["case"] == "case_a" and rows[0]["label"] == "organ" and rows[0]["value"] == "1"
    assert float(rows[0]["dice"]) == pytest.approx(summary["metric_per_case"][0]["metrics"]["organ"]["dice"])
    assert rows[5]["label"] == "lesion" and rows[5]["dice"] == "" and rows[5]["tp"] == "0"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.json"]  # no temporary files left

    table = format_table(summary)
    assert "organ" in table and "lesion" in table and "foreground" in table and "HD95" in table
    assert f"{summary['mean']['organ']['dice']:.4f}" in table


def test_labels_from_dataset_json_and_inferred(folders, tmp_path):
    pred_dir, ref_dir = folders
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    a = evaluate_folders(pred_dir, ref_dir, dataset_json=ds / "dataset.json", metrics=["dice", "tp"],
                         out_dir=tmp_path / "a")
    assert a["labels"] == {"liver": 1, "tumour": 2} and a["metrics"] == ["dice", "tp"]
    assert set(a["metric_per_case"][0]["metrics"]["liver"]) == {"dice", "tp"}
    b = evaluate_folders(pred_dir, ref_dir, dataset_json=ds, metrics=["dice"], out_dir=tmp_path / "b")
    assert b["mean"] == {k: {"dice": v["dice"]} for k, v in a["mean"].items()}
    c = evaluate_folders(pred_dir, ref_dir, metrics=["dice", "fn"], out_dir=tmp_path / "c")
    assert c["labels"] == {"1": 1, "2": 2}
    assert c["mean"]["2"]["dice"] == pytest.approx(a["mean"]["tumour"]["dice"])
    assert math.isnan(c["metric_per_case"][2]["metrics"]["2"]["dice"])  # filled in for the absent class
    assert c["metric_per_case"][1]["metrics"]["2"]["fn"] > 0


def test_default_out_dir_tolerances_and_both_empty(folders):
    pred_dir, ref_dir = folders
    s = evaluate_folders(pred_dir, ref_dir, labels={"organ": 1, "lesion": 2}, metrics=["dice", "nsd"],
                         tolerance_mm={"organ": 3.0, 2: 0.5}, both_empty="perfect", surface_method="voxel")
    assert (pred_dir / "summary.json").is_file() and (pred_dir / "metrics.csv").is_file()
    assert s["settings"]["tolerance_mm"] == {"organ": 3.0, "lesion": 0.5}
    assert s["settings"]["surface_method"] == "voxel"
    assert s["metric_per_case"][2]["metrics"]["lesion"] == {"dice": 1.0, "nsd": 1.0}
    assert s["n_cases"]["mean"]["lesion"] == 4 and s["n_cases"]["mean_nonempty"]["lesion"] == 2
    assert s["empty"]["lesion"]["both_empty"] == 1
    with pytest.raises(MedsegError, match="tolerance"):
        evaluate_folders(pred_dir, ref_dir, labels={"organ": 1, "lesion": 2}, tolerance_mm={"organ": 1.0})


def test_parallel_workers_give_the_same_numbers(folders, tmp_path):
    pred_dir, ref_dir = folders
    one = evaluate_folders(pred_dir, ref_dir, labels={"organ": 1, "lesion": 2}, out_dir=tmp_path / "one")
    two = evaluate_folders(pred_dir, ref_dir, labels={"organ": 1, "lesion": 2}, out_dir=tmp_path / "two", workers=2)
    assert strict_json(tmp_path / "one" / "summary.json")["mean"] == strict_json(tmp_path / "two" / "summary.json")["mean"]
    assert [c["case"] for c in two["metric_per_case"]] == ["case_a", "case_b", "case_c", "case_d"]


def test_missing_prediction_names_the_file(folders):
    pred_dir, ref_dir = folders
    (pred_dir / "case_b.nii.gz").unlink()
    with pytest.raises(MedsegError, match="prediction missing") as err:
        evaluate_folders(pred_dir, ref_dir, labels={"organ": 1})
    assert err.value.path == pred_dir / "case_b.nii.gz"
    assert not (pred_dir / "summary.json").exists()


def test_grid_mismatch_names_the_file(folders):
    pred_dir, ref_dir = folders
    ref, pred = case_pairs()["case_c"]
    write_image(Image(pred, (2.0, 0.8, 0.9)), pred_dir / "case_c.nii.gz")
    with pytest.raises(MedsegError, match="case_c.nii.gz.*grid differs.*spacing"):
        evaluate_folders(pred_dir, ref_dir, labels={"organ": 1})
    write_image(Image(pred[:, :, :-1], SPACING), pred_dir / "case_c.nii.gz")
    with pytest.raises(MedsegError, match="shape") as err:
        evaluate_folders(pred_dir, ref_dir, labels={"organ": 1}, workers=2)
    assert err.value.path == pred_dir / "case_c.nii.gz"


def test_bad_arguments(folders, tmp_path):
    pred_dir, ref_dir = folders
    with pytest.raises(MedsegError, match="unknown metric"):
        evaluate_folders(pred_dir, ref_dir, metrics=["dice", "hausdorff"])
    with pytest.raises(MedsegError, match="surface method"):
        evaluate_folders(pred_dir, ref_dir, surface_method="mesh")
    with pytest.raises(MedsegError, match="folder not found"):
        evaluate_folders(tmp_path / "nope", ref_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedsegError, match="no reference images"):
        evaluate_folders(pred_dir, empty)


def test_2d_png_folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref = np.zeros((40, 50), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[10:30, 10:40] = 1
    pred[12:30, 10:40] = 1
    for d, a in ((ref_dir, ref), (pred_dir, pred)):
        write_image(Image(a, (1.0, 1.0)), d / "slice_001.png")
    s = evaluate_folders(pred_dir, ref_dir, labels={"cell": 1}, out_dir=tmp_path / "out")
    m = s["metric_per_case"][0]["metrics"]["cell"]
    assert m["dice"] == pytest.approx(2 * 18 * 30 / (20 * 30 + 18 * 30))
    assert m["hd"] == pytest.approx(2.0) and m["volume_ref"] == 600
