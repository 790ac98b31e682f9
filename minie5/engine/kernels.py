"""The fast path's Numba kernels, each next to the name of its NumPy twin.

Every kernel here computes exactly what a function in reference.py computes
(named in its docstring as "twin: ..."); tests/test_kernels.py checks each pair
on random inputs. The fast path differs from the reference in *layout*, not in
maths:

  * Packed tokens. A batch is not padded to [B, T, H]: the tokens of all its
    texts are concatenated into one [N, H] array, and `seq_starts` [B+1] says
    where each text begins and ends (text b is rows seq_starts[b]:seq_starts[b+1]).
    Attention runs per (text, head) over that text's own tokens, so no work is
    spent on padding and a text's result does not depend on its batch-mates.
  * Preallocated outputs. Kernels write into arrays the caller owns (encoder.py
    keeps one workspace and reuses it across layers), never allocate large ones.
  * float32 storage; sums that set the scale (LayerNorm statistics, softmax
    denominators, pooling) accumulate in float64.

Numba notes. All kernels are compiled once and cached on disk (cache=True).
`np.dot`/`@` inside njit would need SciPy, so the matmul is written out here.
Kernels whose time is in long sums (the matmul, softmax, LayerNorm) are
compiled with fastmath REORDER_SUMS = {'reassoc', 'contract'} only: reordered
sums and fused multiply-adds let LLVM vectorise them. No kernel uses nnan/ninf,
and the softmax never sees an infinity (packed attention has no mask to add).

Threading layer. Importing this module makes Numba use its fork-safe
'workqueue' layer for the whole process, unless NUMBA_THREADING_LAYER is set in
the environment or numba.config.THREADING_LAYER was set before the import:
Numba would otherwise pick GNU OpenMP, which kills a child process that uses it
after fork() (multiprocessing's default on Linux). workqueue must not be
entered from two threads at once; encoder.py holds a lock around every call.

Where the time goes (e5-small): the four matmuls per layer are about 95 % of
the FLOPs at 128 tokens (42.5 MFLOP per token); attention adds 4*T*H FLOPs per
token per layer (6 % at T = 128, 22 % at T = 512); LayerNorm, GELU and pooling
are memory passes (docs/performance.md).
"""
from __future__ import annotations

import math
import os
import tempfile
import types
import warnings

import numba
import numpy as np
from numba import prange

# The threading layer (see the module notes): workqueue, unless the user chose one.
if not os.environ.get("NUMBA_THREADING_LAYER") and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"


def njit(**options):
    """numba.njit(cache=True, ...), where a Numba cache that cannot be written is not fatal.

    Numba caches compiled kernels beside this file (or in NUMBA_CACHE_DIR, or
    ~/.cache) and raises at import when none of these is writable, e.g. a
    read-only site-packages and HOME. minie5 then redirects its own kernels'
    cache to a temporary directory (and says so once), and if even that fails
    compiles them without a cache, at every start.
    """
    # NumPy's error model (x / 0 gives inf, no ZeroDivisionError): Python's puts a test and a
    # branch before every division, which stops LLVM vectorising a loop that divides (erf's p / q).
    options.setdefault("error_model", "numpy")

    def decorate(function):
        try:
            return numba.njit(**options)(function)
        except RuntimeError as e:  # "cannot cache function ...: no locator available"
            if not options.get("cache") or "cannot cache" not in str(e):
                raise
        return _njit_with_fallback_cache(function, options)
    return decorate


_warned_cache = []


def _njit_with_fallback_cache(function, options):
    fallback = os.path.join(tempfile.gettempdir(), f"minie5-numba-cache-{os.getuid()}")
    saved = numba.config.CACHE_DIR
    try:
        os.makedirs(fallback, exist_ok=True)
        numba.config.CACHE_DIR = fallback  # read when the cache locator is chosen, i.e. now
        compiled = numba.njit(**options)(function)
        note = f"caching them in {fallback} instead"
    except (OSError, RuntimeError):
        compiled = numba.njit(**{**options, "cache": False})(function)
        note = "compiling them without a cache, at every start"
    finally:
        numba.config.CACHE_DIR = saved
    if not _warned_cache:
        _warned_cache.append(True)
        warnings.warn(f"minie5: no writable Numba cache directory for its kernels (package directory, "
                      f"NUMBA_CACHE_DIR and ~/.cache are read-only); {note}. Set NUMBA_CACHE_DIR to a "
                      f"writable directory to choose the location.", RuntimeWarning, stacklevel=3)
    return compiled


REORDER_SUMS = {"reassoc", "contract"}  # fastmath flags: reorder sums, fuse multiply-adds; no nnan / ninf

