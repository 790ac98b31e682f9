"""Each Numba kernel against its NumPy twin in reference.py, on random inputs.

Sizes are chosen to hit the kernels' edge cases: matmul shapes that are not
multiples of the 4 x 4 micro-kernel or the 64 x 64 tiles, single rows, texts of
one token, heads of odd width.
"""
import math

import numpy as np
import pytest

from minie5.engine import kernels
from minie5 import reference
from minie5.checkpoint.config import ModelConfig
from minie5.engine.encoder import FastEncoder, pack
from minie5.engine.matmul_plan import SERIAL_TOKENS, FusedAttention, NumbaAttention

rng = np.random.default_rng(1234)


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def readonly(a):
    a = np.ascontiguousarray(a)
    a.setflags(write=False)  # weights reach the kernels read-only (memory-mapped)
    return a


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 384, 384), (3, 4, 4), (5, 7, 9), (12, 384, 1536),
                                   (64, 64, 64), (67, 130, 131), (200, 1536, 384)])
def test_linear_matches_reference(m, k, n):
    x, w, b = randn(m, k), readonly(randn(n, k, scale=1 / math.sqrt(k))), readonly(randn(n))
    out = np.empty((m, n), np.float32)
    kernels.linear(x, w, b, out)
    expected = reference.linear(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("m", [2, 5, 7, 13, 70, 131])
def test_linear_row_result_does_not_depend_on_its_row(m):
    """One row of x gives the same output bits at every row index (full 4-row strips and the last,
    partial strip alike), in kernels.linear and in linear_columns, with 1 or 2 Numba threads:
    what makes a duplicated text's vector identical on the Numba path (docs/behaviour.md)."""
    k, n = 384, 388  # 388: leftover columns past the 4 x 4 blocks too
    w, b = readonly(randn(n, k, scale=1 / math.sqrt(k))), readonly(randn(n))
    x = randn(m, k)
    x[:] = randn(1, k)  # every row the same
    outputs = []
    for threads in (1, 2):
        out = np.empty((m, n), np.float32)
        with_numba_threads(threads, kernels.linear, x, w, b, out)
        outputs.append(out)
    out = np.empty((m, n), np.float32)
    kernels.linear_columns(x, w, b, out, 0, n)
    outputs.append(out)
    for out in outputs:
        assert all(np.array_equal(out[i], outputs[0][0]) for i in range(m))
    np.testing.assert_allclose(outputs[0][0], reference.linear(x[0].astype(np.float64), w.astype(np.float64), b),
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 4, 32), (5, 6, 7), (40, 40, 32), (17, 32, 129)])
def test_matmul_tile_matches_numpy(m, n, k):
    """The micro-kernel on a whole matrix and on one sub-tile, against float64 numpy."""
    a, b = randn(m, k), randn(n, k)
    out = np.zeros((m, n), np.float32)
    kernels.matmul_nt_tile(a, b, out, 0, m, 0, n)
    expected = a.astype(np.float64) @ b.astype(np.float64).T
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-5)
    part = np.zeros((m, n), np.float32)
    kernels.matmul_nt_tile(a, b, part, m // 2, m, n // 3, n)  # only that tile is written
    np.testing.assert_allclose(part[m // 2:, n // 3:], expected[m // 2:, n // 3:], atol=1e-4, rtol=1e-5)
    assert not part[:m // 2].any() and not part[:, :n // 3].any()


def test_softmax_rows_matches_exact_softmax():
    scores = np.concatenate([randn(6, 50, scale=5), randn(2, 50, scale=60)])  # wide ranges: tiny weights
    scores[0, :3] = [80.0, -80.0, 0.0]
    expected = np.exp(scores.astype(np.float64) - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    got = scores.copy()
    kernels.softmax_rows(got, np.float32(1.0), np.empty(50, np.int32))
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-12)  # ~1 ulp on weights that matter
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_rows_applies_the_scale():
    """softmax(scale * x): the scale the BLAS attention leaves to the softmax (raw q . k scores)."""
    scale = np.float32(1.0 / np.sqrt(32.0))
    scores = randn(7, 40, scale=30)
    expected = scores.astype(np.float64) * float(scale)
    expected = np.exp(expected - expected.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    got = scores.copy()
    kernels.softmax_rows(got, scale, np.empty(40, np.int32))
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-12)


def test_gelu_matches_exact_erf():
    x = np.concatenate([np.linspace(-12, 12, 24001), randn(2000, scale=3)]).astype(np.float32)[None, :]
    out = np.empty_like(x)
    kernels.gelu(x, out)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x[0].astype(np.float64)])
    assert np.abs(out[0] - exact).max() < 2e-6  # float32 GELU, as torch computes it
    np.testing.assert_allclose(out[0], reference.gelu(x[0]), atol=2e-6)


def test_gelu_is_not_the_tanh_approximation():
    x = np.array([[-3.0, -1.5, 1.0, 2.5]], np.float32)
    out = np.empty_like(x)
    kernels.gelu(x, out)
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    exact = np.array([[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x[0].astype(np.float64)]])
    assert np.abs(out - exact).max() < 1e-6 < np.abs(tanh - exact).max()


@pytest.mark.parametrize("n,h", [(1, 8), (7, 384), (33, 36)])
def test_add_layer_norm_matches_reference(n, h):
    x, res = randn(n, h, scale=3), randn(n, h)
    gamma, beta = readonly(randn(h)), readonly(randn(h))
    expected = reference.layer_norm(x + res, gamma, beta, 1e-12)
    out = np.empty_like(x)
    kernels.add_layer_norm(x, res, gamma, beta, 1e-12, out)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    kernels.add_layer_norm(x, res, gamma, beta, 1e-12, x)  # in place, as the encoder calls it
    np.testing.assert_allclose(x, expected, atol=1e-5, rtol=1e-5)


def tiny_config(hidden=24, heads=3, layers=2, ffn=40, vocab=50, positions=32, **kw):
    return ModelConfig(model_type="bert", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, intermediate_size=ffn, hidden_act="gelu", layer_norm_eps=1e-12,
                       max_position_embeddings=positions, type_vocab_size=2, pad_token_id=0, **kw)


def random_weights(config):
    from minie5.checkpoint.weights import expected_shapes
    weights = {}
    for name, shape in expected_shapes(config).items():
        scale = 1.0 if "LayerNorm" in name or "embeddings" in name else 1 / math.sqrt(shape[-1])
        weights[name] = readonly(randn(*shape, scale=scale) + (1.0 if name.endswith("LayerNorm.weight") else 0))
    return weights


def test_embed_matches_reference():
    config = tiny_config()
    w = random_weights(config)
    ids = [rng.integers(0, config.vocab_size, n).tolist() for n in (1, 5, 32)]
    token_ids, positions, seq_starts = pack(ids)
    out = np.empty((len(token_ids), config.hidden_size), np.float32)
    kernels.embed(token_ids, positions, w["embeddings.word_embeddings.weight"],
                  w["embeddings.position_embeddings.weight"], readonly(w["embeddings.token_type_embeddings.weight"][0]),
                  w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], 1e-12, out)
    for b, row_ids in enumerate(ids):
        expected = reference.embed(config, w, np.array([row_ids]))[0]
        np.testing.assert_allclose(out[seq_starts[b]:seq_starts[b + 1]], expected, atol=1e-5)


def with_numba_threads(threads, function, *args):
    import numba
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return function(*args)
    finally:
        numba.set_num_threads(saved)


def blas_attention(threads):
    """blas.BlasAttention run with `threads` Numba threads (its number of tasks in flight)."""
    from minie5.engine.blas import BlasAttention, one_blas_thread
    attention = BlasAttention()

    def run(*args):
        with one_blas_thread():
            with_numba_threads(threads, attention, *args)
    return run


ATTENTIONS = {"numba": lambda: kernels.attention, "numba-serial": lambda: kernels.SERIAL.attention,
              "blas-1": lambda: blas_attention(1), "blas-2": lambda: blas_attention(2),
              "fused": lambda: FusedAttention()}


@pytest.mark.parametrize("impl", list(ATTENTIONS))
@pytest.mark.parametrize("lengths", [[1, 2, 9, 40], [37]])  # one text: BlasAttention splits its heads
@pytest.mark.parametrize("heads,head_dim", [(1, 8), (3, 12), (12, 32)])
def test_attention_matches_padded_reference(heads, head_dim, lengths, impl):
    """Packed attention over each text == reference softmax attention with a padding mask.

    For kernels.attention, its serial twin, blas.BlasAttention (at 1 and 2 threads) and
    matmul_plan.FusedAttention (kernels.attention_fused)."""
    hidden = heads * head_dim
    T = max(lengths)
    q, k, v = randn(len(lengths), T, hidden), randn(len(lengths), T, hidden), randn(len(lengths), T, hidden)
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths])
    # reference: the textbook formula on the padded batch
    split = lambda a: a.reshape(len(lengths), T, heads, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    scores = scores + np.where(mask[:, None, None, :] == 0, -1e30, 0)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = (probs @ split(v)).transpose(0, 2, 1, 3).reshape(len(lengths), T, hidden)
    # kernel: packed real tokens only
    rows, cols = np.nonzero(mask)
    seq_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = np.full((len(rows), hidden), np.nan, np.float32)  # every entry must be written
    ATTENTIONS[impl]()(q[rows, cols], k[rows, cols], v[rows, cols], seq_starts, heads, out)
    np.testing.assert_allclose(out, expected[rows, cols], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_pooling_matches_reference(mode):
    lengths = [1, 4, 17]
    T, H = max(lengths), 10
    hidden = randn(len(lengths), T, H)
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths])
    rows, cols = np.nonzero(mask)
    seq_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = np.empty((len(lengths), H), np.float32)
    kernels.POOLERS[mode](np.ascontiguousarray(hidden[rows, cols]), seq_starts, out)
    np.testing.assert_allclose(out, reference.POOLERS[mode](hidden, mask), atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m", [1, 3, 70, 129, 300])  # fewer rows than the 131 outputs: columns split; 300: rows
def test_blas_linear_matches_reference_and_numba_linear(m, threads):
    """blas.BlasLinear (output split over threads, one BLAS thread each) == reference.linear == kernels.linear."""
    from minie5.engine.blas import BlasLinear
    x, w, b = randn(m, 130), readonly(randn(131, 130, scale=0.1)), readonly(randn(131))
    out_numba, out_blas = np.empty((m, 131), np.float32), np.empty((m, 131), np.float32)
    kernels.linear(x, w, b, out_numba)
    with_numba_threads(threads, BlasLinear(), x, w, b, out_blas)
    np.testing.assert_allclose(out_blas, reference.linear(x.astype(np.float64), w, b), atol=2e-5)
    np.testing.assert_allclose(out_numba, out_blas, atol=2e-5)


@pytest.mark.parametrize("m,n", [(1, 1), (12, 131), (5, 6), (63, 384)])
@pytest.mark.parametrize("threads", [1, 2])
def test_split_linear_matches_reference(m, n, threads):
    """matmul_plan.SplitLinear (column ranges of kernels.linear_columns on Python threads) == reference.linear."""
    from minie5.engine.matmul_plan import SplitLinear
    x, w, b = randn(m, 70), readonly(randn(n, 70, scale=0.1)), readonly(randn(n))
    out = np.full((m, n), np.nan, np.float32)  # every entry must be written
    with_numba_threads(threads, SplitLinear(), x, w, b, out)
    np.testing.assert_allclose(out, reference.linear(x.astype(np.float64), w, b), atol=2e-5)


def test_linear_columns_writes_only_its_columns():
    x, w, b = randn(7, 33), readonly(randn(50, 33)), readonly(randn(50))
    out = np.full((7, 50), np.nan, np.float32)
    kernels.linear_columns(x, w, b, out, 8, 29)
    np.testing.assert_allclose(out[:, 8:29], reference.linear(x.astype(np.float64), w[8:29], b[8:29]), atol=2e-5)
    assert np.isnan(out[:, :8]).all() and np.isnan(out[:, 29:]).all()


def test_one_blas_thread_restores_numpys_setting():
    """Inside one_blas_thread OpenBLAS runs 1 thread per call; numpy's setting is back afterwards."""
    from minie5.engine import blas
    if blas._set_blas_threads is None:
        pytest.skip("numpy's BLAS is not OpenBLAS")
    before = blas._get_blas_threads()
    blas._set_blas_threads(2)
    try:
        with blas.one_blas_thread():
            assert blas._get_blas_threads() == 1
        assert blas._get_blas_threads() == 2
    finally:
        blas._set_blas_threads(before)


def test_blas_linear_without_openblas(monkeypatch):
    """Another BLAS (no openblas_set_num_threads_local): one plain np.matmul, same result."""
    from minie5.engine import blas
    monkeypatch.setattr(blas, "_set_blas_threads", None)
    x, w, b = randn(100, 40), readonly(randn(50, 40)), readonly(randn(50))
    out = np.empty((100, 50), np.float32)
    blas.BlasLinear()(x, w, b, out)
    np.testing.assert_allclose(out, reference.linear(x.astype(np.float64), w, b), atol=2e-5)


@pytest.mark.parametrize("matmul", ["auto", "numba", "blas"])
@pytest.mark.parametrize("hidden,heads,layers,ffn", [(24, 3, 2, 40), (36, 4, 1, 52), (64, 1, 3, 100)])
def test_fast_forward_matches_reference_forward(hidden, heads, layers, ffn, matmul):
    """The whole fast encoder == the whole reference encoder on a random model with padding."""
    config = tiny_config(hidden=hidden, heads=heads, layers=layers, ffn=ffn)
    w = random_weights(config)
    lengths = [2, 7, 13, 31, 30, 26]  # 109 tokens: "auto" runs the BLAS path (64 tokens and more)
    T = max(lengths)
    input_ids = rng.integers(0, config.vocab_size, (len(lengths), T))
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths])
    expected = reference.forward(config, w, input_ids, mask)
    got = FastEncoder(config, w, matmul=matmul).forward(input_ids, mask)
    real = mask.astype(bool)
    diff = np.abs(got - expected)[real].max()
    print(f"fast ({matmul}) vs reference h{hidden} a{heads} l{layers}: max|diff| {diff:.2e}")
    assert diff <= 1e-4
    assert np.all(got[~real] == 0)  # padding positions are zero in the fast path


