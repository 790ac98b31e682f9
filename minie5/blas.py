"""The fast path's big matmuls through numpy's BLAS, on one threading plan with Numba.

Why not Numba for these too. minie5's own Numba matmul (kernels.linear) is
the textbook kernel and wins on a few tokens (one query: 12 rows of x), but on
a batch of thousands of tokens an optimised BLAS micro-kernel (packed panels,
register blocking, AVX-512 where the CPU has it) does 2-4x more FLOP/s per
core. So from kernels.SERIAL_TOKENS rows on (encoder.FastEncoder._plan) the
fast path calls numpy's sgemm.

Why not simply numpy's `@`. numpy's OpenBLAS runs its own thread pool, and
after each call its threads keep spinning for a while. The fast path
alternates matmuls with Numba's parallel kernels (attention, LayerNorm, GELU),
so on 2 cores the spinning BLAS threads and Numba's threads fight for the
same cores (measured: a 12 x 384 x 1536 product at 2 BLAS threads took 8 ms
against 0.45 ms at 1). Here there is one plan instead: the output is cut
into as many blocks as Numba has threads (`numba.get_num_threads()`, i.e.
NUMBA_NUM_THREADS): by rows of x for a big batch, by rows of the weight when
there are fewer tokens than outputs. One block runs in the calling thread and
the others in a small pool of worker threads, and OpenBLAS is asked for one thread per call
for the duration of a forward pass (`one_blas_thread()`; encoder.py wraps each
forward in it and puts numpy's setting back afterwards). No BLAS thread is
left spinning. The setting is process-wide in OpenBLAS: another Python thread
calling numpy's BLAS *during* a minie5 forward pass runs single-threaded until
it ends (slower, never different).

Where numpy's BLAS is not OpenBLAS (another BLAS, numpy built from source),
the products are plain `np.matmul` calls with that BLAS's own threading.
"""
from __future__ import annotations

import ctypes
import glob
import math
import os
import threading
from contextlib import contextmanager

import numba
import numpy as np

from . import kernels

SCORES_BYTES = 4 << 20  # BlasAttention's scratch per thread: [G, L, L] float32 scores for G heads of one text


def _find_openblas_threads():
    """numpy's OpenBLAS (get_num_threads, set_num_threads) through ctypes, or (None, None)."""
    here = os.path.dirname(np.__file__)
    patterns = [os.path.join(here, "..", "numpy.libs", "*openblas*"),  # Linux and Windows wheels
                os.path.join(here, ".dylibs", "*openblas*")]  # macOS wheels
    names = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),  # numpy >= 2
             ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),  # numpy 1.2x
             ("openblas_get_num_threads", "openblas_set_num_threads")]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                library = ctypes.CDLL(path)  # already loaded by numpy: the same handle
            except OSError:
                continue
            for get_name, set_name in names:
                get, set_ = getattr(library, get_name, None), getattr(library, set_name, None)
                if get is not None and set_ is not None:
                    get.argtypes, get.restype = [], ctypes.c_int
                    set_.argtypes, set_.restype = [ctypes.c_int], None
                    return get, set_
    return None, None


_get_blas_threads, _set_blas_threads = _find_openblas_threads()


@contextmanager
def one_blas_thread():
    """Within the block, each OpenBLAS call runs in its calling thread only; numpy's setting is restored after."""
    if _set_blas_threads is None:
        yield
        return
    previous = _get_blas_threads()
    if previous != 1:
        _set_blas_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            _set_blas_threads(previous)


def _linear_block(x, weight, bias, out, r0, r1, c0, c1):
    """out[r0:r1, c0:c1] = x[r0:r1] @ weight[c0:c1].T + bias[c0:c1], in this thread."""
    block = out[r0:r1, c0:c1]  # a view; numpy passes its row stride to sgemm (no copy)
    np.matmul(x[r0:r1], weight[c0:c1].T, out=block)  # weight.T is a view: sgemm with transposed B
    block += bias[c0:c1]