# Block sizes of the matmul: a task computes a [ROW_BLOCK, COL_BLOCK] tile of
# the output; 64 rows of x (K = 1536: 384 KB) and 64 rows of the weight stay in L2.
ROW_BLOCK = 64
COL_BLOCK = 64


@njit(cache=True, fastmath=REORDER_SUMS)
def matmul_nt_tile(a, b, out, i0, i1, j0, j1):
    """out[i, j] = a[i] . b[j] for i in [i0, i1), j in [j0, j1): a tile of a @ b.T.  Twin: numpy's a @ b.T.

    a: [M, K], b: [N, K], out: [M, N]; rows of a and b contiguous (K-long dot
    products). This is the one matmul micro-kernel of minie5, used by `linear`
    (x @ weight.T) and by `attention` (q @ k.T, probs @ v). It computes a
    4 x 4 block of outputs at once: 16 running sums stay in registers and each
    step loads 4 + 4 values for 16 multiply-adds; with 'reassoc' LLVM vectorises
    the K loop and adds the lanes at the end. Every row goes through the same
    block code (a last strip of 1-3 rows too), so a row's result does not
    depend on where it sits in x.
    """
    K = a.shape[1]
    last = i1 - 1
    i = i0
    while i < i1:  # 4-row strips; a last strip of 1-3 rows repeats its last row (computed, not written)
        rows = min(4, i1 - i)
        a0, a1, a2, a3 = a[i], a[min(i + 1, last)], a[min(i + 2, last)], a[min(i + 3, last)]
        j = j0
        while j + 4 <= j1:  # 4 x 4 blocks
            b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
            s00 = s01 = s02 = s03 = np.float32(0.0)
            s10 = s11 = s12 = s13 = np.float32(0.0)
            s20 = s21 = s22 = s23 = np.float32(0.0)
            s30 = s31 = s32 = s33 = np.float32(0.0)
            for k in range(K):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                s00 += x0 * y0
                s01 += x0 * y1
                s02 += x0 * y2
                s03 += x0 * y3
                s10 += x1 * y0
                s11 += x1 * y1
                s12 += x1 * y2
                s13 += x1 * y3
                s20 += x2 * y0
                s21 += x2 * y1
                s22 += x2 * y2
                s23 += x2 * y3
                s30 += x3 * y0
                s31 += x3 * y1
                s32 += x3 * y2
                s33 += x3 * y3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            if rows > 1:
                out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
            if rows > 2:
                out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = s20, s21, s22, s23
            if rows > 3:
                out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = s30, s31, s32, s33
            j += 4
        for jj in range(j, j1):  # leftover columns of the strip
            for r in range(rows):
                out[i + r, jj] = _dot(a[i + r], b[jj], K)
        i += 4


@njit(cache=True, fastmath=REORDER_SUMS)
def _dot(a, b, n):
    s = np.float32(0.0)
    for k in range(n):
        s += a[k] * b[k]
    return s


@njit(cache=True, fastmath=REORDER_SUMS, inline="always")
def _linear_tile(x, weight, bias, out, i0, i1, j0, j1):
    """out[i0:i1, j0:j1] = x[i0:i1] @ weight[j0:j1].T + bias[j0:j1]: one micro-kernel call, then the bias
    is added while the tile is still in L1 cache."""
    matmul_nt_tile(x, weight, out, i0, i1, j0, j1)
    for i in range(i0, i1):
        for j in range(j0, j1):
            out[i, j] += bias[j]


@njit(cache=True, parallel=True)
def linear(x, weight, bias, out):
    """out = x @ weight.T + bias.  Twin: reference.linear.

    x: [M, K], weight: [N, K] (PyTorch's [out, in] layout, used as stored: no
    transposed copy), bias: [N] -> out: [M, N].

    The output is cut into [ROW_BLOCK, COL_BLOCK] tiles spread over Numba's
    threads; each tile is one call of the micro-kernel, then the bias is added
    while the tile is still in L1 cache. Small M (one short text) still yields
    N / COL_BLOCK tiles, so every thread reads its share of the weight.
    """
    M = x.shape[0]
    N = weight.shape[0]
    row_tiles = (M + ROW_BLOCK - 1) // ROW_BLOCK
    col_tiles = (N + COL_BLOCK - 1) // COL_BLOCK
    for tile in prange(row_tiles * col_tiles):
        i0 = (tile // col_tiles) * ROW_BLOCK
        j0 = (tile % col_tiles) * COL_BLOCK
        _linear_tile(x, weight, bias, out, i0, min(i0 + ROW_BLOCK, M), j0, min(j0 + COL_BLOCK, N))


@njit(cache=True, nogil=True, fastmath=REORDER_SUMS)
def linear_columns(x, weight, bias, out, j0, j1):
    """out[:, j0:j1] = x @ weight[j0:j1].T + bias[j0:j1], on the calling thread.  Twin: reference.linear.

    The serial piece of matmul_plan.SplitLinear, which gives each of its threads one
    range of output columns (one slice of the weight to read). nogil: the Python
    threads that call it run at the same time, with no Numba thread pool to wake.
    """
    M = x.shape[0]
    for t0 in range(j0, j1, COL_BLOCK):
        for i0 in range(0, M, ROW_BLOCK):
            _linear_tile(x, weight, bias, out, i0, min(i0 + ROW_BLOCK, M), t0, min(t0 + COL_BLOCK, j1))


# erf(x) for float32 as a rational function (the approximation Eigen and XLA use for
# float32): x * P(x^2) / Q(x^2) on x clamped to [-4, 4], where erf is +-1 to float32
# precision; max abs error about 1e-7. Unlike libm's erf it is branch-free, so LLVM vectorises it.
_A0, _A1, _A2, _A3, _A4, _A5, _A6 = (np.float32(c) for c in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02))
_B0, _B1, _B2, _B3, _B4 = (np.float32(c) for c in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02))


