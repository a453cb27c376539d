"""Peak memory of prediction, in bytes, as a formula of the case and the settings.

Symbols (docs/inference.md has the same formula in prose and its check against measurements):
V_orig voxels of the input scan, V_crop after cropping to the non-zero box, V_pre at the
plan's spacing, C classes, Cin input channels, b bytes per accumulated score (2 for fp16, 4
for fp32), F folds, P patch voxels, T tiles per network call, S slab rows (z-slices per
export step, from `export_slab`), A_in / A_out voxels of one slice at the plan's / the scan's
spacing.

Prediction runs in phases; the peak is the largest phase plus what the process holds before
(libraries and weights, measured, not modelled):
- read (from files): the channels in the file's dtype (d bytes), their float32 copies and the
  float32 stack: Cin V_orig (d + 8).
- preprocess: the float32 input (4 Cin V_orig), the non-zero masks, the normalised crop
  (4 Cin V_crop, plus one channel's temporary) and the resampled array (4 Cin V_pre, plus the
  in-plane intermediate when z changes too).
- network: the resampled input (4 Cin V_pre), the scores (b C V_pre; two such buffers for an
  ensemble: the sum of the folds so far and the fold being predicted), the tiles (batch in and
  logits out, 4 T P (Cin + C); mirrored, also the flipped input, and the flipped output beside
  the running sum: 4 T P (2 Cin + 3 C)) and the network's activations
  (the skip connections, sum of f_s V_s, and `NET_FULLRES_MAPS` maps of f_0 at full resolution).
- export: the summed scores (b C V_pre), the label map (d_label V_orig) and a few slabs of
  S rows in float32: two z-taps at the plan's in-plane size, the slab resampled in-plane and
  the previous slab, 4 C S (2 A_pre + 2 A_out) bytes (when z grows enough that in-plane goes
  first, 4 C (S_in (A_pre + A_out) + 3 S A_out) with S_in input slices per slab); with
  probabilities, one more slab in float16 on the scan's full in-plane grid.

`estimate_prediction_bytes` returns every phase and term, so a test can check each against
what the code allocates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, prod
from typing import Sequence

import torch

from medseg.planning.memory import stage_shapes

ACCUMULATION_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
ACCUMULATION_BYTES = {"fp16": 2, "fp32": 4}
SLAB_BYTES = 8 * 1024**2  # float32 bytes of C classes x S rows x one slice, per export step
NET_FULLRES_MAPS = 3  # at the last concatenation: the upsampled map (f_0) and the concatenation (2 f_0)


def export_slab(num_classes: int, plane_voxels: int) -> int:
    """Rows (z-slices) per export step: C x rows x plane x 4 bytes stays within SLAB_BYTES."""
    return max(1, SLAB_BYTES // (4 * num_classes * max(1, plane_voxels)))


@dataclass(frozen=True)
class PredictionMemory:
    """Bytes of each phase of one prediction, without the baseline (libraries, weights).
    `terms` names the parts each phase adds up."""

    read: int
    preprocess: int
    network: int
    export: int
    terms: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.read, self.preprocess, self.network, self.export)


def estimate_prediction_bytes(original_shape: Sequence[int], preprocessed_shape: Sequence[int], num_classes: int, *,
                              patch_size: Sequence[int], features: Sequence[int], strides: Sequence[Sequence[int]],
                              cropped_shape: Sequence[int] | None = None, in_channels: int = 1,
                              accumulation: str = "fp16", folds: int = 1, tile_batch: int = 1, mirror: bool = False,
                              save_probabilities: bool = False, file_itemsize: int = 2, label_itemsize: int = 1,
                              input_held: bool = False) -> PredictionMemory:
    """Peak bytes per phase of predicting one scan of `original_shape` (z, y, x) voxels that
    preprocessing crops to `cropped_shape` (default: no crop) and resamples to
    `preprocessed_shape`, for a dynamic U-Net with `features` and `strides` per stage.

    `file_itemsize` is the scan file's voxel size (2 for int16 CT); `input_held` says the
    caller keeps the float32 input alive throughout (`predict_array` on an array the caller
    holds; `predict_folder` and `predict` drop it after preprocessing)."""
    v_orig, v_pre = prod(original_shape), prod(preprocessed_shape)
    crop = tuple(cropped_shape or original_shape)
    v_crop = prod(crop)
    cin, c, b = in_channels, num_classes, ACCUMULATION_BYTES[accumulation]
    p = prod(patch_size)
    t: dict[str, int] = {}
    t["input"] = 4 * cin * v_orig
    t["read"] = cin * v_orig * (file_itemsize + 8)
    t["masks"] = (cin + 1) * v_orig
    t["normalised"] = 4 * cin * v_crop
    t["normalise_temporary"] = 4 * v_crop
    # Resampled with z changing too: the in-plane pass first, at the crop's number of slices.
    t["resample_intermediate"] = 4 * cin * crop[0] * prod(preprocessed_shape[1:]) if (
        len(crop) == 3 and crop[0] != preprocessed_shape[0] and crop[1:] != tuple(preprocessed_shape[1:])) else 0
    t["resampled"] = 4 * cin * v_pre
    t["scores"] = b * c * v_pre
    t["fold_sum"] = b * c * v_pre if folds > 1 else 0
    m = 1 if mirror else 0  # mirrored: the flipped input, and the flipped output beside the running sum
    t["tiles"] = 4 * tile_batch * p * (cin * (1 + m) + c * (1 + 2 * m))
    vox = [prod(s) for s in stage_shapes(patch_size, strides)]
    t["activations"] = 4 * tile_batch * (sum(f * v for f, v in zip(features, vox)) + NET_FULLRES_MAPS * features[0] * p)
    a_pre, a_out = prod(preprocessed_shape[1:]), prod(crop[1:])
    rows = export_slab(c, max(a_pre, a_out))
    rows_in = ceil(rows * preprocessed_shape[0] / crop[0]) + 1  # input slices one slab reads, at most
    if rows_in < rows:  # in-plane first: the input slices before and after, two z-taps, the previous slab
        t["export_slabs"] = 4 * c * (rows_in * (a_pre + a_out) + 3 * rows * a_out)
    else:  # z first: two z-taps at the plan's in-plane size, the slab after in-plane, the previous slab
        t["export_slabs"] = 4 * c * rows * (2 * a_pre + 2 * a_out)
    t["probability_slab"] = 2 * c * rows * prod(original_shape[1:]) if save_probabilities else 0
    t["labels"] = label_itemsize * v_orig
    held = t["input"] if input_held else 0
    return PredictionMemory(
        read=t["read"],
        preprocess=t["input"] + max(t["masks"], t["normalised"] + max(t["normalise_temporary"],
                                                                     t["resample_intermediate"] + t["resampled"])),
        network=held + t["resampled"] + t["scores"] + t["fold_sum"] + t["tiles"] + t["activations"],
        export=held + t["scores"] + t["labels"] + t["export_slabs"] + t["probability_slab"],
        terms=t,
    )
