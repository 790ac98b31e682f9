"""int8 models: `minie5 quantize`, the int8 directory it writes, load(quantize=...), --quantize, and bad input.

The format is checked against the safetensors header itself; the int8
directory against quantising at load (bit for bit); the reference backend
against the fast one; every bad input against an error naming the file or
field at fault. Small cases run on a tiny random BERT (tests/tiny_models.py),
the size and the reference path on the e5 fixture.
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minie5
from minie5.checkpoint import quantize_model as quantize
from minie5 import reference, reference_int8
from minie5.errors import InputError, ModelFileError, UnsupportedModelError
from minie5.checkpoint.weights import read_header

from cli_helpers import run_cli
from helpers import REPO
from tiny_models import numpy_weights, tiny_config, write_model_dir

TEXTS = ["w5 w6 w7", "w9", "w10 w11 w12 w13 w14 w15 w16 w17"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    config = tiny_config(hidden=64, heads=4, layers=2, intermediate=128, vocab=120)
    weights = {k: v for k, v in numpy_weights(config, seed=11).items() if not k.startswith("pooler")}
    return write_model_dir(tmp_path_factory.mktemp("tiny") / "float", config, weights, prefix="bert.")


@pytest.fixture(scope="module")
def tiny_int8(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-int8") / "int8"
    quantize.write_quantized(tiny_dir, out)
    return out


@pytest.fixture(scope="module")
def e5_int8_dir(e5_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("e5-int8") / "e5-int8"
    quantize.write_quantized(e5_dir, out)
    return out


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- the directory
def test_quantized_directory_format(e5_dir, e5_int8_dir):
    """int8 tensors with float32 per-row scales, every other tensor float32; files copied; 30 % of the size."""
    header, _ = read_header(e5_int8_dir / "model.safetensors")
    config = minie5.load(e5_dir, backend="reference").config
    names = quantize.quantized_names(config)
    assert len(names) == 1 + 6 * config.num_hidden_layers
    for name, entry in header.items():
        if name in names:
            assert entry["dtype"] == "I8", name
            scale = header[name + "_scale"]
            assert scale["dtype"] == "F32" and scale["shape"] == entry["shape"][:1], name
        else:
            assert entry["dtype"] == "F32", name
    description = json.loads((e5_int8_dir / quantize.DESCRIPTION).read_text())
    assert description["format"] == "minie5-int8" and description["version"] == 1 and description["quantized"] == names
    assert "11008 for K = 1536" in description["activations"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
                 "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (e5_int8_dir / name).read_bytes() == (e5_dir / name).read_bytes(), name
    size, float_size = ((d / "model.safetensors").stat().st_size for d in (e5_int8_dir, e5_dir))
    print(f"parity int8 e5 file: {size / 1e6:.1f} MB, {100 * size / float_size:.1f} % of fp32's "
          f"{float_size / 1e6:.1f} MB")
    assert size <= 0.30 * float_size


def test_int8_directory_equals_quantising_at_load(e5_dir, e5_int8_dir):
    texts = ["query: how much protein should a female eat", "passage: " + "Die Zugspitze ist 2962 m hoch. " * 20]
    from_dir = minie5.load(e5_int8_dir)
    at_load = minie5.load(e5_dir, quantize="int8")
    assert from_dir.quantize == at_load.quantize == "int8" and "quantize='int8'" in repr(from_dir)
    assert minie5.load(e5_int8_dir, quantize="int8").quantize == "int8"  # asking for what it is: fine
    np.testing.assert_array_equal(from_dir.encode(texts), at_load.encode(texts))


def test_reference_backend_runs_the_int8_reference(e5_dir, e5_int8_dir, e5_model):
    """backend="reference" on an int8 model: reference.py with int8 products (reference_int8), close to fast."""
    model = minie5.load(e5_int8_dir)
    assert isinstance(model.weights["encoder.layer.0.intermediate.dense.weight"], reference_int8.QuantizedMatrix)
    texts = (REPO / "tests" / "data" / "multilingual.txt").read_text(encoding="utf-8").split("\n")[:-1]
    texts = texts[:24:2] + [texts[2720][:300]]  # short lines and part of a long one (the reference path is slow)
    fast = model.encode(texts, prefix="query")
    ref = model.encode(texts, prefix="query", backend="reference", batch_size=4)  # less padding
    float_ref = e5_model.encode(texts, prefix="query", backend="reference", batch_size=4)
    cos_paths = (fast * ref).sum(axis=1).min()
    cos_float = (ref * float_ref).sum(axis=1).min()
    print(f"parity int8 e5 fast vs int8 reference, {len(texts)} texts: min cos {cos_paths:.7f}, "
          f"max|diff| {np.abs(fast - ref).max():.1e}")
    assert cos_paths >= 0.99999
    assert np.abs(ref - float_ref).max() > 10 * np.abs(fast - ref).max()  # it is int8, not the float reference
    assert cos_float >= 0.999


def test_quantize_at_load_keeps_the_float_file_unmapped(tiny_dir):
    """Quantising at load reads the float rows with pread: the quantised values are new arrays."""
    model = minie5.load(tiny_dir, quantize="int8")
    table = model.weights["embeddings.word_embeddings.weight"]
    assert isinstance(table, reference_int8.QuantizedMatrix) and table.values.flags.owndata
    assert "embeddings.word_embeddings.weight" not in model.weights.file_offsets


def test_tiny_model_round_trip(tiny_dir, tiny_int8):
    """On a BERT with a checkpoint prefix: the int8 directory loads and equals quantising at load."""
    a, b = minie5.load(tiny_int8), minie5.load(tiny_dir, quantize="int8")
    np.testing.assert_array_equal(a.encode(TEXTS), b.encode(TEXTS))
    float_model = minie5.load(tiny_dir)
    assert (a.encode(TEXTS) * float_model.encode(TEXTS)).sum(axis=1).min() > 0.999


# ---------------------------------------------------------------- bad input
def test_quantizing_a_quantized_model(tiny_int8, tmp_path):
    with pytest.raises(ModelFileError, match="minie5_quantization.json: the model is already quantised"):
        quantize.write_quantized(tiny_int8, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_unknown_quantize_value(tiny_dir):
    with pytest.raises(ValueError, match=r"quantize must be None or one of \('int8',\), got 'int4'"):
        minie5.load(tiny_dir, quantize="int4")


def test_unsupported_architecture_is_refused_before_writing(tiny_dir, tmp_path):
    bad = copy_dir(tiny_dir, tmp_path / "gpt")
    config = json.loads((bad / "config.json").read_text())
    config["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=r"config.json.*model_type"):
        quantize.write_quantized(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_directory_must_be_new_or_empty(tiny_dir, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not an empty directory"):
        quantize.write_quantized(tiny_dir, tmp_path / "full")
    quantize.write_quantized(tiny_dir, tmp_path / "empty")  # an empty directory is fine
    assert (tmp_path / "empty" / quantize.DESCRIPTION).is_file()


def rewrite_tensors(model_dir, change):
    path = model_dir / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


SCALE = "encoder.layer.1.intermediate.dense.weight_scale"


def test_missing_scale_is_named(tiny_int8, tmp_path):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    rewrite_tensors(bad, lambda t: t.pop(SCALE))
    with pytest.raises(ModelFileError, match=rf"model.safetensors: missing tensor '{SCALE}': the scales of int8 "
                                             rf"tensor 'encoder.layer.1.intermediate.dense.weight'"):
        minie5.load(bad)


def test_misshaped_scale_is_named(tiny_int8, tmp_path):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    rewrite_tensors(bad, lambda t: t.update({SCALE: t[SCALE][:-1].copy()}))
    with pytest.raises(ModelFileError,
                       match=rf"model.safetensors: tensor '{SCALE}' has shape \[127\], expected \[128\]"):
        minie5.load(bad)


def test_negative_scale_is_named(tiny_int8, tmp_path):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    rewrite_tensors(bad, lambda t: t.update({SCALE: -t[SCALE]}))
    with pytest.raises(ModelFileError, match=rf"tensor '{SCALE}' holds negative or non-finite scales"):
        minie5.load(bad)


def test_float_tensor_listed_as_int8_is_named(tiny_int8, tmp_path):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    name = "encoder.layer.0.output.dense.weight"
    rewrite_tensors(bad, lambda t: t.update({name: t[name].astype(np.float32)}))
    with pytest.raises(ModelFileError, match=rf"tensor '{name}' has dtype F32, expected I8 "
                                             rf"\(.*minie5_quantization.json lists it as int8\)"):
        minie5.load(bad)


def test_int8_tensors_without_description(tiny_int8, tmp_path):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    (bad / quantize.DESCRIPTION).unlink()
    with pytest.raises(ModelFileError, match="has dtype I8 and no minie5_quantization.json says how to read it"):
        minie5.load(bad)


@pytest.mark.parametrize("field,value,message", [
    ("format", "gguf", "field 'format' is 'gguf', expected 'minie5-int8'"),
    ("version", 2, "field 'version' is 2; this minie5 reads version 1"),
    ("quantized", [], "field 'quantized' must be a non-empty list of tensor names"),
    ("quantized", ["embeddings.word_embeddings.weight"] * 2, "field 'quantized' names a tensor twice"),
    ("quantized", ["encoder.layer.0.attention.self.query.weight"],
     "field 'quantized' lists some of layer 0's query, key and value weights but not all three"),
    ("quantized", ["pooler.dense.weight"], "lists 'pooler.dense.weight' as quantized, which is not a tensor"),
])
def test_bad_description_is_named(tiny_int8, tmp_path, field, value, message):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    description = json.loads((bad / quantize.DESCRIPTION).read_text())
    description[field] = value
    (bad / quantize.DESCRIPTION).write_text(json.dumps(description))
    with pytest.raises(ModelFileError, match="minie5_quantization.json: .*" + re.escape(message)):
        minie5.load(bad)


def test_description_that_is_not_json(tiny_int8, tmp_path):
    bad = copy_dir(tiny_int8, tmp_path / "bad")
    (bad / quantize.DESCRIPTION).write_text("{not json")
    with pytest.raises(ModelFileError, match="minie5_quantization.json: is not readable JSON"):
        minie5.load(bad)


# ---------------------------------------------------------------- command line
def test_cli_quantize_embed_search(tiny_dir, tmp_path):
    out = tmp_path / "int8"
    result = run_cli("quantize", tiny_dir, "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"minie5: wrote {out}: model.safetensors" in result.stderr and "13 int8 tensors" in result.stderr
    expected = minie5.load(out).encode(TEXTS)
    from_dir = run_cli("embed", "--model", out, *TEXTS)
    at_load = run_cli("embed", "--model", tiny_dir, "--quantize", "int8", *TEXTS)
    assert from_dir.returncode == 0 and at_load.returncode == 0, (from_dir.stderr, at_load.stderr)
    np.testing.assert_array_equal(np.array(json.loads(from_dir.stdout), np.float32), expected)
    np.testing.assert_array_equal(np.array(json.loads(at_load.stdout), np.float32), expected)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w5 w6\nw40 w41 w42\nw9\n")
    search = run_cli("search", "--model", tiny_dir, "--quantize", "int8", "--corpus", corpus, "w40 w41", "-k", "1",
                     "-q")
    assert search.returncode == 0, search.stderr
    model = minie5.load(out)
    scores = model.encode(["w5 w6", "w40 w41 w42", "w9"], prefix="passage") @ model.encode("w40 w41", prefix="query")
    assert search.stdout.split("\t")[1] == str(int(np.argmax(scores)) + 1)  # the int8 model's best line


def test_cli_errors(tiny_dir, tiny_int8, tmp_path):
    again = run_cli("quantize", tiny_int8, "-o", tmp_path / "again")
    assert "minie5_quantization.json: the model is already quantised (int8)" in again.error_line()
    bad = run_cli("embed", "--model", tiny_dir, "--quantize", "int4", "w5")
    assert bad.returncode == 2 and "argument --quantize: invalid choice: 'int4'" in bad.stderr
    missing = run_cli("quantize", tiny_dir)
    assert missing.returncode == 2 and "-o/--output" in missing.stderr


def test_serve_takes_quantize():
    from minie5.cli.main import build_parser
    assert build_parser().parse_args(["serve", "--quantize", "int8"]).quantize == "int8"
    assert build_parser().parse_args(["serve"]).quantize is None


def test_info_reads_an_int8_directory(tiny_int8):
    result = run_cli("info", tiny_int8)
    assert result.returncode == 0, result.stderr
    assert "F32, I8" in result.stdout


def test_reference_linear_on_an_int8_weight():
    """reference.linear's x @ weight.T + bias on a QuantizedMatrix: the int8 product, computed here by hand."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal(5).astype(np.float32)
    q = reference_int8.quantize(w)
    bound = reference_int8.activation_bound(8)  # 32767: int16's whole range
    peak = np.abs(x).max(axis=-1, keepdims=True)  # [2, 3, 1]
    xq = np.rint(x * (np.float32(bound) / peak)).astype(np.int64)  # [2, 3, 8]
    acc = (xq[..., None, :] * q.values.astype(np.int64)).sum(axis=-1)  # [2, 3, 5] exact integers
    expected = acc.astype(np.float32) * ((peak / np.float32(bound)) * q.scales) + b
    np.testing.assert_array_equal(reference.linear(x, q, b), expected)
    np.testing.assert_array_equal(reference_int8.linear(x, q, b), expected)
    np.testing.assert_array_equal(reference.linear(x, w, b), x @ w.T + b)  # a float weight: as before