@njit(cache=True, inline="always")
def _erf(x):
    """erf of one float32 value (rational approximation, see above).  Twin: reference.erf."""
    x = min(max(x, np.float32(-4.0)), np.float32(4.0))
    x2 = x * x
    p = ((((((_A0 * x2 + _A1) * x2 + _A2) * x2 + _A3) * x2 + _A4) * x2 + _A5) * x2 + _A6) * x
    q = (((_B0 * x2 + _B1) * x2 + _B2) * x2 + _B3) * x2 + _B4
    return p / q


@njit(cache=True, inline="always")
def _gelu(x):
    """Exact GELU of one value: x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)).  Twin: reference.gelu."""
    return np.float32(0.5) * x * (np.float32(1.0) + _erf(x * np.float32(0.7071067811865476)))


@njit(cache=True, parallel=True)
def gelu(x, out):
    """out = GELU(x) elementwise (out may be x).  Twin: reference.gelu.  x, out: [M, N].

    Each row goes through a scratch row: when out is x (as in encoder.py), a loop
    reading x[i, j] and writing out[i, j] fails LLVM's run-time overlap check and
    runs scalar in the serial twin.
    """
    M, N = x.shape
    for i in prange(M):
        row = np.empty(N, np.float32)  # GELU of row i of x
        for j in range(N):
            row[j] = _gelu(x[i, j])
        for j in range(N):
            out[i, j] = row[j]


@njit(cache=True, inline="always")
def _layer_norm_row(row, gamma, beta, eps, out_row):
    """LayerNorm of one vector into out_row (may be the same memory as row).

    Mean and variance are float64 sums; the kernels that inline this one are
    compiled with REORDER_SUMS, which lets LLVM vectorise them (a plain sum is
    one long dependency chain).
    """
    H = row.shape[0]
    mean = 0.0
    for c in range(H):
        mean += row[c]
    mean /= H
    var = 0.0
    for c in range(H):
        d = row[c] - mean
        var += d * d
    inv_std = 1.0 / math.sqrt(var / H + eps)
    for c in range(H):
        out_row[c] = np.float32((row[c] - mean) * inv_std * gamma[c] + beta[c])


@njit(cache=True, parallel=True, fastmath=REORDER_SUMS)
def add_layer_norm(x, residual, gamma, beta, eps, out):
    """out = LayerNorm(x + residual), row by row.  Twin: reference.layer_norm(x + residual, ...).

    x, residual, out: [N, H] (out may be x or residual: each row is read in full
    before it is written); gamma, beta: [H].
    """
    N, H = x.shape
    for t in prange(N):
        row = np.empty(H, np.float32)
        for c in range(H):
            row[c] = x[t, c] + residual[t, c]
        _layer_norm_row(row, gamma, beta, eps, out[t])


@njit(cache=True, nogil=True, fastmath=REORDER_SUMS)
def add_layer_norm_rows(x, residual, gamma, beta, eps, out, r0, r1):
    """Rows r0 .. r1 of add_layer_norm, on the calling thread.  Twin: reference.layer_norm(x + residual, ...)."""
    H = x.shape[1]
    row = np.empty(H, np.float32)
    for t in range(r0, r1):
        for c in range(H):
            row[c] = x[t, c] + residual[t, c]
        _layer_norm_row(row, gamma, beta, eps, out[t])


@njit(cache=True, nogil=True)
def gelu_columns(x, c0, c1):
    """x[:, c0:c1] = GELU(x[:, c0:c1]) in place, on the calling thread.  Twin: reference.gelu.

    Through a scratch row, as `gelu` (and compiled as it is, without fastmath): the same values.
    """
    row = np.empty(c1 - c0, np.float32)
    for i in range(x.shape[0]):
        for j in range(c0, c1):
            row[j - c0] = _gelu(x[i, j])
        for j in range(c0, c1):
            x[i, j] = row[j - c0]