KEY_TILE_OF_TEST = 16  # small key tiles: every text past 16 tokens spans several, so the running max is rescaled


def softmax_attention(q, k, v, seq_starts, heads):
    """The plain formula per (text, head), in float64: softmax(q k^T / sqrt(D)) v -> [N, H]."""
    D = q.shape[1] // heads
    out = np.empty(q.shape, np.float64)
    for s, e in zip(seq_starts[:-1], seq_starts[1:]):
        for a in range(heads if e > s else 0):
            c = slice(a * D, (a + 1) * D)
            scores = q[s:e, c].astype(np.float64) @ k[s:e, c].T.astype(np.float64) / math.sqrt(D)
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[s:e, c] = probs / probs.sum(axis=1, keepdims=True) @ v[s:e, c]
    return out


@pytest.mark.parametrize("key_tile", [KEY_TILE_OF_TEST, kernels.KEY_TILE])
@pytest.mark.parametrize("lengths", [[1], [7], [33], [100], [515], [3, 1, 100, 0, 33, 7, 260]])
@pytest.mark.parametrize("heads,head_dim", [(12, 32), (3, 13), (2, 4)])  # 13: not a multiple of the 4-wide steps
def test_attention_fused_matches_its_twin_and_the_softmax(heads, head_dim, lengths, key_tile):
    """kernels.attention_fused == reference.attention_online (the same tiles in NumPy, float64) == the plain
    softmax formula, for lengths that are not multiples of the tiles, several texts packed (one empty)."""
    hidden = heads * head_dim
    N = sum(lengths)
    q, k, v = randn(N, hidden, scale=2.0), randn(N, hidden, scale=2.0), randn(N, hidden)
    seq_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = np.full((N, hidden), np.nan, np.float32)  # every entry must be written
    kernels.attention_fused(q, k, v, seq_starts, heads, out, key_tile)
    D = head_dim
    twin = np.empty((N, hidden), np.float32)
    for s, e in zip(seq_starts[:-1], seq_starts[1:]):
        for a in range(heads):
            c = slice(a * D, (a + 1) * D)
            if e > s:
                twin[s:e, c] = reference.attention_online(q[s:e, c], k[s:e, c], v[s:e, c], kernels.QUERY_TILE,
                                                          key_tile)
    expected = softmax_attention(q, k, v, seq_starts, heads)
    np.testing.assert_allclose(twin, expected, atol=1e-6, rtol=1e-6)  # the twin is the softmax, tiled
    np.testing.assert_allclose(out, twin, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_attention_fused_rescales_when_a_later_key_tile_holds_the_maximum():
    """Large scores (q scaled by 30) that grow from key tile to key tile, so each tile raises every row's
    running maximum: the sums kept so far must be scaled down each time (2^(m_old - m_new) ~ 2^-100 and
    below). Against the plain softmax in float64, and no NaN or inf anywhere."""
    heads, D, L = 2, 8, 70
    direction = randn(D)
    k = np.outer(np.linspace(-3, 3, L), direction).astype(np.float32) + randn(L, D, scale=0.01)  # scores grow with j
    k = np.tile(k, (1, heads))
    q = np.tile(30 * direction[None, :] + randn(L, D, scale=0.1), (1, heads)).astype(np.float32)
    v = randn(L, heads * D)
    seq_starts = np.array([0, L], np.int64)
    expected = softmax_attention(q, k, v, seq_starts, heads)
    scores = q[:, :D].astype(np.float64) @ k[:, :D].T / math.sqrt(D)
    assert np.ptp(scores, axis=1).min() > 100  # the exponentials span far more than float32's range
    for key_tile in (8, KEY_TILE_OF_TEST, 64):
        out = np.full_like(q, np.nan)
        kernels.attention_fused(q, k, v, seq_starts, heads, out, key_tile)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
        twin = reference.attention_online(q[:, :D], k[:, :D], v[:, :D], kernels.QUERY_TILE, key_tile)
        np.testing.assert_allclose(out[:, :D], twin, atol=1e-5, rtol=1e-5)


def test_attention_fused_on_the_real_models_projections(e5_dir):
    """q, k, v of multilingual-e5-small's layer 0 (from the embeddings of real token ids) over texts of
    5, 130 and 300 tokens: kernels.attention_fused == the plain softmax == kernels.attention."""
    from minie5.checkpoint.config import read_config
    from minie5.checkpoint.weights import load_weights
    config = read_config(e5_dir)
    w = load_weights(e5_dir / "model.safetensors", config)
    lengths = [5, 130, 300]
    ids = [[0] + rng.integers(5, 250000, n - 2).tolist() + [2] for n in lengths]
    x = np.concatenate([reference.embed(config, w, np.array([row]))[0] for row in ids])  # [N, H]
    q, k, v = (np.ascontiguousarray(reference.linear(x, w[f"encoder.layer.0.attention.self.{n}.weight"],
                                                     w[f"encoder.layer.0.attention.self.{n}.bias"]), np.float32)
               for n in ("query", "key", "value"))
    seq_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    heads = config.num_attention_heads
    fused, plain = np.empty_like(q), np.empty_like(q)
    kernels.attention_fused(q, k, v, seq_starts, heads, fused, kernels.KEY_TILE)
    kernels.attention(q, k, v, seq_starts, heads, plain)
    expected = softmax_attention(q, k, v, seq_starts, heads)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(fused, expected, atol=1e-5 * scale, rtol=1e-5)
    np.testing.assert_allclose(fused, plain, atol=1e-5 * scale, rtol=1e-5)


def test_attention_fused_does_not_depend_on_threads_batch_mates_or_position():
    """A text's context from attention_fused: the same bits with 1 or 2 Numba threads, in the serial twin,
    and alone or packed after other texts (what keeps matmul="numba" bit-identical, docs/behaviour.md)."""
    heads, hidden = 3, 39
    lengths = [40, 300, 7]
    N = sum(lengths)
    q, k, v = randn(N, hidden), randn(N, hidden), randn(N, hidden)
    seq_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    outs = []
    for threads in (1, 2):
        out = np.empty_like(q)
        with_numba_threads(threads, kernels.attention_fused, q, k, v, seq_starts, heads, out, kernels.KEY_TILE)
        outs.append(out)
    serial = np.empty_like(q)
    kernels.SERIAL.attention_fused(q, k, v, seq_starts, heads, serial, kernels.KEY_TILE)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], serial)
    s, e = seq_starts[1], seq_starts[2]  # the 300-token text, alone
    alone = np.empty((e - s, hidden), np.float32)
    kernels.attention_fused(q[s:e].copy(), k[s:e].copy(), v[s:e].copy(), np.array([0, e - s]), heads, alone,
                            kernels.KEY_TILE)
    assert np.array_equal(alone, outs[0][s:e])


