"""The fast path's big matmuls through numpy's BLAS, on one threading plan with Numba.

Why not Numba for these too. minie5's own Numba matmul (kernels.linear) is
the textbook kernel and wins on a few tokens (one query: 12 rows of x), but on
a batch of thousands of tokens an optimised BLAS micro-kernel (packed panels,
register blocking, AVX-512 where the CPU has it) does 2-4x more FLOP/s per
core. So above SMALL_M rows the fast path calls numpy's sgemm.

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
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np

SMALL_M = 64  # below this many rows (tokens), "auto" uses kernels.linear: see the module notes


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


class BlasLinear:
    """out = x @ weight.T + bias, x: [M, K], weight: [N, K], bias: [N] -> out: [M, N].  Twin: reference.linear.

    The output is cut along its longer side into numba.get_num_threads() blocks
    (the caller computes one, a pool of workers the others), each one sgemm; meant to run inside
    one_blas_thread() (see the module notes). Not re-entrant: encoder.py calls
    it under its process-wide lock.
    """

    def __init__(self):
        self._pool = None
        self._pool_size = 0
        self._pid = os.getpid()

    def _workers(self, n: int) -> ThreadPoolExecutor:
        if self._pid != os.getpid():  # forked: the parent's worker threads do not exist here
            self._pool, self._pool_size, self._pid = None, 0, os.getpid()
        if self._pool is None or self._pool_size != n:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="minie5-blas")
            self._pool_size = n
        return self._pool

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
        pool = self._workers(threads - 1)
        futures = [pool.submit(_linear_block, x, weight, bias, out, *block) for block in blocks[1:]]
        try:
            _linear_block(x, weight, bias, out, *blocks[0])
        finally:
            for future in futures:
                future.result()
