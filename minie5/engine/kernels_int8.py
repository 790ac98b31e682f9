"""The int8 path's Numba kernels: int16 activations times int8 weights.  Twins: reference_int8.py.

An int8 model's linear layer (reference_int8.linear has the maths) runs as

    quantize_rows   x [M, K] float32 -> xq [M, K] int16, x_scales [M]          one pass over x
    linear_block    acc = xq @ W^T in int32 (panel_block), then                 the time is here
                    out = float32(acc) * (x_scales w_scales^T) + bias

on weights repacked at load (pack: PackedMatrix), and Int8Linear splits that
over threads, as matmul_plan.SplitLinear and blas.BlasLinear do for float weights.
The integer sums are exact, so every kernel equals its NumPy twin bit for bit,
float output included (no fastmath here: nothing is reordered or fused), and a
row's result never depends on the batch, the thread count or where the row sits.

The micro-kernel, panel_block, is written in LLVM vector IR through
numba.extending.intrinsic, in the layout of ONNX Runtime's MLAS kernels: the
weight is stored in panels of 16 output columns, each pair of k side by side
(pack), so one vector holds 16 columns x 2 weights; a row's two activations
for that pair are copied to all 16 lanes; "multiply int16 pairs and add
adjacent products" then gives 16 columns' partial sums at once, in 16 int32
lanes that are the outputs themselves: no adding of lanes at the end. That
operation is pmaddwd, and LLVM's x86 back end selects it from the IR (widen,
multiply, add even and odd lanes), fused with the accumulating add into VNNI's
vpdpwssd where the CPU has VNNI. Checked with inspect_asm (tests/test_int8.py);
the loop over k pairs compiles to, per pair:

    AVX-512 + VNNI (ROWS x PANELS = 4 x 4):  4 vpmovsxbw (weights to int16), 4 vpbroadcastd
                                             (activations), 16 vpdpwssd zmm: 512 multiply-adds
    AVX2 only (2 x 2, 16 vector registers):  4 vpmovsxbw, 2 vpbroadcastd, 8 vpmaddwd + 8 vpaddd ymm

The IR names no x86 instruction, so LLVM compiles it for whatever CPU Numba
targets (no VNNI, no AVX-512, not x86 at all); only the tile shape is chosen,
at import, from the CPU features Numba compiles for. tests/test_int8.py runs
the kernels compiled for an AVX2-only CPU too (NUMBA_CPU_NAME=haswell).
Why not a plain Numba loop: an int16 x int8 dot-product loop does vectorise,
but LLVM sizes it for int32 lanes and emits pmaddwd on 128- and 256-bit halves,
with lane sums after the loop, at a sixth of this kernel's speed (docs/performance.md,
"int8"); a register tile of scalar sums does not vectorise at all (issue 17).
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import COL_BLOCK, ROW_BLOCK, njit
from ..reference_int8 import QuantizedMatrix, activation_bound
from .workers import POOL


def _cpu_features() -> str:
    """The CPU features Numba compiles for: NUMBA_CPU_FEATURES if set, else the host's."""
    if numba.config.CPU_FEATURES is not None:
        return numba.config.CPU_FEATURES
    from llvmlite import binding
    return binding.get_host_cpu_features().flatten()


PANEL = 16  # output columns per weight panel: one 512-bit vector of int32 sums
# (ROWS, PANELS): the micro-kernel's tile, ROWS rows x PANELS panels of the output, one accumulator each.
# 512-bit integer vectors (AVX-512BW) come with 32 vector registers: 16 accumulators + 4 weight vectors
# fit. Otherwise each accumulator takes two 256-bit registers of 16: 2 x 2 tiles.
WIDE_VECTORS = "+avx512bw" in _cpu_features().split(",")
ROWS, PANELS = (4, 4) if WIDE_VECTORS else (2, 2)


class PackedMatrix(NamedTuple):
    """An int8 weight in the micro-kernel's layout (pack()): what Int8Linear multiplies by.

    panels: [ceil(N / 16), K2 * 32] int8, K2 = ceil(K / 2): panel p holds columns
    16p .. 16p + 15 of the output, as 16 (column) x 2 (k) int8 for each pair of
    k in turn, zero-padded past N and K. scales: [N] float32. shape: (N, K).
    """
    panels: np.ndarray
    scales: np.ndarray
    shape: tuple


