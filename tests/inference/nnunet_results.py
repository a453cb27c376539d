"""Build small nnU-Net v2 results folders for the import tests (the documented layout).

`<root>/plans.json`, `<root>/dataset.json`, `<root>/fold_<k>/checkpoint_final.pth`, with a
checkpoint dict shaped as nnUNetTrainer.save_checkpoint writes it (network weights, optimiser
state, a training log holding numpy scalars, init args with a torch.device, ...).

With dynamic_network_architectures installed the weights come from nnU-Net's own randomly
initialised PlainConvUNet / ResidualEncoderUNet; without it, `plain_state_dict` writes a
PlainConvUNet state dict by nnU-Net's key layout (aliases included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

ARCH_MODULE = "dynamic_network_architectures.architectures.unet"


def plans_dict(*, arch: str = "PlainConvUNet", features: Sequence[int] = (8, 16, 32),
               kernel_sizes: Sequence[Sequence[int]] = ((1, 3, 3), (3, 3, 3), (3, 3, 3)),
               strides: Sequence[Sequence[int]] = ((1, 1, 1), (1, 2, 2), (2, 2, 2)),
               patch_size: Sequence[int] = (16, 32, 32), spacing: Sequence[float] = (2.5, 0.8, 0.8),
               schemes: Sequence[str] = ("CTNormalization",), use_mask: Sequence[bool] | None = None,
               transpose_forward: Sequence[int] = (0, 1, 2), conv_bias: bool = True,
               blocks: Sequence[int] | None = None, decoder_convs: int | None = None) -> dict[str, Any]:
    n = len(features)
    dims = len(patch_size)
    arch_kwargs: dict[str, Any] = {
        "n_stages": n, "features_per_stage": list(features), "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [list(k) for k in kernel_sizes], "strides": [list(s) for s in strides],
        "conv_bias": conv_bias, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    if arch == "PlainConvUNet":
        arch_kwargs["n_conv_per_stage"] = [2] * n
        arch_kwargs["n_conv_per_stage_decoder"] = [decoder_convs or 2] * (n - 1)
    else:
        arch_kwargs["n_blocks_per_stage"] = list(blocks or [1, 3, 4, 6, 6, 6][:n])
        arch_kwargs["n_conv_per_stage_decoder"] = [decoder_convs or 1] * (n - 1)
    backward = [int(i) for i in np.argsort(transpose_forward)]
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": list(patch_size), "median_image_size_in_voxels": [40, 96, 96][:dims],
        "spacing": list(spacing), "normalization_schemes": list(schemes),
        "use_mask_for_norm": list(use_mask or [False] * len(schemes)),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": f"{ARCH_MODULE}.{arch}", "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    props = {str(c): {"max": 1500.0, "mean": 80.0 + 10 * c, "median": 75.0, "min": -1000.0,
                      "percentile_00_5": -200.0, "percentile_99_5": 400.0, "std": 120.0}
             for c in range(len(schemes))}
    return {
        "dataset_name": "Dataset999_Import", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [40, 96, 96],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose_forward),
        "transpose_backward": backward, "configurations": {"3d_fullres" if dims == 3 else "2d": config},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": props,
    }


def dataset_dict(channels: Sequence[str] = ("CT",), num_classes: int = 3) -> dict[str, Any]:
    labels = {"background": 0, **{f"organ{i}": i for i in range(1, num_classes)}}
    return {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels,
            "numTraining": 4, "file_ending": ".nii.gz"}


def nnunet_network(plans: dict[str, Any], num_inputs: int, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """nnU-Net's own network for the plans (needs dynamic_network_architectures), randomly
    initialised as nnU-Net does; norms and biases are perturbed so that every weight matters."""
    import pydoc

    config = next(iter(plans["configurations"].values()))
    arch = config["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    cls = pydoc.locate(arch["network_class_name"])
    torch.manual_seed(seed)
    net = cls(input_channels=num_inputs, num_classes=num_classes, deep_supervision=False, **kwargs)
    net.apply(net.initialize)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def plain_state_dict(plans: dict[str, Any], num_inputs: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random PlainConvUNet state dict by nnU-Net's key layout, without nnU-Net installed:
    encoder.stages.<s>.0.convs.<j>.{conv,norm} (+ all_modules aliases), decoder.encoder.*
    (the decoder's reference to the encoder), decoder.transpconvs, decoder.stages,
    decoder.seg_layers (one per decoder stage)."""
    config = next(iter(plans["configurations"].values()))
    kw = config["architecture"]["arch_kwargs"]
    g = torch.Generator().manual_seed(seed)
    feats, ks, st = kw["features_per_stage"], kw["kernel_sizes"], kw["strides"]
    out: dict[str, torch.Tensor] = {}

    def block(prefix: str, cin: int, cout: int, k: Sequence[int]) -> None:
        w = torch.randn(cout, cin, *k, generator=g) * (2.0 / (cin * int(np.prod(k)))) ** 0.5
        tensors = {"conv.weight": w, "conv.bias": 0.1 * torch.randn(cout, generator=g),
                   "norm.weight": 1 + 0.1 * torch.randn(cout, generator=g),
                   "norm.bias": 0.1 * torch.randn(cout, generator=g)}
        for name, t in tensors.items():
            out[f"{prefix}.{name}"] = t
            alias = name.replace("conv.", "all_modules.0.").replace("norm.", "all_modules.1.")
            out[f"{prefix}.{alias}"] = t

    cin = num_inputs
    for s, f in enumerate(feats):
        for j in range(kw["n_conv_per_stage"][s]):
            block(f"encoder.stages.{s}.0.convs.{j}", cin if j == 0 else f, f, ks[s])
        cin = f
    for key in [k for k in out if k.startswith("encoder.")]:
        out[f"decoder.{key}"] = out[key]
    n = len(feats)
    for i in range(n - 1):
        below, skip = feats[n - 1 - i], feats[n - 2 - i]
        out[f"decoder.transpconvs.{i}.weight"] = 0.1 * torch.randn(below, skip, *st[n - 1 - i], generator=g)
        out[f"decoder.transpconvs.{i}.bias"] = 0.1 * torch.randn(skip, generator=g)
        for j in range(kw["n_conv_per_stage_decoder"][i]):
            block(f"decoder.stages.{i}.convs.{j}", 2 * skip if j == 0 else skip, skip, ks[n - 2 - i])
        out[f"decoder.seg_layers.{i}.weight"] = torch.randn(num_classes, skip, *[1] * len(ks[0]), generator=g)
        out[f"decoder.seg_layers.{i}.bias"] = torch.randn(num_classes, generator=g)
    return out


