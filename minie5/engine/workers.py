"""WorkerPool: run a few calls at once, one on the calling thread and the others on persistent threads.

The fast path splits each big step of a forward pass (a matmul, attention) into
one piece per Numba thread: the calling thread computes one piece and the
pool's workers the others (matmul_plan.SplitLinear, blas.BlasLinear,
blas.BlasAttention). The pieces are nogil Numba kernels or numpy sgemm calls,
so the threads really run in parallel.

Each worker is a daemon thread that waits on a lock between calls. Handing a
call over is two plain locks used as binary semaphores (`go`, `done`): one futex
operation each way, where a ThreadPoolExecutor goes through a queue, a Future
and a Condition. One short query makes about 50 fan-outs, so the hand-over's
cost shows (docs/performance.md).
"""
from __future__ import annotations

import os
import threading


class _Worker:
    """One persistent thread that runs the calls it is handed, one at a time."""

    def __init__(self, name: str):
        self.go = threading.Lock()  # released when a call is waiting in `task`
        self.go.acquire()
        self.done = threading.Lock()  # released when that call has run
        self.done.acquire()
        self.task = None  # (function, args) while a call is handed over
        self.error = None  # what the last call raised, for the caller to re-raise
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.go.acquire()
            function, args = self.task
            try:
                function(*args)
            except BaseException as e:  # handed back to the caller, which raises it
                self.error = e
            self.task = None
            self.done.release()

    def start(self, function, args) -> None:
        self.task = (function, args)
        self.go.release()

    def wait(self) -> None:
        """Block until the call handed over has run; raise what it raised.

        A KeyboardInterrupt while waiting is raised only once the call has run:
        the worker must be idle before it is handed the next one.
        """
        interrupted = None
        while True:
            try:
                self.done.acquire()
                break
            except BaseException as e:
                interrupted = e
        error, self.error = self.error, None
        if interrupted is not None or error is not None:
            raise interrupted or error


class WorkerPool:
    """Runs a few calls at once: the first on the calling thread, the others on worker threads.

    Workers (one fewer than the calls) are made on first use, and again after a
    fork (the parent's threads do not exist in the child). Not re-entrant: its
    callers run under encoder.py's process-wide lock and never nest, so they
    share one pool, POOL.
    """

    def __init__(self):
        self._workers: list[_Worker] = []
        self._pid = os.getpid()

    def run(self, function, calls: list) -> None:
        """function(*args) for each args in calls, at once; returns when all are done (raises the first error)."""
        if self._pid != os.getpid():
            self._workers, self._pid = [], os.getpid()
        while len(self._workers) < len(calls) - 1:
            self._workers.append(_Worker(f"minie5-worker-{len(self._workers)}"))
        workers = self._workers[:len(calls) - 1]
        for worker, args in zip(workers, calls[1:]):
            worker.start(function, args)
        errors = []
        try:
            function(*calls[0])
        finally:
            for worker in workers:  # every call has finished before this returns, error or not
                try:
                    worker.wait()
                except BaseException as e:
                    errors.append(e)
        if errors:
            raise errors[0]


POOL = WorkerPool()
