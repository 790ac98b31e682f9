"""minie5.SentenceTransformer without sentence-transformers: what it refuses by name, and its own behaviour.

The outputs themselves are compared with sentence-transformers in test_st_compat.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import minie5
from minie5 import SentenceTransformer, UnsupportedArgumentError


@pytest.fixture(scope="module")
def e5(e5_dir):
    return SentenceTransformer(str(e5_dir))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceTransformer(str(minilm_dir))


@pytest.mark.parametrize("arguments, named", [
    ({"convert_to_tensor": True}, "convert_to_tensor"),
    ({"convert_to_numpy": False}, "convert_to_numpy"),
    ({"device": "cuda"}, "device"),
    ({"device": "cuda:1"}, "device"),
    ({"device": ["cpu", "cpu"]}, "device"),
    ({"pool": {"processes": []}}, "pool"),
    ({"chunk_size": 100}, "chunk_size"),
    ({"output_value": "token_embeddings"}, "output_value"),
    ({"output_value": None}, "output_value"),
    ({"task": "query"}, "task"),
    ({"processing_kwargs": {"text": {"max_length": 8}}}, "processing_kwargs"),
])
def test_encode_refuses_what_it_cannot_honour_by_name(e5, arguments, named):
    with pytest.raises(UnsupportedArgumentError, match=named):
        e5.encode(["a text"], **arguments)
    with pytest.raises(UnsupportedArgumentError, match=named):
        e5.encode_query(["a text"], **arguments)


@pytest.mark.parametrize("arguments, named", [
    ({"device": "cuda"}, "device"),
    ({"device": "mps"}, "device"),
    ({"backend": "onnx"}, "backend"),
    ({"backend": "openvino"}, "backend"),
    ({"modules": []}, "modules"),
    ({"cache_folder": "/tmp/models"}, "cache_folder"),
    ({"token": "hf_x"}, "token"),
    ({"use_auth_token": "hf_x"}, "use_auth_token"),
    ({"model_kwargs": {"torch_dtype": "float16"}}, "model_kwargs"),
    ({"processor_kwargs": {"model_max_length": 8}}, "processor_kwargs"),
    ({"tokenizer_kwargs": {"model_max_length": 8}}, "tokenizer_kwargs"),
    ({"config_kwargs": {"hidden_dropout_prob": 0.0}}, "config_kwargs"),
    ({"model_card_data": object()}, "model_card_data"),
])
def test_constructor_refuses_what_it_cannot_honour_by_name(e5_dir, arguments, named):
    with pytest.raises(UnsupportedArgumentError, match=named):
        SentenceTransformer(str(e5_dir), **arguments)


def test_local_files_only_is_honoured_for_a_directory_and_refused_for_a_hub_id(e5_dir):
    assert SentenceTransformer(str(e5_dir), local_files_only=True, device="cpu").device == "cpu"
    with pytest.raises(UnsupportedArgumentError, match="HF_HUB_OFFLINE"):
        SentenceTransformer("intfloat/multilingual-e5-small", local_files_only=True)


def test_cpu_device_and_empty_keyword_dictionaries_are_fine(e5_dir):
    model = SentenceTransformer(str(e5_dir), device="cpu", model_kwargs={}, backend="torch")
    assert model.encode("x", device="cpu").shape == (384,)


def test_e5_prompts_and_the_prompt_rules(e5):
    assert e5.prompts == {"query": "query: ", "document": "passage: ", "passage": "passage: "}
    np.testing.assert_array_equal(e5.encode_query("hi"), e5.model.encode("query: hi"))
    np.testing.assert_array_equal(e5.encode_document("hi"), e5.model.encode("passage: hi"))
    np.testing.assert_array_equal(e5.encode("hi", prompt="title: "), e5.model.encode("title: hi"))
    np.testing.assert_array_equal(e5.encode("hi"), e5.model.encode("hi"))  # no default prompt
    with pytest.raises(ValueError, match="Prompt name 'classify' not found"):
        e5.encode("hi", prompt_name="classify")
    with pytest.warns(UserWarning, match="not both"):
        np.testing.assert_array_equal(e5.encode("hi", prompt="q: ", prompt_name="query"), e5.model.encode("q: hi"))


def test_a_model_that_is_not_e5_gets_no_prompts(minilm):
    """all-MiniLM-L6-v2 declares no prompts and is not an e5: sentence-transformers' empty placeholders."""
    assert minilm.prompts == {"query": "", "document": ""}
    np.testing.assert_array_equal(minilm.encode_query("hi"), minilm.model.encode("hi", prefix=""))


