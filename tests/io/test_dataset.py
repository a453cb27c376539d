"""dataset.json parsing, case discovery and case loading in the nnU-Net v2 layout."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io.dataset import find_cases, read_case, read_dataset_info
from medseg.io.image import Image, write_image


def _edit_json(root: Path, **changes: object) -> None:
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_reads_what_dataset_json_declares(dataset: Path) -> None:
    info = read_dataset_info(dataset)
    assert info.channel_names == ["CT", "PET"]
    assert info.labels == {"background": 0, "liver": 1, "tumour": 2}
    assert (info.num_channels, info.num_classes, info.foreground_labels) == (2, 3, [1, 2])
    assert (info.file_ending, info.num_training, info.name) == (".nii.gz", 3, "Dataset001_Tiny")
    assert info.label_name(2) == "tumour"


@pytest.mark.parametrize("changes, match", [
    ({"labels": {"background": 0, "liver": True}}, "non-negative integer"),
    ({"labels": {"background": 0, "liver": -1}}, "non-negative integer"),
    ({"labels": {"liver": 1}}, "background as 0"),
    ({"labels": {"background": 0, "a": 1, "b": 1}}, "share one value"),
    ({"labels": {"background": 0, "whole": [1, 2]}}, "'regions_class_order' is missing"),
    ({"labels": {"background": 0, "liver": 2, "ignore": 1}}, "must be the highest"),
    ({"channel_names": {"0": "CT", "2": "PET"}}, "without gaps"),
    ({"channel_names": {"zero": "CT"}}, "integers"),
    ({"numTraining": "three"}, "numTraining"),
    ({"file_ending": "nii.gz"}, "file_ending"),
])
def test_malformed_dataset_json_names_the_problem(dataset: Path, changes: dict, match: str) -> None:
    _edit_json(dataset, **changes)
    with pytest.raises(MedsegError, match=match) as err:
        read_dataset_info(dataset)
    assert err.value.path == dataset / "dataset.json"


def test_invalid_json_and_missing_keys(dataset: Path) -> None:
    (dataset / "dataset.json").write_text('{"labels": ')
    with pytest.raises(MedsegError, match="not valid JSON"):
        read_dataset_info(dataset)
    (dataset / "dataset.json").write_text('{"labels": {"background": 0}}')
    with pytest.raises(MedsegError, match="channel_names"):
        read_dataset_info(dataset)


def test_find_cases_lists_missing_channels_and_skips_hidden_files(dataset: Path) -> None:
    (dataset / "imagesTr" / "case_b_0001.nii.gz").unlink()
    (dataset / "imagesTr" / "._case_a_0000.nii.gz").write_bytes(b"macOS resource fork")
    cases = find_cases(dataset)
    assert [c.case_id for c in cases] == ["case_a", "case_b", "case_c"]
    case_b = cases[1]
    assert [p.name for p in case_b.images] == ["case_b_0000.nii.gz", "case_b_0001.nii.gz"]
    assert not case_b.images[1].exists()
    assert case_b.label == dataset / "labelsTr" / "case_b.nii.gz"
    assert find_cases(dataset, subset="Ts") == []


def test_read_case_stacks_channels_first(dataset: Path, tiny: SimpleNamespace) -> None:
    case = read_case(find_cases(dataset)[0])
    assert case.image.shape == (2, *tiny.SHAPE) and case.image.dtype == np.float32
    assert case.label.shape == tiny.SHAPE and case.label.dtype == np.int16
    assert set(np.unique(case.label)) == {0, 1, 2}
    assert case.spacing == tiny.SPACING


def test_read_case_names_the_file_whose_grid_differs(dataset: Path, tiny: SimpleNamespace) -> None:
    files = find_cases(dataset)[0]
    shifted = Image(np.zeros(tiny.SHAPE, np.float32), spacing=tiny.SPACING, origin=(50.0, 0.0, 0.0))
    write_image(shifted, files.images[1])
    with pytest.raises(MedsegError, match="origin") as err:
        read_case(files)
    assert err.value.path == files.images[1]
    write_image(tiny.make_image(np.zeros(tiny.SHAPE, np.float32)), files.images[1])
    write_image(tiny.make_image(np.zeros((4, 6, 9), np.uint8)), files.label)
    with pytest.raises(MedsegError, match="shape") as err:
        read_case(files)
    assert err.value.path == files.label