def test_blas_attention_refuses_an_output_it_could_not_write_in_place():
    from minie5.engine.blas import BlasAttention
    q = randn(10, 8)
    out = np.empty((8, 10), np.float32).T  # [10, 8], not C-contiguous: reshaping it would copy
    with pytest.raises(ValueError, match="C-contiguous"):
        BlasAttention()(q, q, q, np.array([0, 10]), 2, out)


ATTENTIONS_WITH_PROBS = {  # the attention calls of encoder.py, which write out probs when given them
    "numba": lambda: NumbaAttention(kernels),  # kernels.attention, then kernels.attention_probs
    "fused": lambda: FusedAttention(),  # with probs asked for: NumbaAttention's path
    "blas-1": lambda: blas_attention(1), "blas-2": lambda: blas_attention(2)}


@pytest.mark.parametrize("impl", list(ATTENTIONS_WITH_PROBS))
@pytest.mark.parametrize("heads,head_dim", [(1, 8), (3, 12), (12, 32)])
def test_attention_probs_matches_padded_reference(heads, head_dim, impl):
    """The probabilities an attention writes out == reference.attention's attn_probs, and they are
    the very weights it mixes the values with (context == probs @ v, per text and head).

    "numba" is kernels.attention with kernels.attention_probs, "blas-*" blas.BlasAttention."""
    config = tiny_config(hidden=heads * head_dim, heads=heads)
    w = random_weights(config)
    lengths = [1, 2, 9, 40]
    T = max(lengths)
    x = randn(len(lengths), T, config.hidden_size)
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths])
    _, expected = reference.attention(config, w, "encoder.layer.0.", x, mask)  # [B, A, T, T]
    project = lambda name: reference.linear(  # noqa: E731
        x, w[f"encoder.layer.0.attention.self.{name}.weight"], w[f"encoder.layer.0.attention.self.{name}.bias"])
    rows, cols = np.nonzero(mask)
    q, k, v = (np.ascontiguousarray(project(n)[rows, cols], dtype=np.float32) for n in ("query", "key", "value"))
    seq_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    probs = np.zeros((len(lengths), heads, T, T), np.float32)
    context = np.empty_like(q)
    ATTENTIONS_WITH_PROBS[impl]()(q, k, v, seq_starts, heads, context, probs, cols.astype(np.int64))
    real = (mask[:, None, :, None] & mask[:, None, None, :]).astype(bool)
    real = np.broadcast_to(real, probs.shape)
    np.testing.assert_allclose(probs[real], expected[real], atol=1e-6)
    assert not probs[~real].any()  # padding queries and keys stay 0
    for b, (s, e) in enumerate(zip(seq_starts[:-1], seq_starts[1:])):
        for a in range(heads):
            c = slice(a * head_dim, (a + 1) * head_dim)
            mixed = probs[b, a, :e - s, :e - s].astype(np.float64) @ v[s:e, c]
            np.testing.assert_allclose(context[s:e, c], mixed, atol=1e-5)


