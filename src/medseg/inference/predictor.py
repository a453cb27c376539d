"""Predict label maps for new scans in their own geometry, from a trained model folder."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from medseg.errors import MedsegError
from medseg.inference.memory import ACCUMULATION_DTYPES, export_slab
from medseg.inference.probabilities import ProbabilityWriter
from medseg.inference.sliding_window import sliding_window
from medseg.io.dataset import CHANNEL_RE, CaseFiles, read_case
from medseg.io.image import Image, has_image_suffix, write_image
from medseg.io.labels import LabelScheme
from medseg.planning.plans import ConfigurationPlan
from medseg.preprocessing.preprocess import preprocess_image, separate_axis_for
from medseg.preprocessing.resample import region_labels, resampled_slabs
from medseg.training.checkpoint import model_weights, read_checkpoint
from medseg.training.device import autocast, resolve_device, resolve_precision
from medseg.training.previous_stage import previous_stage_input
from medseg.training.trainer import build_model
from medseg.training.trainer import mirror_axes as allowed_mirror_axes
from medseg.utils.files import read_json

CHECKPOINT_ORDER = ("checkpoint_final", "checkpoint_best", "checkpoint_latest")


@dataclass
class _Prepared:
    """A scan cropped, normalised and resampled to the plan's spacing (`data`, network
    channels x grid; a cascade stage's previous-stage channels included), and what maps a
    prediction back (`props`). Predicting it takes `data` out and frees it."""

    data: torch.Tensor | None
    props: dict[str, Any]


class Predictor:
    """Holds the networks of one or more folds; predicts images with geometry.

    Scores of all folds are averaged (softmax probabilities), resampled back to the scan's
    grid a slab of slices at a time, arg-maxed, and un-cropped. A region model's scores are
    sigmoid probabilities, one per region; each region's value of `regions_class_order` is
    written where its probability exceeds 0.5, in order. A model whose model.json says
    `"scores": "logits"` (models imported from nnU-Net v2, which does so) averages and
    resamples logits instead. The class-by-voxel scores are held in `accumulation` precision
    ("fp16", the default, or "fp32"); docs/inference.md gives the peak memory as a formula.
    With `save_probabilities`, `predict_folder` also writes CASE.npz and CASE.json
    (`medseg.inference.probabilities`).

    A cascade stage (its configuration has `previous_stage`) also needs the previous stage's
    label map of each scan: `previous_stage` supplies it (`inference.cascade`: the previous
    stage's model run first, or a folder of its predictions), or `predict_array` is given it.
    """

    def __init__(self, description: dict[str, Any], models: list[torch.nn.Module], device: torch.device,
                 precision: str = "fp32", step: float = 0.5, mirror: bool = False, tile_batch: int = 1,
                 progress: bool = False, fold_dirs: list[Path] | None = None, backend: str = "torch",
                 postprocessing: dict[str, Any] | None = None, previous_stage: Any = None,
                 accumulation: str = "fp16", save_probabilities: bool = False):
        if accumulation not in ACCUMULATION_DTYPES:
            raise MedsegError(f"unknown accumulation {accumulation!r}; use {' or '.join(ACCUMULATION_DTYPES)}")
        self.accumulation = accumulation
        self.save_probabilities = save_probabilities
        self.desc = description
        self.previous_stage = previous_stage
        self.postprocessing = postprocessing
        self.fold_dirs = fold_dirs or []
        if backend not in ("torch", "onnxruntime"):
            raise MedsegError(f"unknown backend {backend!r}; use torch or onnxruntime")
        self.backend = backend
        self._onnx: list = []
        self.plan = ConfigurationPlan(**description["configuration"])
        self.models = models
        self.device = device
        self.precision = precision
        self.step = step
        self.mirror = mirror
        self.tile_batch = tile_batch
        self.progress = progress
        self.labels = LabelScheme.of(description)
        self.num_classes = self.labels.num_outputs

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[int | str] | None = None,
                       checkpoint: str | None = None, device: str = "auto", precision: str = "auto",
                       postprocess: bool = True, previous_stage_predictions: str | Path | None = None,
                       **kwargs: Any) -> "Predictor":
        """Load `model_dir/model.json` and the chosen folds' checkpoints (default: every fold
        found). With `postprocess`, the rules of `postprocessing.json` (if decided) apply.
        A cascade stage takes its previous stage's label maps from `previous_stage_predictions`
        (a folder written by `medseg predict`) or else runs the previous stage's model, found
        beside `model_dir` (`models/<previous_stage>`), with all its folds and these settings."""
        from medseg.inference.postprocess import load_rules

        model_dir = Path(model_dir)
        if postprocess:
            kwargs.setdefault("postprocessing", load_rules(model_dir))
        desc = read_json(model_dir / "model.json")
        if folds is None:
            fold_dirs = sorted(p for p in model_dir.glob("fold_*") if p.is_dir())
        else:
            fold_dirs = [model_dir / f"fold_{f}" for f in folds]
        if not fold_dirs:
            raise MedsegError("no trained folds (fold_*) in model folder", model_dir)
        dev = resolve_device(device)
        models = []
        for fd in fold_dirs:
            names = [checkpoint] if checkpoint else list(CHECKPOINT_ORDER)
            path = next((fd / f"{n}.safetensors" for n in names if (fd / f"{n}.safetensors").exists()), None)
            if path is None:
                raise MedsegError(f"no checkpoint ({', '.join(names)}) found", fd)
            tensors, _ = read_checkpoint(path)
            # Built as trained (heads included); eval mode returns the full-resolution logits.
            net = build_model(desc)
            net.load_state_dict(model_weights(tensors))
            models.append(net.to(dev).eval())
        prec = resolve_precision(precision, dev)
        if desc["configuration"].get("previous_stage") and "previous_stage" not in kwargs:
            from medseg.inference.cascade import previous_stage_source
            kwargs["previous_stage"] = previous_stage_source(
                model_dir, desc["configuration"]["previous_stage"], previous_stage_predictions,
                checkpoint=checkpoint, device=device, precision=precision,
                **{k: v for k, v in kwargs.items() if k in ("step", "mirror", "tile_batch", "backend", "accumulation")})
        return cls(desc, models, dev, precision=prec, fold_dirs=fold_dirs, **kwargs)

    def _scores(self, x: torch.Tensor, forward, mirror_axes: tuple[int, ...]) -> torch.Tensor:
        """Weighted logits (K, *spatial) in the accumulation dtype; a 2D network on a volume
        goes slice by slice."""
        dtype = ACCUMULATION_DTYPES[self.accumulation]
        if x.ndim - 1 == self.plan.spatial_dims:
            return sliding_window(x, forward, self.plan.patch_size, self.num_classes, self.step,
                                  self.tile_batch, mirror_axes=mirror_axes, dtype=dtype)
        out = torch.empty((self.num_classes, *x.shape[1:]), dtype=dtype)
        for z in range(x.shape[1]):
            out[:, z] = sliding_window(x[:, z], forward, self.plan.patch_size, self.num_classes, self.step,
                                       self.tile_batch, mirror_axes=mirror_axes, dtype=dtype)
        return out

    def _forwards(self) -> list:
        """One `predict(x) -> logits` per fold, from the chosen backend."""
        if self.backend == "torch":
            return [self._forward(net) for net in self.models]
        if not self._onnx:
            from medseg.inference.export import FORMATS, onnx_forward
            self._onnx = [onnx_forward(d / FORMATS["onnx"]) for d in self.fold_dirs]
        return self._onnx

    def _forward(self, net: torch.nn.Module):
        def run(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.precision, self.device):
                return net(x.to(self.device)).float().cpu()
        return run

    @torch.inference_mode()
    def predict_array(self, image: np.ndarray, spacing: Sequence[float], previous: np.ndarray | None = None,
                      probabilities_to: str | Path | None = None, reference: Image | None = None) -> np.ndarray:
        """Label map (*spatial; uint8, or int16 for values beyond 255) for image (C, *spatial) at
        `spacing` (z, y, x, mm). A cascade stage needs `previous`, the previous stage's label map
        of the image (*spatial). With `probabilities_to` (CASE.npz), the class probabilities are
        written there too, and CASE.json beside it with `reference`'s origin and direction
        (default: `spacing`, origin 0, identity direction)."""
        return self._predict_prepared(self._prepare(image, spacing, previous), probabilities_to, reference)

    def _prepare(self, image: np.ndarray, spacing: Sequence[float], previous: np.ndarray | None = None) -> _Prepared:
        if image.shape[0] != len(self.desc["channel_names"]):
            raise MedsegError(f"image has {image.shape[0]} channels; the model needs "
                              f"{len(self.desc['channel_names'])} ({', '.join(self.desc['channel_names'])})")
        if self.plan.previous_stage and previous is None:
            raise MedsegError(f"configuration {self.plan.name} is a cascade stage: it needs the "
                              f"{self.plan.previous_stage} segmentation of the image")
        data, props = preprocess_image(image, tuple(spacing), self.plan, self.desc["intensity"])
        x = torch.from_numpy(data)
        del data
        if self.plan.previous_stage:
            x = torch.cat([x, previous_stage_input(previous, props, self.plan, self.num_classes, spacing)])
        return _Prepared(x, props)

    @torch.inference_mode()
    def _predict_prepared(self, prepared: _Prepared, probabilities_to: str | Path | None = None,
                          reference: Image | None = None) -> np.ndarray:
        props = prepared.props
        x, prepared.data = prepared.data, None
        total = self.predict_preprocessed(x)
        del x
        labels = np.zeros(tuple(props["shape"]), dtype=self._label_dtype())
        writer = None
        if probabilities_to is not None:
            writer = ProbabilityWriter(probabilities_to, self.num_classes, props["shape"], props["bbox"],
                                       background=not self.labels.has_regions)
        with writer if writer is not None else contextlib.nullcontext():
            back = separate_axis_for(tuple(props["spacing"]), self.plan, to_target=False)
            self._export(total, props["shape_after_crop"], back, labels[tuple(slice(a, b) for a, b in props["bbox"])],
                         writer)
            del total
            if self.postprocessing:
                from medseg.inference.postprocess import apply_postprocessing
                labels = apply_postprocessing(labels, self.postprocessing)
            if writer is not None:
                writer.finish(self._probability_info(props, reference))
        return labels

    @torch.inference_mode()
    def predict_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (K, *grid) of a preprocessed input (network channels, *grid): the folds'
        softmax (regions: sigmoid) probabilities, or logits (see the class), summed in the
        accumulation dtype on the preprocessed grid. An ensemble adds one such buffer."""
        mirror_axes = tuple(allowed_mirror_axes(self.plan)) if self.mirror else ()
        total = None
        for forward in self._forwards():
            scores = self._scores(x, forward, mirror_axes)
            if not self._logits:
                activate_(scores, self.labels.has_regions, export_slab(scores.shape[0], prod(scores.shape[2:])))
            total = scores if total is None else total.add_(scores)
            del scores
        return total

    def labels_from_probabilities(self, probs: torch.Tensor, shape: Sequence[int],
                                  separate_axis: int | None) -> torch.Tensor:
        """Label map at `shape` (int16) from `predict_preprocessed`'s summed fold scores: the
        arg-max, or for a region model each region's `regions_class_order` value where the
        folds' mean probability exceeds 0.5, region after region; resampled a slab at a time
        (nearest along `separate_axis`, an index in (z, y, x), if not None)."""
        out = torch.zeros(tuple(shape), dtype=torch.int16)
        self._export(probs, shape, separate_axis, out.numpy())
        return out

    def _export(self, total: torch.Tensor, shape: Sequence[int], separate_axis: int | None, out: np.ndarray,
                writer: ProbabilityWriter | None = None) -> None:
        """Resample the summed scores to `shape` a slab of z-slices at a time (nearest along
        `separate_axis` if not None), into the label map `out` (an array of `shape`), and
        (with `writer`) the folds' mean probabilities."""
        folds = len(self._forwards())
        rows = export_slab(total.shape[0], max(prod(total.shape[2:]), prod(shape[1:])))
        for start, slab in resampled_slabs(total, shape, separate_axis, rows):
            if folds > 1:
                slab.div_(folds)
            if self.labels.has_regions:
                out[start:start + slab.shape[1]] = region_labels(slab, self.labels.regions_class_order).numpy()
            else:
                out[start:start + slab.shape[1]] = slab.argmax(0).numpy()
            if writer is not None:
                writer.write(start, activate_(slab, False) if self._logits else slab)

    @property
    def _logits(self) -> bool:
        return self.desc.get("scores") == "logits"

    def _probability_info(self, props: dict[str, Any], reference: Image | None) -> dict[str, Any]:
        if self.labels.has_regions:
            names = list(self.labels.foreground)
            made = "mean of the folds' sigmoid, one channel per region (regions overlap: no sum to 1)"
        else:
            by_value = {v: k for k, v in self.labels.labels.items() if isinstance(v, int) and k != "ignore"}
            names = [by_value.get(k) for k in range(self.num_classes)]
            made = "softmax of the folds' mean logits" if self._logits else "mean of the folds' softmax"
        ref = reference if reference is not None else Image(np.empty((0,) * len(props["shape"])), props["spacing"])
        return {
            "axes": ["class", *"zyx"[3 - len(props["shape"]):]],
            "classes": names,
            "spacing": list(ref.spacing), "origin": list(ref.origin), "direction": list(ref.direction),
            "made_by": f"{made} ({len(self._forwards())} fold(s)), resampled linearly to the scan's grid; "
                       + ("background 1" if not self.labels.has_regions else "0") + " outside the cropped box; "
                       "before post-processing",
        }

    def previous_labels(self, case_id: str | None, ref: Image, array: np.ndarray) -> np.ndarray | None:
        """The previous stage's label map of a scan, from `previous_stage` (cascade stages only)."""
        if not self.plan.previous_stage or self.previous_stage is None:
            return None
        return self.previous_stage.labels(case_id, ref, array)

    def predict(self, image: Image | str | Path | Sequence[str | Path], previous: np.ndarray | None = None,
                probabilities_to: str | Path | None = None) -> Image:
        """Predict one scan: an `Image` (single channel), a path, or one path per channel.
        Returns the label map with the input's exact geometry. `previous`: a cascade stage's
        previous-stage label map of the scan (default: from `previous_stage`). With
        `probabilities_to` (CASE.npz), the class probabilities are written there, and CASE.json
        beside it."""
        case_id = None
        if isinstance(image, Image):
            ref, array = image, image.array[None].astype(np.float32)
        else:
            paths = [Path(image)] if isinstance(image, (str, Path)) else [Path(p) for p in image]
            ref, array = _read(paths)
            case_id = case_id_of(paths[0])
        if previous is None:
            previous = self.previous_labels(case_id, ref, array)
        prepared = self._prepare(array, ref.spacing, previous)
        del array, previous
        labels = self._predict_prepared(prepared, probabilities_to, ref)
        return Image(labels, ref.spacing, ref.origin, ref.direction)

    def predict_folder(self, inputs: str | Path | Sequence[str | Path], output_dir: str | Path,
                       file_ending: str | None = None) -> list[Path]:
        """Predict every case of `inputs` into `output_dir/CASE<ending>` (with
        `save_probabilities`, also CASE.npz and CASE.json).

        `inputs` is a folder (nnU-Net naming: CASE_0000.nii.gz per channel, or one file per
        case for single-channel models), a text file listing image paths one per line, or a
        list of paths. Under `torchrun`, rank r of N takes cases r, r+N, ... (no process group
        is needed). The next case is read, and the last one written, while the network runs.
        """
        cases = discover_inputs(inputs, len(self.desc["channel_names"]), file_ending)
        rank, world = torchrun_rank()
        cases = cases[rank::world]
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            pending_write = None
            nxt = reader.submit(_read, cases[0][1]) if cases else None
            bar = tqdm(cases, desc="predict", disable=not self.progress, unit="case")
            for i, (case_id, paths) in enumerate(bar):
                t0 = time.perf_counter()
                ref, array = nxt.result()
                nxt = reader.submit(_read, cases[i + 1][1]) if i + 1 < len(cases) else None
                prepared = self._prepare(array, ref.spacing, self.previous_labels(case_id, ref, array))
                del array  # only the resampled copy is needed from here on
                probabilities = out_dir / f"{case_id}.npz" if self.save_probabilities else None
                labels = self._predict_prepared(prepared, probabilities, ref)
                out = Image(labels, ref.spacing, ref.origin, ref.direction)
                if pending_write is not None:
                    written.append(pending_write.result())
                pending_write = writer.submit(write_image, out, out_dir / f"{case_id}{_ending(paths[0])}")
                bar.set_postfix(case=case_id, seconds=f"{time.perf_counter() - t0:.1f}")
            if pending_write is not None:
                written.append(pending_write.result())
        return written

    def _label_dtype(self):
        return np.uint8 if max(self.labels.label_values) < 256 else np.int16