def pack(values: np.ndarray, scales: np.ndarray) -> PackedMatrix:
    """values [N, K] int8 (a weight, [out, in]) -> PackedMatrix, the layout the micro-kernel reads.

    panels[p, 32 t + 2 c + e] = values[16 p + c, 2 t + e]: for each pair of k,
    the 16 columns' two weights side by side, as pmaddwd pairs them.
    """
    N, K = values.shape
    n_panels, pairs = -(-N // PANEL), -(-K // 2)
    padded = np.zeros((n_panels * PANEL, 2 * pairs), np.int8)
    padded[:N, :K] = values
    panels = padded.reshape(n_panels, PANEL, pairs, 2).transpose(0, 2, 1, 3).reshape(n_panels, pairs * 2 * PANEL)
    panels = np.ascontiguousarray(panels)
    panels.setflags(write=False)
    return PackedMatrix(panels, scales, (N, K))


def _make_panel_block(rows: int, panels: int):
    """The micro-kernel for one tile shape: an intrinsic writing rows x (panels * 16) int32 sums."""
    i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
    intp = cgutils.intp_t
    sums_type = ir.VectorType(i32, PANEL)  # one accumulator: 16 columns
    wide = ir.VectorType(i32, 2 * PANEL)  # 32 int16 values widened to int32, before pairing
    even = ir.Constant(ir.VectorType(i32, PANEL), list(range(0, 2 * PANEL, 2)))
    odd = ir.Constant(ir.VectorType(i32, PANEL), list(range(1, 2 * PANEL, 2)))
    splat = ir.Constant(ir.VectorType(i32, PANEL), [0] * PANEL)

    @intrinsic
    def panel_block(typingctx, xq, weight_panels, i, i_last, p, p_last, sums):
        """sums[r, 16 q + c] = xq[row r] . weight column 16 (p + q) + c, as int32.  Twin: integer_product.

        xq: [M, 2 K2] int16 (rows padded with a 0 to an even length),
        weight_panels: PackedMatrix.panels [panels, K2 * 32] int8, sums:
        [rows, panels * 16] int32, all C-contiguous. Row r is min(i + r,
        i_last), panel q is min(p + q, p_last): a tile that runs past the last
        row or panel repeats it (computed, not written out by the caller).
        The int32 sums are exact, never flushed: callers round xq to
        |xq| <= activation_bound(K) = min(32767, (2^31 - 1) // (127 K)), so
        |sum| <= K x bound x 127 < 2^31 (e5-small: 32767 at K = 384, 11008 at K = 1536).
        """
        def c_array(a, dtype):
            return isinstance(a, types.Array) and a.dtype == dtype and a.ndim == 2 and a.layout == "C"
        if not (c_array(xq, types.int16) and c_array(weight_panels, types.int8) and c_array(sums, types.int32)):
            return None
        signature = types.none(xq, weight_panels, types.intp, types.intp, types.intp, types.intp, sums)

        def codegen(context, builder, sig, args):
            x_array, w_array, sums_array = (context.make_array(sig.args[n])(context, builder, args[n])
                                            for n in (0, 1, 6))
            i, i_last, p, p_last = args[2:6]

            def row_addresses(array, first, last, count):  # byte addresses of rows min(first + t, last)
                base = builder.ptrtoint(array.data, intp)
                stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]  # bytes per row
                out = []
                for t in range(count):
                    index = builder.add(first, ir.Constant(intp, t))
                    index = builder.select(builder.icmp_signed("<", index, last), index, last)
                    out.append(builder.add(base, builder.mul(index, stride)))
                return out

            x_rows = row_addresses(x_array, i, i_last, rows)
            w_rows = row_addresses(w_array, p, p_last, panels)
            pairs = builder.sdiv(cgutils.unpack_tuple(builder, x_array.shape, 2)[1], ir.Constant(intp, 2))
            accumulators = [cgutils.alloca_once_value(builder, ir.Constant(sums_type, None))
                            for _ in range(rows * panels)]
            with cgutils.for_range(builder, pairs) as loop:
                t = loop.index  # the pair of k: 2t, 2t + 1
                # each panel's 16 columns x 2 weights, widened: [panels] x <32 x i32>
                ws = [builder.sext(builder.load(builder.inttoptr(builder.add(row, builder.shl(t, ir.Constant(intp, 5))),
                                                                 ir.VectorType(i8, 2 * PANEL).as_pointer()), align=1),
                                   wide) for row in w_rows]
                for r in range(rows):
                    # the row's two activations (one 32-bit load) copied to all 16 lanes, widened
                    pair = builder.load(builder.inttoptr(builder.add(x_rows[r], builder.shl(t, ir.Constant(intp, 2))),
                                                         i32.as_pointer()), align=2)
                    spread = builder.shuffle_vector(builder.insert_element(ir.Constant(sums_type, None), pair,
                                                                           ir.Constant(i32, 0)),
                                                    ir.Constant(sums_type, None), splat)
                    xs = builder.sext(builder.bitcast(spread, ir.VectorType(i16, 2 * PANEL)), wide)
                    for q in range(panels):
                        products = builder.mul(xs, ws[q])  # <32 x i32>, each |product| < 2^22
                        pairs_summed = builder.add(builder.shuffle_vector(products, products, even),
                                                   builder.shuffle_vector(products, products, odd))  # pmaddwd
                        slot = accumulators[r * panels + q]
                        builder.store(builder.add(builder.load(slot), pairs_summed), slot)  # + the add: vpdpwssd
            base = builder.ptrtoint(sums_array.data, intp)
            for n, slot in enumerate(accumulators):  # row r, panel q -> sums[r, 16 q : 16 q + 16]
                target = builder.inttoptr(builder.add(base, ir.Constant(intp, 4 * PANEL * n)), sums_type.as_pointer())
                builder.store(builder.load(slot), target, align=4)
            return context.get_dummy_value()

        return signature, codegen

    return panel_block