@njit(cache=True, parallel=True, fastmath=REORDER_SUMS)
def embed(token_ids, positions, word_embeddings, position_embeddings, token_type_row, gamma, beta, eps, out):
    """out[t] = LayerNorm(word[token_ids[t]] + position[positions[t]] + token_type_row).  Twin: reference.embed.

    token_ids, positions: [N] int64 -> out: [N, H]. Only the rows of the
    (memory-mapped) word-embedding matrix that token ids point at are read.
    """
    N, H = out.shape
    for t in prange(N):
        row = np.empty(H, np.float32)
        word = word_embeddings[token_ids[t]]
        pos = position_embeddings[positions[t]]
        for c in range(H):
            row[c] = word[c] + pos[c] + token_type_row[c]
        _layer_norm_row(row, gamma, beta, eps, out[t])


_LOG2E = np.float32(1.4426950408889634)


@njit(cache=True, inline="always")
def _row_max(row, C):
    """max(row[:C]) as 8 independent chains (a plain loop does not vectorise without nnan).

    Inlined into softmax_rows and attention_fused's tiles, which compile it under their REORDER_SUMS.
    """
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = row[0]
    j = 0
    while j + 8 <= C:
        b0, b1, b2, b3 = max(b0, row[j]), max(b1, row[j + 1]), max(b2, row[j + 2]), max(b3, row[j + 3])
        b4, b5, b6, b7 = max(b4, row[j + 4]), max(b5, row[j + 5]), max(b6, row[j + 6]), max(b7, row[j + 7])
        j += 8
    for jj in range(j, C):
        b0 = max(b0, row[jj])
    return max(max(max(b0, b1), max(b2, b3)), max(max(b4, b5), max(b6, b7)))


@njit(cache=True, fastmath=REORDER_SUMS, nogil=True)
def softmax_rows(scores, scale, exp_bits):
    """scores[i] = softmax(scale * scores[i]) for each row, in place.  Twin: the softmax in reference.attention.

    scores: [R, L] float32; scale: a float32 > 0 (1/sqrt(D) when the scores
    are raw q . k products, 1 when q was scaled first); exp_bits: int32
    scratch of length L. Since scale > 0, the maximum of scale * row is scale
    times the row's maximum, so scaling costs no extra pass. exp(x) is
    computed as 2^n * 2^f (n = round(x log2 e), |f| <= 1/2, 2^f by a degree-6
    polynomial, 2^n by writing n into a float's exponent bits): relative error
    about 2e-7, and unlike libm's expf every loop here vectorises. Inputs are
    finite and at most 0 after subtracting the row max, so there is no
    overflow, and exponents below -126 are flushed to 2^-126 (a weight of 1e-38).

    The row maximum runs as 8 independent chains and the float64 total is
    vectorised under REORDER_SUMS: as plain loops, these two reductions took
    more time than the exponentials.
    """
    L = scores.shape[1]
    to_log2 = np.float32(scale) * _LOG2E  # exp(scale * (x - max)) = 2^((x - max) * to_log2)
    powers = exp_bits.view(np.float32)  # the same memory, read as floats 2^n
    for i in range(scores.shape[0]):
        row = scores[i]
        best = _row_max(row, L)
        for j in range(L):
            t = max((row[j] - best) * to_log2, np.float32(-126.0))
            n = np.floor(t + np.float32(0.5))
            f = t - n
            row[j] = ((((((np.float32(1.5353362e-4) * f + np.float32(1.3398874e-3)) * f
                          + np.float32(9.6181291e-3)) * f + np.float32(5.5504109e-2)) * f
                        + np.float32(2.4022651e-1)) * f + np.float32(6.9314718e-1)) * f + np.float32(1.0))
            exp_bits[j] = (np.int32(n) + np.int32(127)) << 23
        for j in range(L):
            row[j] *= powers[j]
        total = 0.0  # float64 denominator
        for j in range(L):
            total += row[j]
        inv_total = np.float32(1.0 / total)
        for j in range(L):
            row[j] *= inv_total


@njit(cache=True, inline="always")
def _head_probs(q, k, s, L, c0, D):
    """softmax(q_a k_a^T / sqrt(D)) for one text (rows s .. s+L) and one head (columns c0 .. c0+D): [L, L].

    Shared by `attention` and `attention_probs`, so the probabilities a caller
    inspects are the very ones the values are mixed with.
    """
    scale = np.float32(1.0 / math.sqrt(D))
    q_a = np.empty((L, D), np.float32)  # this head's queries, pre-scaled by 1/sqrt(D)
    k_a = np.empty((L, D), np.float32)
    for j in range(L):
        for d in range(D):
            q_a[j, d] = q[s + j, c0 + d] * scale
            k_a[j, d] = k[s + j, c0 + d]
    probs = np.empty((L, L), np.float32)
    matmul_nt_tile(q_a, k_a, probs, 0, L, 0, L)  # scores [L, L]
    softmax_rows(probs, np.float32(1.0), np.empty(L, np.int32))  # probs [L, L] (q_a is already scaled)
    return probs