def test_every_kernel_names_its_reference_twin():
    """Each compiled kernel's docstring says which NumPy function it mirrors ("Twin: ...")."""
    import numba.core.registry

    compiled = {name: f for name, f in vars(kernels).items()
                if isinstance(f, numba.core.registry.CPUDispatcher) and not name.startswith("_")}
    assert {"linear", "matmul_nt_tile", "gelu", "add_layer_norm", "embed", "softmax_rows", "attention",
            "attention_fused", "attention_probs", "mean_pool", "max_pool", "cls_pool"} <= set(compiled)
    for name, f in compiled.items():
        assert "twin:" in (f.__doc__ or "").lower(), f"kernels.{name} does not name its twin"


def test_word_rows_reads_exactly_the_rows_the_ids_point_at(e5_dir):
    """encoder.WordRows (os.pread from model.safetensors) == indexing the memory-mapped matrix."""
    from minie5.checkpoint.config import read_config
    from minie5.engine.encoder import WordRows
    from minie5.checkpoint.weights import load_weights
    weights = load_weights(e5_dir / "model.safetensors", read_config(e5_dir))
    matrix = weights[WordRows.NAME]
    word_rows = WordRows(weights)
    assert word_rows.offset is not None  # a float32 file: rows are read, not mapped
    token_ids = np.array([5, 0, matrix.shape[0] - 1, 5, 33600, 2, 0, 250], np.int64)  # repeats, first and last row
    table, ids = word_rows(token_ids)
    assert table.shape == (6, matrix.shape[1]) and ids.dtype == np.int64
    assert np.array_equal(table[ids], matrix[token_ids])  # bit for bit


