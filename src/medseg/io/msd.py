"""Convert a Medical Segmentation Decathlon task folder to the nnU-Net v2 raw layout.

MSD (`TaskXX_Name/`): dataset.json with "modality" {"0": "FLAIR", ...}, "labels"
{"0": "background", "1": "edema", ...} (value -> name), "training" [{"image", "label"}] and
"test" [paths]; multi-modal images are 4-D NIfTI whose last ITK axis is the channel.
nnU-Net v2: one 3-D file per channel (CASE_0000.nii.gz, ...), labels name -> value.
"""

from __future__ import annotations

import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.io.image import Image, atomic_directory, read_geometry, read_image, write_image
from medseg.utils.files import read_json, write_json

ENDING = ".nii.gz"
# Descriptive keys carried over from the MSD dataset.json unchanged.
PROVENANCE_KEYS = ("name", "description", "reference", "licence", "release")


def convert_msd(task_dir: str | Path, out_dir: str | Path, *, workers: int = 1) -> Path:
    """Convert MSD task `task_dir` into a new nnU-Net v2 dataset folder `out_dir`; return it.

    Channels of 4-D images are split into 3-D files that keep the geometry of the 4-D
    file's first three axes; 3-D images and labels are copied byte for byte. macOS '._'
    files are skipped. The dataset appears whole or not at all: it is built in a temporary
    folder beside `out_dir` and renamed; an existing non-empty `out_dir` is refused.
    `workers` cases are converted in parallel threads.
    """
    task_dir, out_dir = Path(task_dir), Path(out_dir)
    json_path = task_dir / "dataset.json"
    meta = read_json(json_path)
    if not isinstance(meta, dict):
        raise MedsegError("expected a JSON object", json_path)
    channels = _channel_names(meta, json_path)
    labels = _labels(meta, json_path)
    training = [(_source(task_dir, e, "image", json_path), _source(task_dir, e, "label", json_path))
                for e in _entries(meta, "training", json_path)]
    training = [(image, label) for image, label in training if not _is_resource_fork(image)]
    test = [_source(task_dir, e, "image", json_path) for e in _entries(meta, "test", json_path)]
    test = [image for image in test if not _is_resource_fork(image)]
    if not training:
        raise MedsegError("lists no training cases", json_path)

    jobs = [(image, label, "Tr") for image, label in training] + [(image, None, "Ts") for image in test]
    for subset in ("Tr", "Ts"):
        counts = Counter(_case_id(image) for image, _, s in jobs if s == subset)
        duplicates = sorted(case_id for case_id, n in counts.items() if n > 1)
        if duplicates:
            raise MedsegError(f"case {duplicates[0]} is listed twice", json_path)

    with atomic_directory(out_dir) as tmp:
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if test else ()):
            (tmp / sub).mkdir()

        def convert(job: tuple[Path, Path | None, str]) -> None:
            image, label, subset = job
            case_id = _case_id(image)
            _split_channels(image, tmp / f"images{subset}", case_id, len(channels))
            if label is not None:
                _copy_nifti(label, tmp / "labelsTr" / f"{case_id}{ENDING}")

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(convert, jobs))  # list(): re-raise the first failure here
        dataset = {key: meta[key] for key in PROVENANCE_KEYS if key in meta}
        dataset.update({
            "channel_names": {str(i): name for i, name in enumerate(channels)},
            "labels": labels,
            "numTraining": len(training),
            "file_ending": ENDING,
        })
        write_json(tmp / "dataset.json", dataset)
    return out_dir


def _channel_names(meta: dict[str, Any], json_path: Path) -> list[str]:
    modality = meta.get("modality")
    if not isinstance(modality, dict) or not modality:
        raise MedsegError("'modality' must map channel indices to names, as in {\"0\": \"CT\"}", json_path)
    try:
        order = sorted(modality, key=int)
    except ValueError:
        raise MedsegError("'modality' keys must be integers (\"0\", \"1\", ...)", json_path) from None
    if [int(k) for k in order] != list(range(len(order))):
        raise MedsegError("'modality' keys must be 0, 1, ... without gaps", json_path)
    return [str(modality[k]) for k in order]


def _labels(meta: dict[str, Any], json_path: Path) -> dict[str, int]:
    """MSD labels (value -> name) as nnU-Net v2 labels (name -> value), in value order."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise MedsegError("'labels' must map label values to names, as in {\"0\": \"background\"}", json_path)
    try:
        pairs = sorted((int(value), str(name)) for value, name in raw.items())
    except ValueError:
        raise MedsegError("'labels' keys must be integer label values", json_path) from None
    labels: dict[str, int] = {}
    for value, name in pairs:
        if name in labels:
            raise MedsegError(f"label name '{name}' is used for values {labels[name]} and {value}", json_path)
        labels[name] = value
    if 0 not in labels.values():
        raise MedsegError("'labels' must declare background as 0", json_path)
    return labels


def _entries(meta: dict[str, Any], key: str, json_path: Path) -> list[Any]:
    entries = meta.get(key, [])
    if not isinstance(entries, list):
        raise MedsegError(f"'{key}' must be a list", json_path)
    return entries


def _source(task_dir: Path, entry: Any, key: str, json_path: Path) -> Path:
    """The file an entry names: training entries are {"image", "label"}, test entries paths."""
    if isinstance(entry, str) and key == "image":
        rel = entry
    elif isinstance(entry, dict) and isinstance(entry.get(key), str):
        rel = entry[key]
    else:
        raise MedsegError(f"entry {entry!r} names no '{key}' file", json_path)
    path = task_dir / rel
    if not path.name.endswith((".nii.gz", ".nii")):
        raise MedsegError(f"expected a NIfTI file (.nii.gz), listed as '{rel}'", path)
    return path


def _is_resource_fork(path: Path) -> bool:
    # macOS writes '._NAME' AppleDouble files beside every file copied to a foreign disk.
    return path.name.startswith("._")


def _case_id(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]


def _split_channels(src: Path, dst_dir: Path, case_id: str, num_channels: int) -> None:
    """Write `src`'s channels as dst_dir/CASE_0000.nii.gz, ...; 3-D images are copied."""
    if not src.is_file():
        raise MedsegError("file not found", src)
    ndim = read_geometry(src).ndim  # the header alone tells 3-D from 4-D
    if ndim <= 3:
        if num_channels != 1:
            raise MedsegError(f"image is {ndim}-D but dataset.json lists {num_channels} modalities", src)
        _copy_nifti(src, dst_dir / f"{case_id}_0000{ENDING}")
        return
    image = read_image(src)
    if ndim != 4 or image.shape[0] != num_channels:
        raise MedsegError(
            f"image of shape {image.shape} (channels first) does not hold the {num_channels} "
            "modalities dataset.json lists", src)
    # ITK orders the 4-D geometry x, y, z, channel: keep the spatial 3x3 block and the
    # first three origin values. `spacing` is already in array order (channel, z, y, x).
    direction = np.asarray(image.direction).reshape(4, 4)[:3, :3]
    for c in range(num_channels):
        channel = Image(image.array[c], spacing=image.spacing[1:], origin=image.origin[:3],
                        direction=tuple(direction.ravel().tolist()))
        write_image(channel, dst_dir / f"{case_id}_{c:04d}{ENDING}")


def _copy_nifti(src: Path, dst: Path) -> None:
    """Copy a .nii.gz unchanged; an uncompressed .nii is rewritten compressed."""
    if not src.is_file():
        raise MedsegError("file not found", src)
    if src.name.endswith(".nii.gz"):
        shutil.copyfile(src, dst)
    else:
        write_image(read_image(src), dst)
