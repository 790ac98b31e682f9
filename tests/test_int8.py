"""The int8 kernels (minie5/engine/kernels_int8.py) against their NumPy twins (minie5/reference_int8.py), bit for bit.

The integer sums are exact on both sides, and the float steps around them are
the same float32 operations in the same order, so every comparison here is
equality, not a tolerance: the integer part (the micro-kernel's int32 sums,
the rounded activations) and the float output alike. Shapes hit the edge
cases: K odd (a padded pair), N not a multiple of the 16-column panels, rows
not a multiple of the micro-kernel's tile, rows of zeros, the largest values
the int32 bound allows.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from minie5.engine import kernels_int8 as int8
from minie5 import reference, reference_int8
from minie5.engine.encoder import FastEncoder, pack as pack_ids
from minie5.engine.matmul_plan import plans
from minie5.reference_int8 import QuantizedMatrix, activation_bound

from helpers import REPO

rng = np.random.default_rng(20240531)
SHAPES = [(1, 1, 1), (1, 384, 384), (3, 7, 9), (5, 33, 17), (12, 384, 1536), (12, 1536, 384), (67, 130, 131),
          (200, 384, 1152)]


def weight(n, k, scale=None):
    return reference_int8.quantize(rng.standard_normal((n, k)).astype(np.float32) * (scale or 1 / np.sqrt(k)))


def activations(m, k):
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 30, (m, 1))).astype(np.float32)  # rows of varied scale
    x[0, :] = 0  # a row of zeros: scale 0, all values 0
    if m > 2:
        x[2, k // 2] = 300.0  # an outlier sets its row's scale
    return x


def test_activation_bound_keeps_int32_sums_exact():
    """K x B x 127 < 2^31 for every K, and B is the largest such bound within int16."""
    for K in (1, 7, 384, 1024, 1536, 3072, 4096, 16384):
        B = activation_bound(K)
        assert K * B * 127 < 2 ** 31 and B <= 32767
        assert B == 32767 or K * (B + 1) * 127 >= 2 ** 31
    assert activation_bound(384) == 32767 and activation_bound(1536) == 11008  # e5-small's, as documented


@pytest.mark.parametrize("m,k", [(1, 1), (4, 7), (9, 384), (33, 1536), (5, 130)])
def test_quantize_rows_matches_twin(m, k):
    x = activations(m, k)
    bound = activation_bound(k)
    for padded in (k, k + 1):  # the fast path's rows have an even length: the pad column must be 0
        xq = np.full((m, padded), 77, np.int16)
        scales = np.empty(m, np.float32)
        int8.quantize_rows(x, bound, xq, scales, 0, m)
        want_q, want_scales = reference_int8.quantize_activation_rows(x, bound)
        np.testing.assert_array_equal(xq[:, :k], want_q)
        np.testing.assert_array_equal(scales, want_scales)
        assert not xq[:, k:].any()
    assert not want_q[0].any() and want_scales[0] == 0  # the row of zeros
    assert m == 1 or np.abs(want_q).max() == bound


def test_pack_layout():
    """panels[p, 32 t + 2 c + e] = values[16 p + c, 2 t + e], zero past N and K."""
    values = rng.integers(-127, 128, (21, 9)).astype(np.int8)
    packed = int8.pack(values, np.ones(21, np.float32))
    assert packed.panels.shape == (2, 5 * 32) and packed.shape == (21, 9)
    for p in range(2):
        for t in range(5):
            for c in range(16):
                for e in range(2):
                    n, k = 16 * p + c, 2 * t + e
                    assert packed.panels[p, 32 * t + 2 * c + e] == (values[n, k] if n < 21 and k < 9 else 0)


@numba.njit
def _panel_sums(xq, panels, i, i_last, p, p_last):
    sums = np.zeros((int8.ROWS, int8.PANELS * int8.PANEL), np.int32)
    int8.panel_block(xq, panels, i, i_last, p, p_last, sums)
    return sums


@pytest.mark.parametrize("k", [2, 64, 385, 1536])
def test_panel_block_integer_sums_bit_exact(k):
    """The micro-kernel's int32 sums equal the exact integer product, at the largest values the bound allows."""
    m, n = 7, 45
    bound = activation_bound(k)
    xq = rng.integers(-bound, bound + 1, (m, k + k % 2)).astype(np.int16)
    xq[:, k:] = 0
    xq[1] = bound  # extreme rows and columns: |sum| close to K * B * 127 < 2^31
    xq[2] = -bound
    values = rng.integers(-127, 128, (n, k)).astype(np.int8)
    values[3] = 127
    packed = int8.pack(values, np.ones(n, np.float32))
    exact = xq[:, :k].astype(np.int64) @ values.astype(np.int64).T  # [m, n]
    assert np.abs(exact).max() < 2 ** 31
    last_panel = packed.panels.shape[0] - 1
    for i in range(0, m, int8.ROWS):
        for p in range(0, last_panel + 1, int8.PANELS):
            sums = _panel_sums(xq, packed.panels, i, m - 1, p, last_panel)
            rows = [min(i + r, m - 1) for r in range(int8.ROWS)]
            cols = [16 * min(p + q, last_panel) + c for q in range(int8.PANELS) for c in range(16)]
            want = np.zeros(sums.shape, np.int64)
            for a, row in enumerate(rows):
                for b, col in enumerate(cols):
                    want[a, b] = exact[row, col] if col < n else 0
            np.testing.assert_array_equal(sums, want)
    np.testing.assert_array_equal(reference_int8.integer_product(xq[:, :k], values), exact)  # the twin, too


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int8_linear_matches_twin(m, k, n):
    """Int8Linear (both splits, 1 and 2 threads) equals reference_int8.linear bit for bit."""
    x, w, bias = activations(m, k), weight(n, k), rng.standard_normal(n).astype(np.float32)
    want = reference_int8.linear(x, w, bias)
    packed = int8.prepare(w)
    for split in ("columns", "rows"):
        for threads in (1, 2):
            out = np.full((m, n), np.nan, np.float32)
            previous = numba.get_num_threads()
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            try:
                int8.Int8Linear(None, split)(x, packed, bias, out)
            finally:
                numba.set_num_threads(previous)
            np.testing.assert_array_equal(out, want, err_msg=f"split={split}, threads={threads}")
    float_out = reference.linear(x.astype(np.float64), w.dequantize().astype(np.float64), bias)
    assert np.abs(want - float_out).max() <= 2e-3 * (np.abs(float_out).max() + 1)  # and close to the float product


