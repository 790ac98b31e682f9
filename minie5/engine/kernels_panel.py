"""The float32 matmul for a few rows: weights stored transposed, FMAs into register tiles.  Twin: reference.linear.

For one short text (12 tokens) a linear layer does 12 multiply-adds per
weight: the time is in reading the weights once and in the multiply-adds,
not in reuse. kernels.matmul_nt_tile computes dot products along K and adds
its vector lanes at the end; sgemm first packs the weight. This kernel does
neither. At load every float32 weight [N, K] is stored transposed (pack):
row k of the packed matrix holds input k's weights for all N output columns
(padded to a multiple of 16), so 16 consecutive output columns at one k are
one 512-bit vector. For a tile of ROWS rows x PANELS panels of 16 columns,
panel_block keeps ROWS x PANELS vectors of sums in registers and, per k,
loads PANELS weight vectors, copies each row's x[r, k] to all 16 lanes and
does ROWS x PANELS fused multiply-adds: the sums are the outputs themselves,
no lane adding at the end. Written in LLVM vector IR through
numba.extending.intrinsic (as kernels_int8.panel_block), it compiles to

    AVX-512 (ROWS x PANELS = 4 x 4):  4 vmovups zmm (weights), 16 vfmadd231ps zmm with the
                                      activation broadcast from memory ({1to16})
    AVX2 (2 x 2, 16 vector registers): each 16-lane vector is two ymm: 8 vfmadd ymm per k

checked with inspect_asm in tests/test_kernels.py. The weights of input
k + PREFETCH are prefetched while input k is multiplied (llvm.prefetch: a
hint, which never faults, past the matrix's end too): each k's 256 bytes lie
on a different 4 KB page when N >= 1024, where the hardware prefetcher stops. The same packed matrix is
the transposed weight sgemm reads in blas.BlasLinear (x @ W^T = x @ packed,
an NN product on a strided view), so packing replaces the weight in memory:
there is no second copy. A panel (16 columns of all K rows) is not contiguous
here, but each k's 16 x PANELS columns are: a [K, 64] strip is read row by
row, 256 bytes at a time, which the hardware prefetcher follows.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import ROW_BLOCK, njit
from .kernels_int8 import WIDE_VECTORS

LANES = 16  # output columns per vector: 16 float32 = 512 bits
# (ROWS, PANELS): rows x panels of 16 columns computed at once, one vector of sums each.
# 32 zmm registers: 16 sums + 4 weight vectors; with 16 ymm registers (AVX2) each 16-lane
# vector is two registers: 2 x 2 tiles (8 + 4).
ROWS, PANELS = (4, 4) if WIDE_VECTORS else (2, 2)
WIDTH = PANELS * LANES  # output columns per tile
PREFETCH = 16  # the weights of input k + PREFETCH are asked for (prefetched) while input k is multiplied


def padded_columns(n: int) -> int:
    """N rounded up to a multiple of 16: the row length of a packed matrix."""
    return -(-n // LANES) * LANES


def pack_into(weight: np.ndarray, packed: np.ndarray) -> None:
    """weight [N, K] float32 -> packed [K, padded_columns(N)]: packed[k, n] = weight[n, k], zeros past N."""
    N = weight.shape[0]
    packed[:, :N] = weight.T
    packed[:, N:] = 0.0


def pack(weight: np.ndarray) -> np.ndarray:
    """A linear layer's weight [N, K] (PyTorch's [out, in]) as the engines multiply by it: a read-only [N, K] view.

    The view is packed[:, :N].T of a packed [K, padded_columns(N)] array
    (pack_into): the same numbers, transposed in memory. reference.linear,
    sgemm and this module's kernels all take it as the [N, K] weight.
    """
    N, K = weight.shape
    packed = np.empty((K, padded_columns(N)), np.float32)
    pack_into(np.asarray(weight, np.float32), packed)
    packed.setflags(write=False)
    return packed[:, :N].T


def packed_or_none(weight) -> np.ndarray | None:
    """The [K, N] transposed matrix behind a pack() view (rows of a multiple of 16 floats), else None."""
    if not isinstance(weight, np.ndarray) or weight.ndim != 2 or weight.dtype != np.float32:
        return None
    transposed = weight.T
    row = transposed.strides[0] // 4
    if transposed.strides[1] != 4 or transposed.strides[0] % 4 or row % LANES or row < weight.shape[0]:
        return None
    return transposed


def packed_of(weight: np.ndarray) -> np.ndarray:
    """packed_or_none, raising ValueError for a weight that is not packed."""
    packed = packed_or_none(weight)
    if packed is None:
        raise ValueError(f"weight of shape {weight.shape} is not a packed float32 matrix (kernels_panel.pack)")
    return packed


def _make_panel_block(rows: int, panels: int):
    """The micro-kernel for one tile shape: an intrinsic writing rows x (panels * 16) float32 sums."""
    f32 = ir.FloatType()
    i32 = ir.IntType(32)
    intp = cgutils.intp_t
    vector = ir.VectorType(f32, LANES)
    splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
    fma_type = ir.FunctionType(vector, [vector, vector, vector])

    @intrinsic
    def panel_block(typingctx, x, packed, i, i_last, j, j_last, sums):
        """sums[r, 16 q + c] = sum over k of x[row r, k] * packed[k, column 16 q + c].  Twin: x @ packed.

        x: [M, K] float32 (unit column stride), packed: [K, >= N] float32
        (pack's transposed matrix, unit column stride, its rows padded to a
        multiple of 16), sums: [rows, panels * 16] C-contiguous. Row r is
        min(i + r, i_last); panel q starts at column min(j + 16 q, j_last):
        a tile past the last row or panel repeats it (computed, not written out).
        Per k, in order: sums += x[r, k] * packed[k, ...] as fused multiply-adds.
        """
        def float_array(a, layouts):
            return isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2 and a.layout in layouts
        if not (float_array(x, "CA") and float_array(packed, "CA") and float_array(sums, "C")):
            return None
        signature = types.none(x, packed, types.intp, types.intp, types.intp, types.intp, sums)

        def codegen(context, builder, sig, args):
            x_array, w_array, sums_array = (context.make_array(sig.args[n])(context, builder, args[n])
                                            for n in (0, 1, 6))
            i, i_last, j, j_last = args[2:6]

            def addresses(array, first, last, count, step, scale):  # byte addresses of rows / columns
                base = builder.ptrtoint(array.data, intp)
                out = []
                for t in range(count):
                    index = builder.add(first, ir.Constant(intp, t * step))
                    index = builder.select(builder.icmp_signed("<", index, last), index, last)
                    out.append(builder.add(base, builder.mul(index, scale)))
                return out

            fma = cgutils.get_or_insert_function(builder.module, fma_type, "llvm.fma.v16f32")
            prefetch = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
                "llvm.prefetch.p0")
            x_stride = cgutils.unpack_tuple(builder, x_array.strides, 2)[0]  # bytes per row of x
            w_stride = cgutils.unpack_tuple(builder, w_array.strides, 2)[0]  # bytes per k of packed
            x_rows = addresses(x_array, i, i_last, rows, 1, x_stride)
            w_columns = addresses(w_array, j, j_last, panels, LANES, ir.Constant(intp, 4))
            depth = cgutils.unpack_tuple(builder, x_array.shape, 2)[1]  # K
            accumulators = [cgutils.alloca_once_value(builder, ir.Constant(vector, None))
                            for _ in range(rows * panels)]
            with cgutils.for_range(builder, depth) as loop:
                k = loop.index
                w_offset, x_offset = builder.mul(k, w_stride), builder.shl(k, ir.Constant(intp, 2))
                ws = [builder.load(builder.inttoptr(builder.add(column, w_offset), vector.as_pointer()), align=4)
                      for column in w_columns]  # [panels] x <16 x float>: 16 columns' weights for input k
                ahead = builder.add(w_offset, builder.mul(w_stride, ir.Constant(intp, PREFETCH)))
                for column in w_columns:  # the same columns PREFETCH k later: a read, kept in all caches
                    builder.call(prefetch, [builder.inttoptr(builder.add(column, ahead), ir.IntType(8).as_pointer()),
                                            ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
                for r in range(rows):
                    value = builder.load(builder.inttoptr(builder.add(x_rows[r], x_offset), f32.as_pointer()))
                    spread = builder.shuffle_vector(builder.insert_element(ir.Constant(vector, None), value,
                                                                           ir.Constant(i32, 0)),
                                                    ir.Constant(vector, None), splat)  # x[r, k] in all 16 lanes
                    for q in range(panels):
                        slot = accumulators[r * panels + q]
                        builder.store(builder.call(fma, [spread, ws[q], builder.load(slot)]), slot)
            base = builder.ptrtoint(sums_array.data, intp)
            for n, slot in enumerate(accumulators):  # row r, panel q -> sums[r, 16 q : 16 q + 16]
                target = builder.inttoptr(builder.add(base, ir.Constant(intp, 4 * LANES * n)), vector.as_pointer())
                builder.store(builder.load(slot), target, align=4)
            return context.get_dummy_value()

        return signature, codegen

    return panel_block


panel_block = _make_panel_block(ROWS, PANELS)


@njit(cache=True, nogil=True)
def linear_panels(x, packed, bias, out, j0, j1):
    """out[:, j0:j1] = x @ packed[:, j0:j1] + bias[j0:j1], on the calling thread.  Twin: reference.linear.

    x: [M, K] float32 (unit column stride), packed: pack's [K, N] transposed
    weight (packed_of), bias: [N] -> out: [M, N]; j0 a multiple of 16. For each
    strip of WIDTH columns (its weights, K x 64 floats, stay in L2 cache) all
    rows in tiles of ROWS, each one panel_block call; a row's result does not
    depend on the other rows or on the column range.
    """
    M = x.shape[0]
    last_column = (packed.strides[0] // 4) - LANES  # the last panel's first column (rows padded to 16)
    sums = np.empty((ROWS, WIDTH), np.float32)
    for j in range(j0, j1, WIDTH):
        cols = min(WIDTH, j1 - j)
        for s0 in range(0, M, ROW_BLOCK):
            s1 = min(s0 + ROW_BLOCK, M)
            for i in range(s0, s1, ROWS):
                panel_block(x, packed, i, s1 - 1, j, last_column, sums)
                for r in range(min(ROWS, s1 - i)):
                    row_sums, row_out, b = sums[r], out[i + r, j:j + cols], bias[j:j + cols]
                    for c in range(cols):
                        row_out[c] = row_sums[c] + b[c]
