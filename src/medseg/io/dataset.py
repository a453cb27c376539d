"""Datasets in the nnU-Net v2 raw layout, and the cases they hold.

```
DATASET/dataset.json         channel_names, labels, numTraining, file_ending
DATASET/imagesTr/CASE_0000.nii.gz   one file per channel (_0000, _0001, ...)
DATASET/labelsTr/CASE.nii.gz
DATASET/imagesTs/CASE_0000.nii.gz   optional, unlabelled
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.image import Image, geometry_differences, read_image
from medseg.io.labels import LabelScheme
from medseg.utils.files import read_json

CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class DatasetInfo:
    """What dataset.json declares.

    channel_names: channel index -> modality name ("CT", "T1", ...), in index order.
    labels: label name -> integer value ("background" is 0, an optional "ignore" the highest),
        or -> list of values for a region (then `regions_class_order` says which value each
        region writes back); see `medseg.io.labels`.
    """

    name: str
    channel_names: list[str]
    labels: dict[str, int | list[int]]
    file_ending: str = ".nii.gz"
    num_training: int = 0
    raw: dict = field(default_factory=dict)
    regions_class_order: list[int] | None = None

    @property
    def scheme(self) -> LabelScheme:
        """The checked label declaration: outputs, regions, ignore."""
        return LabelScheme(self.labels, self.regions_class_order)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def foreground_labels(self) -> list[int]:
        """Voxel values of the structures (neither background nor ignore)."""
        return self.scheme.foreground_values

    @property
    def num_classes(self) -> int:
        """Output channels of a network: background plus every class, or one per region."""
        return self.scheme.num_outputs

    def label_name(self, value: int) -> str:
        for name, v in self.labels.items():
            if v == value or v == [value]:
                return name
        return str(value)


@dataclass
class CaseFiles:
    """Where one case's files are: one image path per channel, and an optional label."""

    case_id: str
    images: list[Path]
    label: Path | None = None


@dataclass
class Case:
    """A loaded case. image: (C, z, y, x) float32; label: (z, y, x) int16 or None.

    `reference` is the first channel as read, whose geometry a prediction must copy.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    reference: Image

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.reference.spacing


def read_dataset_info(root: str | Path) -> DatasetInfo:
    """Parse and check `root/dataset.json`."""
    path = Path(root) / "dataset.json"
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise MedsegError("expected a JSON object", path)
    for key in ("channel_names", "labels"):
        if key not in raw:
            raise MedsegError(f"missing key '{key}'", path)
    channels = raw["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise MedsegError("'channel_names' must map channel indices to names", path)
    try:
        order = sorted(channels, key=int)
    except ValueError:
        raise MedsegError("'channel_names' keys must be integers (\"0\", \"1\", ...)", path) from None
    if [int(k) for k in order] != list(range(len(order))):
        raise MedsegError("'channel_names' keys must be 0, 1, ... without gaps", path)
    scheme = LabelScheme.parse(raw["labels"], raw.get("regions_class_order"), path)
    file_ending = raw.get("file_ending", ".nii.gz")
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise MedsegError(f"'file_ending' must be a file ending such as \".nii.gz\", got {file_ending!r}", path)
    num_training = raw.get("numTraining", 0)
    if not isinstance(num_training, int) or isinstance(num_training, bool) or num_training < 0:
        raise MedsegError(f"'numTraining' must be a non-negative integer, got {num_training!r}", path)
    return DatasetInfo(
        name=str(raw.get("name", Path(root).resolve().name)),
        channel_names=[str(channels[k]) for k in order],
        labels=scheme.labels,
        regions_class_order=scheme.regions_class_order,
        file_ending=file_ending,
        num_training=num_training,
        raw=raw,
    )


def find_cases(root: str | Path, info: DatasetInfo | None = None, subset: str = "Tr") -> list[CaseFiles]:
    """Discover cases in imagesTr (subset "Tr") or imagesTs ("Ts"), sorted by case id.

    Files for missing channels are listed as they would be named, so validation can say
    which file is absent rather than silently skipping the case.
    """
    root = Path(root)
    info = info or read_dataset_info(root)
    images_dir = root / f"images{subset}"
    if not images_dir.is_dir():
        if subset == "Ts":
            return []
        raise MedsegError("folder not found", images_dir)
    ending = info.file_ending
    ids: set[str] = set()
    for p in images_dir.iterdir():
        if p.name.startswith(".") or not p.name.endswith(ending):
            continue
        m = CHANNEL_RE.match(p.name[: -len(ending)])
        if m:
            ids.add(m["case"])
    cases = []
    for case_id in sorted(ids):
        images = [images_dir / f"{case_id}_{c:04d}{ending}" for c in range(info.num_channels)]
        label = root / f"labels{subset}" / f"{case_id}{ending}" if subset == "Tr" else None
        cases.append(CaseFiles(case_id, images, label))
    return cases


def read_case(files: CaseFiles, with_label: bool = True) -> Case:
    """Load a case's channels (stacked, float32) and label, checking that their grids agree."""
    channels = [read_image(p) for p in files.images]
    ref = channels[0]
    for path, ch in zip(files.images[1:], channels[1:]):
        diff = geometry_differences(ref, ch)
        if diff:
            raise MedsegError(f"channel grid differs from {files.images[0].name}: {'; '.join(diff)}", path)
    image = np.stack([c.array.astype(np.float32, copy=False) for c in channels])
    label = None
    if with_label and files.label is not None:
        lab = read_image(files.label)
        diff = geometry_differences(ref, lab)
        if diff:
            raise MedsegError(f"label grid differs from its image: {'; '.join(diff)}", files.label)
        if not np.issubdtype(lab.array.dtype, np.integer):
            if not np.all(np.isfinite(lab.array)) or np.any(lab.array != np.round(lab.array)):
                raise MedsegError("label holds non-integer values", files.label)
        label = lab.array.astype(np.int16)
    return Case(files.case_id, image, label, ref)
