"""Train one fold of one configuration: the loop, validation, checkpoints, resumption.

The model folder (`models/<config>/`) holds `model.json` (everything prediction needs:
the configuration plan, labels, channels, intensity statistics, the model's name and
options) and one `fold_<k>/` per trained fold with checkpoints, `training_log.txt`,
`progress.png` and `training.json`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medseg.augmentation import AugmentationConfig, Augmenter
from medseg.augmentation.cascade import PerturbationConfig
from medseg.errors import MedsegError
from medseg.io.labels import LabelScheme
from medseg.losses import DeepSupervisionLoss, create_loss
from medseg.models import create_model
from medseg.planning.plans import ConfigurationPlan, Plans
from medseg.preprocessing.preprocess import preprocessed_dir
from medseg.training.checkpoint import load_optimizer_tensors, model_weights, read_checkpoint, save_checkpoint
from medseg.training.config import TrainingConfig
from medseg.training.device import autocast, resolve_device, resolve_precision
from medseg.training.distributed import device_for_rank, init_distributed, shutdown
from medseg.training.loader import BackgroundLoader
from medseg.training.optimizer import make_optimizer, poly_lr
from medseg.training.previous_stage import PreviousStageChannels, network_in_channels, require_previous_predictions
from medseg.training.progress import plot_progress
from medseg.training.pseudo_dice import confusion_counts, dice_from_counts
from medseg.training.sampler import PatchSampler
from medseg.training.splits import fold_cases, load_or_make_splits, unused_cases
from medseg.utils.files import read_json, write_json

EMA_DECAY = 0.9


def model_description(plans: Plans, plan: ConfigurationPlan, model_name: str | None = None,
                      model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to rebuild the network and pre-/post-process for it.

    Another registered model than the plan's keeps the plan's spacing and normalisation;
    its patch is rounded up to what the model needs, and `model_options` (e.g. a width) go
    to its constructor.
    """
    name = model_name or plan.model
    options = dict(plan.model_options) if name == plan.model else {"deep_supervision": True}
    options.update(model_options or {})
    if name != plan.model:
        with torch.device("meta"):  # built only to be asked; allocates nothing
            probe = create_model(name, spatial_dims=plan.spatial_dims, in_channels=len(plans.channel_names),
                                 num_classes=LabelScheme.of(plans).num_outputs, **options)
        divisor = getattr(probe, "divisor", None)
        if divisor:
            plan = replace(plan, patch_size=[-(-p // d) * d for p, d in zip(plan.patch_size, divisor)])
        if getattr(probe, "default_loss", None) and plan.loss in ("dice_ce", "dice_ce_batch"):
            plan = replace(plan, loss=probe.default_loss)
    return {
        "configuration": {"name": plan.name, **plan.to_dict()},
        "model": name,
        "model_options": options,
        **LabelScheme.of(plans).to_json(),
        "channel_names": plans.channel_names,
        "intensity": plans.intensity,
    }


def build_model(desc: dict[str, Any], deep_supervision: bool | None = None) -> torch.nn.Module:
    options = dict(desc["model_options"])
    if deep_supervision is not None:
        options["deep_supervision"] = deep_supervision
    cfg = desc["configuration"]
    return create_model(desc["model"], spatial_dims=cfg["spatial_dims"], in_channels=network_in_channels(desc),
                        num_classes=LabelScheme.of(desc).num_outputs, **options)


def mirror_axes(plan: ConfigurationPlan) -> list[int]:
    """Spatial axes mirroring may flip: the plan's `mirror_axes`, or all of them."""
    return list(range(plan.spatial_dims)) if plan.mirror_axes is None else list(plan.mirror_axes)


@dataclass
class FoldPaths:
    model_dir: Path
    fold_dir: Path


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The torch generator of sample `index` of step `step`: augmentation is a function of
    (seed, step, index) only, so any split of a batch across processes draws the same."""
    state = int(np.random.SeedSequence([seed, step, index, 7]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(state)


class Trainer:
    """Trains `plans.configuration(config)` on one fold of the preprocessed cases.

    Under `torchrun`, every rank computes its share of each global batch and gradients are
    averaged by DistributedDataParallel; only rank 0 writes files.
    """

    def __init__(self, workdir: str | Path, plans: Plans, config: str, fold: int | str,
                 cfg: TrainingConfig, model_name: str | None = None, model_options: dict[str, Any] | None = None):
        self.workdir = Path(workdir)
        self.plans = plans
        self.plan = plans.configuration(config)
        self.cfg = cfg
        self.data_dir = preprocessed_dir(self.workdir, plans, config)
        if not (self.data_dir / "plan.json").exists():
            raise MedsegError("not preprocessed for this configuration; run `medseg preprocess` first", self.data_dir)
        self.dist = init_distributed(resolve_device(cfg.device))
        self.device = device_for_rank(resolve_device(cfg.device), self.dist)
        if self.plan.batch_size % self.dist.world_size:
            raise MedsegError(f"batch size {self.plan.batch_size} does not split evenly over "
                              f"{self.dist.world_size} processes; change batch_size in plans.json")
        case_ids = sorted(p.stem for p in self.data_dir.glob("*.json") if p.name != "plan.json")
        if self.dist.is_main:
            load_or_make_splits(self.workdir / "splits.json", case_ids)
        self.dist.barrier()
        splits = load_or_make_splits(self.workdir / "splits.json", case_ids)
        self.train_ids, self.val_ids = fold_cases(splits, fold)
        self.unused_ids = unused_cases(splits, case_ids)
        # A cascade stage reads the previous stage's cross-validation predictions (checked here).
        self.previous_dir = (require_previous_predictions(self.workdir, self.plan, self.train_ids + self.val_ids)
                             if self.plan.previous_stage else None)
        self.desc = model_description(plans, self.plan, model_name, model_options)
        # The model may need another patch or loss than the plan's (see model_description).
        self.plan = ConfigurationPlan(**self.desc["configuration"])
        model_dir = self.workdir / "models" / (config if not model_name or model_name == self.plan.model
                                               else f"{config}__{model_name}")
        self.paths = FoldPaths(model_dir, model_dir / f"fold_{fold}")
        self.precision = resolve_precision(cfg.precision, self.device)
        # fp16 needs loss scaling so small gradients do not flush to zero; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.labels = LabelScheme.of(plans)
        self.log = _file_logger(self.paths.fold_dir / "training_log.txt" if self.dist.is_main else None)

    # -- pieces ------------------------------------------------------------------------
    def augmenter(self) -> Augmenter:
        """nnU-Net's training augmentation, with the plan's allowed mirror axes and the
        configuration's `augmentation_options` on top."""
        axes = None if self.plan.mirror_axes is None else tuple(self.plan.mirror_axes)
        settings = {"mirror_axes": axes, **self.cfg.augmentation_options}
        return Augmenter(AugmentationConfig.from_dict(settings), self.plan.patch_size)

    def _batch_producer(self, sampler: PatchSampler, augmenter: Augmenter | None, seed: int):
        share = self.dist.share(sampler.batch_size)
        previous = None
        if self.previous_dir is not None:  # training perturbs the previous stage (with augmentation)
            previous = PreviousStageChannels(self.labels.num_predicted_values, augmenter,
                                             PerturbationConfig() if augmenter is not None else None, seed)

        def produce(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            img, seg = sampler.sample(step, share)
            x, y = torch.from_numpy(img), torch.from_numpy(seg)
            params = None
            if augmenter is not None:
                # One generator per global sample index: any split over ranks draws the same.
                params = [augmenter.sample_one(x.shape[1], sample_generator(seed, step, i)) for i in share]
                x, y = augmenter.apply(x, y, params)
            if previous is not None:
                x = previous(x, torch.from_numpy(sampler.sample_previous(step, share)), params, step, share)
            return x, y

        return produce

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    # -- the loop ----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        try:
            return self._fit(resume)
        finally:
            shutdown(self.dist)

    def _fit(self, resume: bool) -> dict[str, Any]:
        cfg, plan = self.cfg, self.plan
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        if self.dist.is_main:
            self.paths.fold_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.paths.model_dir / "model.json", self.desc)
        net = build_model(self.desc).to(self.device)
        if cfg.channels_last and plan.spatial_dims == 3:
            net = net.to(memory_format=torch.channels_last_3d)
        opt = make_optimizer(net, cfg)
        loss_fn = DeepSupervisionLoss(create_loss(cfg.loss or plan.loss, self.labels))
        state: dict[str, Any] = {"epoch": 0, "total_epochs": cfg.epochs, "history": [], "best_ema": -1.0,
                                 "ema": None, "elapsed_s": 0.0}
        if resume:
            state = self._resume(net, opt)
        elif cfg.max_time_s and plan.predicted_iteration_s:
            # A first guess at the schedule's length from the plan; measured epochs correct it.
            guess = plan.predicted_iteration_s * cfg.iters_per_epoch
            state["total_epochs"] = max(1, min(cfg.epochs, int(cfg.max_time_s // guess)))
        model = net
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel
            model = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        augmenter = self.augmenter() if cfg.augmentation else None
        train_sampler = PatchSampler(self.data_dir, self.train_ids, plan.patch_size, plan.batch_size,
                                     cfg.oversample, seed=cfg.seed,
                                     cut_size=augmenter.input_patch_size() if augmenter else None,
                                     previous_dir=self.previous_dir)
        val_sampler = PatchSampler(self.data_dir, self.val_ids, plan.patch_size, plan.batch_size,
                                   cfg.oversample, seed=cfg.seed + 1, previous_dir=self.previous_dir)
        self.log.info("training %s %s: %d train / %d val cases, patch %s, batch %d (%d process(es)), %s on %s, "
                      "%s from lr %g", plan.name, self.paths.fold_dir.name, len(self.train_ids), len(self.val_ids),
                      plan.patch_size, plan.batch_size, self.dist.world_size, self.precision, self.device,
                      type(opt).__name__, cfg.base_lr)
        if self.unused_ids:
            self.log.info("splits.json names no fold for %d case(s), not used: %s", len(self.unused_ids),
                          ", ".join(self.unused_ids[:5]) + (" ..." if len(self.unused_ids) > 5 else ""))
        train_loader = BackgroundLoader(self._batch_producer(train_sampler, augmenter, cfg.seed),
                                        start_step=state["epoch"] * cfg.iters_per_epoch)
        val_loader = BackgroundLoader(self._batch_producer(val_sampler, None, cfg.seed + 1),
                                      start_step=state["epoch"] * cfg.val_iters)
        try:
            while state["epoch"] < state["total_epochs"]:
                self._epoch(model, net, opt, loss_fn, train_loader, val_loader, state)
        finally:
            train_loader.close()
            val_loader.close()
        in_sync = self._ranks_in_sync(net)
        summary = {"epochs": state["epoch"], "best_pseudo_dice_ema": state["best_ema"],
                   "final_pseudo_dice": state["history"][-1]["pseudo_dice"] if state["history"] else None,
                   "elapsed_s": round(state["elapsed_s"], 1), "precision": self.precision,
                   "processes": self.dist.world_size, "ranks_in_sync": in_sync, "optimizer": cfg.optimizer_name,
                   "train_cases": self.train_ids, "val_cases": self.val_ids, "config": cfg.to_dict()}
        if self.dist.is_main:
            save_checkpoint(self.paths.fold_dir, "checkpoint_final", net, self._public_state(state))
            write_json(self.paths.fold_dir / "training.json", summary)
        return summary

    def _ranks_in_sync(self, net: torch.nn.Module) -> bool:
        """Every rank holds bit-identical weights (checked by comparing checksums)."""
        with torch.no_grad():
            checksum = float(sum(p.double().sum() * (i + 1) for i, p in enumerate(net.parameters())))
        sums = self.dist.gather_floats(checksum)
        return all(v == sums[0] for v in sums)

    def _epoch(self, model, net, opt, loss_fn, train_loader, val_loader, state) -> None:
        cfg = self.cfg
        epoch = state["epoch"]
        lr = poly_lr(cfg.base_lr, epoch, state["total_epochs"], cfg.poly_exponent)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        train_loader.waited = 0.0
        model.train()
        losses = []
        bar = tqdm(range(cfg.iters_per_epoch), desc=f"epoch {epoch + 1}/{state['total_epochs']}",
                   disable=not (cfg.progress and self.dist.is_main), leave=False)
        for i in bar:
            # The budget can run out inside an epoch (a long epoch on a CPU): stop there. Several
            # processes must agree, which takes a collective: ask every 10 iterations only.
            if (cfg.max_time_s and losses and (not self.dist.active or i % 10 == 0)
                    and self._time_spent(state, t0) >= cfg.max_time_s):
                break
            x, y = train_loader.next()
            x, y = self._to_device(x), y.to(self.device)
            with autocast(self.precision, self.device):
                out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            # Clip the true gradients: unscale first (a no-op without fp16).
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_time = time.perf_counter() - t0
        wait_fraction = train_loader.waited / max(train_time, 1e-9)
        train_loss = float(self.dist.sum(np.array([np.mean(losses)]))[0] / self.dist.world_size)
        val_loss, dice, per_class = self._validate(model, loss_fn, val_loader)
        ema = dice if state["ema"] is None else EMA_DECAY * state["ema"] + (1 - EMA_DECAY) * dice
        state["ema"] = ema
        # Every rank must agree on the schedule: take the slowest rank's clock.
        epoch_time = self.dist.max(time.perf_counter() - t0)
        state["elapsed_s"] += epoch_time
        state["epoch"] = epoch + 1
        state["history"].append({
            "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "pseudo_dice": dice,
            "pseudo_dice_ema": ema, "pseudo_dice_per_class": per_class, "lr": lr, "epoch_time_s": round(epoch_time, 3),
            "data_wait_fraction": round(wait_fraction, 4), "iterations": len(losses),
        })
        if len(losses) < cfg.iters_per_epoch:
            state["total_epochs"] = state["epoch"]
        elif cfg.max_time_s:
            mean_epoch = state["elapsed_s"] / state["epoch"]
            affordable = state["epoch"] + int((cfg.max_time_s - state["elapsed_s"]) // mean_epoch)
            state["total_epochs"] = max(state["epoch"], min(cfg.epochs, affordable))
        self.log.info("epoch %d/%d  train loss %.4f  val loss %.4f  pseudo Dice %.4f (ema %.4f) [%s]  lr %.5f  "
                      "%.1f s  waiting for data %.1f%%", epoch + 1, state["total_epochs"], train_loss, val_loss,
                      dice, ema, ", ".join(f"{k} {v:.3f}" for k, v in per_class.items() if v is not None), lr,
                      epoch_time, 100 * wait_fraction)
        if self.dist.is_main:
            save_checkpoint(self.paths.fold_dir, "checkpoint_latest", net, self._public_state(state), opt)
            if ema > state["best_ema"]:
                save_checkpoint(self.paths.fold_dir, "checkpoint_best", net, self._public_state(state))
            plot_progress(state["history"], self.paths.fold_dir / "progress.png")
        state["best_ema"] = max(state["best_ema"], ema)

    def _time_spent(self, state: dict[str, Any], epoch_start: float) -> float:
        """Seconds of training so far; every rank gets the slowest rank's clock, so all stop together."""
        return self.dist.max(state["elapsed_s"] + time.perf_counter() - epoch_start)

    @torch.inference_mode()
    def _validate(self, model, loss_fn, val_loader) -> tuple[float, float, dict[str, float | None]]:
        """Validation loss and pseudo Dice: Dice from TP/FP/FN summed over validation patches
        (and over ranks) per foreground class or region, and its mean over those that occurred."""
        model.eval()
        counts = np.zeros((len(self.labels.output_names), 3), dtype=np.int64)
        losses = []
        for _ in range(self.cfg.val_iters):
            x, y = val_loader.next()
            x, y = self._to_device(x), y.to(self.device)
            with autocast(self.precision, self.device):
                out = model(x)
            losses.append(float(loss_fn(out, y)))
            counts += confusion_counts(out, y, self.labels)
        model.train()
        counts = self.dist.sum(counts)
        val_loss = float(self.dist.sum(np.array([np.mean(losses)]))[0] / self.dist.world_size)
        dice = dice_from_counts(counts)
        occurred = [d for d in dice if not np.isnan(d)]
        per_class = {n: (None if np.isnan(d) else d) for n, d in zip(self.labels.output_names, dice)}
        return val_loss, float(np.mean(occurred)) if occurred else 0.0, per_class

    def _public_state(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": state["epoch"], "total_epochs": state["total_epochs"], "history": state["history"],
                "best_ema": state["best_ema"], "ema": state["ema"], "elapsed_s": state["elapsed_s"],
                "model": self.desc["model"], "training": self.cfg.to_dict()}

    def _resume(self, model, opt) -> dict[str, Any]:
        path = self.paths.fold_dir / "checkpoint_latest.safetensors"
        tensors, state = read_checkpoint(path)
        # Checkpoints from before the optimiser could be chosen were all SGD.
        saved = TrainingConfig.from_dict({"optimizer": "sgd", **state.get("training", {})}).optimizer_name
        if saved != self.cfg.optimizer_name:
            raise MedsegError(f"the run to resume used --optimizer {saved}, not {self.cfg.optimizer_name}; "
                              f"resume with --optimizer {saved}", path)
        model.load_state_dict(model_weights(tensors))
        load_optimizer_tensors(opt, tensors, state["optimizer"])
        torch.set_rng_state(tensors["rng/torch"])
        self.log.info("resumed from %s at epoch %d", path, state["epoch"])
        out = {k: state[k] for k in ("epoch", "total_epochs", "history", "best_ema", "ema", "elapsed_s")}
        # The epochs asked for now win over the old run's (a user may extend a run); a time
        # budget trims them again after the next epoch.
        out["total_epochs"] = self.cfg.epochs
        return out


def _file_logger(path: Path | None) -> logging.Logger:
    """A logger writing to `path`; with None (ranks other than 0) it writes nowhere."""
    logger = logging.getLogger(f"medseg.train.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if path is None:
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        return logger
    path.parent.mkdir(parents=True, exist_ok=True)
    if not logger.handlers:
        fh = logging.FileHandler(path)
        fh.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(fh)
    return logger


def load_model_dir(model_dir: str | Path) -> dict[str, Any]:
    """Read `model.json` of a model folder."""
    return read_json(Path(model_dir) / "model.json")
