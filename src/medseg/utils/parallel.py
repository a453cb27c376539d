"""Map a function over jobs in worker processes, with an optional progress bar."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from tqdm import tqdm


def map_progress(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int = 1, progress: bool = False,
                 desc: str = "") -> list[Any]:
    """`[fn(*job) for job in jobs]`, in order, using `workers` processes when > 1."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    results: list[Any] = []
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(fn(*job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(fn, *job) for job in jobs]
                for f in futures:
                    results.append(f.result())
                    bar.update()
    finally:
        bar.close()
    return results
