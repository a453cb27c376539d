"""A memory model in bytes for one training step of the dynamic U-Net.

Counts what autograd keeps for the backward pass, stage by stage: per conv-norm-act unit,
the convolution's output and the normalised output (leaky ReLU works in place on it); per
decoder stage, the transposed convolution's output and the concatenation; the logits and
softmax of each deep-supervision head. Parameters count four times (weights, gradients,
momentum, and one transient copy). `ACTIVATION_FACTOR` absorbs what the count leaves out
(backward-pass temporaries, allocator slack) and is fitted to measured peaks
(docs/planning.md shows the table).
"""

from __future__ import annotations

from math import prod
from typing import Sequence

ACTIVATION_FACTOR = 1.5
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def stage_shapes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    shapes, cur = [], list(patch_size)
    for s in strides:
        cur = [c // v for c, v in zip(cur, s)]
        shapes.append(list(cur))
    return shapes


def activation_elements(patch_size: Sequence[int], features: Sequence[int], strides: Sequence[Sequence[int]],
                        num_classes: int, conv_per_stage: int = 2, deep_supervision: bool = True) -> int:
    """Elements kept by autograd for one sample (batch 1)."""
    shapes = stage_shapes(patch_size, strides)
    total = 0
    for f, shape in zip(features, shapes):
        total += conv_per_stage * 2 * f * prod(shape)  # encoder units
    for s in range(len(features) - 1, 0, -1):
        v = prod(shapes[s - 1])
        f = features[s - 1]
        total += f * v  # transposed-conv output
        total += 2 * f * v  # concatenation
        total += conv_per_stage * 2 * f * v  # decoder units
        if deep_supervision or s == 1:
            total += 2 * num_classes * v  # logits and softmax
    return total


def parameter_count(in_channels: int, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                    num_classes: int, conv_per_stage: int = 2, strides: Sequence[Sequence[int]] | None = None) -> int:
    """Parameters of the plain dynamic U-Net with these settings."""
    n, ch = 0, in_channels
    for f, k in zip(features, kernel_sizes):
        kv = prod(k)
        n += ch * f * kv + f + 2 * f
        n += (conv_per_stage - 1) * (f * f * kv + f + 2 * f)
        ch = f
    strides = strides or [[2] * len(kernel_sizes[0])] * len(features)
    for s in range(len(features) - 1, 0, -1):
        f_hi, f_lo = features[s], features[s - 1]
        kv = prod(kernel_sizes[s - 1])
        n += f_hi * f_lo * prod(strides[s]) + f_lo
        n += 2 * f_lo * f_lo * kv + f_lo + 2 * f_lo
        n += (conv_per_stage - 1) * (f_lo * f_lo * kv + f_lo + 2 * f_lo)
        n += f_lo * num_classes + num_classes
    return n


def estimate_training_bytes(patch_size: Sequence[int], batch_size: int, in_channels: int, num_classes: int,
                            features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                            strides: Sequence[Sequence[int]], dtype: str = "float32",
                            conv_per_stage: int = 2) -> int:
    """Predicted peak bytes of one training step (forward, loss, backward, SGD step)."""
    act = activation_elements(patch_size, features, strides, num_classes, conv_per_stage)
    act += in_channels * prod(patch_size)
    params = parameter_count(in_channels, features, kernel_sizes, num_classes, conv_per_stage, strides)
    return int(ACTIVATION_FACTOR * batch_size * act * BYTES[dtype] + 4 * params * 4)