def test_word_rows_without_file_offsets_use_the_matrix():
    """Converted (float16) weights have no place in the file: the table is the matrix itself."""
    from minie5.engine.encoder import WordRows
    matrix = readonly(randn(10, 4))
    table, ids = WordRows({WordRows.NAME: matrix})(np.array([3, 3, 9]))
    assert table is matrix and list(ids) == [3, 3, 9]


QKV_NAMES = [f"encoder.layer.1.attention.self.{part}" for part in ("query", "key", "value")]


def test_fused_qkv_copies_weights_that_are_not_in_a_file():
    """A plain dict (or converted float16 weights): the stacked weight is a copy of the arrays."""
    from minie5.engine.encoder import fused_qkv
    weights = {name + suffix: readonly(randn(6, 6) if suffix == ".weight" else randn(6))
               for name in QKV_NAMES for suffix in (".weight", ".bias")}
    weight, bias = fused_qkv(weights, "encoder.layer.1.")
    x = randn(5, 6)
    for part, name in enumerate(QKV_NAMES):  # x @ weight.T + bias holds q | k | v side by side
        expected = reference.linear(x, weights[name + ".weight"], weights[name + ".bias"])
        np.testing.assert_allclose(reference.linear(x, weight, bias)[:, 6 * part:6 * (part + 1)], expected,
                                   rtol=1e-6, atol=1e-6)


def _tiny_model_weights(tmp_path):
    from minie5.checkpoint.config import read_config
    from minie5.checkpoint.weights import load_weights
    from tiny_models import numpy_weights, tiny_config, write_model_dir
    config = tiny_config(hidden=8, heads=2, layers=2, intermediate=16, vocab=30)
    model_dir = write_model_dir(tmp_path / "model", config, numpy_weights(config, seed=0))
    return model_dir / "model.safetensors", load_weights(model_dir / "model.safetensors", read_config(model_dir))


