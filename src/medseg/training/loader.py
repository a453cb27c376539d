"""Batches produced in a background thread while the model computes.

numpy slicing of memory maps and torch's augmentation kernels release the GIL, so one
producer thread keeps up with a CPU training step; `wait_fraction` reports how much of the
step time was spent waiting anyway.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import torch


class BackgroundLoader:
    def __init__(self, produce: Callable[[int], tuple[torch.Tensor, torch.Tensor]], start_step: int = 0,
                 prefetch: int = 2):
        """`produce(step)` makes the batch of a step; steps count up from `start_step`."""
        self._produce = produce
        self._step = start_step
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._produce(self._step)
                self._step += 1
            except BaseException as err:  # surfaced in the consumer
                item = err
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = time.perf_counter()
        item = self._queue.get()
        self.waited += time.perf_counter() - t
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