def checkpoint_dict(weights: dict[str, torch.Tensor], plans: dict[str, Any], dataset: dict[str, Any],
                    configuration: str, fold: int | str, epochs: int = 3) -> dict[str, Any]:
    """Shaped as nnUNetTrainer.save_checkpoint writes it."""
    rng = np.random.default_rng(0)
    log = {
        "mean_fg_dice": [np.float64(rng.random()) for _ in range(epochs)],
        "ema_fg_dice": [np.float64(rng.random()) for _ in range(epochs)],
        "dice_per_class_or_region": [[np.float64(rng.random())] for _ in range(epochs)],
        "train_losses": [np.float32(-rng.random()) for _ in range(epochs)],
        "val_losses": [np.float32(-rng.random()) for _ in range(epochs)],
        "lrs": [0.01 * (1 - e / epochs) ** 0.9 for e in range(epochs)],
        "epoch_start_timestamps": [1e9 + e for e in range(epochs)],
        "epoch_end_timestamps": [1e9 + e + 0.5 for e in range(epochs)],
    }
    first = next(iter(weights.values()))
    return {
        "network_weights": weights,
        "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros_like(first)}},
                            "param_groups": [{"lr": 0.001, "momentum": 0.99, "nesterov": True, "params": [0]}]},
        "grad_scaler_state": None,
        "logging": log,
        "_best_ema": np.float64(0.5),
        "current_epoch": epochs,
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": tuple(range(len(next(iter(plans["configurations"].values()))["patch_size"]))),
    }


def write_results_folder(root: Path, plans: dict[str, Any], dataset: dict[str, Any],
                         fold_weights: dict[int | str, dict[str, torch.Tensor]]) -> Path:
    """`root` = <trainer>__<plans>__<configuration> folder with one checkpoint per fold."""
    configuration = next(iter(plans["configurations"]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "plans.json").write_text(json.dumps(plans, indent=2))
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for fold, weights in fold_weights.items():
        (root / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint_dict(weights, plans, dataset, configuration, fold), root / f"fold_{fold}" / "checkpoint_final.pth")
    return root


def initialize_nnunet_predictor(predictor, root: Path, folds: Sequence[int | str],
                                checkpoint: str = "checkpoint_final.pth") -> None:
    """nnUNetPredictor.initialize_from_trained_model_folder without its trainer-class lookup
    (which imports every trainer module, and some of those need packages absent here): the
    default trainer's network (get_network_from_plans) and manual_initialization, with the
    checkpoints read as nnU-Net reads them."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((root / "plans.json").read_text())
    dataset = json.loads((root / "dataset.json").read_text())
    manager = PlansManager(plans)
    params, mirror, config_name = [], None, None
    for i, f in enumerate(folds):
        ckpt = torch.load(root / f"fold_{f}" / checkpoint, map_location="cpu", weights_only=False)
        if i == 0:
            config_name = ckpt["init_args"]["configuration"]
            mirror = ckpt.get("inference_allowed_mirroring_axes")
        params.append(ckpt["network_weights"])
    config = manager.get_configuration(config_name)
    labels = manager.get_label_manager(dataset)
    net = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                 config.network_arch_init_kwargs_req_import,
                                 determine_num_input_channels(manager, config, dataset),
                                 labels.num_segmentation_heads, allow_init=True, deep_supervision=False)
    net.load_state_dict(params[0])
    predictor.manual_initialization(net, manager, config, params, dataset, "nnUNetTrainer", mirror)
