"""Broken model directories: each gives one clear minie5 exception naming the file and what was expected.

Every case starts from a tiny valid model directory (tests/tiny_models.py),
breaks exactly one thing, and checks the exception's class and message. A
control test first checks that the unbroken directory loads.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import minie5
from minie5 import Minie5Error, ModelFileError, UnsupportedModelError

from tiny_models import numpy_weights, tiny_config, write_model_dir

CONFIG = tiny_config(hidden=24, heads=3, layers=2, intermediate=40, vocab=60)


@pytest.fixture
def good_dir(tmp_path) -> Path:
    d = tmp_path / "tiny"
    write_model_dir(d, CONFIG, numpy_weights(CONFIG, seed=7))
    return d


def edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def expect(exc_type, directory, *fragments):
    with pytest.raises(exc_type) as info:
        minie5.load(directory)
    message = str(info.value)
    assert isinstance(info.value, Minie5Error)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_control_unbroken_directory_loads(good_dir):
    model = minie5.load(good_dir)
    assert model.forward([[1, 5, 2]]).shape == (1, 3, 24)


# ---------------------------------------------------------------- missing / unreadable files
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file_is_named(good_dir, name):
    (good_dir / name).unlink()
    expect(ModelFileError, good_dir, name, "not found")


def test_config_that_is_not_json(good_dir):
    (good_dir / "config.json").write_text("{not json")
    expect(ModelFileError, good_dir, "config.json", "not valid JSON")


# One reader (config.read_json) for every JSON file of a model directory: the same errors for each.
JSON_FILES = ["config.json", "tokenizer_config.json", "modules.json", "1_Pooling/config.json",
              "sentence_bert_config.json", "config_sentence_transformers.json"]


@pytest.mark.parametrize("name", JSON_FILES)
def test_json_file_that_is_not_json(good_dir, name):
    (good_dir / name).parent.mkdir(exist_ok=True)
    (good_dir / name).write_text('{"a": 1,')
    expect(ModelFileError, good_dir, name, "is not valid JSON")


@pytest.mark.parametrize("name", JSON_FILES)
def test_json_file_that_is_not_utf8(good_dir, name):
    (good_dir / name).parent.mkdir(exist_ok=True)
    (good_dir / name).write_bytes(b'{"a": "caf\xe9"}')  # Latin-1
    expect(ModelFileError, good_dir, name, "is not UTF-8 text", "byte 10")


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_json_file_that_is_not_an_object(good_dir, name):
    (good_dir / name).write_text("[1, 2]")
    expect(ModelFileError, good_dir, name, "must hold a JSON object")


def test_tokenizer_json_that_does_not_parse(good_dir):
    (good_dir / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    expect(ModelFileError, good_dir, "tokenizer.json", "cannot be parsed")


# ---------------------------------------------------------------- config.json fields
@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "layer_norm_eps", "vocab_size", "max_position_embeddings", "model_type"])
def test_config_missing_field_is_named(good_dir, field):
    edit_json(good_dir / "config.json", **{field: KeyError})
    expect(ModelFileError, good_dir, "config.json", f"'{field}'")


@pytest.mark.parametrize("field,value", [
    ("hidden_act", "relu"),
    ("hidden_act", "gelu_new"),
    ("position_embedding_type", "relative_key"),
    ("model_type", "gpt2"),
])
def test_unsupported_config_value_is_named(good_dir, field, value):
    edit_json(good_dir / "config.json", **{field: value})
    expect(UnsupportedModelError, good_dir, "config.json", f"'{field}'", f"'{value}'")


@pytest.mark.parametrize("field,value", [("hidden_size", "384"), ("num_attention_heads", 5), ("hidden_size", 0),
                                         ("layer_norm_eps", -1.0)])
def test_invalid_config_value_is_named(good_dir, field, value):
    edit_json(good_dir / "config.json", **{field: value})
    expect(ModelFileError, good_dir, "config.json")


def test_vocab_smaller_than_tokenizer(good_dir):
    """Weights and config agree on 10 rows, but the tokenizer can emit 60 ids."""
    edit_json(good_dir / "config.json", vocab_size=10)

    def change(w):
        w["embeddings.word_embeddings.weight"] = w["embeddings.word_embeddings.weight"][:10].copy()
    _rewrite_weights(good_dir, change)
    expect(ModelFileError, good_dir, "tokenizer.json", "60 ids", "vocab_size is 10")


# ---------------------------------------------------------------- model.safetensors
def test_truncated_safetensors(good_dir):
    path = good_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect(ModelFileError, good_dir, "model.safetensors", "not a valid safetensors file")


def test_corrupted_safetensors_header(good_dir):
    path = good_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[8:8 + header_len] = b"!" * header_len  # the JSON header is garbage
    path.write_bytes(bytes(data))
    expect(ModelFileError, good_dir, "model.safetensors")


def test_empty_safetensors(good_dir):
    (good_dir / "model.safetensors").write_bytes(b"")
    expect(ModelFileError, good_dir, "model.safetensors")


def _rewrite_weights(directory: Path, change):
    weights = numpy_weights(CONFIG, seed=7)
    change(weights)
    save_file(weights, str(directory / "model.safetensors"))


def test_missing_tensor_is_named(good_dir):
    _rewrite_weights(good_dir, lambda w: w.pop("encoder.layer.1.output.dense.weight"))
    expect(ModelFileError, good_dir, "model.safetensors", "encoder.layer.1.output.dense.weight")


def test_wrong_shape_is_named(good_dir):
    def change(w):
        w["encoder.layer.0.attention.self.key.weight"] = np.zeros((24, 23), np.float32)
    _rewrite_weights(good_dir, change)
    expect(ModelFileError, good_dir, "encoder.layer.0.attention.self.key.weight", "[24, 23]", "[24, 24]")


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int8])
def test_wrong_dtype_is_named(good_dir, dtype):
    def change(w):
        w["embeddings.LayerNorm.weight"] = w["embeddings.LayerNorm.weight"].astype(dtype)
    _rewrite_weights(good_dir, change)
    expect(ModelFileError, good_dir, "embeddings.LayerNorm.weight", "dtype")


def test_directory_given_as_file(good_dir):
    expect(ModelFileError, good_dir / "config.json", "config.json")


def test_errors_are_value_errors_too(good_dir):
    """ModelFileError is also a ValueError, so generic handlers still catch it."""
    shutil.rmtree(good_dir)
    with pytest.raises(ValueError):
        minie5.load(good_dir)
