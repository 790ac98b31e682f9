"""int8 quantisation in plain NumPy: the textbook of the int8 path, and the twin of engine/kernels_int8.py's kernels.

An int8 model keeps the float encoder of reference.py and changes one thing:
the linear layers (and the word-embedding table) store int8 values with one
float32 scale per row.

    weight W [N, K]  ->  Wq [N, K] int8 in [-127, 127], w_scale [N]:   W[n] ~ w_scale[n] * Wq[n]

At run time each token row of a linear layer's input is rounded the same way,
to int16 with its own scale, and the product is computed on the integers:

    x [M, K]         ->  xq [M, K] int16 in [-B, B], x_scale [M]:      x[m] ~ x_scale[m] * xq[m]
    acc[m, n] = sum_k xq[m, k] * Wq[n, k]                              exact, in int32
    out[m, n] = float32(acc[m, n]) * (x_scale[m] * w_scale[n]) + bias[n]

The bound B keeps every int32 sum exact: |acc| <= K * B * 127 must stay below
2^31, so B = activation_bound(K) = min(32767, floor((2^31 - 1) / (127 K))).
For e5-small: B = 32767 (int16's whole range) for the K = 384 products and
B = 11008 (about 13.4 bits) for the FFN's down projection, K = 1536.

Why int16 activations (not int8): the integer multiply-add instructions the
fast path uses (pmaddwd, VNNI's vpdpwssd) multiply int16 pairs anyway, and
int16 rounding of the activations costs almost nothing in accuracy, where int8
rounding costs most of the int8 model's error (docs/performance.md, "int8").

Everything else (attention's products, softmax, LayerNorm, GELU, pooling)
stays float32, exactly as in reference.py. reference.py itself does not
change: a QuantizedMatrix stands in for the float matrix, so its
`x @ weight.T + bias` runs `linear` below, and the embedding's
`table[ids]` gives dequantised rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_BOUND = 127  # int8 values of weights and word embeddings lie in [-127, 127] (symmetric: no -128)
ACTIVATION_BITS = (16, 8)  # int16 is what minie5 runs; 8 is for the ablation (docs/performance.md)
ACTIVATION_SCALES = ("row", "tensor")  # one scale per token row (what minie5 runs), or one per product


def activation_bound(K: int, bits: int = 16) -> int:
    """The largest |int| a rounded activation may take in a product over K terms.

    int16: min(32767, (2^31 - 1) // (127 K)), so that K x B x 127 < 2^31 and
    the int32 sum of K products can never overflow (e5-small: 32767 for
    K = 384, 11008 for K = 1536). int8 (the ablation): 127.
    """
    if bits == 8:
        return WEIGHT_BOUND
    return min(32767, (2 ** 31 - 1) // (K * WEIGHT_BOUND))


def quantize_weight_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [N, K] float -> (values [N, K] int8, scales [N] float32), one symmetric scale per row.

    scale = max|w[n]| / 127, values = round(w[n] / scale) (half to even). A
    row of zeros gets scale 0 and values 0. Used for the linear layers (a row
    is an output channel) and the word-embedding table (a row is a token).
    """
    w = np.asarray(w, dtype=np.float32)
    peak = np.abs(w).max(axis=-1)  # [N]
    scales = (peak / np.float32(WEIGHT_BOUND)).astype(np.float32)  # [N]
    safe = np.where(scales > 0, scales, np.float32(1))  # a zero row divides by 1: its values are 0 anyway
    values = np.clip(np.rint(w / safe[:, None]), -WEIGHT_BOUND, WEIGHT_BOUND).astype(np.int8)  # [N, K]
    return values, scales


def quantize_activation_rows(x: np.ndarray, bound: int, per: str = "row") -> tuple[np.ndarray, np.ndarray]:
    """x [M, K] float32 -> (xq [M, K] int16 in [-bound, bound], scales [M] float32).

    Twin: engine.kernels_int8.quantize_rows.

    Each row's largest |value| maps to bound: scale = peak / bound, and
    xq = round(x * (bound / peak)), half to even. Every step is one float32
    operation, so the Numba twin gives the same integers bit for bit. A row of
    zeros gets scale 0 and xq 0. per="tensor" (the ablation) uses one peak for
    all rows: the largest |value| of the whole input.
    """
    x = np.asarray(x, dtype=np.float32)
    peak = np.abs(x).max(axis=-1)  # [M]
    if per == "tensor":
        peak = np.full_like(peak, peak.max(initial=0))
    scales = peak / np.float32(bound)  # [M] float32
    inverse = np.float32(bound) / np.where(peak > 0, peak, np.float32(np.inf))  # [M]; 0 for a row of zeros
    xq = np.clip(np.rint(x * inverse[:, None]), -bound, bound).astype(np.int16)  # [M, K]
    return xq, scales


@dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """An int8 matrix with one float32 scale per row: row r ~ scales[r] * values[r].

    values: [N, K] int8 (may be memory-mapped from the file); scales: [N] float32.
    It is used as the float matrix it replaces. As a linear layer's weight,
    x @ weight.T is `product` (below): the product on integers, the input rows
    rounded to `activation_bits` with one scale per row ("row") or per call
    ("tensor"); minie5 runs 16 and "row", the other settings exist for the
    ablation (scripts/int8_ablation.py) and only the reference path runs them.
    As the word-embedding table, indexing gives float32 rows: table[ids] -> [..., K].
    """
    values: np.ndarray
    scales: np.ndarray
    activation_bits: int = 16
    activation_scale: str = "row"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def T(self) -> Transposed:
        """The transpose, [K, N], as reference.linear multiplies by it: x @ weight.T is product(x, weight)."""
        return Transposed(self)

    def __getitem__(self, rows) -> np.ndarray:
        """Dequantised rows: values[rows] * scales[rows] as float32.  Twin: engine.encoder.WordRows on an int8 table."""
        return dequantize_rows(self.values[rows], self.scales[rows])

    def dequantize(self) -> np.ndarray:
        """The whole matrix as float32 [N, K]."""
        return dequantize_rows(self.values, self.scales)


@dataclass(frozen=True, eq=False)
class Transposed:
    """QuantizedMatrix.T: x [..., K] @ it -> [..., N] float32, the int8 product (`product`)."""
    matrix: QuantizedMatrix
    __array_ufunc__ = None  # numpy's x @ self then defers to __rmatmul__ (instead of converting self to an array)

    def __rmatmul__(self, x: np.ndarray) -> np.ndarray:
        return product(x, self.matrix)


def dequantize_rows(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """values [..., K] int8, scales [...] float32 -> float32 [..., K] = values * scale, row by row."""
    return values.astype(np.float32) * scales[..., None]


def quantize(w: np.ndarray) -> QuantizedMatrix:
    """A float matrix [N, K] -> QuantizedMatrix (int8 values, one scale per row)."""
    return QuantizedMatrix(*quantize_weight_rows(w))


def integer_product(xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """xq [M, K] int16 @ wq [N, K]^T int8 -> acc [M, N] int32, exactly.  Twin: engine.kernels_int8.panel_block.

    Computed as a float64 product (BLAS: fast): every term and partial sum is
    an integer of magnitude below 2^31 < 2^53, so float64 holds each exactly.
    """
    acc = xq.astype(np.float64) @ wq.astype(np.float64).T  # [M, N], exact integers
    return acc.astype(np.int32)


def product(x: np.ndarray, weight: QuantizedMatrix) -> np.ndarray:
    """x [..., K] float32 -> [..., N] float32: x @ W^T with an int8 weight (what x @ weight.T runs).

        xq, x_scale = quantize_activation_rows(x)        [M, K] int16, [M]
        acc = xq @ Wq^T                                   [M, N] int32 (exact)
        out = float32(acc) * (x_scale w_scale^T)          [M, N] float32
    """
    K = x.shape[-1]
    rows = np.asarray(x, dtype=np.float32).reshape(-1, K)  # [M, K]
    bound = activation_bound(K, weight.activation_bits)
    xq, x_scales = quantize_activation_rows(rows, bound, weight.activation_scale)  # [M, K], [M]
    acc = integer_product(xq, weight.values)  # [M, N] int32
    out = acc.astype(np.float32) * (x_scales[:, None] * weight.scales[None, :])  # [M, N]
    return out.reshape(*x.shape[:-1], weight.shape[0])


def linear(x: np.ndarray, weight: QuantizedMatrix, bias: np.ndarray) -> np.ndarray:
    """x [..., K] -> [..., N] float32: reference.linear's x @ weight.T + bias on an int8 weight.

    Twin: engine.kernels_int8.Int8Linear."""
    return x @ weight.T + bias
