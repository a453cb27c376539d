"""A memory model in bytes for one training step of the dynamic U-Net.

Peak memory of a step (forward, Dice + CE loss with deep supervision, backward, optimiser step)
is predicted from its parts:

- **saved activations**: exactly what autograd keeps for the backward pass of medseg's
  DynUNet (models/dynunet.py) and its loss (DeepSupervisionLoss over DiceCELoss). Per
  conv -> instance norm -> leaky ReLU unit, the convolution's output (the norm's saved input)
  and the norm's output (leaky ReLU works in place and keeps its result). Per decoder stage,
  the concatenation (the next convolution's input); the transposed convolution's output is
  not kept, since concatenation needs no inputs for its backward. Per supervised output, the
  logits (the training loop holds them), the softmax and the float one-hot target (Dice keeps
  both for `probs * gt`), the log-softmax (cross-entropy) and the int64 target (NLL). Plus the
  network's input. A test checks `saved_tensor_bytes` against autograd's own saved tensors:
  it matches to the byte, up to the per-channel statistics of the norms.
- **workspace**: what lives only during the backward pass, where the peak is (at the
  full-resolution end of the decoder, with everything still saved): the gradients of the
  activations there (the in-place leaky ReLU on the norm's output view makes autograd copy the
  whole gradient several times) and the convolution library's scratch buffers (oneDNN
  reorders activations into its blocked layout and back). Modelled as `WORKSPACE_MAPS[device]`
  full-resolution feature maps of the first stage (features[0] x patch voxels x batch).
- **heap fragmentation** (CPU only): glibc's malloc serves blocks under its mmap threshold
  (adaptive, at most 32 MiB) from the heap and keeps freed space resident; tensors of 32 MiB
  and more are mapped and unmapped one by one. Saved tensors under 32 MiB, and the workspace
  when its feature maps are under 32 MiB, therefore cost `1 + HEAP_FRAGMENTATION` times their
  size in resident memory.
- **parameters, gradients, optimiser state**: fp32 weights, their gradients and the optimiser's
  buffers (`OPTIMIZER_BUFFERS`: SGD keeps one momentum buffer per weight, AdamW two moments);
  in the optimiser step, the update's temporaries (CPU: two copies of the largest tensor, one
  tensor at a time; CUDA: two copies of all parameters, `foreach` updates).
- **overhead**: per device. CPU: `CPU_OVERHEAD_BYTES`, what a step adds whatever its size.
  CUDA: the context and library handles that `torch.cuda` does not account for
  (`CUDA_CONTEXT_BYTES`), and the caching allocator's rounding (`CUDA_RESERVE_FACTOR`).

The peak is the larger of the backward pass (everything saved, the workspace, weights,
optimiser state and gradients) and the optimiser step (weights, gradients, optimiser state and
the update's temporaries). `HEAP_FRAGMENTATION`, `WORKSPACE_MAPS["cpu"]` and `CPU_OVERHEAD_BYTES`
are fitted to the measured peak anonymous resident memory of real training steps on a CPU
(`planning/measure.py`); docs/planning.md has the fit and the held-out check. The CUDA
constants are stated, not fitted: no GPU was at hand when the model was fitted, and a test
runs the same check on CUDA where one is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from typing import Sequence

# Fitted on CPU (docs/planning.md, "The memory model").
HEAP_FRAGMENTATION = 0.23
WORKSPACE_MAPS = {"cpu": 6.8, "cuda": 4.0}
CPU_OVERHEAD_BYTES = 10 * 1024**2
GLIBC_MMAP_MAX = 32 * 1024**2
CUDA_CONTEXT_BYTES = 600 * 1024**2
CUDA_RESERVE_FACTOR = 1.1
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# fp32 buffers the optimiser keeps per weight (training/optimizer.py `make_optimizer`).
OPTIMIZER_BUFFERS = {"sgd": 1, "adamw": 2}
# Plans are sized for the optimiser with the larger state, so either fits: AdamW (two buffers per
# weight, the default for a time-budgeted run) rather than SGD (one).
PLANNED_OPTIMIZER = "adamw"


def stage_shapes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Feature-map size per stage (stage 0 is full resolution)."""
    shapes, cur = [], list(patch_size)
    for s in strides:
        cur = [c // v for c, v in zip(cur, s)]
        shapes.append(list(cur))
    return shapes


def supervised_stages(n_stages: int, deep_supervision: bool = True) -> list[int]:
    """Decoder resolutions (stage indices) with an output: all but the lowest decoder one when
    deep supervision is on (models/dynunet.py builds no head there), else only full resolution."""
    if not deep_supervision or n_stages <= 2:
        return [0]
    return list(range(n_stages - 2))


def saved_tensor_bytes(patch_size: Sequence[int], batch_size: int, features: Sequence[int],
                       strides: Sequence[Sequence[int]], in_channels: int, num_classes: int,
                       conv_per_stage: int = 2, deep_supervision: bool = True, dtype: str = "float32") -> list[int]:
    """Bytes of each tensor autograd keeps for the backward pass of one batch, plus the logits
    the training loop holds. Parameters are not included.

    Activations are in `dtype` (the autocast dtype); the loss works in float32 and its target
    in int64."""
    a, n = BYTES[dtype], batch_size
    vox = [prod(s) for s in stage_shapes(patch_size, strides)]
    out = [in_channels * vox[0] * n * 4]
    if a != 4:
        out.append(in_channels * vox[0] * n * a)  # the autocast copy the first convolution keeps
    for f, v in zip(features, vox):
        out += [f * v * n * a] * (2 * conv_per_stage)  # encoder units: conv output, norm output
    for s in range(len(features) - 1):
        f, v = features[s], vox[s]
        out.append(2 * f * v * n * a)  # concatenation (transposed-conv output and skip)
        out += [f * v * n * a] * (2 * conv_per_stage)  # decoder units
    for s in supervised_stages(len(features), deep_supervision):
        k, v = num_classes, vox[s]
        out.append(k * v * n * a)  # logits
        if a != 4:
            out.append(k * v * n * 4)  # logits.float()
        out += [k * v * n * 4] * 3  # softmax, one-hot target, log-softmax
        out.append(8 * v * n)  # int64 target for the NLL
    return out


def saved_bytes_per_sample(patch_size: Sequence[int], features: Sequence[int], strides: Sequence[Sequence[int]],
                           in_channels: int, num_classes: int, conv_per_stage: int = 2,
                           deep_supervision: bool = True, dtype: str = "float32") -> int:
    """Bytes autograd keeps for the backward pass for one sample, plus the logits the loop holds."""
    return sum(saved_tensor_bytes(patch_size, 1, features, strides, in_channels, num_classes, conv_per_stage,
                                  deep_supervision, dtype))


def parameter_count(in_channels: int, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                    num_classes: int, conv_per_stage: int = 2, strides: Sequence[Sequence[int]] | None = None,
                    deep_supervision: bool = True) -> int:
    """Parameters of the plain dynamic U-Net with these settings (equals
    `sum(p.numel() for p in create_model('dynunet', ...).parameters())`)."""
    n, ch = 0, in_channels
    for f, k in zip(features, kernel_sizes):
        kv = prod(k)
        n += ch * f * kv + f + 2 * f
        n += (conv_per_stage - 1) * (f * f * kv + f + 2 * f)
        ch = f
    strides = strides or [[2] * len(kernel_sizes[0])] * len(features)
    n_stages = len(features)
    for s in range(n_stages - 1, 0, -1):
        f_hi, f_lo = features[s], features[s - 1]
        kv = prod(kernel_sizes[s - 1])
        n += f_hi * f_lo * prod(strides[s]) + f_lo
        n += 2 * f_lo * f_lo * kv + f_lo + 2 * f_lo
        n += (conv_per_stage - 1) * (f_lo * f_lo * kv + f_lo + 2 * f_lo)
        if not (s == n_stages - 1 and n_stages > 2):  # no head at the lowest decoder resolution
            n += f_lo * num_classes + num_classes
    return n


def largest_parameter(in_channels: int, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                      strides: Sequence[Sequence[int]]) -> int:
    """Elements of the largest single weight tensor."""
    best, ch = 0, in_channels
    for s, (f, k) in enumerate(zip(features, kernel_sizes)):
        best = max(best, ch * f * prod(k), f * f * prod(k))
        if s > 0:
            lo = features[s - 1]
            best = max(best, f * lo * prod(strides[s]), 2 * lo * lo * prod(kernel_sizes[s - 1]))
        ch = f
    return best


@dataclass
class MemoryEstimate:
    """Predicted peak bytes of one training step and its parts."""

    activations: int
    fragmentation: int
    workspace: int
    parameters: int
    gradients: int
    optimizer: int
    optimizer_step_temporaries: int
    overhead: int
    device: str

    @property
    def backward_peak(self) -> int:
        return (self.activations + self.fragmentation + self.workspace + self.parameters + self.gradients
                + self.optimizer)

    @property
    def optimizer_peak(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.optimizer_step_temporaries

    @property
    def total(self) -> int:
        peak = max(self.backward_peak, self.optimizer_peak)
        if self.device == "cuda":
            peak = int(CUDA_RESERVE_FACTOR * peak)
        return int(peak + self.overhead)

    def to_dict(self) -> dict[str, int | str]:
        return {**asdict(self), "total": self.total}


def estimate_training_memory(patch_size: Sequence[int], batch_size: int, in_channels: int, num_classes: int,
                             features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                             strides: Sequence[Sequence[int]], dtype: str = "float32", conv_per_stage: int = 2,
                             device: str = "cpu", deep_supervision: bool = True,
                             optimizer: str = "sgd") -> MemoryEstimate:
    """Predicted peak memory of one training step (forward, loss, backward, `optimizer` step:
    'sgd' or 'adamw') with its parts. `device` is 'cpu' (resident memory of the process) or
    'cuda' (device memory); `dtype` is the autocast dtype of the activations (float32 without
    autocast)."""
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    saved = saved_tensor_bytes(patch_size, batch_size, features, strides, in_channels, num_classes,
                               conv_per_stage, deep_supervision, dtype)
    full_res_map = features[0] * prod(patch_size) * batch_size * BYTES[dtype]
    workspace = WORKSPACE_MAPS[device] * full_res_map
    heap = 0.0
    if device == "cpu":
        heap = sum(t for t in saved if t < GLIBC_MMAP_MAX) + (workspace if full_res_map < GLIBC_MMAP_MAX else 0)
    params = parameter_count(in_channels, features, kernel_sizes, num_classes, conv_per_stage, strides,
                             deep_supervision)
    if device == "cuda":
        step_tmp = 2 * params * 4
        overhead = CUDA_CONTEXT_BYTES
    else:
        step_tmp = 2 * largest_parameter(in_channels, features, kernel_sizes, strides) * 4
        overhead = CPU_OVERHEAD_BYTES
    weights = params * 4 + (params * BYTES[dtype] if dtype != "float32" else 0)
    return MemoryEstimate(
        activations=int(sum(saved)), fragmentation=int(HEAP_FRAGMENTATION * heap),
        workspace=int(workspace),
        parameters=weights, gradients=params * 4, optimizer=OPTIMIZER_BUFFERS[optimizer] * params * 4,
        optimizer_step_temporaries=step_tmp, overhead=overhead if batch_size > 0 else 0, device=device,
    )


def estimate_training_bytes(patch_size: Sequence[int], batch_size: int, in_channels: int, num_classes: int,
                            features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                            strides: Sequence[Sequence[int]], dtype: str = "float32",
                            conv_per_stage: int = 2, device: str = "cpu", optimizer: str = "sgd") -> int:
    """Predicted peak bytes of one training step (forward, loss, backward, `optimizer` step)."""
    return estimate_training_memory(patch_size, batch_size, in_channels, num_classes, features, kernel_sizes,
                                    strides, dtype, conv_per_stage, device, optimizer=optimizer).total
