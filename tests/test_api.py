"""The public API contract of minie5, on the multilingual-e5-small fixture.

What a user of `minie5.load(...)` may rely on: shapes and dtypes, prefixes,
normalisation, batching that does not change results, input checking with
errors that name the offending input, a frozen public config, loading errors
that name the file and field or tensor, and no torch / transformers import.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import minie5
from helpers import ROUNDING, blas_kernel
from minie5.tokenizer import Tokenizer
from minie5.checkpoint.weights import expected_shapes, load_weights

HIDDEN = 384
TOL = 1e-6

SHORT = "Berlin is the capital of Germany."
# Texts of very different token lengths, deliberately not in length order:
# encode() sorts by length internally and must put the rows back in input order.
MIXED_TEXTS = [
    "passage: " + "The quick brown fox jumps over the lazy dog. " * 6,  # ~70 tokens
    "a",
    "query: how much protein should a female eat",
    "passage: 南瓜的家常做法 " * 6,
    "hi",
    "passage: Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "x " * 40,
]


@pytest.fixture(scope="module")
def reference_model(e5_dir):
    """The same files run by the plain NumPy backend."""
    return minie5.load(e5_dir, backend="reference")


@pytest.fixture(scope="module", params=["fast", "reference"])
def any_model(request, e5_dir):
    """Each backend in turn (loading is cheap: the weights are memory-mapped)."""
    return minie5.load(e5_dir, backend=request.param)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# ---------------------------------------------------------------- shapes and dtypes
def test_encode_list_gives_float32_matrix(any_model):
    out = any_model.encode(["hello world", SHORT, "query: 南瓜的家常做法"])
    assert out.dtype == np.float32
    assert out.shape == (3, HIDDEN)
    assert np.all(np.isfinite(out))


def test_encode_str_gives_one_vector(e5_model):
    out = e5_model.encode(SHORT)
    assert out.dtype == np.float32
    assert out.shape == (HIDDEN,)
    assert max_diff(out, e5_model.encode([SHORT])[0]) <= TOL


def test_encode_tuple_is_accepted(e5_model):
    assert e5_model.encode((SHORT, "hi")).shape == (2, HIDDEN)


def test_encode_empty_list(e5_model):
    out = e5_model.encode([])
    assert out.dtype == np.float32
    assert out.shape == (0, HIDDEN)


# ---------------------------------------------------------------- normalisation
def test_rows_are_unit_norm_by_default(e5_model):
    out = e5_model.encode(MIXED_TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_normalize_false_gives_the_raw_mean(e5_model):
    raw = e5_model.encode(MIXED_TEXTS, normalize=False)
    unit = e5_model.encode(MIXED_TEXTS)
    norms = np.linalg.norm(raw, axis=1)
    assert raw.dtype == np.float32
    assert np.all(np.abs(norms - 1.0) > 1e-3), f"normalize=False rows should not be unit length: {norms}"
    assert max_diff(raw / norms[:, None], unit) <= TOL


# ---------------------------------------------------------------- prefixes
def test_encode_queries_adds_query_prefix(e5_model):
    text = "how much protein should a female eat"
    a = e5_model.encode_queries(text)
    b = e5_model.encode(text, prefix="query")
    c = e5_model.encode("query: " + text)
    assert a.shape == (HIDDEN,)
    assert max_diff(a, b) <= TOL and max_diff(a, c) <= TOL
    assert max_diff(a, e5_model.encode(text)) > 1e-3, "the prefix should change the embedding"


def test_encode_passages_adds_passage_prefix(e5_model):
    texts = [SHORT, "南瓜的家常做法"]
    a = e5_model.encode_passages(texts)
    b = e5_model.encode(texts, prefix="passage")
    c = e5_model.encode(["passage: " + t for t in texts])
    assert a.shape == (2, HIDDEN)
    assert max_diff(a, b) <= TOL and max_diff(a, c) <= TOL


def test_prefix_none_leaves_text_unchanged(e5_model):
    text = "query: already prefixed"
    assert max_diff(e5_model.encode(text, prefix=None), e5_model.encode(text)) <= TOL
    # and the default really is "no prefix": not "query: query: ..."
    assert max_diff(e5_model.encode(text), e5_model.encode("already prefixed", prefix="query")) <= TOL


def test_other_prefix_strings_are_prepended(e5_model):
    assert max_diff(e5_model.encode("text", prefix="title: "), e5_model.encode("title: text")) <= TOL


# ---------------------------------------------------------------- batching
def test_batch_size_does_not_change_results(any_model):
    by_32 = any_model.encode(MIXED_TEXTS, batch_size=32)
    for batch_size in (1, 3):
        other = any_model.encode(MIXED_TEXTS, batch_size=batch_size)
        assert max_diff(other, by_32) <= ROUNDING, f"batch_size={batch_size} differs from batch_size=32"


def test_rows_come_back_in_input_order(e5_model):
    together = e5_model.encode(MIXED_TEXTS, batch_size=3)
    for i, text in enumerate(MIXED_TEXTS):
        alone = e5_model.encode(text)
        assert max_diff(together[i], alone) <= ROUNDING, f"row {i} is not the embedding of texts[{i}]"
    reversed_out = e5_model.encode(MIXED_TEXTS[::-1], batch_size=3)
    assert max_diff(reversed_out[::-1], together) <= ROUNDING


def test_duplicate_texts_in_one_call(e5_model, e5_dir):
    """docs/behaviour.md, "Determinism": duplicates in one call agree to ROUNDING whatever the BLAS
    kernel, and are bit-identical where the products are minie5's Numba kernels."""
    texts = [SHORT, "hi", SHORT, MIXED_TEXTS[0], SHORT, "hi"]  # 115 tokens: the sgemm path
    out = e5_model.encode(texts, batch_size=32)
    worst = max(max_diff(out[0], out[2]), max_diff(out[0], out[4]), max_diff(out[1], out[5]))
    print(f"parity duplicates in one call (sgemm path, {blas_kernel()}): max|diff| {worst:.1e}")
    assert worst <= ROUNDING
    # Fewer than 64 tokens (one query, a few short texts): the Numba products, on any machine.
    small = [SHORT, "hi", SHORT, "hi", SHORT]  # 33 tokens, duplicates at rows 0, 12, 24 and 9, 21
    out = e5_model.encode(small)
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[0], out[4]) and np.array_equal(out[1], out[3])
    # matmul="numba": the Numba products at every size.
    out = minie5.load(e5_dir, matmul="numba").encode(texts, batch_size=32)
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[0], out[4]) and np.array_equal(out[1], out[5])
    # Across batches of other sizes and compositions: equal to ROUNDING.
    for batch_size in (1, 2):
        other = e5_model.encode(texts, batch_size=batch_size)
        assert max_diff(other, out) <= ROUNDING