panel_block = _make_panel_block(ROWS, PANELS)


@njit(cache=True, nogil=True)
def quantize_rows(x, bound, xq, x_scales, r0, r1):
    """Rows r0 .. r1 of x rounded to int16: xq[r] = round(x[r] * bound / peak), x_scales[r] = peak / bound.

    Twin: reference_int8.quantize_activation_rows. x: [M, K] float32,
    C-contiguous -> xq: [M, K2] int16 in [-bound, bound] (K2 >= K: columns
    past K are set to 0), x_scales: [M] float32 (peak: the row's largest
    |value|; a row of zeros gets 0 and 0). Rounding half to even, as np.rint.
    The peak is found on the float bits read as integers (|x| is x's bits
    without the sign bit, and for non-negative floats the bits order like the
    values): an integer maximum, which LLVM vectorises, where a float maximum
    stays one scalar chain.
    """
    K = x.shape[1]
    b = np.float32(bound)
    peak_bits = np.empty(1, np.int32)
    peak_value = peak_bits.view(np.float32)  # the same 4 bytes, read as a float
    for r in range(r0, r1):
        bits = x[r].view(np.int32)  # [K]
        top = np.int32(0)
        for k in range(K):
            top = max(top, bits[k] & np.int32(0x7FFFFFFF))
        peak_bits[0] = top
        peak = peak_value[0]
        x_scales[r] = peak / b
        inverse = b / peak if peak > 0 else np.float32(0.0)
        for k in range(K):
            xq[r, k] = np.int16(min(max(np.rint(x[r, k] * inverse), -b), b))
        for k in range(K, xq.shape[1]):
            xq[r, k] = 0