@njit(cache=True, parallel=True)
def attention(q, k, v, seq_starts, num_heads, out):
    """Multi-head self-attention within each packed text.  Twin: the core of reference.attention.

    q, k, v: [N, H] (projections, bias added), seq_starts: [B+1] -> out: [N, H],
    the heads' context vectors side by side (before the output projection).
    For text b and head a, with rows s = seq_starts[b] .. e = seq_starts[b+1]
    and columns a*D .. (a+1)*D:
        scores = q_a k_a^T / sqrt(D)     [L, L], L = e - s
        probs  = softmax(scores)         [L, L] (rows sum to 1)
        out_a  = probs @ v_a             [L, D]
    A text attends only to its own tokens, which is what BERT's padding mask
    achieves in a padded batch. Both products run on the matmul micro-kernel
    (for probs @ v_a, v_a is first copied transposed so its rows are contiguous).
    Tasks are (text, head) pairs spread over Numba's threads. From 64 tokens
    per batch the default plan runs blas.BlasAttention instead, and matmul="numba"
    `attention_fused` (matmul_plan.py).
    """
    H = q.shape[1]
    D = H // num_heads
    B = seq_starts.shape[0] - 1
    for task in prange(B * num_heads):
        b = task // num_heads
        _head_context(q, k, v, seq_starts[b], seq_starts[b + 1] - seq_starts[b], (task % num_heads) * D, D, out)


@njit(cache=True, inline="always")
def _head_context(q, k, v, s, L, c0, D, out):
    """One (text, head) task of `attention`: out[s:s+L, c0:c0+D] = softmax(q_a k_a^T / sqrt(D)) @ v_a."""
    if L == 0:
        return
    probs = _head_probs(q, k, s, L, c0, D)  # [L, L]
    v_t = np.empty((D, L), np.float32)  # this head's values, transposed
    for j in range(L):
        for d in range(D):
            v_t[d, j] = v[s + j, c0 + d]
    context = np.empty((L, D), np.float32)
    matmul_nt_tile(probs, v_t, context, 0, L, 0, D)  # [L, D]
    for j in range(L):
        for d in range(D):
            out[s + j, c0 + d] = context[j, d]


@njit(cache=True, nogil=True)
def attention_tasks(q, k, v, seq_starts, num_heads, out, first, step):
    """The (text, head) tasks first, first + step, ... of `attention`, on the calling thread.

    Twin: the core of reference.attention. Task n is text n // num_heads, head
    n % num_heads, computed exactly as `attention` computes it: with
    first = t, step = threads, threads t = 0 .. threads - 1 share all tasks.
    """
    D = q.shape[1] // num_heads
    for task in range(first, (seq_starts.shape[0] - 1) * num_heads, step):
        b = task // num_heads
        _head_context(q, k, v, seq_starts[b], seq_starts[b + 1] - seq_starts[b], (task % num_heads) * D, D, out)


@njit(cache=True, parallel=True)
def attention_probs(q, k, seq_starts, num_heads, cols, out):
    """The attention probabilities `attention` computes, written out.  Twin: attn_probs in reference.attention.

    q, k: [N, H] packed (as `attention` gets them), seq_starts: [B+1],
    cols: [N] each packed token's column in the padded batch -> out: [B, A, T, T],
    out[b, a, cols[s+i], cols[s+j]] = probs of text b, head a, query i, key j.
    The very steps of `attention` (same scaling, micro-kernel and softmax): the
    weights `attention` mixes the values with. Entries of out that no (query,
    key) pair of real tokens reaches are left untouched (the caller zeroes out first). Only called when
    the attentions are asked for: the default forward never runs it.
    """
    H = q.shape[1]
    D = H // num_heads
    B = seq_starts.shape[0] - 1
    for task in prange(B * num_heads):
        b = task // num_heads
        a = task % num_heads
        s = seq_starts[b]
        L = seq_starts[b + 1] - s
        if L == 0:
            continue
        probs = _head_probs(q, k, s, L, a * D, D)  # [L, L], exactly what `attention` computes
        for i in range(L):
            for j in range(L):
                out[b, a, cols[s + i], cols[s + j]] = probs[i, j]


# ---------------------------------------------------------------- fused attention
# Scores, softmax and the mix with the values in one pass over tiles, with a running
# maximum and sum per query row (online softmax): no [L, L] matrix is ever written.

