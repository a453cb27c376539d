import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.predictor import activate_, discover_inputs
from medseg.io import read_image


def test_in_place_softmax_and_sigmoid_match_torch_in_any_slab_and_dtype():
    x = torch.randn(4, 5, 6, 7) * 10
    torch.testing.assert_close(activate_(x.clone()), torch.softmax(x, dim=0))
    torch.testing.assert_close(activate_(x.clone(), slab=2), torch.softmax(x, dim=0))
    torch.testing.assert_close(activate_(x.clone(), sigmoid=True, slab=3), torch.sigmoid(x))
    half = activate_(x.half(), slab=2)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), torch.softmax(x.half().float(), dim=0), atol=1e-3, rtol=0)


def test_predictions_keep_each_input_geometry(tiny_model_dir, scans, tmp_path):
    out = tmp_path / "out"
    written = Predictor.from_model_dir(tiny_model_dir, folds=[0, 1]).predict_folder(scans, out)
    assert len(written) == 3
    for i in range(3):
        image = read_image(scans / f"case{i}_0000.nii.gz")
        pred = read_image(out / f"case{i}.nii.gz")
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.spacing, image.spacing)
        np.testing.assert_allclose(pred.origin, image.origin)
        np.testing.assert_allclose(pred.direction, image.direction)
        assert set(np.unique(pred.array)) <= {0, 1, 2}


def test_list_file_and_folder_give_the_same_labels(tiny_model_dir, scans, tmp_path):
    lst = tmp_path / "cases.txt"
    lst.write_text("# scans to predict\n" + "\n".join(str(p) for p in sorted(scans.iterdir())) + "\n")
    pred = Predictor.from_model_dir(tiny_model_dir, folds=[0])
    pred.predict_folder(scans, tmp_path / "a")
    pred.predict_folder(lst, tmp_path / "b")
    for f in sorted((tmp_path / "a").iterdir()):
        np.testing.assert_array_equal(read_image(f).array, read_image(tmp_path / "b" / f.name).array)


def test_torchrun_ranks_split_the_cases(tiny_model_dir, scans, tmp_path, monkeypatch):
    pred = Predictor.from_model_dir(tiny_model_dir, folds=[0])
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append({p.name for p in pred.predict_folder(scans, tmp_path / f"r{rank}")})
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == 3


def test_missing_channel_and_missing_listed_file_are_user_errors(tiny_model_dir, scans, tmp_path):
    (scans / "case1_0000.nii.gz").rename(scans / "case1_0001.nii.gz")
    with pytest.raises(MedsegError, match="case1"):
        discover_inputs(scans, 1)
    lst = tmp_path / "l.txt"
    lst.write_text("nowhere_0000.nii.gz\n")
    with pytest.raises(MedsegError, match="nowhere"):
        discover_inputs(lst, 1)


def test_mirroring_with_a_fold_ensemble_keeps_the_shape(tiny_model_dir, scans):
    image = scans / "case0_0000.nii.gz"
    plain = Predictor.from_model_dir(tiny_model_dir, folds=[0]).predict(image)
    mirrored = Predictor.from_model_dir(tiny_model_dir, folds=[0, 1], mirror=True).predict(image)
    assert plain.shape == mirrored.shape


def test_onnx_export_predicts_the_same_labels(tiny_model_dir, scans, tmp_path):
    pytest.importorskip("onnxruntime")
    from medseg.inference.export import export_model

    files = export_model(tiny_model_dir, "onnx")
    assert [f.name for f in files] == ["model.onnx", "model.onnx"]
    image = scans / "case1_0000.nii.gz"
    torch_labels = Predictor.from_model_dir(tiny_model_dir).predict(image).array
    onnx_labels = Predictor.from_model_dir(tiny_model_dir, backend="onnxruntime").predict(image).array
    assert (torch_labels == onnx_labels).mean() >= 0.999


def test_torchscript_export_matches_the_network(tiny_model_dir):
    from medseg.inference.export import export_model

    (path, _) = export_model(tiny_model_dir, "torchscript")
    scripted = torch.jit.load(str(path))
    net = Predictor.from_model_dir(tiny_model_dir, folds=[0]).models[0]
    x = torch.randn(2, 1, 8, 32, 32)
    torch.testing.assert_close(scripted(x), net(x))


def test_onnx_backend_without_export_is_explained(tiny_model_dir, scans):
    pytest.importorskip("onnxruntime")
    pred = Predictor.from_model_dir(tiny_model_dir, backend="onnxruntime")
    with pytest.raises(MedsegError, match="medseg export"):
        pred.predict(scans / "case0_0000.nii.gz")


@pytest.mark.parametrize("old, new", [(True, 0), (False, None)])
def test_plans_with_the_old_separate_z_key_predict_as_separate_axis(tiny_model_dir, scans, tmp_path, old, new):
    """A plans.json written before `separate_axis` (`separate_z`) loads and predicts as the new key."""
    from medseg.planning.plans import Plans
    from medseg.utils.files import read_json, write_json

    desc = read_json(tiny_model_dir / "model.json")
    config = {k: v for k, v in desc["configuration"].items() if k != "name"}
    image = scans / "case1_0000.nii.gz"  # 2.3 x 0.9 x 1.1 mm: resampled to 2.5 x 1 x 1 and back
    labels = {}
    for key, value in (("separate_z", old), ("separate_axis", new), ("separate_axis", 2)):
        config["resampling"] = {"data": "cubic", "label": "linear", key: value}
        write_json(tmp_path / "plans.json", {"dataset_name": "Tiny", "channel_names": ["CT"], "labels": desc["labels"],
                                             "intensity": desc["intensity"], "configurations": {"3d_fullres": config}})
        plan = Plans.load(tmp_path / "plans.json").configuration("3d_fullres")
        desc["configuration"] = {"name": plan.name, **plan.to_dict()}
        write_json(tiny_model_dir / "model.json", desc)
        labels[key, value] = Predictor.from_model_dir(tiny_model_dir, folds=[0]).predict(image).array
    np.testing.assert_array_equal(labels["separate_z", old], labels["separate_axis", new])
    assert not np.array_equal(labels["separate_z", old], labels["separate_axis", 2])  # the key decides something
