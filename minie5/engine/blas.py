"""The fast path's big products on numpy's sgemm: BlasLinear (linear layers) and BlasAttention.

From 64 tokens per batch an optimised BLAS micro-kernel (packed panels, register
blocking, AVX-512 where the CPU has it) does several times the FLOP/s of
minie5's Numba matmul, so matmul_plan.py sends those products here.

Why not simply numpy's `@`: OpenBLAS runs its own thread pool, whose threads
keep spinning after each call, and the fast path alternates products with
Numba's parallel kernels, so on 2 cores the two pools would fight. Instead each
product is cut into one block per Numba thread (NUMBA_NUM_THREADS), the blocks
run on workers.POOL, and OpenBLAS is asked for one thread per call for the
duration of a forward pass (`one_blas_thread()`). That setting is
process-wide: another Python thread calling numpy's BLAS during a minie5
forward pass runs single-threaded until it ends (slower, never different).
Where numpy's BLAS is not OpenBLAS, the products are plain `np.matmul` calls
with that BLAS's own threading.
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
from .workers import POOL

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


class BlasLinear:
    """out = x @ weight.T + bias, x: [M, K], weight: [N, K], bias: [N] -> out: [M, N].  Twin: reference.linear.

    The output is cut along its longer side into numba.get_num_threads() blocks,
    one sgemm each; run inside one_blas_thread(), under encoder.py's lock.
    """

    def __call__(self, x, weight, bias, out) -> None:
        M, N = out.shape
        threads = numba.get_num_threads()
        if _set_blas_threads is None or threads == 1 or max(M, N) < 2 * threads:  # one call
            _linear_block(x, weight, bias, out, 0, M, 0, N)
            return
        # Cut the longer side of out: each thread's sgemm packs all of the smaller operand and
        # its own share of the larger one, never the whole of both.
        if M >= N:
            cuts = [M * t // threads for t in range(threads + 1)]  # [threads + 1] row boundaries
            blocks = [(cuts[t], cuts[t + 1], 0, N) for t in range(threads)]
        else:
            cuts = [N * t // threads for t in range(threads + 1)]  # column boundaries
            blocks = [(0, M, cuts[t], cuts[t + 1]) for t in range(threads)]
        POOL.run(_linear_block, [(x, weight, bias, out, *block) for block in blocks])


class BlasAttention:
    """Multi-head self-attention within each packed text, its two products on sgemm.  Twin: kernels.attention.

    q, k, v: [N, H] (projections, bias added), seq_starts: [B+1] -> out: [N, H].
    For text b (rows s .. e, L = e - s) and a group of heads h0 .. h1, viewing
    q, k, v as [N, A, D]:
        scores = q[s:e, h0:h1] @ k[s:e, h0:h1]^T     [G, L, L], one sgemm per head
        probs  = softmax(scores / sqrt(D))          [G, L, L], kernels.softmax_rows
        out[s:e, h0:h1] = probs @ v[s:e, h0:h1]      [G, L, D], one sgemm per head
    Every operand is a strided view that sgemm reads and writes in place.

    Why sgemm: q k^T has an inner dimension of only D = 32, where the Numba
    micro-kernel spends as much time adding its vector lanes as multiplying.
    (text, head group) tasks, largest first, are shared by numba.get_num_threads()
    threads; a text's heads are grouped so that every thread gets work and one
    task's scores stay within SCORES_BYTES. With probs [B, A, T, T] and cols [N]
    (each packed token's column in the padded batch) it also writes out the
    probabilities it mixes the values with, for output_attentions.
    """

    def __init__(self):
        self._scratch = threading.local()

    def _scores_buffer(self, size: int) -> np.ndarray:
        """This thread's scratch for one task's [G, L, L] scores, grown on demand and reused."""
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
