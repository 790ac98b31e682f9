"""A short batch's whole layer stack in one compiled call per thread: LayerLoop.

For one short query every step of a layer is tens of microseconds of work, and
running the steps as separate calls (a Python call each, a hand-over to the
worker threads for each product) cost as much as the work itself
(docs/performance.md, "one short text"). Here each of T threads (numba's
thread count) runs run_layers, the L layers from start to end, once per
forward pass; between the steps of a layer they meet at a barrier (a shared
counter each thread adds 1 to, then waits until it reaches the next multiple
of T). Who does what, per layer:

    step                      split over the threads           then
    qkv = x Wqkv^T + b        output columns (multiples of 64)  barrier
    context = attention       (text, head) tasks, round robin   barrier
    proj = context Wo^T + b   output columns                    barrier
    x = LN(x + proj)          rows                              barrier
    ffn = GELU(x W1^T + b)    output columns (GELU on its own)  barrier
    proj = ffn W2^T + b       output columns                    barrier
    x = LN(x + proj)          rows                              barrier

so each thread reads only its share of every weight. The products run on
kernels_panel.linear_panels (float32) or kernels_int8's quantize_rows +
linear_block (int8: each thread rounds all rows into its own scratch, rather
than wait at one more barrier). Every step is the kernel the step-by-step path
runs, on the calling thread: the results are the same numbers (tests/test_kernels.py).

The layers' weights are stacked at load (StackedLayers): one [L, ...] array
per kind, so one call can reach all of them. The per-layer (weight, bias)
pairs the step-by-step path uses are views of the same arrays.

The barrier waits by spinning on the counter (an atomic load), giving the core
away (sched_yield) after a few thousand spins: on a busy machine the other
thread may not be running. Its atomics are LLVM's (atomicrmw add, load
acquire), written through numba.extending.intrinsic.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import kernels, kernels_int8 as int8, kernels_panel as panel
from ..reference_int8 import activation_bound
from .workers import POOL

SPLIT = 64  # the column shares are multiples of this (both micro-kernels' tile width)
SPINS = 4000  # barrier: atomic loads before the waiting thread yields its core


def _counter_intrinsics():
    """(fetch_add(counter, value) -> old, load_acquire(counter) -> value, yield_core()) on counter[0] (int64)."""
    def is_counter(a):
        return isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1

    @intrinsic
    def fetch_add(typingctx, counter, value):
        if not (is_counter(counter) and isinstance(value, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            amount = context.cast(builder, args[1], sig.args[1], types.int64)
            return builder.atomic_rmw("add", data, amount, "seq_cst")
        return types.int64(counter, value), codegen

    @intrinsic
    def load_acquire(typingctx, counter):
        if not is_counter(counter):
            return None

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            return builder.load_atomic(data, "acquire", 8)
        return types.int64(counter), codegen

    name = "SwitchToThread" if sys.platform == "win32" else "sched_yield"

    @intrinsic
    def yield_core(typingctx):
        def codegen(context, builder, sig, args):
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), name)
            builder.call(function, [])
            return context.get_dummy_value()
        return types.none(), codegen

    return fetch_add, load_acquire, yield_core


fetch_add, load_acquire, yield_core = _counter_intrinsics()


@kernels.njit(cache=True, inline="always")
def barrier(counter, target):
    """Arrive (add 1 to counter[0]), then wait until counter[0] >= target (all threads have arrived)."""
    fetch_add(counter, 1)
    spins = 0
    while load_acquire(counter) < target:
        spins += 1
        if spins >= SPINS:
            yield_core()


@kernels.njit(cache=True, inline="always")
def share(n, thread, threads, step):
    """Thread `thread`'s range of 0 .. n when cut in `threads` pieces at multiples of step: (start, stop)."""
    start = min(n, (n * thread // threads + step - 1) // step * step)
    stop = n if thread == threads - 1 else min(n, (n * (thread + 1) // threads + step - 1) // step * step)
    return start, stop


def linear_share(x, weight, scales, bias, out, j0, j1, xq, x_scales, bound):
    """out[:, j0:j1] = x @ W^T + bias for W float32 (packed) or int8 (panels); compiled through the overload."""


@overload(linear_share)
def _linear_share(x, weight, scales, bias, out, j0, j1, xq, x_scales, bound):
    if weight.dtype == types.int8:
        def int8_share(x, weight, scales, bias, out, j0, j1, xq, x_scales, bound):
            M = x.shape[0]
            pairs = weight.shape[1] // (2 * int8.PANEL)  # K2 / 2: the weight's k pairs
            rounded = xq[:M * 2 * pairs].reshape(M, 2 * pairs)  # this thread's own scratch
            int8.quantize_rows(x, bound, rounded, x_scales, 0, M)
            int8.linear_block(rounded, x_scales, weight, scales, bias, out, 0, M, j0, j1)
        return int8_share

    def float_share(x, weight, scales, bias, out, j0, j1, xq, x_scales, bound):
        panel.linear_panels(x, weight, bias, out, j0, j1)
    return float_share


@kernels.njit(cache=True, nogil=True)
def run_layers(thread, threads, counter, x, qkv, context, proj, ffn, seq_starts, num_heads, eps,
               w_qkv, s_qkv, b_qkv, w_out, s_out, b_out, gamma1, beta1,
               w_up, s_up, b_up, w_down, s_down, b_down, gamma2, beta2, xq, x_scales, bound_h, bound_f):
    """Thread `thread` of `threads`: its share of every step of every layer (see the module notes).

    Twin: the step-by-step loop of encoder.FastEncoder._forward_packed (reference.encoder_layer per layer);
    tests/test_kernels.py and tests/test_int8.py check they give the same numbers, bit for bit.

    x [N, H] (embedded tokens in, last hidden state out), qkv [N, 3H],
    context [N, H], proj [N, H], ffn [N, F]: encoder._Workspace's views.
    w_*: StackedLayers' weights [L, ...] (float32 packed, or int8 panels with
    s_* their [L, N] scales); b_*: [L, N] biases; gamma*, beta*: [L, H]
    LayerNorm parameters; xq [>= N * F], x_scales [N]: this thread's scratch
    for rounded activations (int8). counter: [1] int64, 0 at the start.
    """
    N, H = x.shape
    F = ffn.shape[1]
    q, k, v = qkv[:, :H], qkv[:, H:2 * H], qkv[:, 2 * H:]
    r0, r1 = share(N, thread, threads, 1)
    target = 0
    for layer in range(w_qkv.shape[0]):
        j0, j1 = share(3 * H, thread, threads, SPLIT)
        linear_share(x, w_qkv[layer], s_qkv[layer], b_qkv[layer], qkv, j0, j1, xq, x_scales, bound_h)
        target += threads
        barrier(counter, target)
        kernels.attention_tasks(q, k, v, seq_starts, num_heads, context, thread, threads)
        target += threads
        barrier(counter, target)
        j0, j1 = share(H, thread, threads, SPLIT)
        linear_share(context, w_out[layer], s_out[layer], b_out[layer], proj, j0, j1, xq, x_scales, bound_h)
        target += threads
        barrier(counter, target)
        kernels.add_layer_norm_rows(x, proj, gamma1[layer], beta1[layer], eps, x, r0, r1)
        target += threads
        barrier(counter, target)
        j0, j1 = share(F, thread, threads, SPLIT)
        linear_share(x, w_up[layer], s_up[layer], b_up[layer], ffn, j0, j1, xq, x_scales, bound_h)
        kernels.gelu_columns(ffn, j0, j1)
        target += threads
        barrier(counter, target)
        j0, j1 = share(H, thread, threads, SPLIT)
        linear_share(ffn, w_down[layer], s_down[layer], b_down[layer], proj, j0, j1, xq, x_scales, bound_f)
        target += threads
        barrier(counter, target)
        kernels.add_layer_norm_rows(x, proj, gamma2[layer], beta2[layer], eps, x, r0, r1)
        target += threads
        barrier(counter, target)


class StackedLayers(NamedTuple):
    """All layers' parameters, one [L, ...] array per kind (run_layers' arguments after eps).

    Float32 model: w_* packed [L, K, padded N] (kernels_panel.pack_into), s_*
    empty [L, 0]. int8 model: w_* int8.PackedMatrix.panels [L, panels, K2 * 32],
    s_* their scales [L, N].
    """
    w_qkv: np.ndarray
    s_qkv: np.ndarray
    b_qkv: np.ndarray
    w_out: np.ndarray
    s_out: np.ndarray
    b_out: np.ndarray
    gamma1: np.ndarray
    beta1: np.ndarray
    w_up: np.ndarray
    s_up: np.ndarray
    b_up: np.ndarray
    w_down: np.ndarray
    s_down: np.ndarray
    b_down: np.ndarray
    gamma2: np.ndarray
    beta2: np.ndarray


class LayerLoop:
    """Runs the layer stack of a short batch as run_layers on `threads` threads (workers.POOL).

    threads: None for numba.get_num_threads() at each call, or a fixed count
    (the plan's choice, matmul_plan.py).
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._scratch = []  # per thread: (xq int16, x_scales float32), grown on demand

    def __call__(self, stacked: StackedLayers, x, qkv, context, proj, ffn, seq_starts, num_heads: int,
                 eps: float) -> None:
        N, H = x.shape
        F = ffn.shape[1]
        threads = max(1, min(self.threads or numba.get_num_threads(), numba.get_num_threads()))
        need = N * (max(H, F) + 2)  # rounded activations of N rows, K rounded up to even
        if len(self._scratch) < threads or self._scratch[0][0].size < need:
            self._scratch = [(np.empty(need, np.int16), np.empty(N, np.float32)) for _ in range(threads)]
        counter = np.zeros(1, np.int64)
        bounds = activation_bound(H), activation_bound(F)
        POOL.run(run_layers, [(t, threads, counter, x, qkv, context, proj, ffn, seq_starts, num_heads, eps,
                               *stacked, *self._scratch[t], *bounds) for t in range(threads)])