def test_given_prompts_win_and_default_prompt_name_is_checked(e5_dir):
    model = SentenceTransformer(str(e5_dir), prompts={"query": "q: "}, default_prompt_name="query")
    assert model.prompts["query"] == "q: " and model.prompts["document"] == "passage: "
    np.testing.assert_array_equal(model.encode("hi"), model.model.encode("q: hi"))
    with pytest.raises(ValueError, match="Default prompt name 'nope'"):
        SentenceTransformer(str(e5_dir), default_prompt_name="nope")


def test_inputs_shapes_and_the_sentences_keyword(e5):
    assert e5.encode("one").shape == (384,)
    assert e5.encode(["one", "two"]).shape == (2, 384)
    assert e5.encode(("one", "two")).shape == (2, 384)  # any sequence, as sentence-transformers
    assert e5.encode(np.array(["one", "two"])).shape == (2, 384)
    empty = e5.encode([])
    assert empty.shape == (0,)  # sentence-transformers returns np.array([]) for no inputs
    np.testing.assert_array_equal(e5.encode(sentences=["one"]), e5.encode(["one"]))  # the name before version 6
    with pytest.raises(TypeError, match="both inputs and sentences"):
        e5.encode(["one"], sentences=["two"])
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        e5.encode(["one", 2])


def test_precision_and_its_errors(e5):
    texts = ["one", "two", "three"]
    floats = e5.encode(texts)
    np.testing.assert_array_equal(e5.encode(texts, precision="ubinary"), np.packbits(floats > 0, axis=-1))
    assert e5.encode(texts, precision="int8").dtype == np.int8
    with pytest.raises(minie5.InputError, match="precision 'int4' is not supported"):
        e5.encode(texts, precision="int4")
    with pytest.raises(minie5.InputError, match="single embedding"):
        e5.encode("one", precision="int8")  # as in sentence-transformers: no ranges from one row


def test_max_seq_length_and_truncate_dim(minilm):
    assert minilm.max_seq_length == minilm.get_max_seq_length() == 256
    for bad in (0, 513, 1.5, "200"):
        with pytest.raises(ValueError, match="max_seq_length"):
            minilm.max_seq_length = bad
    assert minilm.max_seq_length == 256
    assert minilm.get_embedding_dimension() == minilm.get_sentence_embedding_dimension() == 384
    with minilm.truncate_embeddings(8):
        assert minilm.get_embedding_dimension() == 8 and minilm.encode("x").shape == (8,)
    assert minilm.truncate_dim is None
    with pytest.raises(ValueError, match="truncate_dim"):
        minilm.encode("x", truncate_dim=0)


def test_similarity_functions_by_hand(minilm):
    a = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(minilm.similarity(a, b), [[0.8], [0.0]], atol=1e-7)
    minilm.similarity_fn_name = minie5.SimilarityFunction.DOT_PRODUCT
    try:
        np.testing.assert_allclose(minilm.similarity(a, b), [[8.0], [0.0]])
        minilm.similarity_fn_name = "euclidean"
        np.testing.assert_allclose(minilm.similarity(a, b), [[-np.hypot(3, 2)], [-np.sqrt(5)]], rtol=1e-6)
        minilm.similarity_fn_name = "manhattan"
        np.testing.assert_allclose(minilm.similarity(a, b), [[-5.0], [-3.0]])
        np.testing.assert_allclose(minilm.similarity_pairwise(a, a[::-1]), [[-6.0]][0] * 2)
        with pytest.raises(ValueError, match="similarity_fn_name must be one of"):
            minilm.similarity_fn_name = "maxsim"
        with pytest.raises(ValueError, match="2 dimensions, embeddings2 3"):
            minilm.similarity(a, np.ones((1, 3)))
    finally:
        minilm.similarity_fn_name = "cosine"
    assert minilm.similarity(a[0], b).shape == (1, 1)  # a single vector is one row


def test_saved_similarity_and_truncate_dim_are_read(tmp_path, minilm_dir):
    import json
    import shutil

    copy = tmp_path / "minilm"
    shutil.copytree(minilm_dir, copy)
    (copy / "config_sentence_transformers.json").write_text(json.dumps(
        {"similarity_fn_name": "dot", "truncate_dim": 64, "prompts": {"query": "q: "}}))
    model = SentenceTransformer(str(copy))
    assert (model.similarity_fn_name, model.truncate_dim, model.prompts) == ("dot", 64, {"query": "q: ", "document": ""})
    (copy / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "maxsim"}))
    with pytest.raises(minie5.ModelFileError, match="similarity_fn_name"):
        SentenceTransformer(str(copy))
    (copy / "config_sentence_transformers.json").write_text(json.dumps({"truncate_dim": "64"}))
    with pytest.raises(minie5.ModelFileError, match="config_sentence_transformers.json: field 'truncate_dim'"):
        SentenceTransformer(str(copy))
