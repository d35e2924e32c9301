"""Running one function over many items on a few threads, results in order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


def parallel_map(fn: Callable, items: Sequence, jobs: int) -> list:
    """``[fn(i) for i in items]`` on up to ``jobs`` threads; the first failure (in order) is raised."""
    if len(items) <= 1 or jobs <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(jobs, len(items))) as pool:
        futures = [pool.submit(fn, i) for i in items]
        return [f.result() for f in futures]