@pytest.mark.parametrize("change", [None, "replaced", "deleted"])
def test_reads_from_the_file_come_from_the_loaded_file(tmp_path, change):
    """fused_qkv reads the three projections from a float32 file into place: == the three mapped weights
    stacked, bit for bit. Also when the path is replaced by another file, or deleted, after loading:
    fused_qkv and WordRows still read the file that was loaded (the one the arrays map)."""
    from minie5.engine.encoder import WordRows, fused_qkv
    path, weights = _tiny_model_weights(tmp_path)
    assert all(name + ".weight" in weights.file_offsets for name in QKV_NAMES)  # the read path is taken
    expected = np.concatenate([np.array(weights[name + ".weight"]) for name in QKV_NAMES])
    expected_bias = np.concatenate([np.array(weights[name + ".bias"]) for name in QKV_NAMES])
    rows = np.array(weights[WordRows.NAME][[3, 7]])
    if change is not None:
        path.unlink()
    if change == "replaced":
        path.write_bytes(b"\xff" * (2 * weights.file_offsets[WordRows.NAME] + 4096))  # other bytes, longer
    weight, bias = fused_qkv(weights, "encoder.layer.1.")
    H = weights[QKV_NAMES[0] + ".weight"].shape[0]
    assert weight.shape == (3 * H, H) and bias.shape == (3 * H,) and not weight.flags.writeable
    assert np.array_equal(weight, expected)
    assert np.array_equal(bias, expected_bias)
    table, ids = WordRows(weights)(np.array([7, 3], np.int64))
    assert np.array_equal(table[ids], rows[::-1])


def test_fused_qkv_names_a_file_truncated_after_loading(tmp_path):
    """The loaded file itself cut short (truncated in place): an error naming the file and the tensor."""
    import os
    from minie5.engine.encoder import fused_qkv
    from minie5.errors import ModelFileError
    path, weights = _tiny_model_weights(tmp_path)
    os.truncate(path, weights.file_offsets[QKV_NAMES[2] + ".weight"] + 4)  # inside the value weight
    with pytest.raises(ModelFileError, match=r"model\.safetensors.*encoder\.layer\.1\.attention\.self\.value"):
        fused_qkv(weights, "encoder.layer.1.")


def test_serial_twins_compute_what_the_parallel_kernels_compute():
    """kernels.SERIAL and kernels.linear_columns (used below SERIAL_TOKENS tokens) == the parallel
    kernels, bit for bit."""
    x, w, b = randn(13, 40), readonly(randn(52, 40)), readonly(randn(52))
    outs = [np.empty((13, 52), np.float32) for _ in range(2)]
    kernels.linear(x, w, b, outs[0])
    kernels.linear_columns(x, w, b, outs[1], 0, 52)
    assert np.array_equal(*outs)
    q, k, v = randn(13, 24), randn(13, 24), randn(13, 24)
    seq_starts = np.array([0, 5, 13], np.int64)
    ctx = [np.empty((13, 24), np.float32) for _ in range(2)]
    kernels.attention(q, k, v, seq_starts, 3, ctx[0])
    kernels.SERIAL.attention(q, k, v, seq_starts, 3, ctx[1])
    assert np.array_equal(*ctx)
    gamma, beta = readonly(randn(24)), readonly(randn(24))
    ln = [np.empty((13, 24), np.float32) for _ in range(2)]
    kernels.add_layer_norm(q, k, gamma, beta, 1e-12, ln[0])
    kernels.SERIAL.add_layer_norm(q, k, gamma, beta, 1e-12, ln[1])
    assert np.array_equal(*ln)
    g = [np.empty((13, 24), np.float32) for _ in range(2)]
    kernels.gelu(q, g[0])
    kernels.SERIAL.gelu(q, g[1])
    assert np.array_equal(*g)
    for name, pool in kernels.POOLERS.items():
        pooled = [np.empty((2, 24), np.float32) for _ in range(2)]
        pool(q, seq_starts, pooled[0])
        kernels.SERIAL.POOLERS[name](q, seq_starts, pooled[1])
        assert np.array_equal(*pooled), name


@pytest.mark.parametrize("n_tokens", [SERIAL_TOKENS - 1, SERIAL_TOKENS])
def test_fast_forward_on_either_side_of_the_serial_threshold(n_tokens):
    """A batch just below (serial twins) and at (parallel kernels) SERIAL_TOKENS == the reference."""
    config = tiny_config(hidden=24, heads=3, layers=2, ffn=40)
    w = random_weights(config)
    lengths = [n_tokens - 3 * (n_tokens // 4), n_tokens // 4, n_tokens // 4, n_tokens // 4]
    assert sum(lengths) == n_tokens and max(lengths) <= 32
    T = max(lengths)
    input_ids = rng.integers(0, config.vocab_size, (len(lengths), T))
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths])
    expected = reference.forward(config, w, input_ids, mask)
    got = FastEncoder(config, w).forward(input_ids, mask)
    assert np.abs(got - expected)[mask.astype(bool)].max() <= 1e-4


