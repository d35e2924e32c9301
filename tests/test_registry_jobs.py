"""registry.jobs: results in order, the first failure in order, never more than ``jobs`` at once,
the same threads (and so the same kept-alive connections) from one call to the next, and a call
from one of those threads that runs there instead of waiting for a free one."""

from __future__ import annotations

import threading
import time

import pytest

from pybuildless.registry import jobs
from pybuildless.registry.jobs import parallel_map, submit


def test_results_in_the_order_of_the_items():
    def slow_first(n):
        time.sleep(0.05 if n == 0 else 0)
        return n * 10

    assert parallel_map(slow_first, list(range(6)), 3) == [0, 10, 20, 30, 40, 50]


def test_the_first_failure_in_order_is_raised():
    def fail(n):
        if n in (2, 4):
            time.sleep(0.05 if n == 2 else 0)  # 4 fails first in time, 2 first in order
            raise ValueError(n)
        return n

    with pytest.raises(ValueError) as e:
        parallel_map(fail, list(range(6)), 6)
    assert e.value.args == (2,)


def test_never_more_than_jobs_at_once():
    running, peak, lock = 0, 0, threading.Lock()

    def work(_):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    parallel_map(work, list(range(12)), 3)
    assert peak == 3


def test_the_same_threads_serve_later_calls():
    seen = set()
    for _ in range(10):
        seen |= set(parallel_map(lambda _: threading.get_ident(), list(range(4)), 2))
    assert threading.get_ident() not in seen
    assert len(seen) <= jobs._pool_size  # the shared threads, not two new ones for every call


def test_a_call_from_a_shared_thread_runs_there():
    def outer(_):
        return threading.get_ident(), set(parallel_map(lambda _: threading.get_ident(), list(range(4)), 4))

    me, inner = submit(outer, None, size=1).result(timeout=10)
    assert inner == {me}  # inline: waiting for another shared thread could wait for ever