def test_linear_block_column_range():
    """A column range (multiple of 16) writes only its columns."""
    x, w = activations(10, 64), weight(80, 64)
    packed, bias = int8.prepare(w), np.zeros(80, np.float32)
    xq, scales = np.empty((10, 64), np.int16), np.empty(10, np.float32)
    int8.quantize_rows(x, activation_bound(64), xq, scales, 0, 10)
    out = np.zeros((10, 80), np.float32)
    int8.linear_block(xq, scales, packed.panels, packed.scales, bias, out, 3, 8, 16, 48)
    want = reference_int8.linear(x, w, bias)
    np.testing.assert_array_equal(out[3:8, 16:48], want[3:8, 16:48])
    out[3:8, 16:48] = 0
    assert not out.any()


def test_float_weight_goes_to_the_float_engine():
    calls = []
    engine = int8.Int8Linear(lambda *args: calls.append(args), "columns")
    x, w = activations(2, 8), np.ones((3, 8), np.float32)
    engine(x, int8.prepare(w), np.zeros(3, np.float32), np.empty((2, 3), np.float32))  # prepare keeps floats
    assert len(calls) == 1 and calls[0][1] is w


def test_fast_path_refuses_ablation_schemes():
    w = QuantizedMatrix(np.ones((2, 2), np.int8), np.ones(2, np.float32), activation_bits=8)
    with pytest.raises(ValueError, match="backend='reference'"):
        int8.prepare(w)


def test_int8_plans():
    for matmul in ("auto", "numba", "blas"):
        small, large = plans(matmul, "int8")
        assert isinstance(small.linear, int8.Int8Linear) and small.linear.split == "columns"
        assert isinstance(large.linear, int8.Int8Linear) and large.linear.split == "rows"
        assert small.linear.float_linear is not None


def _tiny_int8_weights(hidden=48, heads=4, layers=2, ffn=96, vocab=60):
    from minie5.checkpoint.config import ModelConfig
    from minie5.checkpoint.quantize_model import quantized_names
    from tiny_models import numpy_weights, tiny_config
    raw = tiny_config(hidden, heads, layers, ffn, vocab)
    config = ModelConfig(model_type="bert", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=ffn, hidden_act="gelu", layer_norm_eps=1e-12,
                         max_position_embeddings=raw["max_position_embeddings"], type_vocab_size=2, pad_token_id=0)
    w = {name: a for name, a in numpy_weights(raw, seed=7).items() if not name.startswith("pooler")}
    for name in quantized_names(config):
        w[name] = reference_int8.quantize(w[name])
    return config, w


