import json

import numpy as np
import pytest
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.preprocessing.preprocess import class_locations, save_array
from medseg.training.checkpoint import load_optimizer_tensors, model_weights, read_checkpoint, save_checkpoint
from medseg.training.config import TrainingConfig, parse_duration
from medseg.training.device import resolve_precision
from medseg.training.sampler import PatchSampler
from medseg.training.splits import fold_cases, load_or_make_splits, make_splits, unused_cases
from medseg.training.optimizer import make_optimizer, poly_lr


def test_poly_lr():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0


def test_optimizer_choice_and_its_default_rates():
    net = nn.Conv2d(1, 2, 3)
    sgd = make_optimizer(net, TrainingConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 1e-2
    assert sgd.defaults["momentum"] == 0.99 and sgd.defaults["nesterov"]
    adamw = make_optimizer(net, TrainingConfig(optimizer="adamw"))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 1e-3
    assert adamw.defaults["weight_decay"] == 3e-5
    assert make_optimizer(net, TrainingConfig(optimizer="adamw", lr=3e-4)).defaults["lr"] == 3e-4
    with pytest.raises(ValueError, match="adam"):
        TrainingConfig(optimizer="adam")
    # The default, "auto": AdamW for a time-budgeted run, nnU-Net's SGD for a fixed schedule.
    assert TrainingConfig().optimizer == "auto" and TrainingConfig().optimizer_name == "sgd"
    budgeted = make_optimizer(net, TrainingConfig(max_time_s=600))
    assert isinstance(budgeted, torch.optim.AdamW) and budgeted.defaults["lr"] == 1e-3
    assert isinstance(make_optimizer(net, TrainingConfig(max_time_s=600, optimizer="sgd")), torch.optim.SGD)


def test_augmentation_options_replace_nnunet_defaults_and_keep_the_plans_mirror_axes():
    from types import SimpleNamespace

    from medseg.training.trainer import Trainer
    cfg = TrainingConfig(augmentation_options={"contrast_p": 1.0, "gamma_range": [0.8, 1.2]})
    # augmenter() reads only the configuration and the plan's patch and mirror axes.
    fake = SimpleNamespace(cfg=cfg, plan=SimpleNamespace(mirror_axes=[0], patch_size=[16, 16]))
    aug = Trainer.augmenter(fake)
    assert aug.config.contrast_p == 1.0 and aug.config.gamma_range == (0.8, 1.2)
    assert aug.config.mirror_axes == (0,) and aug.config.gamma_p == 0.3  # the rest stays nnU-Net's
    with pytest.raises(ValueError, match="unknown setting"):
        TrainingConfig(augmentation_options={"contrast": 1.0})


def test_splits_are_deterministic_and_disjoint():
    ids = [f"c{i}" for i in range(12)]
    a, b = make_splits(ids), make_splits(list(reversed(ids)))
    assert a == b and len(a) == 5
    vals = [set(f["val"]) for f in a]
    assert set().union(*vals) == set(ids) and sum(len(v) for v in vals) == 12
    for f in a:
        assert not set(f["train"]) & set(f["val"])
    train, val = fold_cases(a, "all")
    assert train == val == sorted(ids)
    with pytest.raises(MedsegError, match="fold 7"):
        fold_cases(a, 7)


def test_a_hand_made_splits_file_is_kept_even_when_it_leaves_cases_out(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    path = tmp_path / "splits.json"
    # No file: five folds are made and written.
    made = load_or_make_splits(path, ids)
    assert json.loads(path.read_text()) == made and len(made) == 5
    # A user's one-fold split over four of the six cases is used as written, never replaced.
    mine = [{"train": ["c0", "c1", "c3"], "val": ["c2"]}]
    path.write_text(json.dumps(mine))
    assert load_or_make_splits(path, ids) == mine
    assert json.loads(path.read_text()) == mine
    assert unused_cases(mine, ids) == ["c4", "c5"]
    assert fold_cases(mine, 0) == (["c0", "c1", "c3"], ["c2"])
    # A case the data lacks, or a malformed file, is an error naming the file.
    path.write_text(json.dumps([{"train": ["c0", "gone"], "val": ["c2"]}]))
    with pytest.raises(MedsegError, match="gone") as err:
        load_or_make_splits(path, ids)
    assert "splits.json" in str(err.value)
    path.write_text(json.dumps({"train": ["c0"]}))
    with pytest.raises(MedsegError, match="folds"):
        load_or_make_splits(path, ids)


def test_validation_iterations_default_to_a_fifth_of_the_training_iterations():
    assert TrainingConfig().val_iters == 50  # nnU-Net's 250 / 50
    assert TrainingConfig(iters_per_epoch=50).val_iters == 10
    assert TrainingConfig(iters_per_epoch=3).val_iters == 1
    assert TrainingConfig(iters_per_epoch=50, val_iters=7).val_iters == 7
    assert TrainingConfig.from_dict(TrainingConfig(iters_per_epoch=50).to_dict()).val_iters == 10


def test_parse_duration():
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_precision_auto_never_picks_slow_bf16_on_cpu(monkeypatch):
    import medseg.training.device as dev
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_checkpoint_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3), nn.InstanceNorm3d(4, affine=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(1, 1, 5, 5, 5)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, "ck", model, {"epoch": 3, "note": "x"}, opt)
    assert (tmp_path / "ck.json").exists()
    tensors, state = read_checkpoint(tmp_path / "ck.safetensors")
    assert state["epoch"] == 3
    fresh = nn.Sequential(nn.Conv3d(1, 4, 3), nn.InstanceNorm3d(4, affine=True))
    fresh.load_state_dict(model_weights(tensors))
    for a, b in zip(fresh.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    load_optimizer_tensors(opt2, tensors, state["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(opt2.state[opt2.param_groups[0]["params"][0]]["momentum_buffer"],
                               opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"])


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(MedsegError, match="x.safetensors"):
        read_checkpoint(bad)


def test_sampler_oversamples_foreground_and_pads(tmp_path):
    seg = np.zeros((10, 40, 40), np.int16)
    seg[5, 30, 30] = 1  # one foreground voxel in a corner region
    img = np.random.default_rng(0).normal(size=(1, 10, 40, 40)).astype(np.float32)
    save_array(tmp_path / "a.npy", img)
    save_array(tmp_path / "a_seg.npy", seg)
    save_array(tmp_path / "a_fg.npy", class_locations(seg, [1], 100, 0))
    s = PatchSampler(tmp_path, ["a"], (16, 16, 16), batch_size=3, oversample=1 / 3, seed=0)
    hits = 0
    for step in range(20):
        x, y = s.sample(step)
        assert x.shape == (3, 1, 16, 16, 16) and y.shape == (3, 16, 16, 16)
        assert (y[-1] == 1).any()  # the last sample of each batch is forced onto foreground
        hits += int((y[:2] == 1).any())
    assert hits < 20  # random placements do not always contain that voxel


def test_sampler_slices_equal_the_whole_batch(tmp_path):
    seg = np.zeros((12, 30, 30), np.int16)
    seg[3:9, 5:20, 5:20] = 1
    img = np.random.default_rng(1).normal(size=(1, 12, 30, 30)).astype(np.float32)
    for name, arr in (("a.npy", img), ("a_seg.npy", seg), ("a_fg.npy", class_locations(seg, [1], 50, 0))):
        save_array(tmp_path / name, arr)
    s = PatchSampler(tmp_path, ["a"], (8, 16, 16), batch_size=4, seed=5)
    whole_x, whole_y = s.sample(7)
    parts = [s.sample(7, [0, 1]), s.sample(7, [2, 3])]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole_x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole_y)
    assert not np.array_equal(s.sample(8)[0], whole_x)


def test_cut_size_reads_context_around_the_same_patch(tmp_path):
    img = np.arange(12 * 30 * 30, dtype=np.float32).reshape(1, 12, 30, 30)
    seg = np.zeros((12, 30, 30), np.int16)
    seg[6, 15, 15] = 1
    for name, arr in (("a.npy", img), ("a_seg.npy", seg), ("a_fg.npy", class_locations(seg, [1], 5, 0))):
        save_array(tmp_path / name, arr)
    plain = PatchSampler(tmp_path, ["a"], (4, 8, 8), batch_size=2, seed=3)
    wide = PatchSampler(tmp_path, ["a"], (4, 8, 8), batch_size=2, seed=3, cut_size=(6, 12, 14))
    for step in range(5):
        x, _ = plain.sample(step)
        w, _ = wide.sample(step)
        assert w.shape == (2, 1, 6, 12, 14)
        np.testing.assert_array_equal(w[:, :, 1:5, 2:10, 3:11], x)
    with pytest.raises(ValueError, match="even"):
        PatchSampler(tmp_path, ["a"], (4, 8, 8), batch_size=2, cut_size=(5, 8, 8))
