"""Label declarations: classes, regions, the ignore label; what they mean and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io.dataset import read_dataset_info
from medseg.io.labels import LabelScheme, display_values
from medseg.io.validate import validate_dataset

BRATS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": 3}


def test_classes_with_an_ignore_label():
    s = LabelScheme.parse({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
    assert (s.ignore, s.has_regions, s.num_outputs) == (3, False, 3)  # no channel for ignore
    assert s.foreground_values == [1, 2] and s.label_values == [0, 1, 2, 3]
    assert s.output_names == ["organ", "lesion"]


def test_regions_one_channel_each_and_a_single_value_is_a_region():
    s = LabelScheme.parse({**BRATS, "ignore": 4}, [1, 2, 3])
    assert s.has_regions and s.num_outputs == 3
    assert s.regions == [(1, 2, 3), (2, 3), (3,)]
    assert s.output_names == ["whole tumor", "tumor core", "enhancing"]
    assert s.label_values == [0, 1, 2, 3, 4] and s.ignore == 4
    assert s.display_values() == {"whole tumor": 1, "tumor core": 2, "enhancing": 3}
    assert LabelScheme.parse(s.to_json()["labels"], s.to_json()["regions_class_order"]) == s


@pytest.mark.parametrize("labels, order, match", [
    ({"background": 0, "organ": 1, "lesion": 1}, None, "share one value"),
    ({"background": 0, "organ": 2, "ignore": 1}, None, r"ignore label \(1\) must be the highest label value; 2"),
    ({**BRATS, "ignore": 3}, [1, 2, 3], "must be the highest"),
    ({"background": 0, "organ": 1, "ignore": [2]}, None, "one integer"),
    (BRATS, None, "'regions_class_order' is missing"),
    (BRATS, [1, 2], "has 2 values for 3 regions"),
    (BRATS, [1, 2, 2], "writes 2 for region 'enhancing'"),
    (BRATS, "1,2,3", "must be a list of integers"),
    ({"background": 0, "organ": 1}, [1], "no label is a region"),
    ({"background": 0, "organ": [0, 1]}, [1], "non-empty list of positive integers"),
    ({"background": 0, "organ": []}, [], "non-empty list"),
])
def test_bad_declarations_name_the_problem(labels, order, match):
    with pytest.raises(MedsegError, match=match):
        LabelScheme.parse(labels, order, "dataset.json")


def _edit(root: Path, **changes) -> None:
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_dataset_json_with_regions_and_ignore(dataset: Path) -> None:
    _edit(dataset, labels={"background": 0, "liver": [1, 2], "tumour": [2], "ignore": 3},
          regions_class_order=[1, 2])
    info = read_dataset_info(dataset)
    assert info.regions_class_order == [1, 2] and info.num_classes == 2
    assert info.foreground_labels == [1, 2] and info.scheme.ignore == 3


def test_ignore_below_a_label_is_one_line_naming_dataset_json(dataset: Path) -> None:
    _edit(dataset, labels={"background": 0, "liver": 1, "ignore": 2, "tumour": 3})
    with pytest.raises(MedsegError) as err:
        read_dataset_info(dataset)
    assert err.value.path == dataset / "dataset.json"
    assert "\n" not in str(err.value) and "highest" in str(err.value)


def test_validate_accepts_declared_ignore_and_rejects_undeclared_values(dataset: Path, tiny) -> None:
    from medseg.io.image import write_image

    label = dataset / "labelsTr" / "case_a.nii.gz"
    array = np.zeros(tiny.SHAPE, np.uint8)
    array[0] = 3
    array[1, 0, :3] = [1, 2, 0]
    write_image(tiny.make_image(array), label)
    problems = validate_dataset(dataset)
    assert len(problems) == 1 and problems[0].path == label and "3 not declared" in problems[0].message
    _edit(dataset, labels={"background": 0, "liver": 1, "tumour": 2, "ignore": 3})
    assert validate_dataset(dataset) == []
    _edit(dataset, labels={"background": 0, "liver": [1, 2], "tumour": [2], "ignore": 3}, regions_class_order=[1, 2])
    assert validate_dataset(dataset) == []


def test_display_values_of_stored_labels_without_background():
    # summary.json holds the evaluated structures only.
    assert display_values({"organ": [1, 2], "lesion": [2]}) == {"organ": 1, "lesion": 2}
    assert display_values({"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2]}, [1, 3, 2]) == {
        "kidney": 1, "masses": 3, "tumor": 2}
    assert display_values({"background": 0, "a": 1, "ignore": 2}) == {"a": 1}


def test_medseg_validate_reports_a_misplaced_ignore_label_as_one_line(dataset: Path, capsys) -> None:
    from medseg.cli import main

    _edit(dataset, labels={"background": 0, "liver": 1, "ignore": 2, "tumour": 3})
    assert main(["validate", str(dataset)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"error: {dataset / 'dataset.json'}: the ignore label (2) must be the highest label value; "
                   "3 is declared"]
    assert main(["fingerprint", str(dataset), "-w", str(dataset.parent / "wd")]) == 2
    assert "dataset.json: the ignore label" in capsys.readouterr().err
