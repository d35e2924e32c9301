"""Running one function over many items on a few threads, results in order.

The threads live as long as the process: a transport keeps one ``requests.Session``
per thread, so the same threads reuse their kept-alive connections from one pull or
push to the next instead of opening new ones (and a new session) every time.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_worker = threading.local()


def submit(fn: Callable, *args, size: int = 4) -> Future:
    """Run ``fn(*args)`` on the shared threads (at least ``size`` of them)."""
    global _pool, _pool_size

    def run():
        _worker.active = True
        return fn(*args)

    with _pool_lock:  # submitted under the lock: a pool being replaced is never handed a task
        if _pool is None or _pool_size < size:
            old = _pool
            _pool, _pool_size = ThreadPoolExecutor(max_workers=size, thread_name_prefix="registry"), size
            if old is not None:
                old.shutdown(wait=False)  # its idle threads end; tasks already given to it finish first
        return _pool.submit(run)


def parallel_map(fn: Callable, items: Sequence, jobs: int) -> list:
    """``[fn(i) for i in items]`` on up to ``jobs`` threads; the first failure (in order) is raised.

    Called from one of the shared threads it runs in that thread: waiting there for
    the others could leave no thread free to do the work.
    """
    if len(items) <= 1 or jobs <= 1 or getattr(_worker, "active", False):
        return [fn(i) for i in items]
    results: list = [None] * len(items)
    errors: dict[int, BaseException] = {}
    next_item = iter(range(len(items)))
    lock = threading.Lock()

    def runner() -> None:  # at most ``jobs`` of these, each taking the next item until none is left
        while True:
            with lock:
                n = next(next_item, None)
                if n is None or errors:
                    return
            try:
                results[n] = fn(items[n])
            except BaseException as e:  # noqa: BLE001 - re-raised below, the first in order
                with lock:
                    errors[n] = e

    runners = [submit(runner, size=jobs) for _ in range(min(jobs, len(items)))]
    for r in runners:
        r.result()
    if errors:
        raise errors[min(errors)]
    return results