def test_workspace_shares_memory_only_between_the_two_halves_of_a_layer():
    """encoder._Workspace: ffn takes the memory of qkv and context (never live at once), never that of
    the residual stream x or of proj (read and written around both halves); it grows on demand."""
    from minie5.engine.encoder import _Workspace
    work = _Workspace(tiny_config(hidden=8, heads=2, ffn=40))  # F = 40 > 4H = 32: the buffer is F wide
    for n in (3, 2, 11):
        x, qkv, context, proj, ffn = work.views(n)
        assert [a.shape for a in (x, qkv, context, proj, ffn)] == [(n, 8), (n, 24), (n, 8), (n, 8), (n, 40)]
        assert all(a.flags.c_contiguous and a.dtype == np.float32 for a in (x, qkv, context, proj, ffn))
        assert np.shares_memory(ffn, qkv) and np.shares_memory(ffn, context)
        assert not np.shares_memory(qkv, context)
        for a, b in [(x, proj), (x, qkv), (x, context), (x, ffn), (proj, qkv), (proj, context), (proj, ffn)]:
            assert not np.shares_memory(a, b)
    assert work.capacity >= 11


@pytest.mark.parametrize("n, m, dim, dtype", [(5, 130, 384, np.float32),  # m: two full tiles of 64 and a part
                                              (1, 1, 13, np.float32), (7, 3, 16, np.float64), (0, 4, 8, np.float32)])
def test_manhattan_distances_matches_reference(n, m, dim, dtype):
    a, b = randn(n, dim).astype(dtype), randn(m, dim).astype(dtype)
    b[:min(n, m)] = a[:min(n, m)]  # identical rows: distance exactly 0
    out = np.full((n, m), np.nan, dtype=dtype)
    kernels.manhattan_distances(a, b, out)
    expected = reference.manhattan_distances(a, b)
    np.testing.assert_allclose(out, expected, rtol=1e-7 if dtype == np.float32 else 1e-12)
    assert (np.diagonal(out) == 0).all()


# ---------------------------------------------------------------- kernels_panel and layer_loop
PANEL_SHAPES = [(1, 1, 1), (1, 384, 384), (3, 7, 9), (5, 33, 17), (12, 384, 1152), (13, 1536, 384), (70, 130, 131)]


@pytest.mark.parametrize("m,k,n", PANEL_SHAPES)
def test_panel_linear_matches_reference(m, k, n):
    """kernels_panel.linear_panels over a packed weight == reference.linear (float64), whole and in column ranges."""
    from minie5.engine import kernels_panel as panel
    x, w, b = randn(m, k), randn(n, k, scale=1 / math.sqrt(k)), readonly(randn(n))
    packed = panel.pack(w)
    expected = reference.linear(x.astype(np.float64), w, b)
    out = np.full((m, n), np.nan, np.float32)
    panel.linear_panels(x, panel.packed_of(packed), b, out, 0, n)
    np.testing.assert_allclose(out, expected, atol=2e-5 * math.sqrt(k), rtol=1e-5)
    halves = np.full((m, n), np.nan, np.float32)
    cut = min(n, 64)
    panel.linear_panels(x, panel.packed_of(packed), b, halves, 0, cut)
    panel.linear_panels(x, panel.packed_of(packed), b, halves, cut, n)
    assert np.array_equal(halves, out)  # a column's result does not depend on the range it is computed in


def test_panel_pack_is_the_weight_transposed_in_memory():
    """pack(w): the same numbers as w ([N, K] view), stored [K, N padded to 16], not sharing w's memory."""
    from minie5.engine import kernels_panel as panel
    w = readonly(randn(20, 9))
    view = panel.pack(w)
    assert view.shape == (20, 9) and np.array_equal(view, w) and not np.shares_memory(view, w)
    packed = panel.packed_of(view)
    assert packed.shape == (9, 20) and packed.strides == (32 * 4, 4) and not view.flags.writeable
    assert np.array_equal(packed.base[:, 20:], np.zeros((9, 12), np.float32))
    assert panel.packed_or_none(w) is None and panel.packed_or_none(w.T) is None
    with pytest.raises(ValueError, match=r"not a packed float32 matrix"):
        panel.packed_of(w)


def test_panel_linear_row_result_does_not_depend_on_its_row():
    """A row alone, or at any place among others, gives the same numbers (the 4-row tile repeats its last row)."""
    from minie5.engine import kernels_panel as panel
    x, w, b = randn(11, 40), panel.pack(randn(70, 40)), readonly(randn(70))
    whole = np.empty((11, 70), np.float32)
    panel.linear_panels(x, panel.packed_of(w), b, whole, 0, 70)
    for i in range(11):
        one = np.empty((1, 70), np.float32)
        panel.linear_panels(x[i:i + 1], panel.packed_of(w), b, one, 0, 70)
        assert np.array_equal(one[0], whole[i])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_layer_loop_computes_what_the_step_by_step_path_computes(threads):
    """layer_loop.LayerLoop (all layers in one call per thread, barriers between steps) == the same forward
    run step by step (a Python call per kernel), bit for bit, with 1, 2 and 3 threads (more than the cores)."""
    from minie5.engine.layer_loop import LayerLoop
    config = tiny_config(hidden=64, heads=4, layers=3, ffn=136)
    weights = random_weights(config)
    fast = FastEncoder(config, weights)
    ids = [list(rng.integers(0, config.vocab_size, n)) for n in (9, 1, 20)]
    packed = pack(ids)
    step_by_step = fast.small_plan._replace(layer_loop=None)
    fast.small_plan = step_by_step
    want = fast.forward_packed(*packed)
    fast.small_plan = step_by_step._replace(layer_loop=LayerLoop(threads))
    for _ in range(3):  # the barrier's counter starts afresh at each call
        assert np.array_equal(fast.forward_packed(*packed), want)
    input_ids = np.zeros((3, 20), np.int64)
    mask = np.zeros((3, 20), np.int64)
    for b, text in enumerate(ids):
        input_ids[b, :len(text)], mask[b, :len(text)] = text, 1
    np.testing.assert_allclose(fast.forward(input_ids, mask)[mask.astype(bool)],
                               reference.forward(config, weights, input_ids, mask)[mask.astype(bool)],
                               atol=1e-4)


