"""The embedded phantom dataset: deterministic, anisotropic, learnable but not thresholdable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from medseg.data.phantoms import PHANTOM_LABELS, case_rng, make_phantom_case, make_phantoms
from medseg.errors import MedsegError
from medseg.io.dataset import find_cases, read_case, read_dataset_info
from medseg.io.image import read_image

N_CASES = 8


@pytest.fixture(scope="module")
def cases():
    return [make_phantom_case(0, index=i) for i in range(N_CASES)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "Phantoms"
    return make_phantoms(out, cases=3, seed=1)


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = pred.sum() + ref.sum()
    return 1.0 if denom == 0 else 2.0 * np.logical_and(pred, ref).sum() / denom


def _best_band_dice(image: np.ndarray, ref: np.ndarray, step: int = 2) -> tuple[float, int, int]:
    """The best Dice any band threshold lo <= HU < hi reaches against `ref` (an oracle choice)."""
    edges = np.arange(-200, 400 + step, step)
    all_hist, _ = np.histogram(image, bins=edges)
    ref_hist, _ = np.histogram(image[ref], bins=edges)
    all_cum = np.concatenate([[0], np.cumsum(all_hist)])
    ref_cum = np.concatenate([[0], np.cumsum(ref_hist)])
    # Band [edges[i], edges[j]) for all i < j at once.
    tp = ref_cum[None, :] - ref_cum[:, None]
    pred = all_cum[None, :] - all_cum[:, None]
    upper = np.triu(np.ones_like(tp, bool), 1)
    dice = np.zeros(tp.shape)
    dice[upper] = 2.0 * tp[upper] / (pred[upper] + ref.sum())
    i, j = np.unravel_index(np.argmax(dice), dice.shape)
    return float(dice[i, j]), int(edges[i]), int(edges[j])


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_geometry(cases):
    for i in (0, 3):
        image, label = make_phantom_case(0, index=i)
        ref_image, ref_label = cases[i]
        assert image.array.tobytes() == ref_image.array.tobytes()
        assert label.array.tobytes() == ref_label.array.tobytes()
        assert (image.spacing, image.origin, image.direction) == (
            ref_image.spacing, ref_image.origin, ref_image.direction)


def test_generator_argument_and_seed_argument_agree(cases):
    image, label = make_phantom_case(case_rng(0, 2), lesion_darker=True)  # even case: darker
    assert np.array_equal(image.array, cases[2][0].array)
    assert np.array_equal(label.array, cases[2][1].array)


def test_different_seed_or_index_differs(cases):
    other, _ = make_phantom_case(1, index=0)
    assert other.shape != cases[0][0].shape or not np.array_equal(other.array, cases[0][0].array)
    assert cases[0][0].shape != cases[1][0].shape or not np.array_equal(cases[0][0].array, cases[1][0].array)


def test_files_are_deterministic_and_match_in_memory_cases(dataset, tmp_path):
    again = make_phantoms(tmp_path / "again", cases=3, seed=1)
    for i in range(3):
        name = f"phantom_{i:03d}"
        img = read_image(dataset / "imagesTr" / f"{name}_0000.nii.gz")
        lab = read_image(dataset / "labelsTr" / f"{name}.nii.gz")
        img2 = read_image(again / "imagesTr" / f"{name}_0000.nii.gz")
        assert np.array_equal(img.array, img2.array)
        mem_img, mem_lab = make_phantom_case(1, index=i)
        assert np.array_equal(img.array, mem_img.array)
        assert np.array_equal(lab.array, mem_lab.array)
        assert img.same_geometry(mem_img) and lab.same_geometry(mem_img)


def test_case_does_not_depend_on_number_of_cases(dataset, tmp_path):
    fewer = make_phantoms(tmp_path / "fewer", cases=2, seed=1)
    for i in range(2):
        for sub, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
            a = read_image(dataset / sub / f"phantom_{i:03d}{suffix}.nii.gz")
            b = read_image(fewer / sub / f"phantom_{i:03d}{suffix}.nii.gz")
            assert np.array_equal(a.array, b.array)
            assert a.same_geometry(b)


# -- layout -------------------------------------------------------------------------------------


def test_layout_and_dataset_json(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["name"] == "Phantoms"
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2} == PHANTOM_LABELS
    assert meta["numTraining"] == 3
    assert meta["file_ending"] == ".nii.gz"
    assert "synthetic" in meta["description"].lower() and "synthetic" in meta["reference"].lower()
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [
        f"phantom_{i:03d}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [
        f"phantom_{i:03d}.nii.gz" for i in range(3)]

    info = read_dataset_info(dataset)
    found = find_cases(dataset, info)
    assert [c.case_id for c in found] == [f"phantom_{i:03d}" for i in range(3)]
    for files in found:
        case = read_case(files)  # checks image/label grids agree
        assert case.image.shape[0] == 1
        assert read_image(files.images[0]).array.dtype == np.int16
        assert read_image(files.label).array.dtype == np.uint8
        ref = case.reference
        assert any(abs(o) > 1 for o in ref.origin)
        assert np.allclose(ref.direction, np.eye(3).ravel())


def test_regenerating_removes_stale_cases_and_foreign_folders_are_refused(tmp_path):
    out = make_phantoms(tmp_path / "p", cases=3, seed=0, shape_scale=0.4)
    make_phantoms(out, cases=2, seed=0, shape_scale=0.4)
    assert len(list((out / "imagesTr").iterdir())) == 2
    assert len(list((out / "labelsTr").iterdir())) == 2
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MedsegError, match="not empty"):
        make_phantoms(foreign, cases=1)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("kwargs", [{"cases": 0}, {"seed": -1}, {"shape_scale": 0}])
def test_bad_arguments_are_user_errors(tmp_path, kwargs):
    with pytest.raises(MedsegError):
        make_phantoms(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


# -- content ------------------------------------------------------------------------------------


def test_spacing_and_shape_ranges(cases):
    for image, label in cases:
        sz, sy, sx = image.spacing
        assert 2.5 <= sz <= 3.0
        assert 0.75 <= sy <= 0.85 and sy == sx
        nz, ny, nx = image.shape
        assert 22 <= nz <= 30 and 96 <= ny <= 128 and 96 <= nx <= 128
        assert label.shape == image.shape and label.same_geometry(image)
        assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
    assert len({img.spacing for img, _ in cases}) > N_CASES // 2


def test_every_case_has_all_labels_and_lesion_lies_inside_organ(cases):
    for _, label in cases:
        lab = label.array
        assert set(np.unique(lab).tolist()) == {0, 1, 2}
        lesion = lab == 2
        # Every neighbour (26-connectivity) of a lesion voxel is organ or lesion, and the
        # lesion never touches the edge of the volume.
        grown = ndimage.binary_dilation(lesion, structure=np.ones((3, 3, 3), bool))
        assert np.all(lab[grown] > 0)
        for axis in range(3):
            assert not np.take(lesion, [0, -1], axis=axis).any()
        # The lesion spans at least three slices and is a fraction of the organ.
        assert np.flatnonzero(lesion.any(axis=(1, 2))).size >= 3
        assert 0.02 < lesion.sum() / (lab > 0).sum() < 0.5


def test_shapes_vary_across_cases(cases):
    shapes = {img.shape for img, _ in cases}
    assert len(shapes) == N_CASES
    organ = np.array([(lab.array > 0).sum() * np.prod(lab.spacing) for _, lab in cases])
    assert organ.std() / organ.mean() > 0.1
    centres = np.array([ndimage.center_of_mass(lab.array > 0) for _, lab in cases])
    assert np.ptp(centres[:, 2]) > 5  # organ on either side
    lesion_minus_organ = [
        img.array[lab.array == 2].mean() - img.array[lab.array == 1].mean() for img, lab in cases]
    # Darker lesions in even cases, brighter in odd ones.
    assert [d < 0 for d in lesion_minus_organ] == [i % 2 == 0 for i in range(N_CASES)]
    image, label = make_phantom_case(0, index=0, lesion_darker=False)
    assert image.array[label.array == 2].mean() > image.array[label.array == 1].mean()


def test_intensities_are_ct_like(cases):
    for image, label in cases:
        img, lab = image.array.astype(np.float32), label.array
        corners = img[:, :6, :6]
        assert abs(np.median(corners) + 1000) < 30  # air
        organ, lesion = img[lab == 1], img[lab == 2]
        assert 50 < organ.mean() < 105
        assert 15 < abs(lesion.mean() - organ.mean()) < 50
        assert 8 < organ.std() < 30  # noise, texture and bias
        assert np.percentile(img, 99.9) > 300  # bone
        assert np.any((img > -160) & (img < -60))  # fat


def test_shape_scale_enlarges_volume_and_keeps_spacing():
    small, small_lab = make_phantom_case(4, 0.5, index=1)
    big, big_lab = make_phantom_case(4, 1.0, index=1)
    assert small.spacing == big.spacing
    for a, b in zip(small.shape, big.shape):
        assert abs(b - 2 * a) <= 2
    ratio = (big_lab.array > 0).sum() / (small_lab.array > 0).sum()
    assert 5 < ratio < 11
    assert set(np.unique(small_lab.array).tolist()) == {0, 1, 2}


def test_global_threshold_does_not_solve_the_task(cases):
    organ_scores, fg_scores = [], []
    for image, label in cases:
        img, lab = image.array, label.array
        score, lo, hi = _best_band_dice(img, lab == 1)
        # The histogram shortcut agrees with Dice computed voxel by voxel.
        assert score == pytest.approx(_dice((img >= lo) & (img < hi), lab == 1), abs=1e-9)
        organ_scores.append(score)
        fg_scores.append(_best_band_dice(img, lab > 0)[0])
    # Even an oracle band chosen per case stays far from the 0.85 a network must reach.
    assert max(organ_scores) < 0.7 and np.mean(organ_scores) < 0.6
    assert max(fg_scores) < 0.7 and np.mean(fg_scores) < 0.6


# -- label variants -------------------------------------------------------------------------------


def test_region_and_ignore_variants_keep_the_images_and_validate(tmp_path, dataset):
    from medseg.io.validate import validate_dataset

    out = make_phantoms(tmp_path / "Phantoms", cases=3, seed=1, regions=True, ignore=True)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ": [1, 2], "lesion": [2], "ignore": 3}
    assert meta["regions_class_order"] == [1, 2]
    assert meta["synthetic"]["regions"] and meta["synthetic"]["ignore"]
    assert validate_dataset(out) == []
    info = read_dataset_info(out)
    assert info.num_classes == 2 and info.scheme.ignore == 3
    for name in ("phantom_001_0000.nii.gz",):
        np.testing.assert_array_equal(read_image(out / "imagesTr" / name).array,
                                      read_image(dataset / "imagesTr" / name).array)
    plain = read_image(dataset / "labelsTr" / "phantom_001.nii.gz").array
    marked = read_image(out / "labelsTr" / "phantom_001.nii.gz").array
    nx = plain.shape[-1]
    slab = np.zeros(plain.shape, bool)
    slab[..., 7 * nx // 16: 9 * nx // 16] = True
    assert (marked[slab] == 3).all()
    np.testing.assert_array_equal(marked[~slab], plain[~slab])
    assert (plain[slab] == 1).any()  # the slab crosses the organ: some organ voxels are unannotated


def test_preprocessing_keeps_the_ignore_slab_but_never_samples_it(tmp_path):
    from medseg.pipeline import run_fingerprint, run_plan, run_preprocess

    ds = make_phantoms(tmp_path / "Phantoms", cases=2, seed=4, shape_scale=0.5, ignore=True)
    run_fingerprint(ds, tmp_path / "wd")
    run_plan(ds, tmp_path / "wd", budget_gb=1.0, device="cpu", base_features=8, max_patch_voxels=8 * 32 * 32)
    folder = run_preprocess(ds, tmp_path / "wd", "3d_fullres")
    seg = np.load(folder / "phantom_000_seg.npy")
    fg = np.load(folder / "phantom_000_fg.npy")
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    assert set(fg[:, 0].tolist()) == {1, 2}
    assert (seg[tuple(fg[:, 1:].T)] == fg[:, 0]).all()
    # The slab stays whole columns of 3 across every slice and row.
    assert (seg == 3).all(axis=(0, 1)).sum() >= 0.1 * seg.shape[2]
    props = json.loads((folder / "phantom_000.json").read_text())
    assert props["classes_present"] == [1, 2]