class _Worker:
    """One persistent thread that runs the calls it is handed, one at a time.

    The hand-over is two plain locks used as binary semaphores: `go` is
    released when a call is waiting in `task`, `done` when it has run. A
    lock's acquire / release is one futex operation, where
    concurrent.futures' submit / result go through a queue, a Future and a
    Condition (a new lock per wait): measured 20 us per two-thread fan-out of
    an empty Numba call here against 46 us with a ThreadPoolExecutor, which
    one short query pays about 50 times.
    """

    def __init__(self, name: str):
        self.go = threading.Lock()
        self.go.acquire()
        self.done = threading.Lock()
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

    The workers (one fewer than the calls) are made on first use, and again
    after a fork (the parent's threads do not exist in the child); they are
    daemon threads, idle (blocked on a lock) between calls. The callers here
    (BlasLinear, BlasAttention, encoder.SplitLinear) run under encoder.py's
    process-wide lock and never nest, so they share one pool, POOL.
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


class BlasLinear:
    """out = x @ weight.T + bias, x: [M, K], weight: [N, K], bias: [N] -> out: [M, N].  Twin: reference.linear.

    The output is cut along its longer side into numba.get_num_threads() blocks
    (the caller computes one, POOL's workers the others), each one sgemm; meant to run inside
    one_blas_thread() (see the module notes). Not re-entrant: encoder.py calls
    it under its process-wide lock.
    """

    def __call__(self, x, weight, bias, out) -> None:
        M, N = out.shape
        threads = numba.get_num_threads()
        if _set_blas_threads is None or threads == 1 or max(M, N) < 2 * threads:  # one call
            _linear_block(x, weight, bias, out, 0, M, 0, N)
            return
        # Cut the longer side of out: each thread's sgemm then packs all of the smaller
        # operand and its own share of the larger one (rows of x for a big batch, rows
        # of the weight for a few hundred tokens), never the whole of both.
        if M >= N:
            cuts = [M * t // threads for t in range(threads + 1)]  # [threads + 1] row boundaries
            blocks = [(cuts[t], cuts[t + 1], 0, N) for t in range(threads)]
        else:
            cuts = [N * t // threads for t in range(threads + 1)]  # column boundaries
            blocks = [(0, M, cuts[t], cuts[t + 1]) for t in range(threads)]
        POOL.run(_linear_block, [(x, weight, bias, out, *block) for block in blocks])


class BlasAttention:
    """Multi-head self-attention within each packed text, its two products on sgemm.  Twin: kernels.attention.

    q, k, v: [N, H] (projections, bias added), seq_starts: [B+1] -> out: [N, H],
    the same contract as kernels.attention. For text b (rows s .. e, L = e - s)
    and a group of heads h0 .. h1, viewing q, k, v as [N, A, D]:
        scores = q[s:e, h0:h1] @ k[s:e, h0:h1]^T     [G, L, L], one sgemm per head
        probs  = softmax(scores / sqrt(D))          [G, L, L], kernels.softmax_rows
        out[s:e, h0:h1] = probs @ v[s:e, h0:h1]      [G, L, D], one sgemm per head
    Every operand is a strided view (a head's D columns of the [N, H] arrays),
    which sgemm reads and writes in place: nothing is copied.

    Where the time goes. The scores are a product with an inner dimension of
    only D = 32: the Numba micro-kernel sums each output over 32 products and
    then has to add its vector lanes together, which costs as much as the
    products (about 20 GFLOP/s per thread); sgemm keeps its sums in vector
    registers across outputs (about 85 GFLOP/s per thread on this shape). On
    8 texts x 512 tokens this attention takes 32 ms per layer against 49 ms for
    kernels.attention; the softmax is now a third of it.

    The (text, head group) tasks, largest first, are shared by the calling
    thread and numba.get_num_threads() - 1 workers; a text's heads are split
    into groups when there are too few texts to keep every thread busy, and
    when all its heads' scores would take more than SCORES_BYTES (4 MB: a
    512-token text runs 4 heads at a time; the speed is the same, and each
    thread's scratch stays at 4 MB instead of 12 MB). Meant to run
    inside one_blas_thread(); not re-entrant (encoder.py holds its lock).
    With probs [B, A, T, T] and cols [N] (each packed token's column in the
    padded batch) it also writes out the probabilities it mixes the values
    with, at probs[b, a, cols[s+i], cols[s+j]], for output_attentions.
    """

    def __init__(self):
        self._scratch = threading.local()

    def _scores_buffer(self, size: int) -> np.ndarray:
        """This thread's scratch for one task's [G, L, L] scores, grown on demand and reused (no page faults per call)."""
        buffer = getattr(self._scratch, "buffer", None)
        if buffer is None or buffer.size < size:
            buffer = self._scratch.buffer = np.empty(size, np.float32)
        return buffer[:size]

    def __call__(self, q, k, v, seq_starts, num_heads: int, out, probs=None, cols=None) -> None:
        N, H = q.shape
        D = H // num_heads
        if not out.flags.c_contiguous:  # out3 below must be a view of out, not a copy
            raise ValueError(f"BlasAttention: out must be C-contiguous, got strides {out.strides}")
        q3, k3, v3, out3 = (a.reshape(N, num_heads, D) for a in (q, k, v, out))  # views: [N, A, D]
        scale = np.float32(1.0 / math.sqrt(D))
        B = seq_starts.shape[0] - 1
        threads = numba.get_num_threads()
        min_groups = -(-2 * threads // max(B, 1))  # head groups per text so that each thread gets >= 2 tasks
        tasks = []  # (cost, b, s, e, h0, h1)
        for b in range(B):
            s, e = int(seq_starts[b]), int(seq_starts[b + 1])
            if e > s:
                heads_in_budget = max(1, SCORES_BYTES // (4 * (e - s) ** 2))  # scores [G, L, L] within the budget
                groups = min(num_heads, max(min_groups, -(-num_heads // heads_in_budget)))
                for g in range(groups):
                    h0, h1 = num_heads * g // groups, num_heads * (g + 1) // groups
                    if h1 > h0:
                        tasks.append(((e - s) ** 2 * (h1 - h0), b, s, e, h0, h1))
        tasks.sort()  # pop() takes the largest task left

        def work():
            while True:
                try:
                    _, b, s, e, h0, h1 = tasks.pop()  # list.pop is atomic: each task runs once
                except IndexError:
                    return
                L, G = e - s, h1 - h0
                scores = self._scores_buffer(G * L * L).reshape(G, L, L)
                np.matmul(q3[s:e, h0:h1].transpose(1, 0, 2), k3[s:e, h0:h1].transpose(1, 2, 0), out=scores)
                kernels.softmax_rows(scores.reshape(G * L, L), scale, np.empty(L, np.int32))  # scores -> probs
                np.matmul(scores, v3[s:e, h0:h1].transpose(1, 0, 2), out=out3[s:e, h0:h1].transpose(1, 0, 2))
                if probs is not None:
                    c = cols[s:e]
                    probs[b, h0:h1][:, c[:, None], c[None, :]] = scores

        POOL.run(work, [()] * max(1, min(threads, len(tasks))))  # each thread takes tasks until none are left
