"""Medical Segmentation Decathlon tasks become nnU-Net v2 datasets with exact geometry."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io.dataset import find_cases, read_dataset_info
from medseg.io.image import Image, read_image, write_image
from medseg.io.msd import convert_msd
from medseg.io.validate import validate_dataset

SPACING_4D = (1.0, 2.5, 0.75, 0.5)  # (channel, z, y, x) in array order
ORIGIN_4D = (-10.0, 20.0, 3.5, 0.0)  # ITK (x, y, z, channel)


def _direction_4d(spatial: tuple[float, ...]) -> tuple[float, ...]:
    d = np.eye(4)
    d[:3, :3] = np.reshape(spatial, (3, 3))
    return tuple(d.ravel().tolist())


def write_msd_task(root: Path, tiny: SimpleNamespace, *, channels: tuple[str, ...] = ("FLAIR", "T1w"),
                   case_ids: tuple[str, ...] = ("BRATS_001", "BRATS_002")) -> Path:
    """A tiny MSD task: 4-D images when multi-modal, value -> name labels, '._' litter."""
    rng = np.random.default_rng(3)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    direction = tiny.oblique_direction()
    for case_id in (*case_ids, "BRATS_900"):
        subset = "Ts" if case_id == "BRATS_900" else "Tr"
        array = rng.normal(size=(len(channels), *tiny.SHAPE)).astype(np.float32)
        if len(channels) == 1:
            image = tiny.make_image(array[0], direction=direction)
        else:
            image = Image(array, spacing=SPACING_4D, origin=ORIGIN_4D, direction=_direction_4d(direction))
        write_image(image, root / f"images{subset}" / f"{case_id}.nii.gz")
        if subset == "Tr":
            label = rng.integers(0, 3, size=tiny.SHAPE).astype(np.uint8)
            write_image(tiny.make_image(label, direction=direction), root / "labelsTr" / f"{case_id}.nii.gz")
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    meta = {
        "name": "BRATS", "description": "tiny", "licence": "CC-BY-SA 4.0", "tensorImageSize": "4D",
        "modality": {str(i): name for i, name in enumerate(channels)},
        "labels": {"0": "background", "1": "edema", "2": "enhancing tumour"},
        "numTraining": len(case_ids), "numTest": 1,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in case_ids]
        + [{"image": "./imagesTr/._BRATS_001.nii.gz", "label": "./labelsTr/._BRATS_001.nii.gz"}],
        "test": ["./imagesTs/BRATS_900.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_four_d_cases_are_split_into_channels_with_their_geometry(
        tmp_path: Path, tiny: SimpleNamespace) -> None:
    task = write_msd_task(tmp_path / "Task01_BrainTumour", tiny)
    out = convert_msd(task, tmp_path / "Dataset001_BrainTumour")
    assert out == tmp_path / "Dataset001_BrainTumour"

    source = read_image(task / "imagesTr" / "BRATS_002.nii.gz")
    for c in range(2):
        channel = read_image(out / "imagesTr" / f"BRATS_002_{c:04d}.nii.gz")
        assert channel.ndim == 3 and channel.array.dtype == np.float32
        np.testing.assert_array_equal(channel.array, source.array[c])
        assert channel.spacing == pytest.approx(tiny.SPACING, rel=1e-6)
        assert channel.origin == pytest.approx(tiny.ORIGIN, abs=1e-5)
        assert channel.direction == pytest.approx(tiny.oblique_direction(), abs=1e-6)
    label = out / "labelsTr" / "BRATS_002.nii.gz"
    assert read_image(label).same_geometry(channel)
    assert label.read_bytes() == (task / "labelsTr" / "BRATS_002.nii.gz").read_bytes()
    test_files = sorted(p.name for p in (out / "imagesTs").iterdir())
    assert test_files == ["BRATS_900_0000.nii.gz", "BRATS_900_0001.nii.gz"]
    assert not any(p.name.startswith("._") for p in out.rglob("*"))


def test_dataset_json_is_nnunet_v2(tmp_path: Path, tiny: SimpleNamespace) -> None:
    out = convert_msd(write_msd_task(tmp_path / "Task01", tiny), tmp_path / "out", workers=2)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta == {
        "name": "BRATS", "description": "tiny", "licence": "CC-BY-SA 4.0",
        "channel_names": {"0": "FLAIR", "1": "T1w"},
        "labels": {"background": 0, "edema": 1, "enhancing tumour": 2},
        "numTraining": 2, "file_ending": ".nii.gz",
    }
    info = read_dataset_info(out)
    assert [c.case_id for c in find_cases(out, info)] == ["BRATS_001", "BRATS_002"]
    assert validate_dataset(out) == []


def test_single_modality_images_are_copied(tmp_path: Path, tiny: SimpleNamespace) -> None:
    task = write_msd_task(tmp_path / "Task09_Spleen", tiny, channels=("CT",), case_ids=("spleen_2",))
    out = convert_msd(task, tmp_path / "Dataset009_Spleen")
    copied = out / "imagesTr" / "spleen_2_0000.nii.gz"
    assert copied.read_bytes() == (task / "imagesTr" / "spleen_2.nii.gz").read_bytes()
    assert validate_dataset(out) == []


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path, tiny: SimpleNamespace) -> None:
    task = write_msd_task(tmp_path / "Task01", tiny)
    (task / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(MedsegError, match="file not found") as err:
        convert_msd(task, tmp_path / "out")
    assert err.value.path == task / "labelsTr" / "BRATS_002.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Task01"]


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path: Path, tiny: SimpleNamespace) -> None:
    task = write_msd_task(tmp_path / "Task01", tiny)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    with pytest.raises(MedsegError, match="not an empty directory"):
        convert_msd(task, tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep"


def test_channel_count_must_match_modalities(tmp_path: Path, tiny: SimpleNamespace) -> None:
    task = write_msd_task(tmp_path / "Task01", tiny)
    meta = json.loads((task / "dataset.json").read_text())
    meta["modality"] = {"0": "FLAIR", "1": "T1w", "2": "T2w"}
    (task / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(MedsegError, match="3 modalities") as err:
        convert_msd(task, tmp_path / "out")
    assert err.value.path.parent == task / "imagesTr"


@pytest.mark.parametrize("labels, match", [
    ({"0": "background", "one": "edema"}, "integer label values"),
    ({"1": "edema"}, "background as 0"),
    ({"0": "background", "1": "tumour", "2": "tumour"}, "used for values 1 and 2"),
])
def test_malformed_msd_labels(tmp_path: Path, tiny: SimpleNamespace, labels: dict, match: str) -> None:
    task = write_msd_task(tmp_path / "Task01", tiny)
    meta = json.loads((task / "dataset.json").read_text())
    meta["labels"] = labels
    (task / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(MedsegError, match=match):
        convert_msd(task, tmp_path / "out")
