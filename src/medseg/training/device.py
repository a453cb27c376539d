"""Device and precision: bfloat16 only where the hardware runs it fast, fp32 otherwise."""

from __future__ import annotations

import contextlib

import torch


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN reports native bf16 (AVX-512 BF16 or AMX). On CPUs without it,
    bf16 convolutions are emulated and hundreds of times slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where fast (CUDA with bf16, or a CPU with native bf16), 'fp16' on
    older GPUs, else 'fp32'. Explicit choices pass through."""
    if precision != "auto":
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """Autocast context for the forward pass (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
