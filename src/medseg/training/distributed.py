"""Distributed training on PyTorch's own engine: `torchrun` + DistributedDataParallel.

`torchrun --nproc-per-node N [--nnodes M ...] -m medseg.cli train ...` starts N processes per
node and tells each its rank through the environment, as torchrun always does. medseg reads
that and needs nothing else: gloo on CPU, NCCL on GPU. Run as a plain process, it is a
world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, batch_size: int) -> range:
        """Indices of the global batch this rank computes (contiguous, equal shares)."""
        per = batch_size // self.world_size
        return range(self.rank * per, (self.rank + 1) * per)

    def sum(self, values: np.ndarray) -> np.ndarray:
        if not self.active:
            return values
        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.numpy()

    def max(self, value: float) -> float:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather_floats(self, value: float) -> list[float]:
        if not self.active:
            return [value]
        out = [torch.zeros(1, dtype=torch.float64) for _ in range(self.world_size)]
        dist.all_gather(out, torch.tensor([value], dtype=torch.float64))
        return [float(t.item()) for t in out]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun set up (a no-op for a single process)."""
    if not launched_by_torchrun():
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def device_for_rank(device: torch.device, ctx: DistContext) -> torch.device:
    if device.type == "cuda" and ctx.active:
        return torch.device("cuda", ctx.local_rank)
    return device


def shutdown(ctx: DistContext) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()
