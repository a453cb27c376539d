"""Import a trained nnU-Net v2 model: its results folder becomes a medseg model folder.

An nnU-Net v2 results folder (`nnUNet_results/DatasetXXX/<trainer>__<plans>__<configuration>/`)
holds `plans.json`, `dataset.json` and `fold_<k>/checkpoint_final.pth` per trained fold. The
checkpoints are pickles; they are read with `torch.load(weights_only=True)` and an explicit
allow-list of the few numpy types nnU-Net's training log puts in them (numpy scalars and
their dtypes), so reading one never runs code it carries.

What is mapped, and how exactly:
- PlainConvUNet -> `dynunet`, ResidualEncoderUNet (BasicBlockD) -> `dynunet_resenc`: the
  same layers in the same order, so the weights map one to one (nnU-Net's segmentation head
  of the lowest decoder resolution is never used at inference; medseg has none and it is
  dropped). Networks without conv biases get zero biases. Logits agree to float rounding.
- `transpose_forward`: nnU-Net trains on axes re-ordered so that the coarsest comes first.
  medseg keeps the scan's axis order and instead permutes the kernels' spatial axes (and
  patch size, spacing, strides): a convolution of permuted data with a permuted kernel is the
  permuted convolution, so the network is the same function.
- Normalisation: CTNormalization -> 'ct' (clip to the foreground 0.5/99.5 percentiles,
  z-score with the foreground mean/std: the same arithmetic), ZScoreNormalization ->
  'zscore'. With nnU-Net's `use_mask_for_norm` (it sets it for z-scored channels when
  cropping to the non-zero region removed much of the image), nnU-Net z-scores with the
  statistics of the non-zero region and sets voxels outside it to 0; medseg's 'zscore'
  uses the whole cropped box. The import records this in the configuration's notes and
  warns; predictions differ where the background is zero.
- Resampling: nnU-Net's default image resampling (scikit-image's order-3 spline within the
  slices across a coarse axis, then order 0 along it, when a spacing ratio exceeds 3) maps
  to medseg's 'spline', which computes the same values. The coarse axis can be any axis
  (x in transposed plans). nnU-Net decides it per case, from the spacing it resamples from
  and else the one it resamples to; the imported plan says `anisotropy_threshold` and medseg
  applies the same rule per case (`separate_axis_for`). nnU-Net averages the folds' logits
  and resamples logits at export; the imported model.json says `"scores": "logits"` and
  medseg's Predictor does the same.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.planning.plans import ConfigurationPlan
from medseg.preprocessing.resample import coarse_axis, nnunet_separate_axis
from medseg.training.checkpoint import save_checkpoint
from medseg.training.trainer import build_model
from medseg.utils.files import read_json, write_json

ANISOTROPY_RATIO = 3.0  # nnU-Net's ANISO_THRESHOLD: the coarse axis is resampled on its own above it

NORMALIZATION = {"CTNormalization": "ct", "ZScoreNormalization": "zscore"}
ARCHITECTURES = {"PlainConvUNet": "dynunet", "ResidualEncoderUNet": "dynunet_resenc"}
ORDER = {0: "nearest", 1: "linear", 3: "spline"}


def _numpy_globals() -> list:
    """What nnU-Net's checkpoints pickle besides tensors and plain containers: numpy scalars
    (its training log holds np.float64/np.float32 values) and their dtypes. Pickles written
    under numpy 1 name the scalar constructor `numpy.core...`, under numpy 2 `numpy._core...`."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        if dtypes is not None and hasattr(dtypes, name):
            allowed.append(getattr(dtypes, name))
    return allowed