def test_fast_and_reference_backends_agree(e5_model, reference_model):
    assert max_diff(e5_model.encode(MIXED_TEXTS), reference_model.encode(MIXED_TEXTS)) <= 1e-4


# ---------------------------------------------------------------- forward()
def test_forward_returns_last_hidden_state(any_model):
    ids, mask = any_model.tokenizer.pad(any_model.tokenizer.encode(["hello world", "hi"])[0])
    hidden = any_model.forward(ids, mask)
    assert hidden.dtype == np.float32
    assert hidden.shape == (2, ids.shape[1], HIDDEN)
    assert np.all(np.isfinite(hidden))


def test_forward_mask_defaults_to_all_ones(e5_model):
    ids = np.array([[0, 33600, 31, 8999, 2]])
    assert max_diff(e5_model.forward(ids), e5_model.forward(ids, np.ones_like(ids))) <= TOL


def test_forward_accepts_zero_token_type_ids(e5_model):
    ids = np.array([[0, 33600, 31, 8999, 2]])
    assert max_diff(e5_model.forward(ids, token_type_ids=np.zeros_like(ids)), e5_model.forward(ids)) <= TOL


@pytest.mark.parametrize("ids, kwargs, message", [
    (np.array([0, 5, 2]), {}, "2-D"),  # 1-D
    (np.zeros((1, 2, 3), dtype=np.int64), {}, "2-D"),  # 3-D
    (np.array([[0.0, 5.0, 2.0]]), {}, "float64"),  # float ids
    (np.array([[0, 5, 2]]), {"attention_mask": np.ones((1, 4), dtype=np.int64)}, "attention_mask"),
    (np.array([[0, 250037, 2]]), {}, "250037"),  # one past the vocabulary
    (np.array([[0, -1, 2]]), {}, "-1"),
    (np.array([[0, 5, 2]]), {"token_type_ids": np.array([[0, 1, 0]])}, "token_type_ids"),
    (np.zeros((1, 513), dtype=np.int64), {}, "513"),  # longer than the position table
])
def test_forward_rejects_bad_input(e5_model, ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        e5_model.forward(ids, **kwargs)


def test_forward_out_of_vocab_message_names_the_vocabulary(e5_model):
    with pytest.raises(ValueError, match="vocabulary"):
        e5_model.forward(np.array([[0, 10**6, 2]]))


# ---------------------------------------------------------------- encode() input checks
def test_encode_rejects_non_str_item_naming_its_index(e5_model):
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        e5_model.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        e5_model.encode([None])
    with pytest.raises(TypeError, match=r"texts\[1\] is bytes"):
        e5_model.encode(["a", b"b"])


def test_encode_rejects_texts_that_are_not_a_list(e5_model):
    with pytest.raises(TypeError, match="int"):
        e5_model.encode(42)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_encode_rejects_bad_batch_size(e5_model, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        e5_model.encode(["a"], batch_size=batch_size)


def test_encode_rejects_non_str_prefix(e5_model):
    with pytest.raises(TypeError, match="prefix"):
        e5_model.encode("a", prefix=1)


# ---------------------------------------------------------------- public config and tokenizer
def test_config_fields(e5_model):
    c = e5_model.config
    assert isinstance(c, minie5.ModelConfig)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (384, 12, 12)
    assert c.intermediate_size == 1536
    assert c.layer_norm_eps == 1e-12
    assert c.pooling == "mean"
    assert c.normalize is True
    assert c.max_seq_length == 512
    assert c.head_dim == 32
    assert c.vocab_size == 250037


def test_config_is_frozen(e5_model):
    with pytest.raises(dataclasses.FrozenInstanceError):
        e5_model.config.hidden_size = 768
    with pytest.raises(dataclasses.FrozenInstanceError):
        e5_model.config.normalize = False


def test_tokenizer_is_public(e5_model):
    tok = e5_model.tokenizer
    assert isinstance(tok, Tokenizer)
    ids, truncated = tok.encode(["hello world "])
    assert ids == [[0, 33600, 31, 8999, 2]] and truncated == 0
    assert tok.max_length == 512


def test_long_texts_are_truncated_to_max_seq_length(e5_model):
    long_text = "word " * 2000
    ids, truncated = e5_model.tokenizer.encode([long_text])
    assert len(ids[0]) == 512 and truncated == 1
    assert e5_model.encode(long_text).shape == (HIDDEN,)


# ---------------------------------------------------------------- loading errors
def copy_model_dir(src, dst, **config_changes):
    """A model directory in dst: config.json (with changes), tokenizer files copied, weights symlinked."""
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    config.update(config_changes)
    (dst / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(minie5.ModelFileError, match="no-such-model") as info:
        minie5.load(missing)
    assert str(missing) in str(info.value)


def test_copied_directory_loads(e5_dir, tmp_path):
    """The helper below builds a loadable directory: the error tests change one thing only."""
    model = minie5.load(copy_model_dir(e5_dir, tmp_path / "copy"), backend="reference")
    assert model.config.hidden_size == HIDDEN


@pytest.mark.parametrize("field, value", [("hidden_act", "relu"), ("model_type", "gpt2")])
def test_unsupported_config_names_the_field(e5_dir, tmp_path, field, value):
    model_dir = copy_model_dir(e5_dir, tmp_path / "model", **{field: value})
    with pytest.raises(minie5.UnsupportedModelError, match=field) as info:
        minie5.load(model_dir)
    assert value in str(info.value)
    assert "config.json" in str(info.value)
    assert isinstance(info.value, minie5.ModelFileError) and isinstance(info.value, minie5.Minie5Error)


TINY_CONFIG = {
    "model_type": "bert", "hidden_act": "gelu", "vocab_size": 50, "hidden_size": 8,
    "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16, "layer_norm_eps": 1e-12,
    "max_position_embeddings": 16, "type_vocab_size": 2, "pad_token_id": 1,
}


def tiny_config() -> minie5.ModelConfig:
    # read_config() caps max_seq_length at max_position_embeddings when no
    # sentence_bert_config.json says otherwise; from_dict() needs it spelled out.
    return minie5.ModelConfig.from_dict(TINY_CONFIG, max_seq_length=TINY_CONFIG["max_position_embeddings"])


def tiny_model_dir(tmp_path, drop=(), reshape=None):
    """A tiny BERT in tmp_path: config.json and model.safetensors, optionally broken.

    drop: tensor names to leave out; reshape: {name: wrong shape}.
    """
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY_CONFIG))
    shapes = expected_shapes(tiny_config())
    shapes.update(reshape or {})
    rng = np.random.default_rng(0)
    tensors = {name: rng.standard_normal(shape).astype(np.float32)
               for name, shape in shapes.items() if name not in drop}
    save_file(tensors, str(model_dir / "model.safetensors"))
    return model_dir


def test_tiny_weights_are_valid(tmp_path):
    """Positive control for the two tests below: the unbroken tiny file loads."""
    model_dir = tiny_model_dir(tmp_path)
    config = tiny_config()
    weights = load_weights(model_dir / "model.safetensors", config)
    assert set(weights) == set(expected_shapes(config))


def test_missing_tensor_names_the_tensor(tmp_path):
    name = "encoder.layer.1.attention.self.key.weight"
    model_dir = tiny_model_dir(tmp_path, drop=[name])
    with pytest.raises(minie5.ModelFileError, match=name.replace(".", r"\.")) as info:
        minie5.load(model_dir)
    assert "model.safetensors" in str(info.value)


def test_wrong_shape_names_the_tensor(tmp_path):
    name = "encoder.layer.0.intermediate.dense.weight"
    model_dir = tiny_model_dir(tmp_path, reshape={name: (16, 9)})
    with pytest.raises(minie5.ModelFileError, match=name.replace(".", r"\.")) as info:
        minie5.load(model_dir)
    assert "[16, 9]" in str(info.value) and "[16, 8]" in str(info.value)


# ---------------------------------------------------------------- no torch, no transformers, no framework
NO_TORCH = "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


# Every optional framework (and torch / transformers, which only tests and tools use): none may be imported by
# minie5, its command line and file readers, or the integrations package (each adapter imports its own framework).
FRAMEWORKS = ("torch", "transformers", "sentence_transformers", "langchain_core", "llama_index", "ray", "pyarrow",
              "pandas", "openai", "mteb")


@pytest.mark.parametrize("imports", ["minie5", "minie5.integrations", "minie5.cli.main, minie5.io.files"])
def test_importing_minie5_imports_no_framework(imports):
    code = (f"import json, sys, {imports}; minie5.SentenceTransformer; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r}))))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], f"import {imports} imported {result.stdout}"


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_load_and_encode_do_not_load_torch(e5_dir, backend):
    code = (f"import sys; import minie5; m = minie5.load({str(e5_dir)!r}, backend={backend!r}); "
            f"assert m.encode('hello').shape == (384,); {NO_TORCH}")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