@njit(cache=True, nogil=True)
def linear_block(xq, x_scales, weight_panels, w_scales, bias, out, i0, i1, j0, j1):
    """out[i0:i1, j0:j1] = float32(xq @ W^T) * (x_scales w_scales^T) + bias, on the calling thread.

    Twin: reference_int8.linear after its rounding. xq: [M, K2] int16 (from
    quantize_rows), x_scales: [M], weight_panels: PackedMatrix.panels of W
    [N, K], w_scales: [N], bias: [N] -> out: [M, N] float32; j0 a multiple of
    16. Tiles of ROW_BLOCK x COL_BLOCK (their activations and weights stay in
    L2), each cut into micro-kernel calls of ROWS x PANELS * 16.
    """
    last_panel = weight_panels.shape[0] - 1
    sums = np.empty((ROWS, PANELS * PANEL), np.int32)
    for t0 in range(j0, j1, COL_BLOCK):
        t1 = min(t0 + COL_BLOCK, j1)
        for s0 in range(i0, i1, ROW_BLOCK):
            s1 = min(s0 + ROW_BLOCK, i1)
            for i in range(s0, s1, ROWS):
                rows = min(ROWS, s1 - i)
                for j in range(t0, t1, PANELS * PANEL):
                    panel_block(xq, weight_panels, i, s1 - 1, j // PANEL, last_panel, sums)
                    cols = min(PANELS * PANEL, t1 - j)
                    for r in range(rows):
                        scale = x_scales[i + r]
                        row_sums, row_out = sums[r], out[i + r, j:j + cols]
                        w, b = w_scales[j:j + cols], bias[j:j + cols]
                        for c in range(cols):
                            row_out[c] = np.float32(row_sums[c]) * (scale * w[c]) + b[c]


@njit(cache=True, nogil=True)
def quantize_and_multiply(x, bound, xq, x_scales, weight_panels, w_scales, bias, out, i0, i1):
    """Rows i0 .. i1 whole: quantize_rows, then linear_block over every column (Int8Linear's row split)."""
    quantize_rows(x, bound, xq, x_scales, i0, i1)
    linear_block(xq, x_scales, weight_panels, w_scales, bias, out, i0, i1, 0, out.shape[1])


def prepare(weight):
    """A linear layer's weight as the fast path multiplies it: QuantizedMatrix -> PackedMatrix; float as it is."""
    if not isinstance(weight, QuantizedMatrix):
        return weight
    if weight.activation_bits != 16 or weight.activation_scale != "row":
        raise ValueError(f"the fast path rounds activations to int16, one scale per row; activation_bits="
                         f"{weight.activation_bits}, activation_scale={weight.activation_scale!r} run on "
                         f"backend='reference' only")
    return pack(weight.values, weight.scales)


class Int8Linear:
    """out = x @ weight.T + bias where weight is a PackedMatrix: the int8 engine of matmul_plan.py.

    x: [M, K] float32, weight: [N, K] int8 in panels + [N] scales, bias: [N]
    -> out: [M, N]. Twin: reference_int8.linear. A weight left in float32
    goes to float_linear (the plan's float engine). split="columns" (a few
    rows: one short query) rounds x once on the calling thread, then gives
    each of numba.get_num_threads() threads a range of output columns, i.e.
    its own slice of the weight to read; split="rows" (a batch) gives each
    thread a range of rows to round and multiply by the whole weight. Threads:
    workers.POOL; the kernels release the GIL.
    """

    def __init__(self, float_linear, split: str = "columns"):
        if split not in ("columns", "rows"):
            raise ValueError(f"split must be 'columns' or 'rows', got {split!r}")
        self.float_linear = float_linear
        self.split = split
        self._xq = np.empty(0, np.int16)  # scratch for the rounded activations, grown on demand
        self._x_scales = np.empty(0, np.float32)

    def __call__(self, x, weight, bias, out) -> None:
        if not isinstance(weight, PackedMatrix):
            self.float_linear(x, weight, bias, out)
            return
        M, K = x.shape
        N = weight.shape[0]
        K2 = 2 * weight.panels.shape[1] // (2 * PANEL)  # K rounded up to even
        if self._xq.size < M * K2:
            self._xq = np.empty(M * K2, np.int16)
        if self._x_scales.size < M:
            self._x_scales = np.empty(M, np.float32)
        xq, x_scales = self._xq[:M * K2].reshape(M, K2), self._x_scales[:M]
        bound = activation_bound(K)
        threads = numba.get_num_threads()
        if self.split == "rows" and M >= 2 * ROWS * threads:
            cuts = [min(M, (M * t // threads + ROWS - 1) // ROWS * ROWS) for t in range(threads)] + [M]
            POOL.run(quantize_and_multiply, [(x, bound, xq, x_scales, weight.panels, weight.scales, bias, out,
                                              cuts[t], cuts[t + 1]) for t in range(threads) if cuts[t + 1] > cuts[t]])
            return
        quantize_rows(x, bound, xq, x_scales, 0, M)
        width = PANELS * PANEL  # column cuts at micro-kernel boundaries (multiples of 16 are required)
        cuts = [min(N, (N * t // threads + width - 1) // width * width) for t in range(threads)] + [N]
        POOL.run(linear_block, [(xq, x_scales, weight.panels, weight.scales, bias, out, 0, M, cuts[t], cuts[t + 1])
                                for t in range(threads) if cuts[t + 1] > cuts[t]])