def test_keep_float_blocks(tiny_dir, tmp_path):
    """--keep-float ffn-down: those weights stay float32 in the file and run on the float engine, the rest int8."""
    out = tmp_path / "mixed"
    result = run_cli("quantize", tiny_dir, "-o", out, "--keep-float", "ffn-down", "--keep-float", "word-embeddings")
    assert result.returncode == 0, result.stderr
    header, _ = read_header(out / "model.safetensors")
    assert header["encoder.layer.0.output.dense.weight"]["dtype"] == "F32"
    assert header["embeddings.word_embeddings.weight"]["dtype"] == "F32"
    assert header["encoder.layer.0.intermediate.dense.weight"]["dtype"] == "I8"
    description = json.loads((out / quantize.DESCRIPTION).read_text())
    assert len(description["quantized"]) == 2 * 5 and description["float32"].endswith("ffn-down, word-embeddings")
    model = minie5.load(out)
    assert model.quantize == "int8" and not isinstance(model.weights["encoder.layer.1.output.dense.weight"],
                                                       reference_int8.QuantizedMatrix)
    fast, ref = model.encode(TEXTS), model.encode(TEXTS, backend="reference")
    assert (fast * ref).sum(axis=1).min() > 0.99999
    with pytest.raises(InputError, match="--keep-float ffn: not a block; choose from qkv, attention-output"):
        quantize.write_quantized(tiny_dir, tmp_path / "bad", keep_float=("ffn",))
    with pytest.raises(InputError, match="leaves nothing to quantise"):
        quantize.write_quantized(tiny_dir, tmp_path / "bad", keep_float=tuple(quantize.BLOCKS))