QUERY_TILE = 8  # query rows per tile: their scores [QUERY_TILE, KEY_TILE] and context [QUERY_TILE, D] stay in L1
KEY_TILE = 256  # keys per tile (matmul_plan.FusedAttention): 8 x 256 scores = 8 KB


@njit(cache=True, fastmath=REORDER_SUMS, nogil=True)
def _tile_scores(q_tile, k_t, R, j0, C, scores):
    """scores[r, j] = q_tile[r] . k_t[:, j0 + j] for r < R, j < C: a tile of q k^T, keys vectorised.

    q_tile: [QUERY_TILE, D], k_t: [D, L] (the head's keys transposed, so a key
    tile's d-th components are contiguous). Each pass adds 4 components of the
    dot products to 4 rows of scores at once: 16 keys per vector multiply-add,
    16 multiply-adds per 4 loads of keys and one load and store of each row.
    (The dot-product form, vectorised over D, would add up its vector lanes for
    every score: D is only 32.) Rows past the last multiple of 4 go one by one.
    """
    D = q_tile.shape[1]
    for r in range(R):
        for j in range(C):
            scores[r, j] = np.float32(0.0)
    r = 0
    while r + 4 <= R:
        row0, row1, row2, row3 = scores[r], scores[r + 1], scores[r + 2], scores[r + 3]
        q0, q1, q2, q3 = q_tile[r], q_tile[r + 1], q_tile[r + 2], q_tile[r + 3]
        d = 0
        while d + 4 <= D:
            a0, a1, a2, a3 = q0[d], q0[d + 1], q0[d + 2], q0[d + 3]
            b0, b1, b2, b3 = q1[d], q1[d + 1], q1[d + 2], q1[d + 3]
            c0, c1, c2, c3 = q2[d], q2[d + 1], q2[d + 2], q2[d + 3]
            e0, e1, e2, e3 = q3[d], q3[d + 1], q3[d + 2], q3[d + 3]
            k0, k1, k2, k3 = k_t[d, j0:j0 + C], k_t[d + 1, j0:j0 + C], k_t[d + 2, j0:j0 + C], k_t[d + 3, j0:j0 + C]
            for j in range(C):
                x0, x1, x2, x3 = k0[j], k1[j], k2[j], k3[j]
                row0[j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
                row1[j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
                row2[j] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
                row3[j] += e0 * x0 + e1 * x1 + e2 * x2 + e3 * x3
            d += 4
        while d < D:  # head widths that are not a multiple of 4
            a0, b0, c0, e0 = q0[d], q1[d], q2[d], q3[d]
            k0 = k_t[d, j0:j0 + C]
            for j in range(C):
                x0 = k0[j]
                row0[j] += a0 * x0
                row1[j] += b0 * x0
                row2[j] += c0 * x0
                row3[j] += e0 * x0
            d += 1
        r += 4
    while r < R:  # the last 1-3 rows of a text's last tile
        row0, q0 = scores[r], q_tile[r]
        d = 0
        while d + 4 <= D:
            a0, a1, a2, a3 = q0[d], q0[d + 1], q0[d + 2], q0[d + 3]
            k0, k1, k2, k3 = k_t[d, j0:j0 + C], k_t[d + 1, j0:j0 + C], k_t[d + 2, j0:j0 + C], k_t[d + 3, j0:j0 + C]
            for j in range(C):
                row0[j] += a0 * k0[j] + a1 * k1[j] + a2 * k2[j] + a3 * k3[j]
            d += 4
        while d < D:
            a0 = q0[d]
            k0 = k_t[d, j0:j0 + C]
            for j in range(C):
                row0[j] += a0 * k0[j]
            d += 1
        r += 1


@njit(cache=True, fastmath=REORDER_SUMS, nogil=True)
def _pow2_shifted(row, C, shift, exp_bits):
    """row[j] = 2^(row[j] - shift) for j < C, in place; returns their sum (float64).

    The exponential of softmax_rows (2^n times a degree-6 polynomial of the
    fraction, exponents below -126 flushed to 2^-126), on scores already in
    base-2 units; row[j] <= shift, so nothing overflows.
    """
    powers = exp_bits.view(np.float32)
    for j in range(C):
        t = max(row[j] - shift, np.float32(-126.0))
        n = np.floor(t + np.float32(0.5))
        f = t - n
        row[j] = ((((((np.float32(1.5353362e-4) * f + np.float32(1.3398874e-3)) * f
                      + np.float32(9.6181291e-3)) * f + np.float32(5.5504109e-2)) * f
                    + np.float32(2.4022651e-1)) * f + np.float32(6.9314718e-1)) * f + np.float32(1.0))
        exp_bits[j] = (np.int32(n) + np.int32(127)) << 23
    total = 0.0  # float64, like softmax_rows' denominator
    for j in range(C):
        row[j] *= powers[j]
        total += row[j]
    return total


@njit(cache=True, fastmath=REORDER_SUMS, nogil=True)
def _mix_values(probs, v_t, R, j0, C, acc):
    """acc[r] += probs[r, :C] @ v_t[:, j0:j0 + C].T for r < R: a tile's weighted sum of values.

    v_t: [D, L], the head's values transposed, so each of the D outputs is a
    C-long dot product over contiguous keys (vectorised over keys, its lanes
    added once per tile). Two query rows at a time share each load of v_t.
    """
    D = v_t.shape[0]
    r = 0
    while r + 2 <= R:
        p0, p1 = probs[r], probs[r + 1]
        for d in range(D):
            values = v_t[d, j0:j0 + C]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            for j in range(C):
                s0 += p0[j] * values[j]
                s1 += p1[j] * values[j]
            acc[r, d] += s0
            acc[r + 1, d] += s1
        r += 2
    if r < R:  # an odd last row
        p0 = probs[r]
        for d in range(D):
            values = v_t[d, j0:j0 + C]
            s0 = np.float32(0.0)
            for j in range(C):
                s0 += p0[j] * values[j]
            acc[r, d] += s0


@njit(cache=True, fastmath=REORDER_SUMS, nogil=True)
def _head_context_fused(q, k, v, s, L, c0, D, key_tile, out):
    """One (text, head) task of `attention_fused`: out[s:s+L, c0:c0+D], tile by tile (online softmax).

    For each tile of QUERY_TILE query rows, the keys are visited key_tile at a
    time; per row r it keeps the largest score seen so far m[r], the sum of
    2^(score - m[r]) so far l[r] (float64) and acc[r] = sum of 2^(score - m[r]) v.
    When a key tile raises m[r], l[r] and acc[r] are first multiplied by
    2^(m_old - m_new). m starts at the first tile's maximum (no -inf anywhere).
    At the end, context = acc / l. Scores are in base 2: q is scaled by
    log2(e) / sqrt(D) as it is read, so 2^(score) = exp(q . k / sqrt(D)).
    """
    to_log2 = np.float32(1.0 / math.sqrt(D)) * _LOG2E
    k_t = np.empty((D, L), np.float32)  # this head's keys and values, transposed: [D, L]
    v_t = np.empty((D, L), np.float32)
    for j in range(L):
        for d in range(D):
            k_t[d, j] = k[s + j, c0 + d]
            v_t[d, j] = v[s + j, c0 + d]
    q_tile = np.empty((QUERY_TILE, D), np.float32)  # scaled queries of one tile
    scores = np.empty((QUERY_TILE, key_tile), np.float32)  # scores, then weights, of one tile
    acc = np.empty((QUERY_TILE, D), np.float32)  # running weighted sums of values
    row_max = np.empty(QUERY_TILE, np.float32)
    row_sum = np.empty(QUERY_TILE, np.float64)
    exp_bits = np.empty(key_tile, np.int32)
    for i0 in range(0, L, QUERY_TILE):
        R = min(QUERY_TILE, L - i0)
        for r in range(R):
            for d in range(D):
                q_tile[r, d] = q[s + i0 + r, c0 + d] * to_log2
                acc[r, d] = np.float32(0.0)
        for j0 in range(0, L, key_tile):
            C = min(key_tile, L - j0)
            _tile_scores(q_tile, k_t, R, j0, C, scores)  # [R, C], base-2 units
            for r in range(R):
                row = scores[r]
                best = _row_max(row, C)
                if j0 == 0:
                    row_max[r], row_sum[r] = best, 0.0
                elif best > row_max[r]:  # rescale what was summed against the old maximum
                    rescale = np.float32(2.0 ** (float(row_max[r]) - float(best)))
                    row_sum[r] *= rescale
                    for d in range(D):
                        acc[r, d] *= rescale
                    row_max[r] = best
                row_sum[r] += _pow2_shifted(row, C, row_max[r], exp_bits)  # row: 2^(score - m), unnormalised
            _mix_values(scores, v_t, R, j0, C, acc)  # acc[:R] += weights [R, C] @ values [C, D]
        for r in range(R):
            inv_sum = np.float32(1.0 / row_sum[r])
            for d in range(D):
                out[s + i0 + r, c0 + d] = acc[r, d] * inv_sum


@njit(cache=True, parallel=True)
def attention_fused(q, k, v, seq_starts, num_heads, out, key_tile):
    """`attention` as one pass over tiles with an online softmax.  Twin: reference.attention_online.

    q, k, v: [N, H] (projections, bias added), seq_starts: [B+1] -> out: [N, H],
    the same result as `attention` (to float32 rounding) without ever holding a
    text's [L, L] scores: per (text, head) task it keeps the head's keys
    transposed [D, L], and per tile of QUERY_TILE queries [QUERY_TILE, key_tile]
    scores and [QUERY_TILE, D] running sums (_head_context_fused). Tasks are
    (text, head) pairs spread over Numba's threads. key_tile: keys per tile
    (matmul_plan uses KEY_TILE; the tests use small ones to make texts span many tiles).
    """
    H = q.shape[1]
    D = H // num_heads
    B = seq_starts.shape[0] - 1
    for task in prange(B * num_heads):
        b = task // num_heads
        L = seq_starts[b + 1] - seq_starts[b]
        if L > 0:
            _head_context_fused(q, k, v, seq_starts[b], L, (task % num_heads) * D, D, key_tile, out)


@njit(cache=True, parallel=True)
def mean_pool(hidden, seq_starts, out):
    """out[b] = mean of hidden over text b's tokens (<s> and </s> included).  Twin: reference.mean_pool.

    hidden: [N, H] packed, seq_starts: [B+1] -> out: [B, H].
    """
    B = seq_starts.shape[0] - 1
    H = hidden.shape[1]
    for b in prange(B):
        s, e = seq_starts[b], seq_starts[b + 1]
        acc = np.zeros(H, np.float64)
        for t in range(s, e):
            for c in range(H):
                acc[c] += hidden[t, c]
        n = max(e - s, 1)
        for c in range(H):
            out[b, c] = np.float32(acc[c] / n)


@njit(cache=True, parallel=True)
def max_pool(hidden, seq_starts, out):
    """out[b] = elementwise max of hidden over text b's tokens.  Twin: reference.max_pool."""
    B = seq_starts.shape[0] - 1
    H = hidden.shape[1]
    for b in prange(B):
        s, e = seq_starts[b], seq_starts[b + 1]
        if e == s:  # a text with no tokens pools to zeros
            out[b, :] = 0.0
            continue
        for c in range(H):
            best = hidden[s, c]
            for t in range(s + 1, e):
                if hidden[t, c] > best:
                    best = hidden[t, c]
            out[b, c] = best


@njit(cache=True, parallel=True)
def cls_pool(hidden, seq_starts, out):
    """out[b] = hidden of text b's first token (<s> / [CLS]).  Twin: reference.cls_pool."""
    B = seq_starts.shape[0] - 1
    for b in prange(B):
        if seq_starts[b + 1] > seq_starts[b]:
            out[b, :] = hidden[seq_starts[b], :]
        else:  # a text with no tokens pools to zeros
            out[b, :] = 0.0


POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


# ---------------------------------------------------------------- distances between embeddings
DISTANCE_TILE = 64  # rows of b per tile: 64 x 384 float32 = 96 KB, kept in L2 while every row of a passes


@njit(cache=True, nogil=True, fastmath=REORDER_SUMS)
def manhattan_distances(a, b, out):
    """out[i, j] = sum over k of |a[i, k] - b[j, k]|, summed in float64.  Twin: reference.manhattan_distances.

    a: [n, dim], b: [m, dim] -> out: [n, m] (the caller's array, the only large one). Serial and
    nogil: no thread pool is entered, so any thread may call it (minie5.SentenceTransformer.similarity).
    """
    n, dim = a.shape
    m = b.shape[0]
    for j0 in range(0, m, DISTANCE_TILE):
        j1 = min(m, j0 + DISTANCE_TILE)
        for i in range(n):
            for j in range(j0, j1):
                total = 0.0
                for k in range(dim):
                    total += abs(np.float64(a[i, k]) - np.float64(b[j, k]))
                out[i, j] = total


# ---------------------------------------------------------------- serial twins
# The same kernels compiled without parallel=True (prange runs as range), for batches of a
# few tokens (one short query), where waking Numba's thread pool for each of about 100
# kernel calls per forward pass costs more than the work (matmul_plan.py chooses). Each twin
# has its own name, so its disk-cache entry is its own.


def _serial_twin(kernel):
    function = kernel.py_func
    twin = types.FunctionType(function.__code__, function.__globals__, function.__name__ + "_serial",
                              function.__defaults__, function.__closure__)
    twin.__qualname__ = function.__qualname__ + "_serial"
    twin.__doc__ = f"{function.__name__}, compiled serial (see 'serial twins' in kernels.py)."
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
    return njit(cache=True, **options)(twin)


SERIAL = types.SimpleNamespace(
    embed=_serial_twin(embed), attention=_serial_twin(attention),  # no linear: see matmul_plan.SplitLinear
    attention_fused=_serial_twin(attention_fused),
    add_layer_norm=_serial_twin(add_layer_norm), gelu=_serial_twin(gelu),
    POOLERS={name: _serial_twin(pool) for name, pool in POOLERS.items()},
)
