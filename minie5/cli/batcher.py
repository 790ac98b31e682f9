"""Dynamic batching: rows from many threads, embedded together by one worker thread that owns the model.

    request threads:  Batcher.embed(ids) -> queue the rows, wait for them
    worker thread:    gather the rows of every waiting request into one batch (up to a token
                      budget, waiting at most max_wait for more) -> Model.encode_ids -> hand
                      each request its rows

Only the worker ever calls the model, so Numba's threading layer is entered
from one thread (see engine/encoder.py). Numba's kernels hold the GIL while they
run, so the other threads get their turns between kernel calls, not only
between batches. Nothing here knows about HTTP: server.py turns its
exceptions into HTTP statuses.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque

import numpy as np


class BatcherStopped(RuntimeError):
    """embed() was called after stop(): no more rows are taken."""


class BatchFailed(RuntimeError):
    """The model raised on a batch that held rows of this request (its __cause__ is what it raised)."""


class _Job:
    """One request's rows, waiting in the Batcher's queue."""

    def __init__(self, ids: list, dimension: int):
        self.ids = ids
        self.out = np.empty((len(ids), dimension), dtype=np.float32)
        self.next_row = 0  # the first row not yet taken into a batch
        self.rows_done = 0
        self.error: BaseException | None = None
        self.arrived = time.monotonic()
        self.done = threading.Event()


class Batcher:
    """One worker thread that owns the model and embeds the rows of all waiting requests together.

    embed(ids) is called from any thread and blocks until its rows are done.
    The worker takes rows in arrival order into one batch of at most
    max_batch_tokens tokens; when the queue holds less than that, it waits
    until the oldest waiting row is max_wait seconds old for more to arrive.
    A request larger than the budget is split across batches, and its rest
    goes to the back of the queue after each (round robin, so that a small
    request waits for at most about one batch); a batch holds rows of many
    requests. Rows are independent (the encoder packs texts
    without padding), so every request gets the rows it would get alone.
    """

    def __init__(self, model, max_batch_tokens: int, max_wait: float):
        self.model = model
        self.dimension = model.config.hidden_size
        self.max_batch_tokens = max(max_batch_tokens, model.config.max_positions)  # a longest row always fits
        self.max_wait = max_wait
        self._queue: deque[_Job] = deque()
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._ready = threading.Event()
        self._warm_up_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="minie5-batcher", daemon=True)
        self.batches = 0  # forward passes run (shown by /health)
        self.batches_shared = 0  # of which held rows of more than one request
        self.rows = 0

    def start(self, warm_up_ids: list) -> None:
        """Start the worker; it embeds warm_up_ids first (compiles the kernels, sizes the buffers)."""
        self._warm_up_ids = warm_up_ids
        self._thread.start()

    def wait_ready(self) -> None:
        """Block until the warm-up is done; raise what it raised."""
        self._ready.wait()
        if self._warm_up_error is not None:
            raise self._warm_up_error

    def stop(self) -> None:
        """Finish the rows already queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def embed(self, ids: list) -> np.ndarray:
        """Token id lists -> their embeddings [n, hidden], computed by the worker.

        Raises BatcherStopped after stop(), BatchFailed if the model raised on one of its batches.
        """
        job = _Job(ids, self.dimension)
        if not ids:
            return job.out
        with self._cond:
            if self._stopping:
                raise BatcherStopped("the batcher is stopping")
            self._queue.append(job)
            self._queued_tokens += sum(len(row) for row in ids)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.out

    # -------------------------------------------------- the worker thread
    def _run(self) -> None:
        try:
            self.model.encode_ids(self._warm_up_ids, batch_size=len(self._warm_up_ids))
        except BaseException as e:  # reported by wait_ready in the main thread
            self._warm_up_error = e
            self._ready.set()
            return
        self._ready.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _next_batch(self) -> list | None:
        """[(job, first_row, end_row), ...] of at most max_batch_tokens tokens; None when stopped and empty."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = min(job.arrived for job in self._queue) + self.max_wait  # the oldest waits no longer
            while self._queued_tokens < self.max_batch_tokens and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take_rows()

    def _take_rows(self) -> list:
        """Take rows from the front of the queue up to the token budget (called with the lock held)."""
        batch, tokens = [], 0
        while self._queue:
            job = self._queue[0]
            first = row = job.next_row
            while row < len(job.ids) and (tokens == 0 or tokens + len(job.ids[row]) <= self.max_batch_tokens):
                tokens += len(job.ids[row])
                row += 1
            if row > first:
                batch.append((job, first, row))
                job.next_row = row
            if row < len(job.ids):  # the budget is full: the rest of this job waits behind the others,
                self._queue.rotate(-1)  # so that one large request cannot hold up the small ones behind it
                break
            self._queue.popleft()
        self._queued_tokens -= tokens
        return batch

    def _run_batch(self, batch: list) -> None:
        ids = [row for job, first, end in batch for row in job.ids[first:end]]
        try:
            vectors = self.model.encode_ids(ids, batch_size=len(ids))  # one forward pass
        except Exception as e:  # every request in the batch fails; the worker goes on
            traceback.print_exc(file=sys.stderr)
            self._fail([job for job, _, _ in batch], e)
            return
        self.batches += 1
        self.batches_shared += len(batch) > 1
        self.rows += len(ids)
        offset = 0
        for job, first, end in batch:
            job.out[first:end] = vectors[offset:offset + end - first]
            offset += end - first
            job.rows_done += end - first
            if job.rows_done == len(job.ids):
                job.done.set()

    def _fail(self, jobs: list, error: Exception) -> None:
        with self._cond:
            for job in jobs:
                if job in self._queue:  # rows of it still waiting: drop them
                    self._queue.remove(job)
                    self._queued_tokens -= sum(len(row) for row in job.ids[job.next_row:])
        for job in jobs:
            job.error = BatchFailed(f"the model failed on this batch: {type(error).__name__}: {error}")
            job.error.__cause__ = error
            job.done.set()