def load_nnunet_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net checkpoint (.pth) without unpickling arbitrary objects.

    `torch.load(weights_only=True)` rebuilds only tensors, plain containers and primitive
    values, plus the numpy scalar types allowed here; anything else (a class, a function,
    a `__reduce__` payload) is refused and reported as a MedsegError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError("checkpoint not found", path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the file's problem
        reason = str(err).strip().splitlines()
        detail = next((ln for ln in reason if "GLOBAL" in ln or "Unsupported" in ln), reason[-1] if reason else "")
        raise MedsegError(f"not a checkpoint medseg can read safely (only tensors, plain values and numpy "
                          f"scalars are allowed): {detail.strip()[:300]}", path) from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise MedsegError("not an nnU-Net checkpoint (no 'network_weights')", path)
    return ckpt


# ----------------------------------------------------------------------------- plans


def resolve_configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """nnU-Net's configuration `name` with `inherits_from` resolved (a shallow update, as nnU-Net does)."""
    configs = plans.get("configurations", {})
    chain: list[str] = []
    while True:
        if name not in configs:
            raise MedsegError(f"plans.json has no configuration '{name}' (have: {', '.join(configs)})")
        if name in chain:
            raise MedsegError(f"plans.json configurations inherit in a circle: {' -> '.join(chain + [name])}")
        chain.append(name)
        parent = configs[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    out: dict[str, Any] = {}
    for n in reversed(chain):
        out.update({k: v for k, v in configs[n].items() if k != "inherits_from"})
    return out


def architecture(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(class name, keyword arguments) of the configuration's network, from the current
    plans format or the one before it (`UNet_class_name`, ...)."""
    if "architecture" in config:
        arch = config["architecture"]
        return arch["network_class_name"].rsplit(".", 1)[-1], dict(arch["arch_kwargs"])
    cls = config.get("UNet_class_name")
    if cls is None:
        raise MedsegError("plans.json configuration describes no network ('architecture' or 'UNet_class_name')")
    n = len(config["n_conv_per_stage_encoder"])
    dims = len(config["patch_size"])
    key = "n_conv_per_stage" if cls == "PlainConvUNet" else "n_blocks_per_stage"
    return cls, {
        "n_stages": n,
        "features_per_stage": [min(config["UNet_base_num_features"] * 2**i, config["unet_max_num_features"])
                               for i in range(n)],
        "conv_op": f"torch.nn.Conv{dims}d", "kernel_sizes": config["conv_kernel_sizes"],
        "strides": config["pool_op_kernel_sizes"], key: config["n_conv_per_stage_encoder"],
        "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"], "conv_bias": True,
        "norm_op": f"torch.nn.InstanceNorm{dims}d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }


def _op_name(value: Any) -> str:
    return "" if value is None else str(value).rsplit(".", 1)[-1]


def _as_list(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def model_options(cls: str, kw: dict[str, Any], spatial_dims: int, order: Sequence[int]) -> tuple[str, dict[str, Any]]:
    """medseg model name and options for nnU-Net's network; `order[k]` is the nnU-Net axis
    that medseg's axis k holds (identity unless the plans transpose)."""
    if cls not in ARCHITECTURES:
        raise MedsegError(f"nnU-Net network {cls} is not supported; medseg imports "
                          f"{' and '.join(ARCHITECTURES)}")
    n = int(kw["n_stages"])
    conv = _op_name(kw.get("conv_op"))
    if conv != f"Conv{spatial_dims}d":
        raise MedsegError(f"nnU-Net network uses {conv}; expected Conv{spatial_dims}d")
    norm_name = _op_name(kw.get("norm_op"))
    norm_kw = kw.get("norm_op_kwargs") or {}
    if norm_name.startswith("InstanceNorm"):
        norm = "instance"
        if not norm_kw.get("affine", False) or abs(float(norm_kw.get("eps", 1e-5)) - 1e-5) > 1e-12:
            raise MedsegError(f"nnU-Net instance norm with {norm_kw} is not supported (medseg: affine, eps 1e-5)")
    elif norm_name.startswith("BatchNorm"):
        norm = "batch"
        if abs(float(norm_kw.get("eps", 1e-5)) - 1e-5) > 1e-12:
            raise MedsegError(f"nnU-Net batch norm with {norm_kw} is not supported (medseg: eps 1e-5)")
    else:
        raise MedsegError(f"nnU-Net norm {norm_name or None} is not supported (instance or batch norm)")
    nonlin = _op_name(kw.get("nonlin"))
    slope = float((kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01))
    if nonlin == "LeakyReLU" and abs(slope - 0.01) < 1e-12:
        act = "leakyrelu"
    elif nonlin == "ReLU":
        act = "relu"
    else:
        raise MedsegError(f"nnU-Net nonlinearity {nonlin} (slope {slope}) is not supported")
    if kw.get("nonlin_first", False):
        raise MedsegError("nnU-Net networks with nonlin_first=True are not supported")

    def reorder(per_axis: Any) -> list[int]:
        values = _as_list(per_axis, spatial_dims)
        return [int(values[a]) for a in order]

    options: dict[str, Any] = {
        "features": [int(f) for f in _as_list(kw["features_per_stage"], n)],
        "kernel_sizes": [reorder(k) for k in _as_list(kw["kernel_sizes"], n)],
        "strides": [reorder(s) for s in _as_list(kw["strides"], n)],
        "decoder_convs": [int(c) for c in _as_list(kw["n_conv_per_stage_decoder"], n - 1)],
        "norm": norm, "act": act, "deep_supervision": False,
    }
    if cls == "PlainConvUNet":
        options["conv_per_stage"] = [int(c) for c in _as_list(kw["n_conv_per_stage"], n)]
    else:
        block = _op_name(kw.get("block", "BasicBlockD"))
        if block != "BasicBlockD":
            raise MedsegError(f"ResidualEncoderUNet with {block} blocks is not supported (BasicBlockD only)")
        stem = kw.get("stem_channels")
        if stem not in (None, options["features"][0]):
            raise MedsegError(f"ResidualEncoderUNet with stem_channels={stem} is not supported")
        options["blocks_per_stage"] = [int(b) for b in _as_list(kw["n_blocks_per_stage"], n)]
    return ARCHITECTURES[cls], options


# ----------------------------------------------------------------------------- weights

_UNIT = {"conv": "0", "norm": "1"}  # medseg's ConvNormAct is Sequential(conv, norm, act)
_BLOCK_CONV = {"1": "0", "2": "1"}  # BasicBlockD's conv1 / conv2 -> ResidualBlock.convs[0 / 1]
_RULES = [
    # PlainConvUNet encoder: stages.<s>.0.convs.<j>.{conv,norm}
    (r"encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.(conv|norm)\.(.+)",
     lambda s, j, u, p: f"encoder.{s}.{j}.{_UNIT[u]}.{p}"),
    # ResidualEncoderUNet stem and BasicBlockD blocks (skip: [avgpool,] 1x1 conv + norm)
    (r"encoder\.stem\.convs\.0\.(conv|norm)\.(.+)", lambda u, p: f"stem.{_UNIT[u]}.{p}"),
    (r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.conv([12])\.(conv|norm)\.(.+)",
     lambda s, b, c, u, p: f"encoder.{s}.{b}.convs.{_BLOCK_CONV[c]}.{_UNIT[u]}.{p}"),
    (r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.skip\.(\d+)\.(conv|norm)\.(.+)",
     lambda s, b, k, u, p: f"encoder.{s}.{b}.shortcut.{k}.{_UNIT[u]}.{p}"),
    # decoder, lowest resolution first in both
    (r"decoder\.transpconvs\.(\d+)\.(.+)", lambda i, p: f"up.{i}.{p}"),
    (r"decoder\.stages\.(\d+)\.convs\.(\d+)\.(conv|norm)\.(.+)",
     lambda i, j, u, p: f"decoder.{i}.{j}.{_UNIT[u]}.{p}"),
    (r"decoder\.seg_layers\.(\d+)\.(.+)", lambda i, p: f"heads.{i}.{p}"),
]
# Aliases nnU-Net's state dicts also hold: `all_modules` repeats conv/norm, and the decoder
# keeps a reference to the encoder.
_ALIASES = re.compile(r"(^decoder\.encoder\.)|(\.all_modules\.)")


def medseg_key(key: str) -> str | None:
    """The medseg DynUNet parameter name of an nnU-Net state-dict key (None for aliases)."""
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        if key.startswith(prefix):
            key = key[len(prefix):]
    if _ALIASES.search(key):
        return None
    for pattern, name in _RULES:
        m = re.fullmatch(pattern, key)
        if m:
            return name(*m.groups())
    raise MedsegError(f"nnU-Net weight '{key}' has no counterpart in medseg's dynamic U-Net")


def map_weights(state: dict[str, torch.Tensor], model: torch.nn.Module, order: Sequence[int]) -> dict[str, torch.Tensor]:
    """nnU-Net weights -> a complete state dict for `model` (a medseg DynUNet).

    Convolution kernels get their spatial axes re-ordered by `order`; biases nnU-Net does not
    have (conv_bias=False) are zero; the head of the lowest decoder resolution is dropped.
    Every medseg parameter must be filled exactly once, with the same shape.
    """
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state.items():
        name = medseg_key(key)
        if name is None:
            continue
        if name not in target:
            if name.startswith("heads."):
                dropped.append(name.split(".")[1])
                continue
            raise MedsegError(f"nnU-Net weight '{key}' (-> '{name}') does not fit the medseg network")
        value = value.detach().to(torch.float32) if value.is_floating_point() else value.detach()
        if value.ndim == 2 + len(order) and list(order) != sorted(order):
            value = value.permute(0, 1, *[2 + a for a in order])
        if tuple(value.shape) != tuple(target[name].shape):
            raise MedsegError(f"nnU-Net weight '{key}' has shape {tuple(value.shape)}; medseg's '{name}' "
                              f"has {tuple(target[name].shape)}")
        out[name] = value.contiguous()
    for name, value in target.items():
        if name in out:
            continue
        if name.endswith(".bias") or name.endswith("num_batches_tracked"):
            out[name] = torch.zeros_like(value)  # conv_bias=False in nnU-Net: a zero bias is the same
        else:
            raise MedsegError(f"the nnU-Net checkpoint has no weights for medseg's '{name}'")
    if len(set(dropped)) > 1:
        raise MedsegError(f"nnU-Net heads {sorted(set(dropped))} have no counterpart in medseg's network")
    return out


# ----------------------------------------------------------------------------- import


def _labels(dataset: dict[str, Any]) -> dict[str, int]:
    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise MedsegError("dataset.json has no 'labels'")
    out = {}
    for name, value in labels.items():
        if name == "ignore":
            continue  # nnU-Net's ignore label has no output channel
        if isinstance(value, (list, tuple)):
            raise MedsegError("region-based nnU-Net models (labels with lists of values) are not supported: "
                              "medseg predicts one class per voxel with a softmax")
        out[name] = int(value)
    return out


def _channels(dataset: dict[str, Any]) -> list[str]:
    names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(names, dict):
        raise MedsegError("dataset.json has no 'channel_names'")
    return [str(names[k]) for k in sorted(names, key=int)]


def _configuration_name(results_dir: Path, ckpt: dict[str, Any]) -> str:
    name = (ckpt.get("init_args") or {}).get("configuration")
    if isinstance(name, str):
        return name
    parts = results_dir.name.split("__")
    if len(parts) == 3:
        return parts[2]
    raise MedsegError("cannot tell the configuration: neither the checkpoint's init_args nor the folder name "
                      "(<trainer>__<plans>__<configuration>) names it", results_dir)


def _resampling(config: dict[str, Any], target_spacing: Sequence[float], notes: list[str]) -> dict[str, Any]:
    """medseg's `resampling` for nnU-Net's image resampling arguments; `target_spacing` in
    medseg's (z, y, x) order. `separate_axis` is the coarse axis of the target spacing (what
    nnU-Net takes for a case already at that spacing); `anisotropy_threshold` makes medseg
    decide per case as nnU-Net does (`separate_axis_for`)."""
    kw = config.get("resampling_fn_data_kwargs") or {}
    order = int(kw.get("order", 3))
    data = ORDER.get(order, "cubic")
    if order not in ORDER:
        notes.append(f"nnU-Net resamples images with spline order {order}; medseg uses order 3 (spline)")
    threshold = float(kw.get("separate_z_anisotropy_threshold", ANISOTROPY_RATIO))
    # The rule is permutation-equivariant, so it gives the axis in medseg's order directly.
    axis = nnunet_separate_axis(target_spacing, target_spacing, threshold)
    force = kw.get("force_separate_z")
    if force is None:
        return {"data": data, "label": "linear", "separate_axis": axis, "anisotropy_threshold": threshold}
    if force:
        # Forced: nnU-Net takes the coarse axis of the spacing it resamples from (the case's at
        # preprocessing, the target's at export); medseg takes the target's both ways.
        notes.append("nnU-Net forces separate resampling along the coarse axis of the spacing it resamples "
                     "from; medseg uses the target's coarse axis for preprocessing too")
        axis = coarse_axis(target_spacing) if len(target_spacing) == 3 else None
    else:
        axis = None
    return {"data": data, "label": "linear", "separate_axis": axis}


def import_nnunet(results_dir: str | Path, out_dir: str | Path, folds: Sequence[int | str] | None = None,
                  checkpoint: str = "checkpoint_final.pth") -> Path:
    """Convert an nnU-Net v2 results folder into a medseg model folder; returns `out_dir`.

    `results_dir` holds plans.json, dataset.json and fold_<k>/`checkpoint` (default: every
    fold that has one). `out_dir` gets model.json and fold_<k>/checkpoint_final.safetensors
    (+ .json), which `Predictor.from_model_dir` loads. Raises MedsegError for anything
    medseg cannot represent exactly (other networks, region-based labels, cascades).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise MedsegError("nnU-Net results folder not found", results_dir)
    plans = read_json(results_dir / "plans.json")
    dataset = read_json(results_dir / "dataset.json")
    if folds is None:
        fold_dirs = sorted((p for p in results_dir.glob("fold_*") if (p / checkpoint).is_file()),
                           key=lambda p: (not p.name[5:].isdigit(), p.name[5:].zfill(4)))
    else:
        fold_dirs = [results_dir / f"fold_{f}" for f in folds]
    if not fold_dirs:
        raise MedsegError(f"no fold_*/{checkpoint} in the nnU-Net results folder", results_dir)
    ckpts = [load_nnunet_checkpoint(fd / checkpoint) for fd in fold_dirs]

    config_name = _configuration_name(results_dir, ckpts[0])
    config = resolve_configuration(plans, config_name)
    if config.get("previous_stage"):
        raise MedsegError(f"configuration '{config_name}' is a cascade stage (it reads the previous stage's "
                          f"segmentation); medseg does not import cascades", results_dir / "plans.json")
    patch = [int(p) for p in config["patch_size"]]
    spatial_dims = len(patch)
    forward = [int(a) for a in plans.get("transpose_forward", range(3))]
    if spatial_dims == 3:
        # nnU-Net's axis j holds the scan's axis forward[j]; medseg's axis k holds nnU-Net's backward[k].
        order = [int(i) for i in np.argsort(forward)]
    else:
        order = [0, 1]
        if forward != sorted(forward):
            raise MedsegError("2d configurations of transposed plans are not supported", results_dir / "plans.json")

    notes = [f"imported from nnU-Net v2: {results_dir.name}, configuration {config_name}, "
             f"folds {', '.join(fd.name[5:] for fd in fold_dirs)}"]
    channels = _channels(dataset)
    labels = _labels(dataset)
    schemes = []
    for c, scheme in enumerate(config["normalization_schemes"]):
        if scheme not in NORMALIZATION:
            raise MedsegError(f"nnU-Net normalisation {scheme} (channel {c}) is not supported; medseg has "
                              f"{' and '.join(NORMALIZATION)}", results_dir / "plans.json")
        schemes.append(NORMALIZATION[scheme])
        if scheme == "ZScoreNormalization" and config.get("use_mask_for_norm", [False] * (c + 1))[c]:
            msg = (f"channel {c} ({channels[c]}): nnU-Net z-scores it within the non-zero region and sets "
                   f"voxels outside to 0; medseg z-scores the whole cropped box, so predictions can differ "
                   f"where the background is zero")
            notes.append(msg)
            warnings.warn(msg, stacklevel=2)
    props = plans.get("foreground_intensity_properties_per_channel", {})
    intensity = []
    for c in range(len(channels)):
        st = props.get(str(c), {})
        intensity.append({k: float(st[k]) for k in ("mean", "std", "percentile_00_5", "percentile_99_5", "min", "max")
                          if k in st})
        if schemes[c] == "ct" and len(intensity[-1]) < 4:
            raise MedsegError(f"plans.json lacks the foreground intensity statistics of CT channel {c}",
                              results_dir / "plans.json")

    spacing = [float(s) for s in config["spacing"]]
    target_spacing = [spacing[a] for a in order] if len(spacing) == spatial_dims else spacing
    cls, kw = architecture(config)
    model_name, options = model_options(cls, kw, spatial_dims, order)
    mirror_axes = ckpts[0].get("inference_allowed_mirroring_axes")
    # nnU-Net's axis j is medseg's axis forward[j] (2-D plans are never transposed here).
    medseg_mirror = None if mirror_axes is None else sorted(
        (forward[int(a)] if spatial_dims == 3 else int(a)) for a in mirror_axes)
    plan = ConfigurationPlan(
        name=config_name, spatial_dims=spatial_dims, target_spacing=target_spacing,
        patch_size=[patch[a] for a in order], batch_size=int(config.get("batch_size", 2)),
        normalization=schemes, model=model_name, model_options=options,
        resampling=_resampling(config, target_spacing, notes),
        median_shape=[int(m) for m in config.get("median_image_size_in_voxels", [])][:spatial_dims],
        mirror_axes=medseg_mirror, notes=notes,
    )
    desc = {
        "configuration": {"name": plan.name, **plan.to_dict()},
        "model": model_name,
        "model_options": options,
        "labels": labels,
        "channel_names": channels,
        "intensity": intensity,
        # nnU-Net averages the folds' logits and resamples logits to the scan's grid.
        "scores": "logits",
        "source": {
            "framework": "nnU-Net v2", "results_folder": str(results_dir.resolve()),
            "trainer": ckpts[0].get("trainer_name"), "plans": plans.get("plans_name"),
            "configuration": config_name, "transpose_forward": forward,
            "inference_allowed_mirroring_axes": None if mirror_axes is None else [int(a) for a in mirror_axes],
        },
    }
    net = build_model(desc)
    expected = max(labels.values()) + 1
    for fd, ckpt in zip(fold_dirs, ckpts):
        outputs = {int(v.shape[0]) for k, v in ckpt["network_weights"].items()
                   if re.fullmatch(r"(module\.)?decoder\.seg_layers\.\d+\.weight", k)}
        if outputs and outputs != {expected}:
            raise MedsegError(f"the network predicts {sorted(outputs)} classes; dataset.json declares "
                              f"{expected} (background included)", fd / checkpoint)
        net.load_state_dict(map_weights(ckpt["network_weights"], net, order))
        state = {"epoch": int(ckpt.get("current_epoch", 0)), "imported_from": str((fd / checkpoint).resolve()),
                 "trainer": ckpt.get("trainer_name")}
        save_checkpoint(out_dir / fd.name, "checkpoint_final", net, state)
    write_json(out_dir / "model.json", desc)
    return out_dir
