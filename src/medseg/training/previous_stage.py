"""A cascade stage's extra input: the previous stage's segmentation, one-hot.

A configuration with `previous_stage` (the planner's `3d_cascade_fullres`, after `3d_lowres`)
feeds its network the image channels plus one channel per foreground class: 1 where the
previous stage predicted that class. For training, the previous stage's segmentation of every
training case comes from its cross-validation (each case predicted by the fold that did not
train on it), made by `medseg predict-next-stage` and stored on this configuration's
preprocessed grid as

    WORKDIR/models/<previous>/predicted_next_stage/<config>/CASE.npy   (z, y, x) int16

In training, a patch of it is read where the image patch is read, transformed with the labels'
spatial augmentation (same recorded parameters, classes never mixed), perturbed
(`medseg.augmentation.cascade`), and one-hot encoded into the extra channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medseg.augmentation.augmenter import Augmenter
from medseg.augmentation.cascade import PerturbationConfig, apply_perturbation, sample_perturbation
from medseg.augmentation.resampling import Workspace
from medseg.augmentation.spatial import transform_sample
from medseg.errors import MedsegError
from medseg.io.labels import LabelScheme
from medseg.planning.plans import ConfigurationPlan
from medseg.preprocessing.preprocess import preprocess_label, separate_axis_for

NEXT_STAGE_DIR = "predicted_next_stage"


def next_stage_dir(workdir: str | Path, previous: str, config: str) -> Path:
    """Where the `previous` configuration's predictions for the next stage `config` are kept."""
    return Path(workdir) / "models" / previous / NEXT_STAGE_DIR / config


def require_previous_predictions(workdir: str | Path, plan: ConfigurationPlan, case_ids: Sequence[str]) -> Path:
    """The folder of the previous stage's predictions for `plan`, checked to hold every case;
    otherwise a `MedsegError` saying what to run."""
    prev = plan.previous_stage
    folder = next_stage_dir(workdir, prev, plan.name)
    missing = [c for c in case_ids if not (folder / f"{c}.npy").exists()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise MedsegError(f"{plan.name} needs the {prev} cross-validation predictions of {len(missing)} case(s) "
                          f"({shown}); train {prev} on every fold, then run "
                          f"`medseg predict-next-stage DATASET -w WORKDIR -c {prev}`", folder)
    return folder


def num_classes_of(desc: dict[str, Any]) -> int:
    return LabelScheme.of(desc).num_predicted_values


def network_in_channels(desc: dict[str, Any]) -> int:
    """Input channels of a model description's network: the image channels, plus one per
    foreground class when the configuration is a cascade stage."""
    extra = num_classes_of(desc) - 1 if desc["configuration"].get("previous_stage") else 0
    return len(desc["channel_names"]) + extra


def one_hot_foreground(labels: torch.Tensor, num_classes: int, dim: int = 0) -> torch.Tensor:
    """Float32 indicators of classes 1..num_classes-1 stacked at `dim`: labels (*spatial) ->
    (num_classes-1, *spatial) with dim 0, (B, *spatial) -> (B, num_classes-1, *spatial) with
    dim 1. Background and values outside 1..num_classes-1 are 0 in every channel."""
    return torch.stack([labels == c for c in range(1, num_classes)], dim=dim).to(torch.float32)


def perturbation_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The generator of sample `index` of step `step`'s perturbation (a stream of its own)."""
    state = int(np.random.SeedSequence([seed, step, index, 13]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(state)


class PreviousStageChannels:
    """Appends the previous stage's segmentation to a batch as one-hot channels.

    With an `augmenter`, the segmentation patches (cut at the augmenter's input size) get the
    same spatial transform as the labels: the indicators are interpolated linearly and each
    voxel takes the class with the largest value (or nearest neighbour, if the augmentation
    says so for labels), then they are perturbed with `perturbation` (None: not perturbed).
    """

    def __init__(self, num_classes: int, augmenter: Augmenter | None = None,
                 perturbation: PerturbationConfig | None = None, seed: int = 0):
        self.num_classes = num_classes
        self.augmenter = augmenter
        self.perturbation = perturbation
        self.seed = seed
        self.workspace = Workspace()

    def _transform(self, prev: torch.Tensor, spatial: dict[str, Any]) -> torch.Tensor:
        """One sample's previous-stage labels (*input) -> one-hot (C-1, *final)."""
        aug = self.augmenter
        final = aug.patch_size
        if aug.config.label_interpolation == "nearest":
            out = torch.empty((1, *final))
            transform_sample(prev.float()[None], None, spatial, final, in_plane=aug.in_plane, image_mode="nearest",
                             out_image=out, workspace=self.workspace)
            return one_hot_foreground(out[0].round().to(torch.int16), self.num_classes)
        onehot = one_hot_foreground(prev, self.num_classes)
        out = torch.empty((onehot.shape[0], *final))
        transform_sample(onehot, None, spatial, final, in_plane=aug.in_plane, image_mode="linear", out_image=out,
                         workspace=self.workspace)
        scores = torch.cat([1.0 - out.sum(0, keepdim=True), out])
        return one_hot_foreground(scores.argmax(0), self.num_classes)

    def __call__(self, image: torch.Tensor, previous: torch.Tensor, params: Sequence[dict[str, Any]] | None = None,
                 step: int = 0, indices: Sequence[int] | None = None) -> torch.Tensor:
        """image (B, C, *patch) float and previous (B, *input) integer labels -> (B, C + K-1,
        *patch). `params` are the augmenter's recorded parameters of these samples (None: no
        augmentation, `previous` is at patch size); `step` and `indices` (the samples' global
        indices) seed the perturbation."""
        indices = list(range(image.shape[0])) if indices is None else list(indices)
        if params is None:
            extra = one_hot_foreground(previous, self.num_classes, dim=1)
        else:
            extra = torch.stack([self._transform(previous[i], p["spatial"]) for i, p in enumerate(params)])
        if self.perturbation is not None:
            for b, i in enumerate(indices):
                drawn = sample_perturbation(extra.shape[1], perturbation_generator(self.seed, step, i),
                                            self.perturbation)
                apply_perturbation(extra[b], drawn, self.perturbation)
        return torch.cat([image, extra.to(image.dtype)], dim=1)


def previous_stage_input(previous: np.ndarray, props: dict[str, Any], plan: ConfigurationPlan, num_classes: int,
                         spacing: Sequence[float]) -> torch.Tensor:
    """At prediction: the previous stage's label map in the scan's own grid (*spatial) -> the
    one-hot extra channels (C-1, *preprocessed grid), cropped and resampled as the scan was
    (`props` from `preprocess_image`; labels one class at a time, as for training labels)."""
    if tuple(previous.shape) != tuple(props["shape"]):
        raise MedsegError(f"previous-stage segmentation has shape {list(previous.shape)}, the scan "
                          f"{list(props['shape'])}")
    seg = preprocess_label(previous, props, list(range(num_classes)), separate_axis_for(tuple(spacing), plan))
    return one_hot_foreground(torch.from_numpy(seg), num_classes)
