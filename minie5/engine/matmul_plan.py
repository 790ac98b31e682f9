"""Which engine runs the fast path's products, by the `matmul` setting and the batch's token count.

    matmul=   fewer than SERIAL_TOKENS (64) tokens          SERIAL_TOKENS or more
    "auto"    LayerLoop: all layers in one call per thread  BlasLinear, BlasAttention (sgemm)
    "numba"   LayerLoop                                     SplitLinear, FusedAttention (online softmax)
    "blas"    BlasLinear, BlasAttention                     BlasLinear, BlasAttention
    int8      the linear layers whose weight is int8 run on the int8 kernels: inside LayerLoop below
              SERIAL_TOKENS, on kernels_int8.Int8Linear (rows split over the threads) from there; attention
              (and any weight left in float32) as the matmul setting says

Float32 weights are stored transposed at load (kernels_panel.pack); sgemm,
kernels_panel.linear_panels and kernels.linear_columns all read that layout.

Below SERIAL_TOKENS (one short query) a forward pass is one call of
layer_loop.LayerLoop per batch: each of Numba's threads runs all the layers,
taking its share of every step, with a barrier between steps
(layer_loop.py). The step-by-step form (each kernel a Python call, each
product handed to the threads, SplitLinear: about 100 calls and 48 hand-overs
of 17 us each per forward) is still what the plan gives when hidden states
or attention probabilities are recorded, and what scripts/plans.py times as
"serial + split". The choice, measured with scripts/plans.py (2026-12-06, 2-core
AMD EPYC Zen 4, load average 7-8 from other jobs; median (min) ms of 10 calls):

    one text of   layer loop      loop, 1 thread   serial + split   sgemm
    12 tokens     15.96 (13.21)   31.52 (15.09)    29.83 (14.65)    42.29 (24.71)     float32
    12 tokens      4.53 (4.39)     4.09 (3.93)      5.23 (5.16)      9.60 (9.10)      int8
    64 tokens     23.10 (20.11)   20.84 (19.35)    24.17 (20.01)    25.30 (21.12)     int8

The loop on all threads is kept for both: on 12 float32 tokens it halves the
median; the int8 loop on one thread was 10 % faster at this load (its
threads wait at the barriers for a core), within the noise of its minimum.
At 64 and 128 tokens no plan was clearly ahead in this noise, so
SERIAL_TOKENS stays 64 (docs/performance.md, "One short text").

Attention from SERIAL_TOKENS on. kernels.attention_fused (FusedAttention: scores,
softmax and the mix with the values in one pass over tiles, online softmax, no
[L, L] buffer) against BlasAttention (two sgemm calls per head and softmax_rows
between them) and kernels.attention, 2026-12-06, 2-core AMD EPYC Zen 4, OpenBLAS
SkylakeX kernel, load average 2.3-2.7 from other jobs; ms per layer, min of 7
interleaved calls, random q, k, v, 12 heads of 32, the range over 2-3 runs:

    batch             Numba threads   BlasAttention   attention_fused   kernels.attention
    8 x 512 tokens    1               56.5-63.5       73.2-95.8         94.4-108.6
    32 x 128 tokens   1               19.1-20.3       28.9-30.8         35.5-37.5
    8 x 512 tokens    2               61.6            96.6              110.8
    32 x 128 tokens   2               19.3-20.3       37.3-42.7         35.4-43.4
    16 x 64 tokens    2               3.4-4.0         6.8-8.8           6.4-7.9

and in the whole forward (scripts/time_blocks.py --attention blas / fused, the
attention row, ms, three rounds at load average 2.2-7, too noisy to rank them):
8 x 512 float32 909-1030 / 609-1021, int8 500-814 / 632-1081; 32 x 128 float32
227-256 / 209-445, int8 124-263 / 175-484.
sgemm stays the faster at every length (per head at 512 tokens, in cache: 0.20 ms
for q k^T, 0.13 softmax, 0.19 probs v; the fused kernel 0.89 in all: 0.25 scores,
0.17 maxima and exponentials, 0.29 mix, 0.10 copying K and V transposed), so "auto"
(float32 and int8, whose attention is float32) keeps BlasAttention; "numba", which
has no sgemm, runs the fused kernel instead of kernels.attention: faster on long
texts, on a par from 64 to 128 tokens, and it never holds a text's [L, L] scores.

All the settings give the same results to float32 rounding (docs/behaviour.md);
the figures behind the threshold are in docs/performance.md.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numba

from . import kernels, kernels_panel as panel
from .blas import BlasAttention, BlasLinear
from .kernels_int8 import Int8Linear
from .layer_loop import LayerLoop
from .workers import POOL

MATMULS = ("auto", "numba", "blas")
SERIAL_TOKENS = 64


class Plan(NamedTuple):
    """The engines for one batch: what encoder.FastEncoder calls for each step of a layer."""
    kernels: object  # kernels (parallel) or kernels.SERIAL: embed, add_layer_norm, gelu, POOLERS
    linear: Callable  # linear(x, weight, bias, out): out = x @ weight.T + bias
    attention: Callable  # attention(q, k, v, seq_starts, num_heads, out, probs=None, cols=None)
    layer_loop: Callable | None = None  # layer_loop.LayerLoop: all layers in one call per thread, or None


def plans(matmul: str, quantize: str | None = None) -> tuple[Plan, Plan]:
    """The two plans of a matmul setting: (below SERIAL_TOKENS tokens, from SERIAL_TOKENS on).

    quantize="int8": the same plans with kernels_int8.Int8Linear in front of the linear engine.
    """
    if matmul not in MATMULS:
        raise ValueError(f"matmul must be one of {MATMULS}, got {matmul!r}")
    if matmul == "blas":
        small, large = Plan(kernels.SERIAL, BlasLinear(), BlasAttention()), Plan(kernels, BlasLinear(), BlasAttention())
    elif matmul == "numba":
        small = Plan(kernels.SERIAL, SplitLinear(), NumbaAttention(kernels.SERIAL), LayerLoop())
        large = Plan(kernels, SplitLinear(), FusedAttention())
    else:
        small = Plan(kernels.SERIAL, SplitLinear(), NumbaAttention(kernels.SERIAL), LayerLoop())
        large = Plan(kernels, BlasLinear(), BlasAttention())
    if quantize == "int8":
        small = small._replace(linear=Int8Linear(small.linear, split="columns"))
        large = large._replace(linear=Int8Linear(large.linear, split="rows"))
    return small, large


class SplitLinear:
    """out = x @ weight.T + bias, output columns split over Python threads.  Twin: reference.linear.

    The output columns are cut into numba.get_num_threads() ranges; the calling
    thread computes one and workers.POOL's threads the others, each reading
    only its slice of the weight. A weight packed at load (kernels_panel.pack,
    as encoder.py stores them) runs on kernels_panel.linear_panels, ranges in
    multiples of its 64-column tile; any other [N, K] array on
    kernels.linear_columns, ranges in multiples of 4. The kernels release the
    GIL, and no Numba thread pool has to wake up.
    """

    def __call__(self, x, weight, bias, out) -> None:
        N = weight.shape[0]
        threads = numba.get_num_threads()
        packed = panel.packed_or_none(weight)
        step = panel.WIDTH if packed is not None else 4
        cuts = [min(N, (N * t // threads + step - 1) // step * step) for t in range(threads)] + [N]  # [threads + 1]
        kernel, matrix = (panel.linear_panels, packed) if packed is not None else (kernels.linear_columns, weight)
        POOL.run(kernel, [(x, matrix, bias, out, cuts[t], cuts[t + 1])
                          for t in range(threads) if cuts[t + 1] > cuts[t]])


class FusedAttention:
    """kernels.attention_fused (online softmax over tiles) behind BlasAttention's signature.

    The fused kernel never holds the probabilities, so when they are asked for
    (probs and cols: output_attentions) this runs NumbaAttention instead, whose
    probabilities are the very weights it mixes the values with.
    """

    def __call__(self, q, k, v, seq_starts, num_heads: int, out, probs=None, cols=None) -> None:
        if probs is not None:
            NumbaAttention(kernels)(q, k, v, seq_starts, num_heads, out, probs, cols)
            return
        kernels.attention_fused(q, k, v, seq_starts, num_heads, out, kernels.KEY_TILE)


class NumbaAttention:
    """kernels.attention (or its serial twin) behind BlasAttention's signature.

    With probs and cols it also writes the probabilities out, through
    kernels.attention_probs, which runs the same per-head code (_head_probs).
    """

    def __init__(self, kernel_set):
        self.kernel_set = kernel_set

    def __call__(self, q, k, v, seq_starts, num_heads: int, out, probs=None, cols=None) -> None:
        self.kernel_set.attention(q, k, v, seq_starts, num_heads, out)
        if probs is not None:
            kernels.attention_probs(q, k, seq_starts, num_heads, cols, probs)