@pytest.mark.parametrize("matmul", ["auto", "numba", "blas"])
def test_fast_int8_forward_matches_reference_int8(matmul):
    """The whole int8 forward pass, fast against reference, on a tiny random model (both token-count plans)."""
    config, w = _tiny_int8_weights()
    fast = FastEncoder(config, w, matmul=matmul, quantize="int8")
    for batch in ([[1, 5, 9, 2], [1, 7, 2]], [list(rng.integers(4, 60, 30)) for _ in range(4)]):  # < and >= 64 tokens
        ids, positions, seq_starts = pack_ids(batch)
        got = fast.forward_packed(ids, positions, seq_starts)
        for b, text in enumerate(batch):
            input_ids = np.array([text])
            want = reference.forward(config, w, input_ids, np.ones_like(input_ids))[0]
            # Float rounding differences (fast GELU, softmax, sums) can flip a rounded activation by one
            # step, which later layers carry on: the int8 paths agree less tightly than the float ones
            # (1e-5), about 2e-4 on these hidden states of size 1-3.
            np.testing.assert_allclose(got[seq_starts[b]:seq_starts[b + 1]], want, atol=1e-3)


AVX2_SCRIPT = textwrap.dedent("""
    import json, re
    import numpy as np
    from minie5.engine import kernels_int8 as int8
    from minie5 import reference_int8
    rng = np.random.default_rng(3)
    exact = True
    for m, k, n in [(1, 1, 1), (3, 7, 9), (12, 384, 1536), (67, 130, 131), (9, 1536, 384)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = reference_int8.quantize(rng.standard_normal((n, k)).astype(np.float32))
        bias = rng.standard_normal(n).astype(np.float32)
        for split in ("columns", "rows"):
            out = np.empty((m, n), np.float32)
            int8.Int8Linear(None, split)(x, int8.prepare(w), bias, out)
            exact &= bool(np.array_equal(out, reference_int8.linear(x, w, bias)))
    asm = list(int8.linear_block.inspect_asm().values())[0]
    counts = {op: len(re.findall(op, asm)) for op in ("vpdpwssd", "vpmaddwd", "zmm")}
    print(json.dumps({"exact": exact, "tile": [int8.ROWS, int8.PANELS], "counts": counts}))
""")


def _run_compiled_for(tmp_path, cpu_name=None, cpu_features=None) -> dict:
    """Run AVX2_SCRIPT in a fresh process with an empty Numba cache (inspect_asm needs a fresh compile)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "PYTHONPATH": str(REPO)}
    if cpu_name is not None:
        env.update(NUMBA_CPU_NAME=cpu_name, NUMBA_CPU_FEATURES=cpu_features)
    proc = subprocess.run([sys.executable, "-c", AVX2_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _host_has(flag: str) -> bool:
    try:
        return flag in open("/proc/cpuinfo").read().split()
    except OSError:
        return False


@pytest.mark.slow
def test_micro_kernel_compiles_to_vnni_on_this_cpu(tmp_path):
    """On this machine's CPU: exact, and vpdpwssd in the hot loop where the CPU has VNNI (pmaddwd otherwise)."""
    result = _run_compiled_for(tmp_path)
    print(f"int8 micro-kernel on this CPU: tile {result['tile']}, instructions {result['counts']}")
    assert result["exact"]
    if _host_has("avx512_vnni") or _host_has("avx_vnni"):
        assert result["counts"]["vpdpwssd"] >= int8.ROWS * int8.PANELS
    else:
        assert result["counts"]["vpmaddwd"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not _host_has("avx2"), reason="needs an x86 CPU with AVX2 to run AVX2 code")
def test_micro_kernel_compiled_for_an_avx2_only_cpu(tmp_path):
    """The same IR compiled for Haswell (AVX2, no AVX-512, no VNNI) runs exactly, on pmaddwd, without zmm."""
    result = _run_compiled_for(tmp_path, "haswell", "")
    print(f"int8 micro-kernel compiled for haswell: tile {result['tile']}, instructions {result['counts']}")
    assert result["exact"] and result["tile"] == [2, 2]
    assert result["counts"]["vpmaddwd"] > 0 and result["counts"]["vpdpwssd"] == 0 and result["counts"]["zmm"] == 0


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_int8_layer_loop_computes_what_the_step_by_step_path_computes(threads):
    """An int8 model's short batch through layer_loop (rows rounded by each thread, its columns multiplied)
    == the same forward step by step (Int8Linear per product), bit for bit."""
    from minie5.engine.layer_loop import LayerLoop
    config, w = _tiny_int8_weights()
    fast = FastEncoder(config, w, quantize="int8")
    packed = pack_ids([[1, 5, 9, 2], list(rng.integers(4, 60, 17)), [1, 2]])
    step_by_step = fast.small_plan._replace(layer_loop=None)
    fast.small_plan = step_by_step
    want = fast.forward_packed(*packed)
    fast.small_plan = step_by_step._replace(layer_loop=LayerLoop(threads))
    assert np.array_equal(fast.forward_packed(*packed), want)
