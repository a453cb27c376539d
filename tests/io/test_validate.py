"""Dataset validation: each kind of problem names its file, and all are reported in one run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io.image import Image, write_image
from medseg.io.validate import Problem, check_dataset, validate_dataset


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def test_valid_dataset_has_no_problems(dataset: Path) -> None:
    assert validate_dataset(dataset) == []
    assert check_dataset(dataset) == []


def test_problem_prints_as_path_and_message() -> None:
    assert str(Problem(Path("a/b.nii.gz"), "bad")) == "a/b.nii.gz: bad"


def test_missing_label_file(dataset: Path) -> None:
    label = dataset / "labelsTr" / "case_b.nii.gz"
    label.unlink()
    [problem] = validate_dataset(dataset)
    assert problem.path == label and "label file missing" in problem.message


def test_missing_channel_file(dataset: Path) -> None:
    channel = dataset / "imagesTr" / "case_c_0001.nii.gz"
    channel.unlink()
    [problem] = validate_dataset(dataset)
    assert problem.path == channel and "missing channel 1 (PET)" in problem.message


def test_image_label_shape_mismatch(dataset: Path, tiny: SimpleNamespace) -> None:
    label = dataset / "labelsTr" / "case_a.nii.gz"
    write_image(tiny.make_image(np.zeros((4, 6, 9), np.uint8)), label)
    [problem] = validate_dataset(dataset)
    assert problem.path == label and "shape (4, 6, 8) vs (4, 6, 9)" in problem.message


def test_image_label_geometry_mismatch(dataset: Path, tiny: SimpleNamespace) -> None:
    label = dataset / "labelsTr" / "case_a.nii.gz"
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.uint8), direction=tiny.oblique_direction()), label)
    [problem] = validate_dataset(dataset)
    assert problem.path == label and "direction differs" in problem.message


def test_channels_must_share_a_grid(dataset: Path, tiny: SimpleNamespace) -> None:
    channel = dataset / "imagesTr" / "case_a_0001.nii.gz"
    write_image(Image(np.zeros(tiny.SHAPE, np.float32), spacing=(3.0, 0.75, 0.5), origin=tiny.ORIGIN), channel)
    problems = validate_dataset(dataset)
    # The label is compared with channel 0, so only the odd channel is reported.
    assert [(p.path, p.message.split(":")[0]) for p in problems] == [(channel, "grid differs from case_a_0000.nii.gz")]


def test_undeclared_label_values_are_named(dataset: Path, tiny: SimpleNamespace) -> None:
    label = dataset / "labelsTr" / "case_b.nii.gz"
    array = np.zeros(tiny.SHAPE, np.int16)
    array[0, 0, :4] = [1, 2, 5, 7]
    write_image(tiny.make_image(array), label)
    [problem] = validate_dataset(dataset)
    assert problem.path == label
    assert problem.message.startswith("label values 5, 7 not declared in dataset.json labels")


def test_negative_label_values_are_undeclared(dataset: Path, tiny: SimpleNamespace) -> None:
    label = dataset / "labelsTr" / "case_b.nii.gz"
    array = np.zeros(tiny.SHAPE, np.int16)
    array[0, 0, 0] = -1
    write_image(tiny.make_image(array), label)
    [problem] = validate_dataset(dataset)
    assert problem.message.startswith("label values -1 not declared")


def test_nan_and_inf_voxels(dataset: Path, tiny: SimpleNamespace) -> None:
    channel = dataset / "imagesTr" / "case_a_0000.nii.gz"
    array = np.zeros(tiny.SHAPE, np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, :2] = np.inf
    write_image(tiny.make_image(array), channel)
    [problem] = validate_dataset(dataset)
    assert problem.path == channel and problem.message == "image holds 1 NaN and 2 infinite voxel values"


def test_non_integer_label_values(dataset: Path, tiny: SimpleNamespace) -> None:
    label = dataset / "labelsTr" / "case_a.nii.gz"
    array = np.zeros(tiny.SHAPE, np.float32)
    array[0, 0, 0] = 0.5
    write_image(tiny.make_image(array), label)
    [problem] = validate_dataset(dataset)
    assert problem.path == label and "non-integer values (0.5)" in problem.message
    array[0, 0, 0] = 2.0  # integer-valued floats are fine
    write_image(tiny.make_image(array), label)
    assert validate_dataset(dataset) == []


def test_unreadable_file(dataset: Path) -> None:
    channel = dataset / "imagesTr" / "case_b_0000.nii.gz"
    channel.write_bytes(b"\x00garbage" * 50)
    [problem] = validate_dataset(dataset)
    assert problem.path == channel and problem.message.startswith("cannot read image")
    assert "\n" not in str(problem)


def test_four_d_channel_file_points_to_convert_msd(dataset: Path, tiny: SimpleNamespace) -> None:
    channel = dataset / "imagesTr" / "case_a_0000.nii.gz"
    write_image(Image(np.zeros((2, *tiny.SHAPE), np.float32), spacing=(1.0, *tiny.SPACING)), channel)
    problems = validate_dataset(dataset)
    assert [p.path for p in problems] == [channel] and "convert-msd" in problems[0].message


def test_all_problems_are_reported_in_one_run(dataset: Path, tiny: SimpleNamespace) -> None:
    (dataset / "labelsTr" / "case_a.nii.gz").unlink()
    (dataset / "imagesTr" / "case_b_0001.nii.gz").unlink()
    nan = np.zeros(tiny.SHAPE, np.float32)
    nan[0, 0, 0] = np.nan
    write_image(tiny.make_image(nan), dataset / "imagesTr" / "case_c_0000.nii.gz")
    bad_label = np.full(tiny.SHAPE, 9, np.uint8)
    write_image(tiny.make_image(bad_label), dataset / "labelsTr" / "case_c.nii.gz")
    problems = validate_dataset(dataset, workers=2)
    assert [(p.path.name, p.message.split(" ")[0]) for p in problems] == [
        ("case_a.nii.gz", "label"),
        ("case_b_0001.nii.gz", "missing"),
        ("case_c_0000.nii.gz", "image"),
        ("case_c.nii.gz", "label"),
    ]
    with pytest.raises(MedsegError) as err:
        check_dataset(dataset)
    assert err.value.path == dataset / "labelsTr" / "case_a.nii.gz"
    assert "label file missing" in str(err.value) and "1 of 4 errors" in str(err.value)
    assert "\n" not in str(err.value)


def test_broken_dataset_json_is_the_one_problem(dataset: Path) -> None:
    (dataset / "dataset.json").write_text("{")
    [problem] = validate_dataset(dataset)
    assert problem.path == dataset / "dataset.json" and problem.message.startswith("not valid JSON")
    assert not problem.message.startswith(str(dataset))


def test_warnings_for_count_and_stray_files(dataset: Path, tiny: SimpleNamespace) -> None:
    data = json.loads((dataset / "dataset.json").read_text())
    data["numTraining"] = 5
    (dataset / "dataset.json").write_text(json.dumps(data))
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.float32)), dataset / "imagesTr" / "case_d.nii.gz")
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.float32)), dataset / "imagesTr" / "case_a_0002.nii.gz")
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.uint8)), dataset / "labelsTr" / "case_e.nii.gz")
    problems = validate_dataset(dataset)
    assert {p.severity for p in problems} == {"warning"}
    assert sorted(p.path.name for p in problems) == [
        "case_a_0002.nii.gz", "case_d.nii.gz", "case_e.nii.gz", "dataset.json"]
    assert len(check_dataset(dataset)) == 4


def test_missing_images_folder_and_empty_dataset(dataset: Path) -> None:
    for p in (dataset / "imagesTr").iterdir():
        p.unlink()
    for p in (dataset / "labelsTr").iterdir():
        p.unlink()
    problems = errors(validate_dataset(dataset))
    assert [p.path for p in problems] == [dataset / "imagesTr"] and "no training cases" in problems[0].message
    (dataset / "imagesTr").rmdir()
    [problem] = validate_dataset(dataset)
    assert problem.path == dataset / "imagesTr" and problem.message == "folder not found"


def test_test_images_are_checked_without_labels(dataset: Path, tiny: SimpleNamespace) -> None:
    (dataset / "imagesTs").mkdir()
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.float32)), dataset / "imagesTs" / "new_0000.nii.gz")
    [problem] = validate_dataset(dataset)
    assert problem.path == dataset / "imagesTs" / "new_0001.nii.gz" and "missing channel" in problem.message


def test_nan_voxels_in_nrrd_are_found_too(tmp_path: Path, tiny: SimpleNamespace) -> None:
    root = tiny.write_dataset(tmp_path / "ds", case_ids=("only",), channels=("MR",))
    data = json.loads((root / "dataset.json").read_text())
    data["file_ending"] = ".nrrd"
    (root / "dataset.json").write_text(json.dumps(data))
    array = np.zeros(tiny.SHAPE, np.float32)
    array[0, 0, 0] = np.nan
    write_image(tiny.make_image(array), root / "imagesTr" / "only_0000.nrrd")
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.uint8)), root / "labelsTr" / "only.nrrd")
    problems = errors(validate_dataset(root))
    assert [(p.path.name, p.message) for p in problems] == [("only_0000.nrrd", "image holds 1 NaN voxel values")]
