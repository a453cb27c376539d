"""A cascade stage's extra input in training: where it is read, how it is transformed, one-hot."""

import numpy as np
import pytest
import torch

from medseg.augmentation import AugmentationConfig, Augmenter
from medseg.errors import MedsegError
from medseg.planning.plans import ConfigurationPlan
from medseg.preprocessing.preprocess import class_locations, save_array
from medseg.training.previous_stage import (PreviousStageChannels, network_in_channels, one_hot_foreground,
                                            require_previous_predictions)
from medseg.training.sampler import PatchSampler


def test_one_hot_foreground_channels():
    labels = torch.tensor([[0, 1, 2], [2, 3, -1]])
    out = one_hot_foreground(labels, 3)
    assert out.shape == (2, 2, 3) and out.dtype == torch.float32
    assert out[0].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert out[1].tolist() == [[0, 0, 1], [1, 0, 0]]  # 3 and -1 are no class of a 3-class model
    batch = one_hot_foreground(labels, 3, dim=1)  # (B, *spatial) -> (B, C-1, *spatial)
    assert batch.shape == (2, 2, 3) and torch.equal(batch[1], torch.tensor([[0.0, 0, 0], [1, 0, 0]]))


def test_network_in_channels_counts_the_previous_stage():
    desc = {"configuration": {"previous_stage": None}, "channel_names": ["T1", "T2"],
            "labels": {"background": 0, "a": 1, "b": 2, "c": 3}}
    assert network_in_channels(desc) == 2
    desc["configuration"]["previous_stage"] = "3d_lowres"
    assert network_in_channels(desc) == 2 + 3
    # The previous stage's map holds the structures' values, never the ignore label; a region
    # model's map holds the values its regions are made of.
    desc["labels"] = {"background": 0, "a": 1, "b": 2, "c": 3, "ignore": 4}
    assert network_in_channels(desc) == 2 + 3
    desc["labels"], desc["regions_class_order"] = {"background": 0, "ab": [1, 2], "b": [2]}, [1, 2]
    assert network_in_channels(desc) == 2 + 2


def test_missing_previous_predictions_name_the_command(tmp_path):
    plan = ConfigurationPlan(name="3d_cascade_fullres", spatial_dims=3, target_spacing=[1, 1, 1],
                             patch_size=[8, 8, 8], batch_size=2, normalization=["ct"], previous_stage="3d_lowres")
    folder = tmp_path / "models" / "3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres"
    folder.mkdir(parents=True)
    save_array(folder / "a.npy", np.zeros((2, 2, 2), np.int16))
    with pytest.raises(MedsegError, match=r"2 case\(s\) \(b, c\).*medseg predict-next-stage .* -c 3d_lowres") as err:
        require_previous_predictions(tmp_path, plan, ["a", "b", "c"])
    assert "\n" not in str(err.value)
    assert require_previous_predictions(tmp_path, plan, ["a"]) == folder


def write_case(folder, seg, previous=None):
    img = np.random.default_rng(0).normal(size=(1, *seg.shape)).astype(np.float32)
    for name, arr in (("a.npy", img), ("a_seg.npy", seg), ("a_fg.npy", class_locations(seg, [1, 2], 50, 0))):
        save_array(folder / name, arr)
    if previous is not None:
        (folder / "prev").mkdir(exist_ok=True)
        save_array(folder / "prev" / "a.npy", previous)


def blobs(shape=(12, 30, 30)):
    seg = np.zeros(shape, np.int16)
    seg[3:9, 5:20, 5:20] = 1
    seg[4:8, 8:14, 20:27] = 2
    return seg


def test_sampler_reads_the_previous_stage_where_it_reads_the_labels(tmp_path):
    seg = blobs()
    write_case(tmp_path, seg, previous=seg.copy())
    s = PatchSampler(tmp_path, ["a"], (8, 16, 16), batch_size=3, seed=2, cut_size=(10, 20, 22),
                     previous_dir=tmp_path / "prev")
    for step in range(4):
        _, y = s.sample(step, [1, 2])
        np.testing.assert_array_equal(s.sample_previous(step, [1, 2]), y)
    write_case(tmp_path, seg, previous=seg[:-1].copy())
    with pytest.raises(MedsegError, match="predict-next-stage"):
        PatchSampler(tmp_path, ["a"], (8, 16, 16), batch_size=2, previous_dir=tmp_path / "prev")
    (tmp_path / "prev" / "a.npy").unlink()
    with pytest.raises(MedsegError, match="missing"):
        PatchSampler(tmp_path, ["a"], (8, 16, 16), batch_size=2, previous_dir=tmp_path / "prev")


@pytest.mark.parametrize("label_mode", ["nearest", "linear"])
def test_previous_stage_follows_the_labels_spatial_transform(tmp_path, label_mode):
    """With the previous stage equal to the labels, its channels after augmentation are the
    one-hot of the augmented labels (nearest: exactly; linear: up to rounding at boundaries)."""
    seg = blobs((16, 40, 40))
    write_case(tmp_path, seg, previous=seg.copy())
    aug = Augmenter(AugmentationConfig(rotation_p=1.0, scale_p=1.0, elastic_p=0.5, label_interpolation=label_mode),
                    (8, 16, 16))
    sampler = PatchSampler(tmp_path, ["a"], (8, 16, 16), batch_size=4, seed=1, cut_size=aug.input_patch_size(),
                           previous_dir=tmp_path / "prev")
    channels = PreviousStageChannels(3, aug, perturbation=None)
    agree = []
    for step in range(3):
        img, lab = sampler.sample(step)
        params = [aug.sample_one(1, torch.Generator().manual_seed(10 * step + i)) for i in range(4)]
        x, y = aug.apply(torch.from_numpy(img), torch.from_numpy(lab), params)
        out = channels(x, torch.from_numpy(sampler.sample_previous(step)), params, step)
        assert out.shape == (4, 1 + 2, 8, 16, 16) and torch.equal(out[:, :1], x)
        agree.append((out[:, 1:] == one_hot_foreground(y, 3, dim=1)).float().mean().item())
    if label_mode == "nearest":
        assert min(agree) == 1.0
    else:
        assert min(agree) > 0.995, agree


def test_perturbed_batches_are_the_same_however_split(tmp_path):
    seg = blobs((16, 40, 40))
    prev = torch.from_numpy(np.stack([seg[:8, :16, :16], seg[4:12, 10:26, 12:28]]).astype(np.int16))
    x = torch.zeros((2, 1, 8, 16, 16))
    from medseg.augmentation.cascade import PerturbationConfig
    channels = PreviousStageChannels(3, None, PerturbationConfig(morph_p=1.0, remove_p=1.0), seed=4)
    whole = channels(x, prev, None, step=5)
    parts = torch.cat([channels(x[:1], prev[:1], None, 5, [0]), channels(x[1:], prev[1:], None, 5, [1])])
    assert torch.equal(whole, parts)
    plain = PreviousStageChannels(3, None, None)(x, prev)
    assert torch.equal(plain[:, 1:], one_hot_foreground(prev, 3, dim=1))
    assert not torch.equal(whole, plain)
