"""Predict label maps for new scans in their own geometry, from a trained model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from medseg.errors import MedsegError
from medseg.inference.sliding_window import sliding_window
from medseg.io.dataset import CHANNEL_RE, CaseFiles, read_case
from medseg.io.image import Image, has_image_suffix, write_image
from medseg.planning.plans import ConfigurationPlan
from medseg.preprocessing.crop import uncrop
from medseg.preprocessing.preprocess import preprocess_image
from medseg.preprocessing.resample import labels_from_scores
from medseg.training.checkpoint import model_weights, read_checkpoint
from medseg.training.device import autocast, resolve_device, resolve_precision
from medseg.training.trainer import build_model
from medseg.utils.files import read_json

CHECKPOINT_ORDER = ("checkpoint_final", "checkpoint_best", "checkpoint_latest")


class Predictor:
    """Holds the networks of one or more folds; predicts images with geometry.

    Scores of all folds are averaged (softmax probabilities), resampled back to the scan's
    grid one class at a time, arg-maxed, and un-cropped.
    """

    def __init__(self, description: dict[str, Any], models: list[torch.nn.Module], device: torch.device,
                 precision: str = "fp32", step: float = 0.5, mirror: bool = False, tile_batch: int = 1,
                 progress: bool = False):
        self.desc = description
        self.plan = ConfigurationPlan(**description["configuration"])
        self.models = models
        self.device = device
        self.precision = precision
        self.step = step
        self.mirror = mirror
        self.tile_batch = tile_batch
        self.progress = progress
        self.num_classes = max(description["labels"].values()) + 1

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[int | str] | None = None,
                       checkpoint: str | None = None, device: str = "auto", precision: str = "auto",
                       **kwargs: Any) -> "Predictor":
        """Load `model_dir/model.json` and the chosen folds' checkpoints (default: every fold found)."""
        model_dir = Path(model_dir)
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
        return cls(desc, models, dev, precision=prec, **kwargs)

    def _forward(self, net: torch.nn.Module):
        def run(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.precision, self.device):
                return net(x.to(self.device)).float().cpu()
        return run

    @torch.inference_mode()
    def predict_array(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Label map (*spatial, int16) for image (C, *spatial) at `spacing` (z, y, x, mm)."""
        if image.shape[0] != len(self.desc["channel_names"]):
            raise MedsegError(f"image has {image.shape[0]} channels; the model needs "
                              f"{len(self.desc['channel_names'])} ({', '.join(self.desc['channel_names'])})")
        data, props = preprocess_image(image, tuple(spacing), self.plan, self.desc["intensity"])
        x = torch.from_numpy(data)
        mirror_axes = tuple(range(self.plan.spatial_dims)) if self.mirror else ()
        probs = None
        for net in self.models:
            scores = sliding_window(x, self._forward(net), self.plan.patch_size, self.num_classes, self.step,
                                    self.tile_batch, mirror_axes=mirror_axes)
            p = torch.softmax(scores, dim=0)
            probs = p if probs is None else probs.add_(p)
        labels = labels_from_scores(probs, props["shape_after_crop"], self.plan.resampling.get("separate_z", False))
        return uncrop(labels.numpy(), [tuple(b) for b in props["bbox"]], tuple(props["shape"]))

    def predict(self, image: Image | str | Path | Sequence[str | Path]) -> Image:
        """Predict one scan: an `Image` (single channel), a path, or one path per channel.
        Returns the label map with the input's exact geometry."""
        if isinstance(image, Image):
            ref, array = image, image.array[None].astype(np.float32)
        else:
            paths = [image] if isinstance(image, (str, Path)) else list(image)
            case = read_case(CaseFiles("input", [Path(p) for p in paths]), with_label=False)
            ref, array = case.reference, case.image
        labels = self.predict_array(array, ref.spacing)
        return Image(labels.astype(np.uint8 if self.num_classes < 256 else np.int16), ref.spacing, ref.origin,
                     ref.direction)

    def predict_folder(self, input_dir: str | Path, output_dir: str | Path, file_ending: str | None = None) -> list[Path]:
        """Predict every case in `input_dir` (nnU-Net naming: CASE_0000.nii.gz per channel, or
        plain one-file-per-case images) into `output_dir/CASE<ending>`."""
        cases = discover_inputs(input_dir, len(self.desc["channel_names"]), file_ending)
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for case_id, paths in tqdm(cases, desc="predict", disable=not self.progress, unit="case"):
            ending = _ending(paths[0])
            written.append(write_image(self.predict(paths), out_dir / f"{case_id}{ending}"))
        return written


def _ending(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def discover_inputs(folder: str | Path, num_channels: int, file_ending: str | None = None) -> list[tuple[str, list[Path]]]:
    """Group image files into cases: `CASE_0000`, `CASE_0001`, ... are one case's channels;
    a single-channel model also takes files without the channel suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("input folder not found", folder)
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and has_image_suffix(p)
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
