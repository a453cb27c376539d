"""Measure real training steps of the dynamic U-Net: peak memory in bytes and seconds per step.

`measure_training_step` builds the real network (`create_model("dynunet", ...)`) in a fresh
Python process and runs what the trainer runs per iteration: forward, deep-supervised
Dice + CE loss, `zero_grad(set_to_none=True)`, backward, gradient clipping, and the step of
the spec's optimiser, built as the trainer builds it (SGD with Nesterov momentum, or AdamW). A fresh process keeps the numbers clean of whatever the
calling process allocated before.

How memory is measured
- CPU: the peak of the process's anonymous resident memory over the step (`CpuPeak`), minus
  the anonymous resident memory before the network was built (after importing torch and one
  tiny warm-up step, so library data and thread pools are not counted). That is tensors,
  oneDNN's scratch buffers and whatever glibc's malloc keeps instead of returning to the
  system (glibc hands large blocks, above its adaptive mmap threshold of at most 32 MB,
  straight back on free; smaller ones can stay in the heap and are counted). File-backed pages,
  the code of the libraries, are not: how many of them a step maps depends on the page cache,
  and it made a freshly installed venv measure up to 30 MiB more per step than an older one.
  The peak is sampled every millisecond and, where `/proc/self/clear_refs` can reset `VmHWM`,
  also bounded by the high-water mark minus the file-backed pages.
- CUDA: `torch.cuda.max_memory_allocated` over the step (reset before it), relative to the
  allocation before the network was built, plus the caching allocator's reserve at the peak
  (`max_memory_reserved`). The CUDA context is reported separately as `context_bytes`
  (device memory in use, from `mem_get_info`, that the allocator does not account for).

The first step is a warm-up (kernels are chosen and the optimiser's state created on it); the
medians of the following `steps` are returned.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from medseg.errors import MedsegError
from medseg.planning.memory import PLANNED_OPTIMIZER

LABEL_DTYPE = "int16"  # what the patch sampler delivers (training/sampler.py)


@dataclass(frozen=True)
class StepSpec:
    """Everything one training step's cost depends on. Sizes in (z, y, x) order."""

    patch_size: tuple[int, ...]
    batch_size: int
    in_channels: int
    num_classes: int
    features: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    conv_per_stage: int = 2
    deep_supervision: bool = True
    optimizer: str = "sgd"

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    @classmethod
    def make(cls, patch_size: Sequence[int], batch_size: int, in_channels: int, num_classes: int,
             features: Sequence[int], kernel_sizes: Sequence[Sequence[int]], strides: Sequence[Sequence[int]],
             conv_per_stage: int = 2, deep_supervision: bool = True, optimizer: str = "sgd") -> "StepSpec":
        return cls(tuple(int(p) for p in patch_size), int(batch_size), int(in_channels), int(num_classes),
                   tuple(int(f) for f in features), tuple(tuple(int(k) for k in ks) for ks in kernel_sizes),
                   tuple(tuple(int(s) for s in st) for st in strides), int(conv_per_stage), bool(deep_supervision),
                   str(optimizer))

    @classmethod
    def from_plan(cls, plan: Any, in_channels: int, num_classes: int,
                  optimizer: str = PLANNED_OPTIMIZER) -> "StepSpec":
        """From a `ConfigurationPlan` (a dynunet one) and the dataset's channel and class counts;
        by default with the optimiser plans are sized for."""
        opts = plan.model_options
        return cls.make(plan.patch_size, plan.batch_size, in_channels, num_classes, opts["features"],
                        opts["kernel_sizes"], opts["strides"], opts.get("conv_per_stage", 2),
                        opts.get("deep_supervision", True), optimizer)

    def with_batch(self, batch_size: int) -> "StepSpec":
        return StepSpec(**{**asdict(self), "batch_size": int(batch_size)})

    def model_options(self) -> dict[str, Any]:
        return {"features": list(self.features), "kernel_sizes": [list(k) for k in self.kernel_sizes],
                "strides": [list(s) for s in self.strides], "conv_per_stage": self.conv_per_stage,
                "deep_supervision": self.deep_supervision}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepMeasurement:
    peak_bytes: int
    step_seconds: float
    device: str
    precision: str
    method: str
    peak_bytes_each: list[int] = field(default_factory=list)
    step_seconds_each: list[float] = field(default_factory=list)
    context_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_training_step(spec: StepSpec, device: str = "cpu", steps: int = 3, precision: str = "auto",
                          timeout: float = 600.0) -> dict[str, Any]:
    """Run `steps` real training steps (after one warm-up step) of `spec` on `device` in a fresh
    process, at the trainer's `precision` ('auto' resolves as the trainer does). Returns
    `{peak_bytes, step_seconds, ...}`: the medians over the steps (see `StepMeasurement` for
    the other keys). Raises MedsegError when the child fails."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    request = json.dumps({"spec": spec.to_dict(), "device": device, "steps": steps, "precision": precision})
    try:
        proc = subprocess.run([sys.executable, "-m", "medseg.planning.measure"], input=request,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MedsegError(f"measuring a training step took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MedsegError(f"measuring a training step failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the child process ---------------------------------------------------------------------

def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


class CpuPeak:
    """Peak anonymous resident bytes over a block (tensors, allocator caches, library scratch).

    File-backed pages (the code of libtorch and friends) are left out: they are shared, the
    kernel can drop them at any time, and how many get mapped depends on what the page cache
    holds (a freshly installed wheel maps twice as much of libtorch's code; docs/planning.md).
    A 1 ms sampling thread reads `RssAnon`; where `/proc/self/clear_refs` can reset the kernel's
    high-water mark, `VmHWM` minus the file-backed and shared pages at the end also bounds the
    peak from below and catches what falls between two samples. The larger of the two is reported.
    """

    def __init__(self) -> None:
        try:
            self._reset_hwm()
            self._hwm = True
        except OSError:
            self._hwm = False
        self.method = ("cpu: peak RssAnon (1 ms samples, and VmHWM after clear_refs minus file-backed pages), "
                       "minus RssAnon before the network")
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _reset_hwm() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    @staticmethod
    def rss() -> int:
        """Anonymous resident bytes of this process now."""
        return _status_kib("RssAnon") * 1024

    @staticmethod
    def resident() -> int:
        """All resident bytes of this process now, file-backed pages included (VmRSS)."""
        return _status_kib("VmRSS") * 1024

    @staticmethod
    def high_water_mark() -> int:
        """Largest resident bytes of this process, file-backed pages included (VmHWM)."""
        return _status_kib("VmHWM") * 1024

    def start(self) -> None:
        if self._hwm:
            self._reset_hwm()
        self._peak = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.rss())
            time.sleep(0.001)

    def stop(self) -> int:
        """The block's peak anonymous resident bytes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        peak = max(self._peak, self.rss())
        if self._hwm:
            others = (_status_kib("RssFile") + _status_kib("RssShmem")) * 1024
            peak = max(peak, self.high_water_mark() - others)
        return peak


def _training_step(net, opt, loss_fn, x, y, precision: str = "fp32", clip: float = 12.0):
    import torch

    from medseg.training.device import autocast

    with autocast(precision, x.device):
        out = net(x)
    loss = loss_fn(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    return out, loss


def _build(spec: StepSpec, device):
    import torch

    from medseg.losses import DeepSupervisionLoss, DiceCELoss
    from medseg.models import create_model
    from medseg.training.config import TrainingConfig
    from medseg.training.optimizer import make_optimizer

    net = create_model("dynunet", spatial_dims=spec.spatial_dims, in_channels=spec.in_channels,
                       num_classes=spec.num_classes, **spec.model_options()).to(device)
    net.train()
    opt = make_optimizer(net, TrainingConfig(optimizer=spec.optimizer))
    loss_fn = DeepSupervisionLoss(DiceCELoss())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((spec.batch_size, spec.in_channels, *spec.patch_size), generator=gen).to(device)
    y = torch.randint(0, spec.num_classes, (spec.batch_size, *spec.patch_size), generator=gen,
                      dtype=getattr(torch, LABEL_DTYPE)).to(device)
    return net, opt, loss_fn, x, y


def _tiny(spec: StepSpec) -> StepSpec:
    dims = spec.spatial_dims
    return StepSpec.make([8] * dims, 1, spec.in_channels, spec.num_classes, [2, 4, 4], [[3] * dims] * 3,
                         [[1] * dims, [2] * dims, [2] * dims], optimizer=spec.optimizer)


def _run_child(spec: StepSpec, device_name: str, steps: int, precision: str) -> StepMeasurement:
    import gc

    import torch

    from medseg.training.device import resolve_precision

    device = torch.device(device_name)
    precision = resolve_precision(precision, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.init()
    torch.manual_seed(0)
    # A tiny network first: libraries, thread pools and the CUDA context are loaded before the
    # baseline is taken, so they are not counted as the step's memory.
    parts = _build(_tiny(spec), device)
    _training_step(*parts, precision=precision)
    del parts
    gc.collect()
    cpu = CpuPeak()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        free, total = torch.cuda.mem_get_info(device)
        context = max(0, (total - free) - torch.cuda.memory_reserved(device))
        method = "cuda: max_memory_reserved over the step, minus memory_allocated before the network"
    else:
        base = cpu.rss()
        context = 0
        method = cpu.method
    net, opt, loss_fn, x, y = _build(spec, device)
    peaks, times = [], []
    for i in range(steps + 1):
        # The trainer drops the previous step's outputs when the next forward returns, before
        # the backward pass where the peak is; dropping them first is the same for the peak.
        out = loss = None
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            cpu.start()
        t0 = time.perf_counter()
        out, loss = _training_step(net, opt, loss_fn, x, y, precision=precision)
        if cuda:
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_reserved(device) if cuda else cpu.stop()
        if i > 0:
            peaks.append(int(peak - base))
            times.append(dt)
    del out, loss
    return StepMeasurement(peak_bytes=int(statistics.median(peaks)), step_seconds=float(statistics.median(times)),
                           device=str(device), precision=precision, method=method, peak_bytes_each=peaks,
                           step_seconds_each=[round(t, 5) for t in times], context_bytes=int(context))


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = _run_child(StepSpec.make(**request["spec"]), request["device"], int(request["steps"]),
                        request["precision"])
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