def activate_(scores: torch.Tensor, sigmoid: bool = False, slab: int | None = None) -> torch.Tensor:
    """Softmax over the class axis (0), or with `sigmoid` each channel's sigmoid, in place,
    `slab` positions of axis 1 at a time (all at once by default): float32 temporaries of one
    slab, any float dtype."""
    n = scores.shape[1]
    for start in range(0, n, slab or n):
        part = scores[:, start:start + (slab or n)]
        p = part.float()  # `part` itself when float32
        if sigmoid:
            p.sigmoid_()
        else:
            p.sub_(p.amax(dim=0, keepdim=True)).exp_()
            p.div_(p.sum(dim=0, keepdim=True))
        if p is not part:
            part.copy_(p)
    return scores



def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun announces them; (0, 1) for a plain process."""
    import os
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _read(paths: Sequence[str | Path]) -> tuple[Image, np.ndarray]:
    """(the first channel's geometry, the channels (C, *spatial) float32). The geometry's array
    is a zero-stride view of the right shape: the voxels are held once, in the float32 stack."""
    case = read_case(CaseFiles("input", [Path(p) for p in paths]), with_label=False)
    ref = case.reference
    return replace(ref, array=np.broadcast_to(np.zeros((), ref.array.dtype), ref.shape)), case.image


def _ending(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def case_id_of(path: Path) -> str:
    """The case an image file belongs to: its name without the ending and channel suffix."""
    stem = path.name[: -len(_ending(path))]
    m = CHANNEL_RE.match(stem)
    return m["case"] if m else stem


def discover_inputs(inputs: str | Path | Sequence[str | Path], num_channels: int,
                    file_ending: str | None = None) -> list[tuple[str, list[Path]]]:
    """Group image files into cases: `CASE_0000`, `CASE_0001`, ... are one case's channels;
    a single-channel model also takes files without the channel suffix. `inputs` is a
    folder, a text file with one image path per line, or a list of paths."""
    if isinstance(inputs, (str, Path)):
        folder = Path(inputs)
        if folder.is_file() and not has_image_suffix(folder):
            lines = [ln.strip() for ln in folder.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            candidates = [(folder.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines]
        elif folder.is_dir():
            candidates = list(folder.iterdir())
        else:
            raise MedsegError("input folder or list file not found", folder)
    else:
        folder = Path(".")
        candidates = [Path(p) for p in inputs]
    for p in candidates:
        if not p.exists():
            raise MedsegError("listed input file not found", p)
    files = sorted(p for p in candidates if not p.name.startswith(".") and has_image_suffix(p)
                   and (file_ending is None or p.name.endswith(file_ending)))
    groups: dict[str, dict[int, Path]] = {}
    for p in files:
        stem = p.name[: -len(_ending(p))]
        m = CHANNEL_RE.match(stem)
        if m:
            groups.setdefault(m["case"], {})[int(m["channel"])] = p
        elif num_channels == 1:
            groups.setdefault(stem, {})[0] = p
    out = []
    for case_id, chans in sorted(groups.items()):
        missing = [c for c in range(num_channels) if c not in chans]
        if missing:
            raise MedsegError(f"case '{case_id}' lacks channel file(s) {', '.join(f'_{c:04d}' for c in missing)}",
                              folder)
        out.append((case_id, [chans[c] for c in range(num_channels)]))
    if not out:
        raise MedsegError("no images found", folder)
    return out
