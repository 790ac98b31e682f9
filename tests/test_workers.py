"""workers.WorkerPool, the thread hand-over of the fast path's split products: every call runs, at once;
errors come back after all calls finished; the pool works in a forked child."""
import multiprocessing
import threading
import time

import pytest

from minie5.engine.workers import POOL, WorkerPool


def test_worker_pool_runs_every_call_at_once_and_hands_back_errors():
    """workers.WorkerPool: each call once, all at the same time (they meet at a barrier); a worker's
    error reaches the caller only after every call has finished; the pool keeps working after it."""
    pool = WorkerPool()
    barrier = threading.Barrier(3, timeout=10)  # three calls, only passable if all three run at once
    seen = []
    pool.run(lambda i: seen.append((i, barrier.wait())), [(0,), (1,), (2,)])
    assert sorted(i for i, _ in seen) == [0, 1, 2]

    finished = []

    def fail_or_sleep(i):
        if i == 1:
            raise ValueError("call 1 failed")
        time.sleep(0.05)
        finished.append(i)
    for _ in range(2):  # the same workers, again after the error
        finished.clear()
        with pytest.raises(ValueError, match="call 1 failed"):
            pool.run(fail_or_sleep, [(0,), (1,), (2,)])
        assert sorted(finished) == [0, 2]  # the others were not abandoned

    def caller_fails(i):
        if i == 0:
            raise KeyError("caller")
        time.sleep(0.05)
        finished.append(i)
    finished.clear()
    with pytest.raises(KeyError):
        pool.run(caller_fails, [(0,), (1,)])
    assert finished == [1]  # run() waited for the worker before raising


def test_worker_pool_works_in_a_forked_child():
    """After fork the parent's worker threads do not exist in the child: the pool makes new ones."""
    POOL.run(lambda: None, [(), ()])  # the parent has a worker now
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as children:
        assert children.apply_async(_double_in_pool, (21,)).get(timeout=60) == [42, 42]  # not a hang


def _double_in_pool(value):
    out = [None, None]
    POOL.run(lambda i: out.__setitem__(i, 2 * value), [(0,), (1,)])
    return out