def test_layer_loop_share_cuts_cover_every_column_once():
    from minie5.engine.layer_loop import share
    for n, threads, step in [(384, 2, 64), (1152, 2, 64), (40, 3, 64), (13, 2, 1), (1, 3, 1), (131, 3, 64)]:
        ranges = [share(n, t, threads, step) for t in range(threads)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])) and all(s <= e for s, e in ranges)
        assert all(s % step == 0 for s, e in ranges if e > s)


PANEL_ASM_SCRIPT = """
import json, re
import numpy as np
from minie5.engine import kernels_panel as panel
rng = np.random.default_rng(3)
exact = True
for m, k, n in [(1, 1, 1), (12, 384, 1536), (5, 33, 17)]:
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    out = np.empty((m, n), np.float32)
    panel.linear_panels(x, panel.packed_of(panel.pack(w)), np.zeros(n, np.float32), out, 0, n)
    exact &= bool(np.allclose(out, x.astype(np.float64) @ w.T.astype(np.float64), atol=1e-4))
asm = list(panel.linear_panels.inspect_asm().values())[0]
counts = {"fma_zmm": len(re.findall(r"vfmadd\\w*ps\\s+[^\\n]*zmm", asm)),
          "fma_ymm": len(re.findall(r"vfmadd\\w*ps\\s+[^\\n]*ymm", asm))}
print(json.dumps({"ok": exact, "tile": [panel.ROWS, panel.PANELS], "counts": counts}))
"""


def _panel_asm(tmp_path, cpu_name=None, cpu_features=None) -> dict:
    """PANEL_ASM_SCRIPT in a fresh process with an empty Numba cache (inspect_asm needs a fresh compile)."""
    import json
    import os
    import subprocess
    import sys
    from helpers import REPO
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "PYTHONPATH": str(REPO)}
    if cpu_name is not None:
        env.update(NUMBA_CPU_NAME=cpu_name, NUMBA_CPU_FEATURES=cpu_features)
    proc = subprocess.run([sys.executable, "-c", PANEL_ASM_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_has(flag: str) -> bool:
    try:
        return flag in open("/proc/cpuinfo").read().split()
    except OSError:
        return False


@pytest.mark.slow
def test_panel_kernel_emits_fmas_on_wide_vectors(tmp_path):
    """On this CPU the float32 panel kernel's loop is fused multiply-adds on zmm (AVX-512) or ymm (AVX2)."""
    result = _panel_asm(tmp_path)
    print(f"float32 panel kernel on this CPU: tile {result['tile']}, instructions {result['counts']}")
    assert result["ok"]
    if _cpu_has("avx512f"):
        assert result["counts"]["fma_zmm"] >= 16
    elif _cpu_has("avx2"):
        assert result["counts"]["fma_ymm"] >= 8


@pytest.mark.slow
@pytest.mark.skipif(not _cpu_has("avx2"), reason="needs an x86 CPU with AVX2 to run AVX2 code")
def test_panel_kernel_compiled_for_an_avx2_only_cpu(tmp_path):
    """Compiled for Haswell (AVX2, FMA, no AVX-512): right numbers, FMAs on ymm, 2 x 2 tiles."""
    result = _panel_asm(tmp_path, "haswell", "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+popcnt,+sse4.2,+cx16")
    print(f"float32 panel kernel for haswell: tile {result['tile']}, instructions {result['counts']}")
    assert result["ok"] and result["tile"] == [2, 2]
    assert result["counts"]["fma_ymm"] >= 8 and result["counts"]["fma_zmm"] == 0


FUSED_ASM_SCRIPT = """
import json, math, re
import numpy as np
from minie5.engine import kernels
rng = np.random.default_rng(4)
q, k, v = (rng.standard_normal((300, 64)).astype(np.float32) for _ in range(3))
out = np.empty_like(q)
kernels.attention_fused(q, k, v, np.array([0, 300]), 2, out, kernels.KEY_TILE)
s = q[:, :32].astype(np.float64) @ k[:, :32].T / math.sqrt(32)
p = np.exp(s - s.max(1, keepdims=True))
ok = bool(np.allclose(out[:, :32], p / p.sum(1, keepdims=True) @ v[:, :32], atol=1e-5))
counts = {}
for name in ("_tile_scores", "_mix_values"):
    asm = list(getattr(kernels, name).inspect_asm().values())[0]
    counts[name] = {"fma_zmm": len(re.findall(r"vfmadd\\w*ps\\s+[^\\n]*zmm", asm)),
                    "fma_ymm": len(re.findall(r"vfmadd\\w*ps\\s+[^\\n]*ymm", asm))}
print(json.dumps({"ok": ok, "counts": counts}))
"""


@pytest.mark.slow
def test_fused_attention_loops_are_vector_fmas(tmp_path):
    """The fused attention's two product loops (scores over 16 keys per vector, the mix with the values)
    compile to fused multiply-adds on zmm (AVX-512) or ymm (AVX2) on this CPU, in a fresh process."""
    import json
    import os
    import subprocess
    import sys
    from helpers import REPO
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", FUSED_ASM_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"fused attention on this CPU: instructions {result['counts']}")
    assert result["ok"]
    for counts in result["counts"].values():
        if _cpu_has("avx512f"):
            assert counts["fma_zmm"] >= 2
        elif _cpu_has("avx2"):
            assert counts["fma_ymm"] >= 2
